//! `/api/detectors` and `/health`.

use super::ApiError;
use crate::pipeline::percentiles;
use crate::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

pub async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "detectors": state.detectors.status() }))
}

/// Liveness plus what this build can do, so a user learns why something is missing
/// before trying it.
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    let enc = lumacast_encode::build_info();
    let camera = cfg!(feature = "camera");
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "detectors": state.detectors.names(),
        "features": {
            "camera": {
                "available": camera,
                "note": if camera { "built with the camera feature (nokhwa)" }
                        else { "not compiled in: rebuild with `cargo build --release --features camera` (needs libclang-dev)" },
            },
            "encoder_assembly": {
                "available": enc.assembly,
                "note": enc.note,
            },
        },
    }))
}

/// Per-detector pipeline numbers and per-viewer delivery, over the recent window.
pub async fn stats(State(state): State<AppState>) -> Json<Value> {
    let mut out = Vec::new();
    for name in state.detectors.names() {
        let Some(r) = state.detectors.running(&name) else {
            out.push(json!({"detector": name, "running": false}));
            continue;
        };
        let s = &r.stats;
        let secs = r.started.elapsed().as_secs_f64().max(1e-3);
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let (cap_to_enc, encode) = s.timing_percentiles();
        let viewers: Vec<Value> = r
            .viewers
            .snapshot()
            .into_iter()
            .map(|v| {
                json!({
                    "id": v.id,
                    "state": v.state,
                    "age_s": v.age.as_secs_f64(),
                    "frames_sent": v.frames_sent,
                    "frames_dropped": v.frames_dropped,
                    "packets_sent": v.packets_sent,
                    "bytes_sent": v.bytes_sent,
                    "bitrate_bps": if v.age.as_secs_f64() > 0.0 { v.bytes_sent as f64 * 8.0 / v.age.as_secs_f64() } else { 0.0 },
                    "frame_to_first_packet": percentiles(v.first_packet_us),
                    "frame_to_last_packet": percentiles(v.last_packet_us),
                })
            })
            .collect();
        out.push(json!({
            "detector": name,
            "running": true,
            "uptime_s": secs,
            "frames_captured": load(&s.frames_in) + load(&s.queue_drops),
            "frames_in": load(&s.frames_in),
            "frames_dropped_at_queue": load(&s.queue_drops),
            "frames_encoded": load(&s.frames_encoded),
            "frames_idle": load(&s.frames_idle),
            "fps_in": load(&s.frames_in) as f64 / secs,
            "keyframes_periodic": load(&s.keyframes_periodic),
            "keyframes_requested": load(&s.keyframes_requested),
            "bytes_encoded": load(&s.bytes_out),
            "capture_to_encoded": cap_to_enc,
            "encode": encode,
            "viewers": viewers,
        }));
    }
    Json(json!({"status": "success", "detectors": out}))
}

/// Prometheus text exposition of every lumacast metric.
pub async fn prometheus(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let handle = state.metrics.as_ref().ok_or_else(|| {
        ApiError::Unavailable("metrics are not available: another recorder is installed".into())
    })?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    ))
}
