//! `/api/detectors` and `/health`.

use super::ApiError;
use crate::pipeline::percentiles;
use crate::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use std::time::Duration;

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

/// `?window_s=` of `/api/stats`.
#[derive(Debug, serde::Deserialize)]
pub struct StatsQuery {
    window_s: Option<f64>,
}

/// Default and largest window of `/api/stats`, seconds. The rings behind it hold the last
/// 512 frames (about 17 s at 30 fps), so longer windows would not be honest.
const STATS_WINDOW_S: f64 = 10.0;
const MAX_STATS_WINDOW_S: f64 = 60.0;

/// Per-detector pipeline numbers and per-viewer delivery over the last few seconds.
pub async fn stats(
    State(state): State<AppState>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let window_s = query.window_s.unwrap_or(STATS_WINDOW_S);
    if !window_s.is_finite() || !(0.1..=MAX_STATS_WINDOW_S).contains(&window_s) {
        return Err(ApiError::BadRequest(format!(
            "window_s must be within 0.1..={MAX_STATS_WINDOW_S}, got {window_s}"
        )));
    }
    let window = Duration::from_secs_f64(window_s);
    let mut out = Vec::new();
    for name in state.detectors.names() {
        let Some(r) = state.detectors.running(&name) else {
            out.push(json!({
                "detector": name,
                "running": false,
                "mjpeg": super::mjpeg::stats_json(&state, &name),
            }));
            continue;
        };
        let s = &r.stats;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let summary = s.summary(window);
        let viewers: Vec<Value> = r
            .viewers
            .snapshot(window)
            .into_iter()
            .map(|v| {
                let span = v.age.as_secs_f64().min(summary.window_s).max(1e-3);
                json!({
                    "id": v.id,
                    "state": v.state,
                    "age_s": v.age.as_secs_f64(),
                    "frames_sent": v.frames_sent,
                    "frames_dropped": v.frames_dropped,
                    "packets_sent": v.packets_sent,
                    "bytes_sent": v.bytes_sent,
                    "fps": v.window_frames as f64 / span,
                    "bitrate_bps": v.window_bytes as f64 * 8.0 / span,
                    "frame_to_first_packet": percentiles(v.first_packet_us),
                    "frame_to_last_packet": percentiles(v.last_packet_us),
                    "frame_to_first_handoff": percentiles(v.handoff_first_us),
                    "frame_to_last_handoff": percentiles(v.handoff_last_us),
                    "link": link_json(&v.link),
                })
            })
            .collect();
        out.push(json!({
            "detector": name,
            "running": true,
            "uptime_s": r.started.elapsed().as_secs_f64(),
            "window_s": summary.window_s,
            "fps_in": summary.fps_in,
            "fps_out": summary.fps_out,
            "bitrate_bps": summary.bitrate_bps,
            "stages": {
                "queue": summary.queue,
                "convert": summary.convert,
                "encode": summary.encode,
                "packetize": summary.packetize,
                "capture_to_packetized": summary.capture_to_packetized,
            },
            "keyframes_in_window": summary.keyframes,
            "frames_captured": load(&s.frames_in) + load(&s.queue_drops),
            "frames_in": load(&s.frames_in),
            "frames_dropped_at_queue": load(&s.queue_drops),
            "frames_encoded": load(&s.frames_encoded),
            "frames_idle": load(&s.frames_idle),
            "frames_throttled": load(&s.frames_throttled),
            "keyframes_periodic": load(&s.keyframes_periodic),
            "keyframes_requested": load(&s.keyframes_requested),
            "bytes_encoded": load(&s.bytes_out),
            "encode": summary.encode,
            "renditions": renditions_json(&r),
            "viewers": viewers,
            "mjpeg": super::mjpeg::stats_json(&state, &name),
        }));
    }
    Ok(Json(json!({
        "status": "success",
        "window_s": window_s,
        "process": crate::procinfo::current(),
        "udp_mux": state.rtc.mux.as_ref().map(|m| {
            let s = m.stats();
            json!({
                "local_addr": s.local_addr.map(|a| a.to_string()),
                "connections": s.connections,
                "routes": s.routes,
                "datagrams_in": s.datagrams_in,
                "datagrams_out": s.datagrams_out,
                "dropped_unknown": s.dropped_unknown,
                "dropped_full": s.dropped_full,
            })
        }),
        "detectors": out,
        "publish": super::publish::targets_json(&state, window),
    })))
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

/// A viewer's link as the API shows it: where its estimate comes from, the estimate, loss,
/// the rendition it gets and its send queue.
pub(crate) fn link_json(l: &lumacast_rtc::LinkStats) -> Value {
    json!({
        "feedback": l.feedback,
        "estimate_bps": l.estimate_bps.round(),
        "loss": (l.loss * 1e4).round() / 1e4,
        "queue_delay_ms": (l.queue_ms * 10.0).round() / 10.0,
        "rendition": l.rendition,
        "width": l.width,
        "height": l.height,
        "rendition_switches": l.switches,
        "pacing_bps": l.pacing_bps.round(),
        "send_queue_ms": (l.send_queue_ms * 10.0).round() / 10.0,
        "frames_dropped_link": l.frames_dropped_queue,
        "nack_requested": l.nack_requested,
        "nack_resent": l.nack_resent,
        "nack_refused": l.nack_refused,
        "rtx": l.rtx,
        "padding_bps": l.padding_bps.round(),
        "padding_packets": l.padding_packets,
        "metadata_messages": l.meta_sent,
        "metadata_dropped": l.meta_dropped,
    })
}

/// The detector's ladder: each step's size and bitrate, its viewers and what was encoded.
fn renditions_json(r: &crate::detector::Running) -> Vec<Value> {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    r.bus
        .ladder()
        .iter()
        .enumerate()
        .map(|(i, step)| {
            json!({
                "rendition": i,
                "width": step.width,
                "height": step.height,
                "bitrate_bps": step.bitrate_bps,
                "viewers": r.bus.receivers_of(i),
                "frames_encoded": load(&r.stats.rendition_frames[i]),
                "bytes_encoded": load(&r.stats.rendition_bytes[i]),
            })
        })
        .collect()
}
