//! WHEP (draft-ietf-wish-whep; the rules it shares with WHIP, RFC 9725): a standard
//! player POSTs its offer as `application/sdp` and gets the answer plus a session URL.
//!
//! - `POST /whep/{detector}`: 201, `Location` of the session, `ETag`, the answer;
//!   415 for another content type, 404 for an unknown detector, 400/422 for an offer we
//!   cannot answer.
//! - `DELETE /whep/{detector}/sessions/{id}`: ends the session, 200; 404 if unknown.
//! - `PATCH` on the session with `application/trickle-ice-sdpfrag`: trickled candidates,
//!   204. ICE restarts are not supported: a fragment with a new `ice-ufrag` gets 422 (the
//!   answer RFC 9725 prescribes for an unsupported PATCH use); a stale `If-Match` 412.
//! - `OPTIONS`: CORS preflight, `Accept-Post`, and the configured ICE servers as
//!   `Link: <url>; rel="ice-server"` headers.

use super::ApiError;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tracing::info;

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// Whether the request's `Content-Type` is `expected` (parameters such as charset ignored).
fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

fn unsupported_type(expected: &str) -> Response {
    let body = serde_json::json!({
        "status": "error",
        "message": format!("the body must be {expected}"),
    });
    (StatusCode::UNSUPPORTED_MEDIA_TYPE, axum::Json(body)).into_response()
}

/// A session's entity tag: it changes with each ICE restart.
fn etag(id: u64, generation: u64) -> String {
    format!("\"lumacast-{id}-{generation}\"")
}

/// The configured STUN/TURN servers as WHIP/WHEP `Link` headers.
fn ice_links(state: &AppState, headers: &mut HeaderMap) {
    for url in &state.rtc.ice_servers {
        // TURN servers carry their credentials (RFC 9725 section 4.6).
        let mut link = format!("<{url}>; rel=\"ice-server\"");
        if url.starts_with("turn") {
            if let (Some(u), Some(c)) = (&state.rtc.ice_username, &state.rtc.ice_credential) {
                link.push_str(&format!(
                    "; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""
                ));
            }
        }
        // Values come from the operator's configuration; skip anything not header-safe.
        if let Ok(v) = HeaderValue::from_str(&link) {
            headers.append(header::LINK, v);
        }
    }
}

/// `GET /api/ice-servers`: the configured STUN/TURN servers as `RTCIceServer`s (TURN with
/// its credentials), for the page's `RTCPeerConnection` (WHEP players get the same in
/// `Link` headers).
pub async fn ice_servers(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    let servers: Vec<serde_json::Value> = state
        .rtc
        .ice_servers
        .iter()
        .map(|url| {
            let mut s = serde_json::json!({ "urls": [url] });
            if url.starts_with("turn") {
                if let (Some(u), Some(c)) = (&state.rtc.ice_username, &state.rtc.ice_credential) {
                    s["username"] = u.clone().into();
                    s["credential"] = c.clone().into();
                }
            }
            s
        })
        .collect();
    axum::Json(serde_json::json!({"status": "success", "ice_servers": servers}))
}

/// `POST /whep/{detector}`.
pub async fn offer(
    State(state): State<AppState>,
    Path(detector): Path<String>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    body: Bytes,
) -> Response {
    if !content_type_is(&headers, SDP) {
        return unsupported_type(SDP);
    }
    let client = super::liveview::client_addr(&extensions);
    match answer(&state, &detector, &body, client).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn answer(
    state: &AppState,
    detector: &str,
    body: &[u8],
    client: Option<std::net::SocketAddr>,
) -> Result<Response, ApiError> {
    let name = state.detectors.resolve(Some(detector))?;
    let sdp = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("the offer is not UTF-8".into()))?;
    lumacast_rtc::analyze_offer(sdp)?;
    let session = super::liveview::open_viewer(state, &name, sdp, client).await?;
    let location = format!("/whep/{name}/sessions/{}", session.id);
    info!(detector = %name, viewer = session.id, "WHEP session created");
    let mut r = (StatusCode::CREATED, session.answer_sdp).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag(session.id, 0))
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    h.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    ice_links(state, h);
    Ok(r)
}

