//! `GET /api/sessions` and `DELETE /api/sessions/{id}`: every viewer of every detector.

use super::ApiError;
use crate::AppState;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};
use std::time::{Duration, UNIX_EPOCH};

/// All viewer sessions, oldest first.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let mut sessions = Vec::new();
    for name in state.detectors.names() {
        let Some(r) = state.detectors.running(&name) else {
            continue;
        };
        for v in r.viewers.snapshot(Duration::from_secs(10)) {
            sessions.push(json!({
                "id": v.id,
                "detector": name,
                "state": v.state,
                "remote_address": v.remote.map(|a| a.to_string()),
                "since_unix_ms": v.since.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
                "age_s": v.age.as_secs_f64(),
                "frames_sent": v.frames_sent,
                "bytes_sent": v.bytes_sent,
                "packets_sent": v.packets_sent,
                "frames_dropped_slow": v.frames_dropped,
                "link": super::detectors::link_json(&v.link),
            }));
        }
    }
    sessions.sort_by_key(|s| s["id"].as_u64());
    Json(json!({"status": "success", "count": sessions.len(), "sessions": sessions}))
}

/// Ends one viewer session, whatever its detector.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    for name in state.detectors.names() {
        if let Some(r) = state.detectors.running(&name) {
            if r.viewers.close(id) {
                tracing::info!(detector = %name, viewer = id, "session closed by request");
                return Ok(Json(
                    json!({"status": "success", "id": id, "detector": name}),
                ));
            }
        }
    }
    Err(ApiError::NotFound(format!("no viewer session {id}")))
}

/// `POST /api/sessions/{id}/ice-restart` with `{"sdp": OFFER}`: the viewer's ICE restart
/// (a new offer with new `ice-ufrag`/`ice-pwd`, e.g. from `createOffer({iceRestart:
/// true})` after its network changed) on the existing session: 200 with the new answer
/// `{"sdp", "type": "answer"}`; the same peer connection, DTLS and track go on. 400 for an
/// offer without credentials, 404 for an unknown session.
pub async fn ice_restart(
    State(state): State<AppState>,
    Path(id): Path<u64>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let sdp = body
        .get("sdp")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::BadRequest("\"sdp\" (the restart offer) is required".into()))?;
    let remote = lumacast_rtc::IceParams::parse(sdp)?;
    for name in state.detectors.names() {
        if let Some(r) = state.detectors.running(&name) {
            if r.viewers.contains(id) {
                let restarted = r.viewers.restart_ice(id, remote).await?;
                tracing::info!(detector = %name, viewer = id, generation = restarted.generation, "ICE restarted");
                return Ok(Json(json!({
                    "status": "success",
                    "type": "answer",
                    "sdp": restarted.answer_sdp,
                    "viewer_id": id,
                    "ice_restarts": restarted.generation,
                })));
            }
        }
    }
    Err(ApiError::NotFound(format!("no viewer session {id}")))
}
