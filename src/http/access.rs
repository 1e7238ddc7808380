//! Who may call what: bearer-token authentication (a static token and/or HS256 JWTs with
//! an expiry) and CORS, as two middlewares around the whole router.
//!
//! Open without a token: `/health`, the page (`/`, `/app.js`, `/favicon.ico`) and CORS
//! preflights (browsers never send credentials on those). Everything else — the
//! ImSwitch endpoints, `/api/*`, WHEP, `/metrics` — answers 401 before any handler runs,
//! so a refused request starts nothing.

use super::ApiError;
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// What requests must present. Empty (no token, no secret) means no authentication.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub token: Option<String>,
    pub jwt_secret: Option<String>,
}

impl AuthConfig {
    pub fn enabled(&self) -> bool {
        self.token.is_some() || self.jwt_secret.is_some()
    }

    /// Whether `presented` is the static token or a valid, unexpired HS256 JWT.
    pub fn accepts(&self, presented: &str, now_unix: u64) -> Result<(), String> {
        if let Some(t) = &self.token {
            if constant_time_eq(t.as_bytes(), presented.as_bytes()) {
                return Ok(());
            }
        }
        match &self.jwt_secret {
            Some(secret) if presented.matches('.').count() == 2 => {
                verify_hs256(secret.as_bytes(), presented, now_unix)
            }
            _ => Err("the token is not valid".into()),
        }
    }
}

/// Equality whose time does not depend on where the inputs differ (only on the length).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks an HS256 JWT (signature and format by `jsonwebtoken`) and its `exp` (required)
/// and `nbf` (if present) against `now_unix`: the time is an input, for the tests.
fn verify_hs256(secret: &[u8], jwt: &str, now_unix: u64) -> Result<(), String> {
    use jsonwebtoken::errors::ErrorKind;
    use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
    // An algorithm jsonwebtoken does not know (`none`) fails here too.
    let header = decode_header(jwt).map_err(|_| "malformed token header, or not an HS256 token")?;
    if header.alg != Algorithm::HS256 {
        return Err(format!("token algorithm {:?} is not HS256", header.alg));
    }
    let mut validation = Validation::new(Algorithm::HS256);
    // Expiry and not-before are checked below against `now_unix`.
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let claims = decode::<serde_json::Value>(jwt, &DecodingKey::from_secret(secret), &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => "the token signature is not valid".to_string(),
            _ => format!("malformed token: {e}"),
        })?
        .claims;
    let exp = claims["exp"]
        .as_u64()
        .ok_or("the token has no \"exp\" (expiry) claim")?;
    if exp <= now_unix {
        return Err("the token has expired".into());
    }
    if let Some(nbf) = claims["nbf"].as_u64() {
        if nbf > now_unix {
            return Err("the token is not valid yet".into());
        }
    }
    Ok(())
}

fn is_public(path: &str) -> bool {
    matches!(path, "/" | "/app.js" | "/favicon.ico" | "/health")
}

fn is_preflight(req: &Request) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The bearer token of a request: the `Authorization` header, or an `access_token` query
/// parameter (for links and players that cannot set headers).
fn presented_token(req: &Request) -> Option<String> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("access_token="))
            .map(|t| t.to_string())
    })
}

/// Refuses requests without a valid token (401 with `WWW-Authenticate: Bearer`).
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let auth = &state.auth;
    if !auth.enabled() || is_public(req.uri().path()) || is_preflight(&req) {
        return next.run(req).await;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let verdict = match presented_token(&req) {
        None => Err("a bearer token is required (Authorization: Bearer ...)".to_string()),
        Some(t) => auth.accepts(&t, now),
    };
    match verdict {
        Ok(()) => next.run(req).await,
        Err(why) => {
            tracing::info!(path = %req.uri().path(), reason = %why, "request refused: not authenticated");
            let mut r = ApiError::Unauthorized(why).into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"lumacast\""),
            );
            r
        }
    }
}

/// CORS: answers preflights and marks answers for the configured origins (`*` = any).
pub async fn cors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed: Option<HeaderValue> = match &origin {
        _ if state.cors_origins.iter().any(|o| o == "*") => Some(HeaderValue::from_static("*")),
        Some(o) => o
            .to_str()
            .ok()
            .filter(|o| state.cors_origins.iter().any(|a| a == o))
            .and(Some(o.clone())),
        None => None,
    };
    let preflight = is_preflight(&req);
    let whep = req.uri().path().starts_with("/whep/");
    let mut r = if preflight && !whep {
        StatusCode::NO_CONTENT.into_response()
    } else {
        // WHEP's own OPTIONS handler adds Accept-Post and the ICE server links.
        next.run(req).await
    };
    let h = r.headers_mut();
    if let Some(a) = allowed {
        let any = a == "*";
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, a);
        if !any {
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Location, ETag, Link, Accept-Patch, Retry-After"),
        );
        if preflight {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, PATCH, DELETE, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Content-Type, Authorization, If-Match"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
    } else if origin.is_some() {
        // A browser on an origin we do not know: no CORS headers, so it cannot read us.
        h.remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
        h.remove(header::ACCESS_CONTROL_EXPOSE_HEADERS);
        h.remove(header::ACCESS_CONTROL_ALLOW_METHODS);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token signed with HS256 whatever `alg` its header names (so that a forged
    /// header can be tried).
    fn jwt(secret: &[u8], alg: &str, claims: serde_json::Value) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let h = b64.encode(serde_json::json!({"alg": alg, "typ": "JWT"}).to_string());
        let p = b64.encode(claims.to_string());
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let s = b64.encode(ring::hmac::sign(&key, format!("{h}.{p}").as_bytes()).as_ref());
        format!("{h}.{p}.{s}")
    }

    #[test]
    fn static_token_and_hs256_jwt_with_expiry() {
        let a = AuthConfig {
            token: Some("s3cret".into()),
            jwt_secret: Some("key".into()),
        };
        let now = 1_800_000_000;
        assert!(a.accepts("s3cret", now).is_ok());
        assert!(a.accepts("s3cre", now).is_err());
        let good = jwt(b"key", "HS256", serde_json::json!({"exp": now + 60}));
        assert!(a.accepts(&good, now).is_ok());
        let expired = jwt(b"key", "HS256", serde_json::json!({"exp": now - 1}));
        assert!(a.accepts(&expired, now).unwrap_err().contains("expired"));
        let no_exp = jwt(b"key", "HS256", serde_json::json!({"sub": "x"}));
        assert!(a.accepts(&no_exp, now).unwrap_err().contains("exp"));
        let other_key = jwt(b"nope", "HS256", serde_json::json!({"exp": now + 60}));
        assert!(a
            .accepts(&other_key, now)
            .unwrap_err()
            .contains("signature"));
        let none_alg = jwt(b"key", "none", serde_json::json!({"exp": now + 60}));
        assert!(a.accepts(&none_alg, now).unwrap_err().contains("HS256"));
        let early = jwt(
            b"key",
            "HS256",
            serde_json::json!({"exp": now + 60, "nbf": now + 30}),
        );
        assert!(a.accepts(&early, now).is_err());
        assert!(a.accepts("a.b.c", now).is_err());
    }
}