/// The viewers of `detector` if `id` is one of them.
fn session(
    state: &AppState,
    detector: &str,
    id: u64,
) -> Result<lumacast_rtc::ViewerRegistry, ApiError> {
    let name = state.detectors.resolve(Some(detector))?;
    state
        .detectors
        .running(&name)
        .map(|r| r.viewers.clone())
        .filter(|v| v.contains(id))
        .ok_or_else(|| ApiError::NotFound(format!("no WHEP session {id} on detector \"{name}\"")))
}

/// `DELETE /whep/{detector}/sessions/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    Path((detector, id)): Path<(String, u64)>,
) -> Response {
    match session(&state, &detector, id) {
        Ok(viewers) => {
            viewers.close(id);
            info!(detector = %detector, viewer = id, "WHEP session deleted");
            StatusCode::OK.into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `PATCH /whep/{detector}/sessions/{id}`: trickle ICE.
pub async fn patch(
    State(state): State<AppState>,
    Path((detector, id)): Path<(String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !content_type_is(&headers, SDPFRAG) {
        return unsupported_type(SDPFRAG);
    }
    let result = async {
        let viewers = session(&state, &detector, id)?;
        let generation = viewers.ice_generation(id).unwrap_or(0);
        if let Some(m) = headers.get(header::IF_MATCH) {
            let m = m.to_str().unwrap_or_default().trim();
            if m != "*" && m != etag(id, generation) {
                return Ok(StatusCode::PRECONDITION_FAILED.into_response());
            }
        }
        let frag = std::str::from_utf8(&body)
            .map_err(|_| ApiError::BadRequest("the fragment is not UTF-8".into()))?;
        match viewers.trickle(id, frag) {
            Ok(n) => {
                info!(detector = %detector, viewer = id, candidates = n, "trickled candidates");
                Ok::<_, ApiError>(StatusCode::NO_CONTENT.into_response())
            }
            // A new ufrag/pwd: an ICE restart (RFC 9725 section 4.4.1.2). The answer is
            // our new credentials and candidates as a fragment, with a new ETag.
            Err(lumacast_rtc::RtcError::IceRestart) => {
                let remote = lumacast_rtc::IceParams::parse(frag)?;
                let restarted = viewers.restart_ice(id, remote).await?;
                info!(detector = %detector, viewer = id, generation = restarted.generation, "ICE restarted (WHEP PATCH)");
                let mut r = (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, SDPFRAG)],
                    restart_fragment(&restarted),
                )
                    .into_response();
                if let Ok(v) = HeaderValue::from_str(&etag(id, restarted.generation)) {
                    r.headers_mut().insert(header::ETAG, v);
                }
                Ok(r)
            }
            Err(e) => Err(e.into()),
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Our side of an ICE restart as an RFC 8840 fragment: credentials, the media section's
/// mid, our candidates, end of candidates.
fn restart_fragment(r: &lumacast_rtc::IceRestarted) -> String {
    let mid = r
        .answer_sdp
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .unwrap_or("0");
    let mut f = format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:{mid}\r\n",
        r.local.ufrag, r.local.pwd
    );
    for c in &r.local.candidates {
        f.push_str("a=");
        f.push_str(c);
        f.push_str("\r\n");
    }
    f.push_str("a=end-of-candidates\r\n");
    f
}

/// `OPTIONS /whep/{detector}` (and on a session): `Accept-Post` and the ICE servers; the
/// CORS layer (`access.rs`) adds the preflight headers for allowed origins.
pub async fn options(State(state): State<AppState>) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert("accept-post", HeaderValue::from_static(SDP));
    ice_links(&state, h);
    r
}
