//! The ImSwitch-compatible `/LiveViewController/*` endpoints.

use super::{imswitch_request, params, str_param, ApiError};
use crate::AppState;
use axum::extract::{Query, State};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashMap;
use tracing::info;

const PROTOCOL: &str = "webrtc";

pub(crate) fn check_protocol(p: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
    match str_param(p, "protocol")? {
        None => Ok(()),
        Some(x) if x.eq_ignore_ascii_case(PROTOCOL) => Ok(()),
        Some(x) => Err(ApiError::BadRequest(format!(
            "protocol \"{x}\" is not supported by this server: use \"webrtc\""
        ))),
    }
}

/// Starts capture and encoding for a detector; idempotent. `detectorName`, `protocol`
/// and `force` come from the query or the body; stream parameters from the body, flat
/// (ImSwitch's frontend) or under `params` (ImSwitch's Python clients). A `null` body is
/// no parameters. The parameters are applied first: a bad one is a 400 and nothing
/// starts. The answer's `params` carry ImSwitch's names beside ours, so the frontend can
/// save them and send them back.
pub async fn start_live_view(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    // `force` overrides ImSwitch's long-exposure refusal; this server never refuses.
    let req = imswitch_request(query, &body, &["detectorName", "protocol", "force"])?;
    check_protocol(&req.control)?;
    let name = state
        .detectors
        .resolve(str_param(&req.control, "detectorName")?)?;
    let mut ignored =
        super::stream::apply_imswitch_to(&state, std::slice::from_ref(&name), &req.stream)?;
    let applied = super::stream::applied(&req.stream, &ignored);
    ignored.extend(req.ignored);
    let s = state.clone();
    let n = name.clone();
    let (_running, started) = tokio::task::spawn_blocking(move || s.detectors.start(&n)).await??;
    info!(detector = %name, started, ?applied, ?ignored, "startLiveView");
    Ok(Json(json!({
        "status": if started { "success" } else { "already_running" },
        "detector": name,
        "protocol": PROTOCOL,
        "params": super::stream::imswitch_view(&state, &name)?,
        "applied": applied,
        "ignored": ignored,
    })))
}

/// ImSwitch's activity poll (`getLiveViewActive`, under `LiveViewController` and
/// `ViewController`): a bare JSON boolean, true while any detector streams.
pub async fn live_view_active(State(state): State<AppState>) -> Json<bool> {
    Json(state.detectors.first_running().is_some())
}

/// ImSwitch's `getLongExposureInfo`: ImSwitch refuses to stream above an exposure
/// threshold because its worker times out on slow frames. This server has no such limit
/// (the encoder waits for each frame, however slow) and knows no exposure time, so the
/// answer is "not a long exposure" with the exposure unknown (`null`) and `supported:
/// false` saying so.
pub async fn long_exposure_info(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = params(query, &Bytes::new())?;
    let name = state.detectors.resolve(str_param(&p, "detectorName")?)?;
    Ok(Json(json!({
        "status": "success",
        "detector": name,
        "exposureMs": Value::Null,
        "thresholdMs": Value::Null,
        "isLongExposure": false,
        "supported": false,
        "message": "lumacast has no long-exposure limit and does not know the exposure time: \
                    a slow detector streams at its own rate",
    })))
}

/// ImSwitch's `SettingsController/getDetectorNames`: the configured detectors, a bare
/// JSON array in configuration order.
pub async fn detector_names(State(state): State<AppState>) -> Json<Vec<String>> {
    Json(state.detectors.names())
}

/// Stops a detector (the first running one by default) and closes its viewers.
pub async fn stop_live_view(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let p = params(query, &body)?;
    let name = match str_param(&p, "detectorName")? {
        Some(n) if !n.is_empty() => state.detectors.resolve(Some(n))?,
        _ => match state.detectors.first_running() {
            Some(n) => n,
            None => {
                return Ok(Json(json!({
                    "status": "not_running",
                    "detector": Value::Null,
                    "protocol": PROTOCOL,
                })))
            }
        },
    };
    let s = state.clone();
    let n = name.clone();
    let stopped = tokio::task::spawn_blocking(move || s.detectors.stop(&n)).await??;
    Ok(Json(json!({
        "status": if stopped { "success" } else { "not_running" },
        "detector": name,
        "protocol": PROTOCOL,
    })))
}

