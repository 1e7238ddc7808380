//! MJPEG, the fallback for clients without WebRTC (an `<img>`, a notebook, ImSwitch's
//! `MJPEGViewer`): `GET /api/detectors/{name}/mjpeg` and ImSwitch's
//! `GET /LiveViewController/mjpeg_stream?startStream=true&detectorName=..`.
//!
//! The answer is `multipart/x-mixed-replace; boundary=lumacastframe`, one JPEG per part,
//! of the picture WebRTC viewers see (the same display mapping, colour map, window, ROI,
//! binning and size limit; the auto window as the encoder applies it).
//!
//! One producer per detector, a thread named `mjpeg-{detector}`, maps and encodes each
//! picture once and hands it to every MJPEG reader of that detector through a
//! `tokio::sync::watch` channel: a slow reader skips pictures (latest wins), nothing
//! queues up. The producer runs only while at least one reader is connected; it takes a
//! new raw frame at most [`fps`] times per second and never the same frame twice (so at
//! most the detector's rate). At most [`MAX_CLIENTS_PER_DETECTOR`] readers per detector;
//! the next one gets a 503 with `Retry-After`.

use super::{params, str_param, ApiError};
use crate::params::StreamParams;
use crate::{App, AppState};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use lumacast_frame::{DisplayMapper, Frame, FrameError, I420Frame, PixelFormat, WindowMode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

/// MJPEG readers per detector at most; the next one is answered 503 with `Retry-After`.
pub const MAX_CLIENTS_PER_DETECTOR: usize = 8;

/// Pictures per second when the stream's `max_fps` is not set.
pub const DEFAULT_FPS: f64 = 15.0;

/// Pictures per second at most, whatever `max_fps` says (JPEG costs CPU per picture).
pub const MAX_FPS: f64 = 30.0;

/// JPEG quality (1..=100) of every picture.
pub const JPEG_QUALITY: u8 = 80;

/// The multipart boundary.
pub const BOUNDARY: &str = "lumacastframe";

/// How often a producer waiting for a new raw frame looks again.
const POLL: Duration = Duration::from_millis(4);

/// How often an idle reader checks that its detector still runs.
const READER_CHECK: Duration = Duration::from_secs(1);

/// Pictures per second of a detector's MJPEG stream: its `max_fps`, else [`DEFAULT_FPS`],
/// at most [`MAX_FPS`] (and never more than the detector delivers).
pub fn fps(params: &StreamParams) -> f64 {
    params.max_fps.unwrap_or(DEFAULT_FPS).clamp(0.1, MAX_FPS)
}

/// One detector's MJPEG hub: the newest encoded part, its readers and counters.
struct Hub {
    name: String,
    /// The newest part (boundary, headers, JPEG); `None` before the first picture.
    tx: watch::Sender<Option<Bytes>>,
    clients: AtomicUsize,
    producing: AtomicBool,
    pictures_encoded: AtomicU64,
    producers_started: AtomicU64,
    clients_total: AtomicU64,
    clients_refused: AtomicU64,
    bytes_encoded: AtomicU64,
    /// Time the last picture took to map and encode, µs.
    last_encode_us: AtomicU64,
}

type Hubs = Vec<(Weak<App>, String, Arc<Hub>)>;

/// The hubs of every server in this process (tests run several), keyed by the server's
/// state; entries of servers that are gone are dropped on the next look-up.
static HUBS: Mutex<Hubs> = Mutex::new(Vec::new());

fn find_hub(state: &AppState, name: &str) -> Option<Arc<Hub>> {
    let hubs = HUBS.lock().unwrap_or_else(|e| e.into_inner());
    let me = Arc::as_ptr(state);
    hubs.iter()
        .find(|(app, n, _)| app.as_ptr() == me && n == name)
        .map(|(_, _, h)| h.clone())
}

fn hub(state: &AppState, name: &str) -> Arc<Hub> {
    let mut hubs = HUBS.lock().unwrap_or_else(|e| e.into_inner());
    hubs.retain(|(app, _, _)| app.strong_count() > 0);
    let me = Arc::as_ptr(state);
    if let Some((_, _, h)) = hubs
        .iter()
        .find(|(app, n, _)| app.as_ptr() == me && n == name)
    {
        return h.clone();
    }
    let h = Arc::new(Hub {
        name: name.to_string(),
        tx: watch::Sender::new(None),
        clients: AtomicUsize::new(0),
        producing: AtomicBool::new(false),
        pictures_encoded: AtomicU64::new(0),
        producers_started: AtomicU64::new(0),
        clients_total: AtomicU64::new(0),
        clients_refused: AtomicU64::new(0),
        bytes_encoded: AtomicU64::new(0),
        last_encode_us: AtomicU64::new(0),
    });
    hubs.push((Arc::downgrade(state), name.to_string(), h.clone()));
    h
}

/// What `/api/stats` shows of a detector's MJPEG stream.
pub(crate) fn stats_json(state: &AppState, name: &str) -> Value {
    let Some(h) = find_hub(state, name) else {
        return json!({
            "clients": 0, "producing": false, "pictures_encoded": 0, "bytes_encoded": 0,
            "producers_started": 0, "clients_total": 0, "clients_refused": 0,
            "last_encode_ms": Value::Null, "max_clients": MAX_CLIENTS_PER_DETECTOR,
        });
    };
    json!({
        "clients": h.clients.load(Ordering::SeqCst),
        "producing": h.producing.load(Ordering::SeqCst),
        "pictures_encoded": h.pictures_encoded.load(Ordering::Relaxed),
        "bytes_encoded": h.bytes_encoded.load(Ordering::Relaxed),
        "producers_started": h.producers_started.load(Ordering::Relaxed),
        "clients_total": h.clients_total.load(Ordering::Relaxed),
        "clients_refused": h.clients_refused.load(Ordering::Relaxed),
        "last_encode_ms": match h.last_encode_us.load(Ordering::Relaxed) {
            0 => Value::Null,
            us => json!(us as f64 / 1000.0),
        },
        "max_clients": MAX_CLIENTS_PER_DETECTOR,
    })
}

/// A connected reader; leaving (its response body dropped) frees its place.
struct Client {
    hub: Arc<Hub>,
}

impl Drop for Client {
    fn drop(&mut self) {
        let left = self.hub.clients.fetch_sub(1, Ordering::SeqCst) - 1;
        info!(detector = %self.hub.name, clients = left, "MJPEG reader left");
    }
}

fn join(hub: &Arc<Hub>) -> Option<Client> {
    hub.clients
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < MAX_CLIENTS_PER_DETECTOR).then_some(n + 1)
        })
        .ok()?;
    hub.clients_total.fetch_add(1, Ordering::Relaxed);
    Some(Client { hub: hub.clone() })
}

