//! Per-detector stream parameters, snapshots, histograms and pushed frames:
//! `/api/detectors/{name}/...` and ImSwitch's `setStreamParameters`/`getStreamParameters`.

use super::{imswitch_request, params, str_param, ApiError};
use crate::params::{from_imswitch, ParamsCell, SourceShape};
use crate::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use bytes::Bytes;
use lumacast_frame::{histogram, DisplayMapper, Frame, I420Frame, PixelFormat, WindowMode};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tracing::info;

pub(crate) type Window = Option<(u32, u32)>;

/// Largest pushed frame body: 8192 x 8192 Mono16 plus the header (the push format itself
/// allows more; this server does not buffer more per request).
pub const MAX_PUSH_BODY_BYTES: usize = 8192 * 8192 * 2 + lumacast_capture::PUSH_HEADER_LEN;

fn params_view(state: &AppState, name: &str, cell: &ParamsCell, shape: SourceShape) -> Value {
    let p = cell.get();
    let running = state.detectors.running(name);
    let newest = running.as_ref().map(|r| r.latest.get());
    let window = newest.as_ref().and_then(|n| n.1);
    let output = (shape.width != u32::MAX)
        .then(|| p.geometry.output_size(shape.width, shape.height).ok())
        .flatten();
    // Where the shown picture sits in the detector frame (the newest frame's size, else
    // the nominal one), so that a viewer can map a point back to detector pixels.
    let (fw, fh) = match newest.as_ref().and_then(|n| n.0.as_ref()) {
        Some(f) => (f.width, f.height),
        None => (shape.width, shape.height),
    };
    let placement = (fw != u32::MAX)
        .then(|| p.geometry.placement(fw, fh).ok())
        .flatten()
        .map(|pl| {
            json!({"x0": pl.x0, "y0": pl.y0, "factor": pl.factor, "width": pl.width,
                   "height": pl.height, "frame_width": fw, "frame_height": fh})
        });
    json!({
        "status": "success",
        "detector": name,
        "running": running.is_some(),
        "params": p.to_json(),
        "effective_window": window.map(|(a, b)| json!([a, b])),
        "output_size": output.map(|(w, h)| json!([w, h])),
        "placement": placement,
        "source": {
            "width": (shape.width != u32::MAX).then_some(shape.width),
            "height": (shape.height != u32::MAX).then_some(shape.height),
            "pixel_format": shape.format.name(),
            "max_value": shape.format.max_value(),
        },
    })
}

/// `GET /api/detectors/{name}/params`: the parameters in force.
pub async fn get_params(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (cell, shape) = state.detectors.params(&name)?;
    Ok(Json(params_view(&state, &name, &cell, shape)))
}

/// `PATCH /api/detectors/{name}/params`: changes some parameters of a (running or not)
/// stream; all-or-nothing, 400 naming the first bad field.
pub async fn patch_params(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let (cell, shape) = state.detectors.params(&name)?;
    let Json(body) = body.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(e.body_text())
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })?;
    let Value::Object(patch) = body else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object of parameters".into(),
        ));
    };
    cell.update(|p| p.patched(&patch, shape))?;
    let change = Value::Object(patch);
    info!(detector = %name, %change, "stream parameters set");
    Ok(Json(params_view(&state, &name, &cell, shape)))
}

/// Applies ImSwitch-style `params` to one detector; returns the names it ignored.
pub(crate) fn apply_imswitch_params(
    state: &AppState,
    name: &str,
    params: &Value,
) -> Result<Vec<String>, ApiError> {
    let map = match params {
        Value::Null => return Ok(vec![]),
        Value::Object(m) => m,
        _ => {
            return Err(ApiError::BadRequest(
                "\"params\" must be a JSON object".into(),
            ))
        }
    };
    let (cell, shape) = state.detectors.params(name)?;
    let (patch, ignored) = from_imswitch(map, shape)?;
    cell.update(|p| p.patched(&patch, shape))?;
    if !patch.is_empty() {
        let change = Value::Object(patch);
        info!(detector = %name, %change, ?ignored, "stream parameters set (ImSwitch names)");
    }
    Ok(ignored)
}

/// The parameters of `name` as ImSwitch's frontend reads them: ours plus ImSwitch's
/// names, `protocol` and `detector_name`.
pub(crate) fn imswitch_view(state: &AppState, name: &str) -> Result<Value, ApiError> {
    let (cell, shape) = state.detectors.params(name)?;
    let mut v = cell.get().to_imswitch_json(shape);
    v["detector_name"] = json!(name);
    Ok(v)
}

