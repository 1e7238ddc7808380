//! The encoder thread of one detector: take the newest frame, convert, encode once,
//! packetize once, publish to every viewer.

use crate::params::{ParamsCell, StreamParams};
use lumacast_capture::{FrameReceiver, RecvError};
use lumacast_encode::{Encoder, EncoderConfig};
use lumacast_frame::{DisplayMapper, Frame, I420Frame};
use lumacast_rtc::{FrameBus, MediaFrame, Packetizer, Rendition, MAX_RENDITIONS};
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
    /// Per rendition of the ladder: frames encoded and bytes out.
    pub rendition_frames: [AtomicU64; MAX_RENDITIONS],
    pub rendition_bytes: [AtomicU64; MAX_RENDITIONS],
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

/// Keyframe requests per rendition (viewer joins, PLI/FIR, a viewer moving to it).
#[derive(Default)]
pub struct KeyframeGate {
    requested: [AtomicBool; MAX_RENDITIONS],
}

impl KeyframeGate {
    /// Asks for an IDR of rendition `r` (ignored for a rendition that cannot exist).
    pub fn request(&self, r: usize) {
        if let Some(f) = self.requested.get(r) {
            f.store(true, Ordering::Release);
        }
    }

    fn pending(&self, r: usize) -> bool {
        self.requested[r].load(Ordering::Acquire)
    }

    fn clear(&self, r: usize) {
        self.requested[r].store(false, Ordering::Release);
    }
}

/// `max_fps`: which frames to send. The schedule advances by whole periods from the
/// capture times, so a 30 fps source capped at 10 sends every third frame rather than
/// drifting; a long pause restarts it.
#[derive(Debug, Default)]
pub struct Throttle {
    next_due: Option<Instant>,
}

impl Throttle {
    /// Forgets the schedule (the cap changed).
    pub fn reset(&mut self) {
        self.next_due = None;
    }

    /// Whether the frame captured at `t` is sent under a cap of `max_fps` (none: all are).
    pub fn admit(&mut self, t: Instant, max_fps: Option<f64>) -> bool {
        let Some(max_fps) = max_fps else {
            return true;
        };
        let period = Duration::from_secs_f64(1.0 / max_fps);
        match self.next_due {
            Some(due) if t + period / 4 < due => false,
            Some(due) => {
                let mut d = due + period;
                if d + period < t {
                    d = t + period; // far behind (pause): restart the schedule
                }
                self.next_due = Some(d);
                true
            }
            None => {
                self.next_due = Some(t + period);
                true
            }
        }
    }
}

/// Coalesces keyframe requests: at most one forced IDR per
/// [`MIN_FORCED_KEYFRAME_INTERVAL`] for one encoder.
#[derive(Debug, Default)]
pub struct KeyframeCoalescer {
    last_forced: Option<Instant>,
}

impl KeyframeCoalescer {
    /// Whether a pending request may force an IDR at `now`; if so it counts as forced.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self
            .last_forced
            .is_none_or(|t| now.saturating_duration_since(t) >= MIN_FORCED_KEYFRAME_INTERVAL)
        {
            self.last_forced = Some(now);
            true
        } else {
            false
        }
    }

    /// A new encoder starts with an IDR: that counts as the last forced one.
    pub fn started(&mut self, now: Instant) {
        self.last_forced = Some(now);
    }
}

/// One step of the ladder on the encoder thread: its own encoder and packetizer, and the
/// scaled picture for the steps below the top. Built when the first viewer subscribes to
/// the step, dropped when the last one leaves.
struct Lane {
    rendition: Rendition,
    encoder: Option<Encoder>,
    packetizer: Packetizer,
    /// The downscaled picture (steps below the top).
    i420: I420Frame,
    coalescer: KeyframeCoalescer,
}

/// What one lane produced for one frame.
struct LaneOutput {
    media: MediaFrame,
    encode: Duration,
    packetize: Duration,
    packetized_at: Instant,
    bytes: u64,
    forced: bool,
}