/// Starts the producer unless it runs.
fn ensure_producer(state: &AppState, hub: &Arc<Hub>) -> Result<(), ApiError> {
    if hub
        .producing
        .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return Ok(());
    }
    // No picture of an earlier run: a new reader waits for a fresh one.
    hub.tx.send_replace(None);
    let (s, h) = (state.clone(), hub.clone());
    std::thread::Builder::new()
        .name(format!("mjpeg-{}", hub.name))
        .spawn(move || produce(s, h))
        .map(|_| ())
        .map_err(|e| {
            hub.producing.store(false, Ordering::SeqCst);
            ApiError::Internal(format!("cannot start the MJPEG thread: {e}"))
        })
}

/// The producer thread: runs while readers are connected.
fn produce(state: AppState, hub: Arc<Hub>) {
    let span = tracing::info_span!("mjpeg", detector = %hub.name);
    let _g = span.enter();
    loop {
        hub.producers_started.fetch_add(1, Ordering::Relaxed);
        info!("MJPEG producer started");
        run(&state, &hub);
        hub.producing.store(false, Ordering::SeqCst);
        info!("MJPEG producer stopped: no reader left");
        // A reader that came while we were leaving saw `producing` still true: serve it.
        if hub.clients.load(Ordering::SeqCst) == 0
            || hub
                .producing
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return;
        }
    }
}

