//! WHIP (RFC 9725): `POST` the offer, `201 Created` with the answer and `Location`,
//! `DELETE` the `Location` to stop. ICE servers come from `Link: rel="ice-server"`.

use super::target::{TargetSpec, REQUEST_TIMEOUT};
use super::PublishError;
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, LINK, LOCATION};

use super::MAX_ANSWER;

/// An ICE server from a `Link` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    pub url: String,
    pub username: Option<String>,
    pub credential: Option<String>,
}

/// A published WHIP session: its resource, to delete when done.
pub struct WhipSession {
    resource: reqwest::Url,
    token: Option<String>,
}

fn authorized(req: reqwest::RequestBuilder, token: &Option<String>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => req.header(AUTHORIZATION, format!("Bearer {t}")),
        None => req,
    }
}

/// The ICE servers a WHIP endpoint announces before the offer (`OPTIONS`, as in the
/// early drafts and as several servers still answer). Nothing when it answers no `Link`.
pub async fn preflight(client: &reqwest::Client, spec: &TargetSpec) -> Vec<IceServer> {
    let req = authorized(
        client.request(reqwest::Method::OPTIONS, &spec.url),
        &spec.token,
    )
    .timeout(REQUEST_TIMEOUT);
    match req.send().await {
        Ok(r) => ice_servers(r.headers()),
        Err(_) => Vec::new(),
    }
}

/// POSTs `offer_sdp`; returns the session, the answer, and the ICE servers the answer's
/// `Link` headers name (for the next attempt: our offer is already gathered).
pub async fn open(
    client: &reqwest::Client,
    spec: &TargetSpec,
    offer_sdp: &str,
) -> Result<(WhipSession, String, Vec<IceServer>), PublishError> {
    let resp = authorized(client.post(&spec.url), &spec.token)
        .header(CONTENT_TYPE, "application/sdp")
        .body(offer_sdp.to_owned())
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|e| PublishError::http("WHIP POST", e))?;
    let status = resp.status();
    if status != reqwest::StatusCode::CREATED {
        let body = super::short_body(resp).await;
        return Err(PublishError::Refused {
            status: status.as_u16(),
            body,
        });
    }
    let base = resp.url().clone();
    let location = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| PublishError::Protocol("the WHIP answer has no Location".into()))?;
    let resource = base
        .join(location)
        .map_err(|e| PublishError::Protocol(format!("bad WHIP Location \"{location}\": {e}")))?;
    let servers = ice_servers(resp.headers());
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !content_type.starts_with("application/sdp") {
        return Err(PublishError::Protocol(format!(
            "the WHIP answer is {content_type:?}, not application/sdp"
        )));
    }
    let body = super::read_bounded(resp, MAX_ANSWER).await?;
    let answer = String::from_utf8(body)
        .map_err(|_| PublishError::Protocol("the WHIP answer is not UTF-8".into()))?;
    Ok((
        WhipSession {
            resource,
            token: spec.token.clone(),
        },
        answer,
        servers,
    ))
}

impl WhipSession {
    /// The session's resource URL.
    pub fn resource(&self) -> &str {
        self.resource.as_str()
    }

    /// Ends the session on the server (`DELETE`), bounded; failures are only logged.
    pub async fn close(self, client: &reqwest::Client) {
        let req =
            authorized(client.delete(self.resource.clone()), &self.token).timeout(REQUEST_TIMEOUT);
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(resource = %self.resource, "WHIP session deleted")
            }
            Ok(r) => tracing::info!(status = r.status().as_u16(), "WHIP DELETE refused"),
            Err(e) => tracing::info!(error = %e, "WHIP DELETE failed"),
        }
    }
}

/// `Link: <stun:stun.example.net>; rel="ice-server"`, with `username` and `credential`
/// for TURN (RFC 9725 section 4.6); several per header or several headers.
pub fn ice_servers(headers: &HeaderMap) -> Vec<IceServer> {
    let mut out = Vec::new();
    for value in headers.get_all(LINK).iter().filter_map(|v| v.to_str().ok()) {
        for link in split_links(value) {
            let mut parts = link.split(';').map(str::trim);
            let Some(url) = parts
                .next()
                .and_then(|u| u.strip_prefix('<'))
                .and_then(|u| u.strip_suffix('>'))
            else {
                continue;
            };
            let (mut rel, mut username, mut credential) = (false, None, None);
            for p in parts {
                let Some((k, v)) = p.split_once('=') else {
                    continue;
                };
                let v = v.trim().trim_matches('"').to_string();
                match k.trim().to_ascii_lowercase().as_str() {
                    "rel" => rel = v.eq_ignore_ascii_case("ice-server"),
                    "username" => username = Some(v),
                    "credential" => credential = Some(v),
                    _ => {}
                }
            }
            if rel {
                out.push(IceServer {
                    url: url.to_string(),
                    username,
                    credential,
                });
            }
        }
    }
    out
}

/// Splits a `Link` header into links at the commas outside `<…>` and quotes.
fn split_links(value: &str) -> Vec<&str> {
    let (mut out, mut start, mut in_url, mut in_quote) = (Vec::new(), 0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            '<' if !in_quote => in_url = true,
            '>' if !in_quote => in_url = false,
            '"' if !in_url => in_quote = !in_quote,
            ',' if !in_url && !in_quote => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|l| !l.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn link_headers_give_ice_servers() {
        let mut h = HeaderMap::new();
        h.append(
            LINK,
            HeaderValue::from_static(
                "<stun:stun.example.net:3478>; rel=\"ice-server\", <turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"u,1\"; credential=\"p\"; credential-type=\"password\"",
            ),
        );
        h.append(
            LINK,
            HeaderValue::from_static("<https://x/y>; rel=\"other\""),
        );
        let s = ice_servers(&h);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].url, "stun:stun.example.net:3478");
        assert_eq!(s[0].username, None);
        assert_eq!(s[1].url, "turn:turn.example.net?transport=udp");
        assert_eq!(s[1].username.as_deref(), Some("u,1"));
        assert_eq!(s[1].credential.as_deref(), Some("p"));
    }
}
