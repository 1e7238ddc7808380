//! HTTP API: one file per family, one [`ApiError`].

mod access;
mod detectors;
mod error;
mod liveview;
mod mjpeg;
mod page;
mod publish;
mod sessions;
mod stream;
mod values;
mod whep;

pub use access::AuthConfig;
pub use error::ApiError;

pub(crate) use detectors::link_json;

use crate::AppState;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Largest request body accepted (an SDP offer is a few KB; 64 KB is the SDP limit).
pub const MAX_BODY_BYTES: usize = 128 * 1024;

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let imswitch = imswitch_routes();
    Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/favicon.ico", get(page::favicon))
        .route("/health", get(detectors::health))
        .route("/api/detectors", get(detectors::list))
        .route("/api/stats", get(detectors::stats))
        .route("/api/sessions", get(sessions::list))
        .route(
            "/api/sessions/{id}",
            axum::routing::delete(sessions::delete),
        )
        .route(
            "/api/sessions/{id}/ice-restart",
            post(sessions::ice_restart),
        )
        .route(
            "/api/detectors/{name}/params",
            get(stream::get_params).patch(stream::patch_params),
        )
        .route("/api/detectors/{name}/snapshot", get(stream::snapshot))
        .route("/api/detectors/{name}/mjpeg", get(mjpeg::stream))
        .route("/api/detectors/{name}/values", get(values::values))
        .route(
            "/api/detectors/{name}/histogram",
            get(stream::histogram_view),
        )
        .route(
            "/api/detectors/{name}/frames",
            post(stream::push_frame).layer(DefaultBodyLimit::max(stream::MAX_PUSH_BODY_BYTES)),
        )
        .route("/whep/{detector}", post(whep::offer).options(whep::options))
        .route(
            "/whep/{detector}/sessions/{id}",
            axum::routing::delete(whep::delete)
                .patch(whep::patch)
                .options(whep::options),
        )
        .route("/api/ice-servers", get(whep::ice_servers))
        .route("/api/publish", get(publish::list).post(publish::add))
        .route("/api/publish/{id}", axum::routing::delete(publish::delete))
        .route("/metrics", get(detectors::prometheus))
        .merge(imswitch.clone())
        .nest("/imswitch/api", imswitch)
        .fallback(not_found)
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::cors,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// ImSwitch's API (`LiveViewController`, the activity poll, the detector list), served
/// both at the root (our historical base) and under `/imswitch/api` (the base ImSwitch's
/// web frontend puts in front of every call). See docs/IMSWITCH.md.
fn imswitch_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/LiveViewController/setStreamParameters",
            post(stream::set_stream_parameters),
        )
        .route(
            "/LiveViewController/getStreamParameters",
            get(stream::get_stream_parameters),
        )
        .route(
            "/LiveViewController/getStreamDiagnostics",
            get(detectors::stats),
        )
        .route(
            "/LiveViewController/startLiveView",
            post(liveview::start_live_view).get(liveview::start_live_view),
        )
        .route(
            "/LiveViewController/stopLiveView",
            get(liveview::stop_live_view).post(liveview::stop_live_view),
        )
        .route(
            "/LiveViewController/webrtc_offer",
            post(liveview::webrtc_offer),
        )
        .route(
            "/LiveViewController/webrtc_ice_candidate",
            get(liveview::ice_candidate).post(liveview::ice_candidate),
        )
        .route(
            "/LiveViewController/getActiveStreams",
            get(liveview::active_streams),
        )
        .route(
            "/LiveViewController/getLiveViewActive",
            get(liveview::live_view_active),
        )
        .route(
            "/ViewController/getLiveViewActive",
            get(liveview::live_view_active),
        )
        .route(
            "/LiveViewController/setDetectorStreamParameters",
            post(stream::set_detector_stream_parameters),
        )
        .route(
            "/LiveViewController/getLongExposureInfo",
            get(liveview::long_exposure_info),
        )
        .route("/LiveViewController/mjpeg_stream", get(mjpeg::mjpeg_stream))
        .route(
            "/SettingsController/getDetectorNames",
            get(liveview::detector_names),
        )
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

/// Error answers made by axum itself (405 wrong method, 413 from a `Bytes` body, ...)
/// come as empty or plain-text bodies: give them the same JSON shape as ours.
async fn json_errors(r: axum::response::Response) -> axum::response::Response {
    let status = r.status();
    let plain = r
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.starts_with("text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let reason = status.canonical_reason().unwrap_or("error");
    let message = if text.trim().is_empty() {
        reason.to_string()
    } else {
        format!("{reason}: {}", text.trim())
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    let body = serde_json::json!({"status": "error", "message": message}).to_string();
    axum::response::Response::from_parts(parts, axum::body::Body::from(body))
}

/// Request parameters from the query string merged with a JSON object body (the body
/// wins), as ImSwitch clients send either.
pub(crate) fn params(
    query: HashMap<String, String>,
    body: &Bytes,
) -> Result<Map<String, Value>, ApiError> {
    let mut out: Map<String, Value> = query
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(out);
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("the request body is not UTF-8".into()))?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => {
            out.extend(map);
            Ok(out)
        }
        // axios sends `null` for "no data" with a JSON content type.
        Ok(Value::Null) => Ok(out),
        Ok(_) => Err(ApiError::BadRequest(
            "the request body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::BadRequest(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// A string parameter; present but not a string is a 400.
pub(crate) fn str_param<'a>(
    p: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, ApiError> {
    match p.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(ApiError::BadRequest(format!("\"{key}\" must be a string"))),
    }
}

/// An ImSwitch request taken apart: the keys that steer the call (`detectorName`,
/// `protocol`, ...; from the query or the body) and the stream parameters (from the body
/// only: its other keys, flat as ImSwitch's frontend sends them, and/or a `params`
/// object, which wins). Query keys that steer nothing are listed in `ignored`.
pub(crate) struct ImSwitchRequest {
    pub control: Map<String, Value>,
    pub stream: Map<String, Value>,
    pub ignored: Vec<String>,
}

pub(crate) fn imswitch_request(
    query: HashMap<String, String>,
    body: &Bytes,
    control_keys: &[&str],
) -> Result<ImSwitchRequest, ApiError> {
    let body = params(HashMap::new(), body)?;
    let mut control = Map::new();
    let mut ignored = Vec::new();
    for (k, v) in query {
        if control_keys.contains(&k.as_str()) {
            control.insert(k, Value::String(v));
        } else {
            ignored.push(k);
        }
    }
    let mut stream = Map::new();
    let mut nested = None;
    for (k, v) in body {
        if k == "params" {
            nested = Some(v);
        } else if control_keys.contains(&k.as_str()) {
            control.insert(k, v);
        } else {
            stream.insert(k, v);
        }
    }
    match nested {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => stream.extend(m),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "\"params\" must be a JSON object".into(),
            ))
        }
    }
    // A `protocol` among the parameters (ImSwitch echoes it in its `params`) must agree.
    if let Some(p) = stream.remove("protocol") {
        let mut m = Map::new();
        m.insert("protocol".into(), p);
        liveview::check_protocol(&m)?;
    }
    ignored.sort();
    Ok(ImSwitchRequest {
        control,
        stream,
        ignored,
    })
}