fn run(state: &App, hub: &Hub) {
    let mut mapper = DisplayMapper::default();
    let mut i420 = I420Frame::default();
    let mut last: Option<(usize, u64)> = None;
    let mut next_due = Instant::now();
    let mut logged_error = false;
    while hub.clients.load(Ordering::SeqCst) > 0 {
        let now = Instant::now();
        if now < next_due {
            std::thread::sleep((next_due - now).min(Duration::from_millis(50)));
            continue;
        }
        let newest = state
            .detectors
            .running(&hub.name)
            .map(|r| r.latest.get())
            .and_then(|(f, w)| f.map(|f| (f, w)));
        let Some((frame, window)) = newest else {
            std::thread::sleep(POLL);
            continue;
        };
        let key = (Arc::as_ptr(&frame) as usize, frame.seq);
        if last == Some(key) {
            std::thread::sleep(POLL);
            continue;
        }
        last = Some(key);
        let Ok((cell, _)) = state.detectors.params(&hub.name) else {
            return;
        };
        let params = cell.get();
        let started = Instant::now();
        let shown = display_picture(&frame, window, &params, &mut mapper, &mut i420);
        match shown
            .map_err(|e| e.to_string())
            .and_then(|p| jpeg(&p, JPEG_QUALITY))
        {
            Ok(jpeg) => {
                let part = part(&jpeg, frame.seq);
                hub.pictures_encoded.fetch_add(1, Ordering::Relaxed);
                hub.bytes_encoded
                    .fetch_add(jpeg.len() as u64, Ordering::Relaxed);
                hub.tx.send_replace(Some(part));
                hub.last_encode_us.store(
                    started.elapsed().as_micros().max(1) as u64,
                    Ordering::Relaxed,
                );
                logged_error = false;
            }
            Err(e) => {
                if !logged_error {
                    warn!(error = %e, "MJPEG picture failed");
                    logged_error = true;
                }
            }
        }
        next_due = started + Duration::from_secs_f64(1.0 / fps(&params));
    }
}

/// A displayed picture, ready for an image encoder.
pub(crate) struct Shown {
    pub width: u32,
    pub height: u32,
    /// `L8` when the picture is grey (a mono source under a grey colour map: the luma
    /// plane as it is, a third of the work), else `Rgb8`.
    pub kind: image::ExtendedColorType,
    pub data: Vec<u8>,
}

/// The picture viewers see: `frame` mapped with `params`, the auto window replaced by
/// `window` (the one the encoder applied to this frame), as the `display` snapshot does.
pub(crate) fn display_picture(
    frame: &Frame,
    window: Option<(u32, u32)>,
    params: &StreamParams,
    mapper: &mut DisplayMapper,
    out: &mut I420Frame,
) -> Result<Shown, FrameError> {
    let mut s = params.display;
    if let (WindowMode::Auto { .. }, Some((min, max))) = (s.window, window) {
        s.window = WindowMode::Manual { min, max };
    }
    mapper.set_settings(s);
    if *mapper.geometry() != params.geometry {
        mapper.set_geometry(params.geometry);
    }
    mapper.map(frame, out)?;
    let (width, height) = (out.width, out.height);
    // Mono pictures are full range: neutral chroma means R = G = B = Y.
    let grey =
        frame.format != PixelFormat::Rgb8 && out.u.iter().chain(out.v.iter()).all(|&c| c == 128);
    let (kind, data) = if grey {
        (image::ExtendedColorType::L8, out.y.clone())
    } else if frame.format == PixelFormat::Rgb8 {
        // RGB sources are encoded in limited range, mono ones in full range.
        (image::ExtendedColorType::Rgb8, out.to_rgb8_limited())
    } else {
        (image::ExtendedColorType::Rgb8, out.to_rgb8())
    };
    Ok(Shown {
        width,
        height,
        kind,
        data,
    })
}

/// A picture as a baseline JPEG (chroma subsampled 4:2:0, as the H.264 stream is).
pub(crate) fn jpeg(p: &Shown, quality: u8) -> Result<Vec<u8>, String> {
    let (Ok(w), Ok(h)) = (u16::try_from(p.width), u16::try_from(p.height)) else {
        return Err(format!(
            "{}x{} is over JPEG's 65535x65535",
            p.width, p.height
        ));
    };
    let color = match p.kind {
        image::ExtendedColorType::L8 => jpeg_encoder::ColorType::Luma,
        _ => jpeg_encoder::ColorType::Rgb,
    };
    let mut out = Vec::with_capacity(p.data.len() / 8);
    let mut enc = jpeg_encoder::Encoder::new(&mut out, quality);
    enc.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
    enc.encode(&p.data, w, h, color)
        .map_err(|e| format!("JPEG encoding: {e}"))?;
    Ok(out)
}

/// One multipart part: boundary, headers, the JPEG, CRLF.
fn part(jpeg: &[u8], seq: u64) -> Bytes {
    let head = format!(
        "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nX-Frame-Seq: {seq}\r\n\r\n",
        jpeg.len()
    );
    let mut b = Vec::with_capacity(head.len() + jpeg.len() + 2);
    b.extend_from_slice(head.as_bytes());
    b.extend_from_slice(jpeg);
    b.extend_from_slice(b"\r\n");
    Bytes::from(b)
}

