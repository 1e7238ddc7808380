//! Publish targets at runtime: `GET /api/publish` lists them, `POST /api/publish` adds one
//! (`{"url": "…", "detector": "…", "token": "…"}`), `DELETE /api/publish/{id}` stops one
//! (its session is closed on the server first). Targets from `--publish` are listed too.

use super::ApiError;
use crate::publish::{AddError, TargetSpec};
use crate::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::time::Duration;

/// The window `bitrate_bps` and `fps` are measured over.
const WINDOW: Duration = Duration::from_secs(2);

/// Every publish target with its state, rate, keyframe requests and last error.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"status": "success", "targets": targets_json(&state, WINDOW)}))
}

/// The targets as `/api/publish` and `/api/stats` show them.
pub(crate) fn targets_json(state: &AppState, window: Duration) -> Vec<Value> {
    state
        .publish
        .list()
        .iter()
        .map(|t| t.json(window))
        .collect()
}

/// Adds a target: 201 with the target, 400 for a bad body or URL, 404 for an unknown
/// detector, 503 when the server has its maximum of targets.
pub async fn add(
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(e.body_text())
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })?;
    let field = |name: &str| -> Result<Option<String>, ApiError> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::BadRequest(format!("\"{name}\" must be a string"))),
        }
    };
    if !body.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object: {\"url\": \"…\", \"detector\": \"…\", \"token\": \"…\"}".into(),
        ));
    }
    let url = field("url")?.ok_or_else(|| ApiError::BadRequest("\"url\" is required".into()))?;
    let token = field("token")?;
    let mut spec = TargetSpec::parse(&url, token.as_deref()).map_err(ApiError::BadRequest)?;
    if let Some(d) = field("detector")? {
        if spec.detector.is_some() {
            return Err(ApiError::BadRequest(
                "name the detector either in \"detector\" or as DETECTOR=URL, not both".into(),
            ));
        }
        spec.detector = Some(d);
    }
    let target = state.publish.add(&state, spec).map_err(|e| match e {
        AddError::Detector(m) => ApiError::NotFound(m),
        AddError::Full => ApiError::Busy(e.to_string()),
    })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"status": "success", "target": target.json(WINDOW)})),
    ))
}

/// Stops target `id`: 200, or 404 when there is none.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    if state.publish.remove(id).await {
        Ok(Json(json!({"status": "success", "stopped": id})))
    } else {
        Err(ApiError::NotFound(format!("no publish target {id}")))
    }
}