/// Applies ImSwitch-style parameters to every detector in `names`, all or none: each
/// is validated first, so a value bad for one changes none. Returns the names that have
/// no meaning here.
pub(crate) fn apply_imswitch_to(
    state: &AppState,
    names: &[String],
    stream: &Map<String, Value>,
) -> Result<Vec<String>, ApiError> {
    let mut ignored = vec![];
    for n in names {
        let (cell, shape) = state.detectors.params(n)?;
        let (patch, i) = from_imswitch(stream, shape)?;
        cell.get().patched(&patch, shape)?;
        ignored = i;
    }
    for n in names {
        apply_imswitch_params(state, n, &Value::Object(stream.clone()))?;
    }
    Ok(ignored)
}

/// The keys of `stream` that took effect (all but the ignored ones).
pub(crate) fn applied(stream: &Map<String, Value>, ignored: &[String]) -> Vec<String> {
    stream
        .keys()
        .filter(|k| !ignored.contains(k))
        .cloned()
        .collect()
}

fn require_some(stream: &Map<String, Value>, what: &str) -> Result<(), ApiError> {
    if stream.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "{what}: no stream parameters in the body (send them as a JSON object, \
             e.g. {{\"max_width\": 640, \"throttle_ms\": 50}})"
        )));
    }
    Ok(())
}

/// ImSwitch's `POST /LiveViewController/setStreamParameters?protocol=webrtc` with the
/// parameters as the whole JSON body (as ImSwitch's frontend sends them; FastAPI does
/// not wrap a single dict parameter). Our older spelling, `{"protocol": ..,
/// "detectorName": .., "params": {..}}`, works too. Without a detector name the
/// parameters go to every detector (ImSwitch sets them per protocol), all or none.
pub async fn set_stream_parameters(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req = imswitch_request(query, &body, &["protocol", "detectorName"])?;
    super::liveview::check_protocol(&req.control)?;
    let names = match str_param(&req.control, "detectorName")? {
        Some(n) if !n.is_empty() => vec![state.detectors.resolve(Some(n))?],
        _ => state.detectors.names(),
    };
    require_some(&req.stream, "setStreamParameters")?;
    let mut ignored = apply_imswitch_to(&state, &names, &req.stream)?;
    let applied = applied(&req.stream, &ignored);
    ignored.extend(req.ignored);
    let mut per = Map::new();
    for n in &names {
        per.insert(n.clone(), imswitch_view(&state, n)?);
    }
    let first = per.values().next().cloned().unwrap_or(Value::Null);
    let live: Vec<&String> = names
        .iter()
        .filter(|n| state.detectors.running(n).is_some())
        .collect();
    let message = if live.is_empty() {
        "parameters set (no active streams)".to_string()
    } else {
        format!(
            "parameters updated live on {} stream(s); no restart required",
            live.len()
        )
    };
    Ok(Json(json!({
        "status": "success",
        "protocol": "webrtc",
        "params": first,
        "detectors": per,
        "updated_detectors": live,
        "applied": applied,
        "ignored": ignored,
        "message": message,
    })))
}

/// ImSwitch's `POST /LiveViewController/setDetectorStreamParameters?detectorName=..`,
/// body `{"protocol": "webrtc", ...params}`: one detector, applied live when it runs.
pub async fn set_detector_stream_parameters(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req = imswitch_request(query, &body, &["protocol", "detectorName"])?;
    super::liveview::check_protocol(&req.control)?;
    let name = match str_param(&req.control, "detectorName")? {
        Some(n) if !n.is_empty() => state.detectors.resolve(Some(n))?,
        _ => {
            return Err(ApiError::BadRequest(
                "\"detectorName\" is required (query parameter)".into(),
            ))
        }
    };
    require_some(&req.stream, "setDetectorStreamParameters")?;
    let mut ignored = apply_imswitch_to(&state, std::slice::from_ref(&name), &req.stream)?;
    let applied = applied(&req.stream, &ignored);
    ignored.extend(req.ignored);
    let live = state.detectors.running(&name).is_some();
    Ok(Json(json!({
        "status": "success",
        "detector": name,
        "params": imswitch_view(&state, &name)?,
        "restarted": false,
        "updated_live": live,
        "applied": applied,
        "ignored": ignored,
    })))
}

