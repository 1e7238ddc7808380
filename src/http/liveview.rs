//! The ImSwitch-compatible `/LiveViewController/*` endpoints.

use super::{params, str_param, ApiError};
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

/// Starts capture and encoding for a detector; idempotent.
pub async fn start_live_view(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let p = params(query, &body)?;
    check_protocol(&p)?;
    let name = state.detectors.resolve(str_param(&p, "detectorName")?)?;
    // Parameters first: a bad one is a 400 and nothing starts.
    let ignored = super::stream::apply_imswitch_params(
        &state,
        &name,
        p.get("params").unwrap_or(&Value::Null),
    )?;
    let s = state.clone();
    let n = name.clone();
    let (_running, started) = tokio::task::spawn_blocking(move || s.detectors.start(&n)).await??;
    let (cell, _) = state.detectors.params(&name)?;
    Ok(Json(json!({
        "status": if started { "success" } else { "already_running" },
        "detector": name,
        "protocol": PROTOCOL,
        "params": cell.get().to_json(),
        "ignored": ignored,
    })))
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
    super::stream::apply_imswitch_params(&state, &name, p.get("params").unwrap_or(&Value::Null))?;
    let session = open_viewer(&state, &name, &sdp).await?;
    Ok(Json(json!({
        "status": "success",
        "sdp": session.answer_sdp,
        "type": "answer",
        "detector": name,
        "viewer_id": session.id,
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
) -> Result<lumacast_rtc::ViewerSession, ApiError> {
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
    info!(detector = %name, viewer = session.id, "viewer answered");
    Ok(session)
}
