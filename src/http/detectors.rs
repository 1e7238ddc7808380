//! `/api/detectors` and `/health`.

use crate::AppState;
use axum::extract::State;
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