impl Lane {
    fn new(rendition: Rendition) -> Self {
        Lane {
            rendition,
            encoder: None,
            packetizer: Packetizer::new(),
            i420: I420Frame::default(),
            coalescer: KeyframeCoalescer::default(),
        }
    }
}

/// Parameters of the picture an encoder is built for (besides its size).
#[derive(Clone, Copy)]
struct EncodeSettings {
    fps: f64,
    keyint: u32,
    full_range: bool,
}

fn encoder_config(r: &Rendition, s: EncodeSettings) -> EncoderConfig {
    let mut cfg = EncoderConfig::new(r.width, r.height);
    // Mono frames are mapped to full-range luma, RGB to BT.601 limited range
    // (crates/frame): the stream header must say which.
    cfg.full_range = s.full_range;
    cfg.fps = s.fps.clamp(1.0, 60.0) as f32;
    cfg.bitrate_bps = r.bitrate_bps.min(u64::from(u32::MAX)) as u32;
    cfg.keyframe_interval = s.keyint;
    cfg
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

/// The encoder thread's state between frames (owned by the thread alone).
struct State {
    params: StreamParams,
    params_version: u64,
    mapper: DisplayMapper,
    throttle: Throttle,
    i420: I420Frame,
    lanes: Vec<Lane>,
    /// (top width, height, bitrate, steps) the lanes were built for.
    ladder_key: Option<(u32, u32, u64, Vec<u32>)>,
    idle: bool,
    logged_geometry_error: bool,
    logged_convert_error: bool,
    started: Instant,
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

    fn nominal_fps(&self, p: &StreamParams) -> f64 {
        p.max_fps.map_or(self.fps, |m| m.min(self.fps))
    }

    fn run(self) {
        let params = self.params.get();
        let mut st = State {
            params_version: self.params.version(),
            mapper: DisplayMapper::new(params.display, params.geometry),
            params,
            throttle: Throttle::default(),
            i420: I420Frame::default(),
            lanes: Vec::new(),
            ladder_key: None,
            idle: true,
            logged_geometry_error: false,
            logged_convert_error: false,
            started: Instant::now(),
        };
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
            self.on_frame(&mut st, &m, frame, taken);
        }
        self.ended();
        info!("encoder thread stopped");
    }

    /// Applies a parameter change at this frame.
    fn apply_params(&self, st: &mut State) {
        let v = self.params.version();
        if v == st.params_version {
            return;
        }
        let new = self.params.get();
        info!(params = %new.to_json(), "stream parameters changed");
        if new.display != st.params.display {
            st.mapper.set_settings(new.display);
        }
        if new.geometry != st.params.geometry {
            st.mapper.set_geometry(new.geometry);
            st.logged_geometry_error = false;
        }
        if new.keyint != st.params.keyint || new.max_fps != st.params.max_fps {
            // Rebuilt at this frame, each starting with an IDR.
            st.lanes.iter_mut().for_each(|l| l.encoder = None);
        }
        if new.max_fps != st.params.max_fps {
            st.throttle.reset();
        }
        // A bitrate or ladder change re-derives the ladder (see `update_ladder`).
        st.params = new;
        st.params_version = v;
    }

    /// (Re)builds the ladder for the top picture's size and bitrate; lanes keep their
    /// encoders when only their bitrate changes.
    fn update_ladder(&self, st: &mut State, width: u32, height: u32) {
        let fps = self.nominal_fps(&st.params) as f32;
        let top_bitrate = u64::from(
            st.params
                .bitrate
                .unwrap_or_else(|| lumacast_encode::default_bitrate_bps(width, height, fps)),
        );
        let key = (width, height, top_bitrate, st.params.ladder.clone());
        if st.ladder_key.as_ref() == Some(&key) {
            return;
        }
        let steps = lumacast_rtc::ladder(width, height, top_bitrate, &st.params.ladder);
        info!(
            ladder = %steps.iter().map(|r| format!("{}x{}@{}k", r.width, r.height, r.bitrate_bps / 1000)).collect::<Vec<_>>().join(" "),
            "rendition ladder"
        );
        let mut old = std::mem::take(&mut st.lanes);
        for r in &steps {
            let mut lane = match old
                .iter()
                .position(|l| l.rendition.width == r.width && l.rendition.height == r.height)
            {
                Some(i) => old.swap_remove(i),
                None => Lane::new(*r),
            };
            if lane.rendition.bitrate_bps != r.bitrate_bps {
                if let Some(enc) = lane.encoder.as_mut() {
                    let b = r.bitrate_bps.min(u64::from(u32::MAX)) as u32;
                    if let Err(e) = enc.set_bitrate(b) {
                        warn!(error = %e, "changing the bitrate failed; rebuilding the encoder");
                        lane.encoder = None;
                    }
                }
            }
            lane.rendition = *r;
            st.lanes.push(lane);
        }
        self.bus.set_ladder(steps);
        st.ladder_key = Some(key);
    }

    fn on_frame(&self, st: &mut State, m: &StageMetrics, frame: Frame, taken: Instant) {
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
        let skipped = StageSample {
            at: taken,
            queue_us: us(queue_wait),
            work: None,
        };

        // Nobody watching: skip the CPU work entirely. A viewer that subscribes asks
        // for a keyframe, so it starts cleanly.
        if self.bus.receivers() == 0 {
            if !st.idle {
                debug!("no viewers: encoding paused");
            }
            st.idle = true;
            st.lanes.iter_mut().for_each(|l| l.encoder = None);
            self.stats.frames_idle.fetch_add(1, Ordering::Relaxed);
            self.stats.record(skipped);
            // Snapshots and histograms work without viewers too.
            self.latest.set(frame, st.mapper.effective_window());
            return;
        }
        if st.idle {
            debug!("viewers present: encoding");
            st.idle = false;
        }

        self.apply_params(st);
        if !st.throttle.admit(frame.captured_mono, st.params.max_fps) {
            self.stats.frames_throttled.fetch_add(1, Ordering::Relaxed);
            self.stats.record(skipped);
            return;
        }

        if !self.map(st, &frame) {
            return;
        }
        let converted = Instant::now();
        let convert = converted.duration_since(taken);
        m.convert.record(convert.as_secs_f64());
        let (width, height) = (st.i420.width, st.i420.height);
        self.update_ladder(st, width, height);

        let settings = EncodeSettings {
            fps: self.nominal_fps(&st.params),
            keyint: st.params.keyint,
            full_range: !matches!(frame.format, lumacast_frame::PixelFormat::Rgb8),
        };
        let rtp_ts = (frame.captured_mono.duration_since(st.started).as_micros() * 9 / 100) as u32;
        let ts_ms = frame.captured_mono.duration_since(st.started).as_millis() as i64;
        let mut total = StageWork {
            convert_us: us(convert),
            encode_us: 0,
            packetize_us: 0,
            capture_to_packetized_us: 0,
            bytes: 0,
            keyframe: false,
        };
        let mut any = false;
        for r in 0..st.lanes.len() {
            if self.bus.receivers_of(r) == 0 {
                st.lanes[r].encoder = None;
                continue;
            }
            let t0 = Instant::now();
            let Some(out) = self.encode_lane(st, r, &frame, settings, rtp_ts, ts_ms) else {
                continue;
            };
            // The scaling of a smaller step counts as conversion.
            let scale = out
                .media
                .encoded
                .duration_since(t0)
                .saturating_sub(out.encode);
            m.encode.record(out.encode.as_secs_f64());
            m.packetize.record(out.packetize.as_secs_f64());
            let keyframe = out.media.keyframe;
            if keyframe {
                if out.forced {
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
            self.stats.rendition_frames[r].fetch_add(1, Ordering::Relaxed);
            self.stats.rendition_bytes[r].fetch_add(out.bytes, Ordering::Relaxed);
            self.stats.bytes_out.fetch_add(out.bytes, Ordering::Relaxed);
            m.bytes_encoded.increment(out.bytes);
            let c2p = out
                .packetized_at
                .saturating_duration_since(frame.captured_mono);
            if !any {
                // The first (best) rendition sent is the one the latency figures follow.
                m.capture_to_packetized.record(c2p.as_secs_f64());
                total.capture_to_packetized_us = us(c2p);
            }
            any = true;
            total.convert_us += us(scale);
            total.encode_us += us(out.encode);
            total.packetize_us += us(out.packetize);
            total.bytes += out.bytes as u32;
            total.keyframe |= keyframe;
            self.bus.publish_to(r, Arc::new(out.media));
        }
        // Off the critical path: the packets are out to the viewers already.
        self.latest.set(frame, st.mapper.effective_window());
        if !any {
            return;
        }
        m.frames_encoded.increment(1);
        self.stats.frames_encoded.fetch_add(1, Ordering::Relaxed);
        self.stats.record(StageSample {
            at: taken,
            queue_us: us(queue_wait),
            work: Some(total),
        });
    }

    /// Maps the frame for display into `st.i420`; false when it cannot be shown.
    fn map(&self, st: &mut State, frame: &Frame) -> bool {
        let Err(e) = st.mapper.map(frame, &mut st.i420) else {
            return true;
        };
        // A region of interest that no longer fits (the source changed size): show the
        // whole frame rather than nothing.
        if !st.logged_geometry_error && st.mapper.geometry() != &lumacast_frame::Geometry::default()
        {
            warn!(error = %e, width = frame.width, height = frame.height, "the stream geometry does not fit this frame; showing the whole frame (logged once)");
            st.logged_geometry_error = true;
            st.mapper.set_geometry(lumacast_frame::Geometry::default());
            return st.mapper.map(frame, &mut st.i420).is_ok();
        }
        self.stats.convert_errors.fetch_add(1, Ordering::Relaxed);
        if !st.logged_convert_error {
            error!(error = %e, width = frame.width, height = frame.height, "cannot convert frames of this detector (logged once)");
            st.logged_convert_error = true;
        }
        false
    }

    /// Scales (below the top), encodes and packetizes one rendition of the frame.
    fn encode_lane(
        &self,
        st: &mut State,
        r: usize,
        frame: &Frame,
        settings: EncodeSettings,
        rtp_ts: u32,
        ts_ms: i64,
    ) -> Option<LaneOutput> {
        let State { i420, lanes, .. } = st;
        let lane = &mut lanes[r];
        let picture = if lane.rendition.divisor <= 1 {
            &*i420
        } else {
            i420.downscale_into(lane.rendition.divisor, &mut lane.i420);
            &lane.i420
        };
        let stale = lane.encoder.as_ref().is_some_and(|e| {
            e.config().width != picture.width || e.config().height != picture.height
        });
        if stale || lane.encoder.is_none() {
            let mut rendition = lane.rendition;
            (rendition.width, rendition.height) = (picture.width, picture.height);
            let cfg = encoder_config(&rendition, settings);
            match Encoder::new(cfg) {
                Ok(enc) => {
                    info!(
                        rendition = r,
                        width = cfg.width,
                        height = cfg.height,
                        bitrate = cfg.bitrate_bps,
                        fps = cfg.fps,
                        keyint = cfg.keyframe_interval,
                        threads = cfg.threads,
                        slices = cfg.slices,
                        "encoder ready"
                    );
                    lane.encoder = Some(enc);
                    lane.coalescer.started(Instant::now());
                    // A new encoder's first frame is an IDR: pending requests are served.
                    self.gate.clear(r);
                }
                Err(e) => {
                    self.stats.encode_errors.fetch_add(1, Ordering::Relaxed);
                    error!(rendition = r, error = %e, "cannot create the H.264 encoder");
                    std::thread::sleep(Duration::from_millis(500));
                    return None;
                }
            }
        }
        let enc = lane.encoder.as_mut()?;
        let mut forced = false;
        if self.gate.pending(r) && lane.coalescer.allow(Instant::now()) {
            self.gate.clear(r);
            enc.request_keyframe();
            forced = true;
        }
        let t0 = Instant::now();
        let encoded = match enc.encode(picture, ts_ms) {
            Ok(e) => e,
            Err(e) => {
                self.stats.encode_errors.fetch_add(1, Ordering::Relaxed);
                warn!(rendition = r, error = %e, "encoding failed; recreating the encoder");
                lane.encoder = None;
                return None;
            }
        };
        let encoded_at = Instant::now();
        if encoded.skipped || encoded.data.is_empty() {
            return None;
        }
        let bytes = encoded.data.len() as u64;
        let keyframe = encoded.keyframe;
        let payloads = lane.packetizer.packetize(encoded.data);
        let packetized_at = Instant::now();
        Some(LaneOutput {
            media: MediaFrame {
                seq: frame.seq,
                rtp_ts,
                keyframe,
                payloads,
                captured: frame.captured_mono,
                captured_us: frame.captured_us(),
                encoded: encoded_at,
                rendition: r,
            },
            encode: encoded_at.duration_since(t0),
            packetize: packetized_at.duration_since(encoded_at),
            packetized_at,
            bytes,
            forced: forced && keyframe,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn throttle_sends_every_third_frame_of_30_fps_at_10() {
        let t0 = Instant::now();
        let mut th = Throttle::default();
        let sent: Vec<u64> = (0..30u64)
            .filter(|i| th.admit(at(t0, i * 1000 / 30), Some(10.0)))
            .collect();
        assert_eq!(sent.len(), 10, "{sent:?}");
        assert!(sent.windows(2).all(|w| w[1] - w[0] == 3), "{sent:?}");
        // No cap: everything.
        assert!((0..30).all(|i| th.admit(at(t0, i), None)));
    }

    #[test]
    fn throttle_restarts_after_a_pause_instead_of_bursting() {
        let t0 = Instant::now();
        let mut th = Throttle::default();
        assert!(th.admit(t0, Some(10.0)));
        assert!(th.admit(at(t0, 100), Some(10.0)));
        // 5 s pause: the next frame goes, then the schedule is 100 ms from it again.
        assert!(th.admit(at(t0, 5100), Some(10.0)));
        assert!(!th.admit(at(t0, 5133), Some(10.0)));
        assert!(!th.admit(at(t0, 5166), Some(10.0)));
        assert!(th.admit(at(t0, 5200), Some(10.0)));
        th.reset();
        assert!(th.admit(at(t0, 5210), Some(10.0)));
    }

    #[test]
    fn keyframe_requests_are_coalesced_to_one_per_200_ms() {
        let t0 = Instant::now();
        let mut c = KeyframeCoalescer::default();
        assert!(c.allow(t0));
        assert!(!c.allow(at(t0, 50)));
        assert!(!c.allow(at(t0, 199)));
        assert!(c.allow(at(t0, 200)));
        // A new encoder's own IDR counts.
        c.started(at(t0, 1000));
        assert!(!c.allow(at(t0, 1100)));
        assert!(c.allow(at(t0, 1201)));
    }

    #[test]
    fn the_gate_holds_a_request_per_rendition() {
        let g = KeyframeGate::default();
        g.request(2);
        g.request(99); // no such rendition: ignored
        assert!(!g.pending(0));
        assert!(g.pending(2));
        g.clear(2);
        assert!(!g.pending(2));
    }
}