/// ImSwitch's `GET /LiveViewController/getStreamParameters`: our fields (`params`,
/// `detectors`, `active_detectors`) and ImSwitch's (`protocols.webrtc`,
/// `current_protocol`, `current_active_protocols`, `total_active_streams`,
/// `per_detector`). `protocols.webrtc` holds the parameters of `detectorName` (default:
/// the first running detector, else the first one): there are no protocol-wide
/// defaults here, every detector has its own.
pub async fn get_stream_parameters(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = params(query, &Bytes::new())?;
    super::liveview::check_protocol(&p)?;
    let name = match str_param(&p, "detectorName")? {
        Some(n) if !n.is_empty() => state.detectors.resolve(Some(n))?,
        _ => match state.detectors.first_running() {
            Some(n) => n,
            None => state.detectors.resolve(None)?,
        },
    };
    let mut per = Map::new();
    for n in state.detectors.names() {
        per.insert(n.clone(), imswitch_view(&state, &n)?);
    }
    let active: Vec<String> = state
        .detectors
        .names()
        .into_iter()
        .filter(|n| state.detectors.running(n).is_some())
        .collect();
    let active_protocols: Map<String, Value> = active
        .iter()
        .map(|n| (n.clone(), json!("webrtc")))
        .collect();
    let view = imswitch_view(&state, &name)?;
    let mut webrtc = view.clone();
    webrtc["active_detectors"] = json!(active);
    webrtc["is_active"] = json!(!active.is_empty());
    Ok(Json(json!({
        "status": "success",
        "protocol": "webrtc",
        "detector": name,
        "params": view,
        "detectors": per.clone(),
        "active_detectors": active,
        "is_active": !active.is_empty(),
        "current_protocol": if active.is_empty() { Value::Null } else { json!("webrtc") },
        "current_active_protocols": active_protocols,
        "total_active_streams": active.len(),
        "protocols": {"webrtc": webrtc},
        "per_detector": per,
    })))
}

/// The newest raw frame of a running detector with its display window, or a 409 saying
/// why there is none.
pub(crate) fn latest_frame(state: &AppState, name: &str) -> Result<(Arc<Frame>, Window), ApiError> {
    state.detectors.resolve(Some(name))?;
    let running = state.detectors.running(name).ok_or_else(|| {
        ApiError::Conflict(format!(
            "detector \"{name}\" is not running: start it (startLiveView) first"
        ))
    })?;
    match running.latest.get() {
        (Some(f), w) => Ok((f, w)),
        (None, _) => Err(ApiError::Conflict(format!(
            "detector \"{name}\" has not delivered a frame yet"
        ))),
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct SnapshotQuery {
    /// `raw` (default) or `display`.
    kind: Option<String>,
    /// `png` (default) or `tiff` (raw only).
    format: Option<String>,
}

/// `GET /api/detectors/{name}/snapshot`: the newest raw frame losslessly (16-bit PNG or
/// TIFF), or with `kind=display` the picture as viewers see it (8-bit colour PNG).
pub async fn snapshot(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<SnapshotQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let display = match q.kind.as_deref().unwrap_or("raw") {
        "raw" => false,
        "display" => true,
        other => {
            return Err(ApiError::BadRequest(format!(
                "kind \"{other}\" is not \"raw\" or \"display\""
            )))
        }
    };
    let tiff = match q.format.as_deref().unwrap_or("png") {
        "png" => false,
        "tiff" | "tif" if !display => true,
        "tiff" | "tif" => {
            return Err(ApiError::BadRequest(
                "the displayed picture is only available as png".into(),
            ))
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "format \"{other}\" is not \"png\" or \"tiff\""
            )))
        }
    };
    let (frame, window) = latest_frame(&state, &name)?;
    let settings = state.detectors.params(&name)?.0.get();
    let bytes = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        if display {
            let mut s = settings.display;
            // Show exactly what viewers see: the auto window as it stands now.
            if let (WindowMode::Auto { .. }, Some((min, max))) = (s.window, window) {
                s.window = WindowMode::Manual { min, max };
            }
            let mut mapper = DisplayMapper::new(s, settings.geometry);
            let mut out = I420Frame::default();
            mapper
                .map(&frame, &mut out)
                .map_err(|e| ApiError::Internal(format!("mapping the frame: {e}")))?;
            // RGB sources are encoded in limited range, mono ones in full range.
            let rgb = if frame.format == PixelFormat::Rgb8 {
                out.to_rgb8_limited()
            } else {
                out.to_rgb8()
            };
            encode_image(
                out.width,
                out.height,
                image::ExtendedColorType::Rgb8,
                &rgb,
                false,
            )
        } else {
            let (kind, data): (image::ExtendedColorType, std::borrow::Cow<[u8]>) = match frame
                .format
            {
                PixelFormat::Mono8 => (image::ExtendedColorType::L8, frame.data.as_slice().into()),
                PixelFormat::Rgb8 => (image::ExtendedColorType::Rgb8, frame.data.as_slice().into()),
                // PNG stores 16-bit samples big-endian, TIFF in the machine's order;
                // the image crate takes native-endian u16 bytes for both.
                PixelFormat::Mono16 { .. } => (
                    image::ExtendedColorType::L16,
                    frame
                        .data
                        .chunks_exact(2)
                        .flat_map(|c| u16::from_le_bytes([c[0], c[1]]).to_ne_bytes())
                        .collect::<Vec<u8>>()
                        .into(),
                ),
            };
            encode_image(frame.width, frame.height, kind, &data, tiff)
        }
    })
    .await??;
    let content_type = if tiff { "image/tiff" } else { "image/png" };
    let file = format!(
        "{name}-{}.{}",
        if display { "display" } else { "raw" },
        if tiff { "tiff" } else { "png" }
    );
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{file}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        bytes,
    ))
}

