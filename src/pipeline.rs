//! The encoder thread of one detector: take the newest frame, convert, encode once,
//! packetize once, publish to every viewer.

use crate::params::{ParamsCell, StreamParams};
use lumacast_capture::{FrameReceiver, RecvError};
use lumacast_encode::{Encoder, EncoderConfig};
use lumacast_frame::{DisplayMapper, Frame, I420Frame};
use lumacast_rtc::{FrameBus, MediaFrame, Packetizer};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// Keyframe requests from viewers are coalesced: at most one forced IDR per this interval.
/// A burst of joins or PLIs from many viewers then costs one keyframe, and a requester
/// waits at most this long (plus one frame) for its IDR.
pub const MIN_FORCED_KEYFRAME_INTERVAL: Duration = Duration::from_millis(200);

/// Per-frame timings kept for the stats endpoints (bounded ring).
const TIMING_WINDOW: usize = 512;

/// The newest raw frame the encoder thread took, for snapshots and histograms, and the
/// display window it was shown with. Holding it costs no copy: the encoder thread moves
/// each frame in when it is done with it.
#[derive(Default)]
pub struct LatestFrame {
    inner: Mutex<Newest>,
}

/// The newest raw frame (if any yet) and the display window (min, max) it was shown with.
pub type Newest = (Option<Arc<Frame>>, Option<(u32, u32)>);

impl LatestFrame {
    pub fn get(&self) -> Newest {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, frame: Frame, window: Option<(u32, u32)>) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = (Some(Arc::new(frame)), window);
    }
}

/// Counters and recent timings, written by the encoder thread, read by HTTP handlers.
#[derive(Default)]
pub struct PipelineStats {
    pub frames_in: AtomicU64,
    pub frames_encoded: AtomicU64,
    pub frames_idle: AtomicU64,
    /// Frames replaced in the latest-wins queue before the encoder took them.
    pub queue_drops: AtomicU64,
    pub keyframes_periodic: AtomicU64,
    pub keyframes_requested: AtomicU64,
    /// Frames skipped to honour `max_fps`.
    pub frames_throttled: AtomicU64,
    pub bytes_out: AtomicU64,
    pub convert_errors: AtomicU64,
    pub encode_errors: AtomicU64,
    /// Stage timings of recent frames.
    timings: Mutex<VecDeque<StageSample>>,
}

/// Where one frame spent its time on the encoder thread, in µs.
#[derive(Debug, Clone, Copy)]
pub struct StageSample {
    /// When the frame was taken from the queue.
    pub at: Instant,
    /// Captured → taken from the queue.
    pub queue_us: u32,
    /// `None` for frames taken while nobody watched (not converted or encoded).
    pub work: Option<StageWork>,
}

/// The encoder thread's work on one frame, in µs.
#[derive(Debug, Clone, Copy)]
pub struct StageWork {
    pub convert_us: u32,
    pub encode_us: u32,
    pub packetize_us: u32,
    /// Captured → packetized (ready for the viewers).
    pub capture_to_packetized_us: u32,
    pub bytes: u32,
    pub keyframe: bool,
}

/// Stage percentiles and rates over a recent window, for `/api/stats`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StageSummary {
    pub window_s: f64,
    pub fps_in: f64,
    pub fps_out: f64,
    pub bitrate_bps: f64,
    pub keyframes: usize,
    pub queue: Percentiles,
    pub convert: Percentiles,
    pub encode: Percentiles,
    pub packetize: Percentiles,
    pub capture_to_packetized: Percentiles,
}

/// Median and 99th percentile, in milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub samples: usize,
}

pub fn percentiles(mut v: Vec<u32>) -> Percentiles {
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    Percentiles {
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        samples: v.len(),
    }
}

impl PipelineStats {
    fn record(&self, sample: StageSample) {
        let mut t = self.timings.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() == TIMING_WINDOW {
            t.pop_front();
        }
        t.push_back(sample);
    }

    /// Rates and per-stage percentiles of the frames taken within the last `window`
    /// (at most the last 512 frames).
    pub fn summary(&self, window: Duration) -> StageSummary {
        let since = Instant::now().checked_sub(window);
        let t = self.timings.lock().unwrap_or_else(|e| e.into_inner());
        let recent: Vec<StageSample> = t
            .iter()
            .filter(|x| since.is_none_or(|s| x.at >= s))
            .copied()
            .collect();
        drop(t);
        // Rates over the span actually covered, so a detector started 2 s ago, or a ring
        // that holds less than the window, is not under-reported.
        let span = match (recent.first(), recent.last()) {
            (Some(a), Some(b)) if recent.len() > 1 => {
                let s = b.at.duration_since(a.at).as_secs_f64();
                s * recent.len() as f64 / (recent.len() - 1) as f64
            }
            _ => window.as_secs_f64(),
        }
        .max(1e-3);
        let work: Vec<StageWork> = recent.iter().filter_map(|x| x.work).collect();
        let col = |f: fn(&StageWork) -> u32| percentiles(work.iter().map(f).collect());
        StageSummary {
            window_s: span,
            fps_in: recent.len() as f64 / span,
            fps_out: work.len() as f64 / span,
            bitrate_bps: work.iter().map(|w| f64::from(w.bytes)).sum::<f64>() * 8.0 / span,
            keyframes: work.iter().filter(|w| w.keyframe).count(),
            queue: percentiles(recent.iter().map(|x| x.queue_us).collect()),
            convert: col(|w| w.convert_us),
            encode: col(|w| w.encode_us),
            packetize: col(|w| w.packetize_us),
            capture_to_packetized: col(|w| w.capture_to_packetized_us),
        }
    }
}