/// Answers a browser's fully gathered offer; starts the detector when needed.
pub async fn webrtc_offer(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    extensions: axum::http::Extensions,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let p = params(query, &body)?;
    let sdp = str_param(&p, "sdp")?
        .ok_or_else(|| ApiError::BadRequest("missing \"sdp\"".into()))?
        .to_string();
    let typ = match str_param(&p, "type")? {
        Some(t) => Some(t),
        None => str_param(&p, "sdp_type")?,
    };
    if let Some(t) = typ {
        if t != "offer" {
            return Err(ApiError::BadRequest(format!(
                "\"type\" must be \"offer\", not \"{t}\""
            )));
        }
    }
    // Judge the offer before touching any detector: a bad offer changes nothing.
    lumacast_rtc::analyze_offer(&sdp)?;
    let name = state.detectors.resolve(str_param(&p, "detectorName")?)?;
    let ignored = super::stream::apply_imswitch_params(
        &state,
        &name,
        p.get("params").unwrap_or(&Value::Null),
    )?;
    let session = open_viewer(&state, &name, &sdp, client_addr(&extensions)).await?;
    Ok(Json(json!({
        "status": "success",
        "sdp": session.answer_sdp,
        "type": "answer",
        "detector": name,
        "viewer_id": session.id,
        "ignored": ignored,
    })))
}

pub async fn active_streams(State(state): State<AppState>) -> Json<Value> {
    let streams: Vec<Value> = state
        .detectors
        .status()
        .into_iter()
        .filter(|d| d.running)
        .map(|d| json!({"detector": d.name, "protocol": PROTOCOL, "viewers": d.viewers}))
        .collect();
    Json(json!({"status": "success", "active_streams": streams}))
}

/// Answers `sdp` for a viewer of detector `name` (resolved already), starting the
/// detector when it is not running. The offer must have passed `analyze_offer`.
pub(crate) async fn open_viewer(
    state: &AppState,
    name: &str,
    sdp: &str,
    client: Option<std::net::SocketAddr>,
) -> Result<lumacast_rtc::ViewerSession, ApiError> {
    if let Some(addr) = client {
        if !state.offers.allow(addr.ip(), std::time::Instant::now()) {
            return Err(ApiError::TooManyRequests(format!(
                "too many offers from {}: at most {} per second",
                addr.ip(),
                state.offers_rate()
            )));
        }
    }
    let total: usize = state
        .detectors
        .names()
        .iter()
        .filter_map(|n| state.detectors.running(n))
        .map(|r| r.viewers.len())
        .sum();
    if total >= state.max_viewers_total {
        return Err(ApiError::Busy(format!(
            "the server has its maximum of {} viewers",
            state.max_viewers_total
        )));
    }
    let running = match state.detectors.running(name) {
        Some(r) => r,
        None => {
            let s = state.clone();
            let n = name.to_string();
            tokio::task::spawn_blocking(move || s.detectors.start(&n))
                .await??
                .0
        }
    };
    let session = lumacast_rtc::answer_offer(
        &state.rtc,
        sdp,
        name,
        &running.bus,
        running.keyframe_request(),
        &running.viewers,
    )
    .await?;
    if let Some(addr) = client {
        running.viewers.set_remote(session.id, addr);
    }
    info!(detector = %name, viewer = session.id, client = ?client, "viewer answered");
    Ok(session)
}

/// The TCP peer of this request, when the server runs with connect info (`run`).
pub(crate) fn client_addr(extensions: &axum::http::Extensions) -> Option<std::net::SocketAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0)
}

/// ImSwitch's `webrtc_ice_candidate` (GET or POST): a candidate trickled by a client after
/// its offer. `viewer_id` (from the `webrtc_offer` answer) names the session; `candidate`
/// is the browser's candidate string (`candidate:...`) or its `RTCIceCandidate` JSON. An
/// empty candidate (end of candidates) is accepted and changes nothing.
pub async fn ice_candidate(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let p = params(query, &body)?;
    let name = state.detectors.resolve(str_param(&p, "detectorName")?)?;
    let candidate = match p.get("candidate") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => match o.get("candidate") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(ApiError::BadRequest(
                    "\"candidate\" must be a string or an RTCIceCandidate object".into(),
                ))
            }
        },
        Some(_) => {
            return Err(ApiError::BadRequest(
                "\"candidate\" must be a string or an RTCIceCandidate object".into(),
            ))
        }
    };
    let candidate = candidate.trim().trim_start_matches("a=").to_string();
    if candidate.is_empty() {
        return Ok(Json(
            json!({"status": "success", "detector": name, "added": 0}),
        ));
    }
    let id = match p.get("viewer_id") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::BadRequest(
            "\"viewer_id\" (from the webrtc_offer answer) is required to trickle a candidate"
                .into(),
        )
    })?;
    let running = state
        .detectors
        .running(&name)
        .ok_or_else(|| ApiError::NotFound(format!("detector \"{name}\" is not running")))?;
    let added = running.viewers.trickle(id, &format!("a={candidate}\r\n"))?;
    Ok(Json(
        json!({"status": "success", "detector": name, "viewer_id": id, "added": added}),
    ))
}