fn encode_image(
    width: u32,
    height: u32,
    kind: image::ExtendedColorType,
    data: &[u8],
    tiff: bool,
) -> Result<Vec<u8>, ApiError> {
    use image::ImageEncoder;
    let mut out = std::io::Cursor::new(Vec::new());
    let r = if tiff {
        image::codecs::tiff::TiffEncoder::new(&mut out).write_image(data, width, height, kind)
    } else {
        image::codecs::png::PngEncoder::new(&mut out).write_image(data, width, height, kind)
    };
    r.map_err(|e| ApiError::Internal(format!("encoding the snapshot: {e}")))?;
    Ok(out.into_inner())
}

#[derive(Debug, serde::Deserialize)]
pub struct HistogramQuery {
    bins: Option<usize>,
}

/// `GET /api/detectors/{name}/histogram?bins=256`: histogram of the newest raw frame
/// (every 4th pixel in both directions), with the window in force drawn from it.
pub async fn histogram_view(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<HistogramQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let bins = q.bins.unwrap_or(256);
    if !(2..=4096).contains(&bins) {
        return Err(ApiError::BadRequest(format!(
            "bins must be within 2..=4096, got {bins}"
        )));
    }
    let (frame, window) = latest_frame(&state, &name)?;
    let params = state.detectors.params(&name)?.0.get();
    let seq = frame.seq;
    let h = tokio::task::spawn_blocking(move || histogram(&frame, bins, 4)).await?;
    let window = match params.display.window {
        WindowMode::Manual { min, max } => Some((min, max)),
        WindowMode::Full => Some((0, h.max_value)),
        WindowMode::Auto { .. } => window,
    };
    Ok(Json(json!({
        "status": "success",
        "detector": name,
        "seq": seq,
        "bins": h.bins,
        "max_value": h.max_value,
        "samples": h.samples,
        "min": h.min,
        "max": h.max,
        "p0_1": h.percentile(0.1),
        "p99_9": h.percentile(99.9),
        "window": window.map(|(a, b)| json!([a, b])),
        "window_mode": params.to_json()["window_mode"],
    })))
}

/// `POST /api/detectors/{name}/frames`: one frame pushed by other software (header and
/// pixels, see `crates/capture/src/push.rs`). Starts the push detector on its first frame.
pub async fn push_frame(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let name = state.detectors.resolve(Some(&name))?;
    if state.detectors.kind(&name)? != "push" {
        return Err(ApiError::Conflict(format!(
            "detector \"{name}\" is not a push detector: configure one with --detector NAME=push"
        )));
    }
    // Parse (and copy the pixels) off the async threads: a frame can be megabytes.
    let (header, frame) =
        tokio::task::spawn_blocking(move || lumacast_capture::parse_push_frame(&body))
            .await?
            .map_err(|e| ApiError::BadFrame(e.to_string()))?;
    let running = match state.detectors.running(&name) {
        Some(r) => r,
        None => {
            let s = state.clone();
            let n = name.clone();
            tokio::task::spawn_blocking(move || s.detectors.start(&n))
                .await??
                .0
        }
    };
    let handle = running
        .push
        .as_ref()
        .ok_or_else(|| ApiError::Internal("push detector without a push channel".into()))?;
    let seq = frame.seq;
    handle
        .push(frame)
        .map_err(|e| ApiError::Unavailable(format!("detector \"{name}\" is stopping: {e}")))?;
    Ok(Json(json!({
        "status": "success",
        "detector": name,
        "width": header.width,
        "height": header.height,
        "pixel_format": header.format.name(),
        "seq": seq,
        "frames_received": handle.frames_received(),
        "frames_replaced": handle.frames_replaced(),
    })))
}