fn us(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

/// Prometheus handles of one encoder thread, labelled by detector (made once, not per frame).
struct StageMetrics {
    frames_captured: metrics::Counter,
    frames_taken: metrics::Counter,
    frames_dropped_queue: metrics::Counter,
    frames_encoded: metrics::Counter,
    bytes_encoded: metrics::Counter,
    keyframes_periodic: metrics::Counter,
    keyframes_requested: metrics::Counter,
    queue: metrics::Histogram,
    convert: metrics::Histogram,
    encode: metrics::Histogram,
    packetize: metrics::Histogram,
    capture_to_packetized: metrics::Histogram,
}

impl StageMetrics {
    fn new(detector: &str) -> Self {
        let d = detector.to_string();
        let stage = |s: &'static str| metrics::histogram!("lumacast_stage_seconds", "detector" => d.clone(), "stage" => s);
        StageMetrics {
            frames_captured: metrics::counter!("lumacast_frames_captured_total", "detector" => d.clone()),
            frames_taken: metrics::counter!("lumacast_frames_taken_total", "detector" => d.clone()),
            frames_dropped_queue: metrics::counter!("lumacast_frames_dropped_queue_total", "detector" => d.clone()),
            frames_encoded: metrics::counter!("lumacast_frames_encoded_total", "detector" => d.clone()),
            bytes_encoded: metrics::counter!("lumacast_encoded_bytes_total", "detector" => d.clone()),
            keyframes_periodic: metrics::counter!("lumacast_keyframes_total", "detector" => d.clone(), "reason" => "periodic"),
            keyframes_requested: metrics::counter!("lumacast_keyframes_total", "detector" => d.clone(), "reason" => "requested"),
            queue: stage("queue"),
            convert: stage("convert"),
            encode: stage("encode"),
            packetize: stage("packetize"),
            capture_to_packetized: metrics::histogram!("lumacast_capture_to_packetized_seconds", "detector" => d.clone()),
        }
    }
}

/// Shared switch for keyframe requests (viewer joins, PLI/FIR).
#[derive(Default)]
pub struct KeyframeGate {
    requested: AtomicBool,
}

impl KeyframeGate {
    pub fn request(&self) {
        self.requested.store(true, Ordering::Release);
    }
}

pub struct EncoderThread {
    pub name: String,
    pub rx: FrameReceiver,
    pub bus: FrameBus,
    pub gate: Arc<KeyframeGate>,
    pub stats: Arc<PipelineStats>,
    pub stop: Arc<AtomicBool>,
    /// The detector's nominal frame rate (encoder rate control).
    pub fps: f64,
    pub params: Arc<ParamsCell>,
    pub latest: Arc<LatestFrame>,
    /// Closed when the pipeline ends by itself, so nobody waits on a dead stream.
    pub viewers: lumacast_rtc::ViewerRegistry,
    /// Where the reason goes when the pipeline ends by itself.
    pub failure: Arc<std::sync::Mutex<Option<String>>>,
}

impl EncoderThread {
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("enc-{}", self.name))
            .spawn(move || {
                let span = tracing::info_span!("encoder", detector = %self.name);
                let _g = span.enter();
                self.run();
            })
    }

    /// After the loop: if it ended without being told to (the capture failed or its
    /// source ended), record why and close the viewers, who would get no more frames.
    fn ended(&self) {
        if self.stop.load(Ordering::Acquire) {
            return;
        }
        let reason = self.rx.failure().map_or_else(
            || "its source ended".to_string(),
            |e| format!("capture failed: {e}"),
        );
        error!(
            reason = %reason,
            viewers = self.viewers.len(),
            "detector stopped by itself; closing its viewers (the next offer restarts it)"
        );
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        self.viewers.close_all();
    }

    fn encoder_config(
        &self,
        p: &StreamParams,
        width: u32,
        height: u32,
        full_range: bool,
    ) -> EncoderConfig {
        let mut cfg = EncoderConfig::new(width, height);
        // Mono frames are mapped to full-range luma, RGB to BT.601 limited range
        // (crates/frame): the stream header must say which.
        cfg.full_range = full_range;
        let fps = p.max_fps.map_or(self.fps, |m| m.min(self.fps));
        cfg.fps = fps.clamp(1.0, 60.0) as f32;
        cfg.bitrate_bps = p
            .bitrate
            .unwrap_or_else(|| lumacast_encode::default_bitrate_bps(width, height, cfg.fps));
        cfg.keyframe_interval = p.keyint;
        cfg
    }

    fn run(self) {
        let mut params = self.params.get();
        let mut params_version = self.params.version();
        let mut mapper = DisplayMapper::new(params.display, params.geometry);
        // Throttle (max_fps): the next frame is sent when its capture time reaches `next_due`.
        let mut next_due: Option<Instant> = None;
        let mut logged_geometry_error = false;
        let mut i420 = I420Frame::default();
        let mut encoder: Option<Encoder> = None;
        let mut packetizer = Packetizer::new();
        let mut last_forced: Option<Instant> = None;
        let mut idle = true;
        let mut logged_convert_error = false;
        let started = Instant::now();
        let m = StageMetrics::new(&self.name);
        info!("encoder thread started");
        loop {
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let frame = match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(f) => f,
                Err(RecvError::Timeout) => continue,
                Err(RecvError::Disconnected) => break,
            };
            let taken = Instant::now();
            self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
            self.stats
                .queue_drops
                .store(self.rx.dropped(), Ordering::Relaxed);
            m.frames_taken.increment(1);
            m.frames_captured
                .absolute(self.stats.frames_in.load(Ordering::Relaxed) + self.rx.dropped());
            m.frames_dropped_queue.absolute(self.rx.dropped());
            let queue_wait = taken.saturating_duration_since(frame.captured_mono);
            m.queue.record(queue_wait.as_secs_f64());

            // Nobody watching: skip the CPU work entirely. A viewer that subscribes asks
            // for a keyframe, so it starts cleanly.
            if self.bus.receivers() == 0 {
                if !idle {
                    debug!("no viewers: encoding paused");
                }
                idle = true;
                self.stats.frames_idle.fetch_add(1, Ordering::Relaxed);
                let window = mapper.effective_window();
                self.stats.record(StageSample {
                    at: taken,
                    queue_us: us(queue_wait),
                    work: None,
                });
                // Snapshots and histograms work without viewers too.
                self.latest.set(frame, window);
                continue;
            }
            if idle {
                debug!("viewers present: encoding");
                idle = false;
            }

            // New parameters apply from this frame on.
            let v = self.params.version();
            if v != params_version {
                let new = self.params.get();
                info!(params = %new.to_json(), "stream parameters changed");
                if new.display != params.display {
                    mapper.set_settings(new.display);
                }
                if new.geometry != params.geometry {
                    mapper.set_geometry(new.geometry);
                    logged_geometry_error = false;
                }
                if let Some(enc) = encoder.as_mut() {
                    if new.keyint != params.keyint || new.max_fps != params.max_fps {
                        // Rebuilt at this frame, starting with an IDR.
                        encoder = None;
                    } else if new.bitrate != params.bitrate {
                        let c = *enc.config();
                        let b = new.bitrate.unwrap_or_else(|| {
                            lumacast_encode::default_bitrate_bps(c.width, c.height, c.fps)
                        });
                        if let Err(e) = enc.set_bitrate(b) {
                            warn!(error = %e, "changing the bitrate failed; rebuilding the encoder");
                            encoder = None;
                        }
                    }
                }
                if new.max_fps != params.max_fps {
                    next_due = None;
                }
                params = new;
                params_version = v;
            }

            // max_fps: skip frames that come sooner than the cap allows. The schedule
            // advances by whole periods, so a 30 fps source capped at 10 sends every third
            // frame rather than drifting.
            if let Some(max_fps) = params.max_fps {
                let period = Duration::from_secs_f64(1.0 / max_fps);
                let t = frame.captured_mono;
                match next_due {
                    Some(due) if t + period / 4 < due => {
                        self.stats.frames_throttled.fetch_add(1, Ordering::Relaxed);
                        self.stats.record(StageSample {
                            at: taken,
                            queue_us: us(queue_wait),
                            work: None,
                        });
                        continue;
                    }
                    Some(due) => {
                        let mut d = due + period;
                        if d + period < t {
                            d = t + period; // far behind (pause): restart the schedule
                        }
                        next_due = Some(d);
                    }
                    None => next_due = Some(t + period),
                }
            }

            if let Err(e) = mapper.map(&frame, &mut i420) {
                // A region of interest that no longer fits (the source changed size):
                // show the whole frame rather than nothing.
                if !logged_geometry_error
                    && mapper.geometry() != &lumacast_frame::Geometry::default()
                {
                    warn!(error = %e, width = frame.width, height = frame.height, "the stream geometry does not fit this frame; showing the whole frame (logged once)");
                    logged_geometry_error = true;
                    mapper.set_geometry(lumacast_frame::Geometry::default());
                    if mapper.map(&frame, &mut i420).is_err() {
                        continue;
                    }
                } else {
                    self.stats.convert_errors.fetch_add(1, Ordering::Relaxed);
                    if !logged_convert_error {
                        error!(error = %e, width = frame.width, height = frame.height, "cannot convert frames of this detector (logged once)");
                        logged_convert_error = true;
                    }
                    continue;
                }
            }

            let converted = Instant::now();
            m.convert
                .record(converted.duration_since(taken).as_secs_f64());

            let needs_new = match &encoder {
                Some(enc) => {
                    let c = enc.config();
                    c.width != i420.width || c.height != i420.height
                }
                None => true,
            };
            if needs_new {
                let full_range = !matches!(frame.format, lumacast_frame::PixelFormat::Rgb8);
                let cfg = self.encoder_config(&params, i420.width, i420.height, full_range);
                match Encoder::new(cfg) {
                    Ok(enc) => {
                        info!(
                            width = cfg.width,
                            height = cfg.height,
                            bitrate = cfg.bitrate_bps,
                            fps = cfg.fps,
                            keyint = cfg.keyframe_interval,
                            threads = cfg.threads,
                            slices = cfg.slices,
                            "encoder ready"
                        );
                        encoder = Some(enc);
                        last_forced = Some(Instant::now());
                    }
                    Err(e) => {
                        self.stats.encode_errors.fetch_add(1, Ordering::Relaxed);
                        error!(error = %e, "cannot create the H.264 encoder");
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                }
            }
            let Some(enc) = encoder.as_mut() else {
                continue;
            };

            let mut forced = false;
            if self.gate.requested.load(Ordering::Acquire)
                && last_forced.is_none_or(|t| t.elapsed() >= MIN_FORCED_KEYFRAME_INTERVAL)
            {
                self.gate.requested.store(false, Ordering::Release);
                enc.request_keyframe();
                last_forced = Some(Instant::now());
                forced = true;
            }

            let t0 = Instant::now();
            let ts_ms = frame.captured_mono.duration_since(started).as_millis() as i64;
            let encoded = match enc.encode(&i420, ts_ms) {
                Ok(e) => e,
                Err(e) => {
                    self.stats.encode_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, "encoding failed; recreating the encoder");
                    encoder = None;
                    continue;
                }
            };
            let encoded_at = Instant::now();
            if encoded.skipped || encoded.data.is_empty() {
                continue;
            }
            m.encode.record(encoded_at.duration_since(t0).as_secs_f64());
            if encoded.keyframe {
                if forced {
                    self.stats
                        .keyframes_requested
                        .fetch_add(1, Ordering::Relaxed);
                    m.keyframes_requested.increment(1);
                } else {
                    self.stats
                        .keyframes_periodic
                        .fetch_add(1, Ordering::Relaxed);
                    m.keyframes_periodic.increment(1);
                }
            }
            let data = encoded.data;
            self.stats
                .bytes_out
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            let bytes = data.len() as u64;
            let payloads = packetizer.packetize(data);
            let packetized = Instant::now();
            m.packetize
                .record(packetized.duration_since(encoded_at).as_secs_f64());
            m.capture_to_packetized
                .record(packetized.duration_since(frame.captured_mono).as_secs_f64());
            m.frames_encoded.increment(1);
            m.bytes_encoded.increment(bytes);
            let rtp_ts = (frame.captured_mono.duration_since(started).as_micros() * 9 / 100) as u32;
            let captured_mono = frame.captured_mono;
            let media = Arc::new(MediaFrame {
                seq: frame.seq,
                rtp_ts,
                keyframe: encoded.keyframe,
                payloads,
                captured: frame.captured_mono,
                captured_us: frame.captured_us(),
                encoded: encoded_at,
            });
            self.bus.publish(media);
            // Off the critical path: the packets are out to the viewers already.
            self.latest.set(frame, mapper.effective_window());
            self.stats.frames_encoded.fetch_add(1, Ordering::Relaxed);
            self.stats.record(StageSample {
                at: taken,
                queue_us: us(queue_wait),
                work: Some(StageWork {
                    convert_us: us(converted.duration_since(taken)),
                    encode_us: us(encoded_at.duration_since(t0)),
                    packetize_us: us(packetized.duration_since(encoded_at)),
                    capture_to_packetized_us: us(
                        packetized.saturating_duration_since(captured_mono)
                    ),
                    bytes: bytes as u32,
                    keyframe: encoded.keyframe,
                }),
            });
        }
        self.ended();
        info!("encoder thread stopped");
    }
}