/// Opens an MJPEG stream of `name` (resolved): starts the detector when it is stopped
/// (as `startLiveView` does), takes a reader's place, starts the producer.
async fn open(state: AppState, name: String) -> Result<Response, ApiError> {
    let running = match state.detectors.running(&name) {
        Some(r) => r,
        None => {
            let (s, n) = (state.clone(), name.clone());
            tokio::task::spawn_blocking(move || s.detectors.start(&n))
                .await??
                .0
        }
    };
    let hub = hub(&state, &name);
    let Some(client) = join(&hub) else {
        hub.clients_refused.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::Busy(format!(
            "detector \"{name}\" has its maximum of {MAX_CLIENTS_PER_DETECTOR} MJPEG readers: \
             retry later or use WebRTC"
        )));
    };
    ensure_producer(&state, &hub)?;
    info!(detector = %name, clients = hub.clients.load(Ordering::SeqCst), "MJPEG reader joined");
    let mut rx = hub.tx.subscribe();
    // The picture already there goes out at once.
    rx.mark_changed();
    let reader = Reader {
        rx,
        stop: state.shutting_down.subscribe(),
        _client: client,
        running: Arc::downgrade(&running),
        state,
        name,
    };
    let body = futures_util::stream::unfold(reader, |mut r| async move {
        let part = r.next().await?;
        Some((Ok::<_, std::convert::Infallible>(part), r))
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                format!("multipart/x-mixed-replace; boundary={BOUNDARY}"),
            ),
            (
                header::CACHE_CONTROL,
                "no-cache, no-store, must-revalidate".to_string(),
            ),
            (header::PRAGMA, "no-cache".to_string()),
            (
                header::HeaderName::from_static("x-accel-buffering"),
                "no".to_string(),
            ),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// Resolves when [`stopping`] turns true; never if its watcher is gone.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await
    }
}

/// One reader's side: the next part, or the end when its detector stopped.
struct Reader {
    rx: watch::Receiver<Option<Bytes>>,
    stop: watch::Receiver<bool>,
    _client: Client,
    running: Weak<crate::detector::Running>,
    state: AppState,
    name: String,
}

impl Reader {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if !self.detector_runs() {
                info!(detector = %self.name, "MJPEG stream ends: the detector stopped");
                return None;
            }
            let next = tokio::select! {
                r = tokio::time::timeout(READER_CHECK, self.rx.changed()) => r,
                _ = stopped(&mut self.stop) => {
                    info!(detector = %self.name, "MJPEG stream ends: the server stops");
                    return None;
                }
            };
            match next {
                Ok(Ok(())) => {
                    if let Some(p) = self.rx.borrow_and_update().clone() {
                        return Some(p);
                    }
                }
                Ok(Err(_)) => return None,
                Err(_) => {}
            }
        }
    }

    /// Whether the detector still runs the pipeline this stream started on.
    fn detector_runs(&self) -> bool {
        self.state
            .detectors
            .running(&self.name)
            .is_some_and(|r| std::ptr::eq(Arc::as_ptr(&r), self.running.as_ptr()))
    }
}

/// `GET /api/detectors/{name}/mjpeg`: the displayed picture as an MJPEG stream.
pub async fn stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = state.detectors.resolve(Some(&name))?;
    open(state, name).await
}

/// ImSwitch's `GET /LiveViewController/mjpeg_stream?startStream=true&detectorName=..`
/// (the first detector without a name). `startStream=false` stops nothing here (an
/// MJPEG stream ends when its reader disconnects, and the detector keeps running for
/// its other viewers): a JSON 200 saying so.
pub async fn mjpeg_stream(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let p = params(query, &Bytes::new())?;
    let name = state.detectors.resolve(str_param(&p, "detectorName")?)?;
    let start = match str_param(&p, "startStream")?.map(str::to_ascii_lowercase) {
        None => true,
        Some(s) if matches!(s.as_str(), "true" | "1" | "yes" | "on") => true,
        Some(s) if matches!(s.as_str(), "false" | "0" | "no" | "off") => false,
        Some(s) => {
            return Err(ApiError::BadRequest(format!(
                "\"startStream\" must be true or false, not \"{s}\""
            )))
        }
    };
    if !start {
        let clients = find_hub(&state, &name).map_or(0, |h| h.clients.load(Ordering::SeqCst));
        return Ok(Json(json!({
            "status": "success",
            "detector": name,
            "started": false,
            "mjpeg_clients": clients,
            "message": "no MJPEG stream was started; nothing was stopped (an MJPEG stream \
                        ends when its reader disconnects; stopLiveView stops the detector)",
        }))
        .into_response());
    }
    open(state, name).await
}
