//! Publishing each detector into media servers that fan out to large audiences (WHIP
//! endpoints, Janus VideoRooms), from the same encode the local viewers get.
//!
//! One supervisor task per target ([`Publishers`]): it makes the offer
//! (`lumacast_rtc::offer_publish`), signals it (`whip.rs`, `janus.rs`), starts the
//! streaming loop with the server's answer, waits for the session to end (connection
//! lost, the server hung up, the detector stopped), closes it on the server (`DELETE`,
//! Janus `destroy`) and tries again with backoff. A target that fails never touches the
//! local viewers: its session is one more subscriber of the frame bus, dropped like a slow
//! viewer when it falls behind.

pub mod janus;
pub mod target;
pub mod whip;

pub use target::{Backoff, JanusRoom, Protocol, TargetSpec, MAX_TARGETS};

use crate::AppState;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tracing::{info, info_span, warn, Instrument};

/// Why a publish attempt failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{context}: {message}")]
    Http {
        context: &'static str,
        message: String,
    },
    #[error("the server answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("Janus error {code}: {reason}")]
    Janus { code: i64, reason: String },
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    Ended(String),
    #[error(transparent)]
    Rtc(#[from] lumacast_rtc::RtcError),
    #[error("detector: {0}")]
    Detector(String),
}

impl PublishError {
    pub(crate) fn http(context: &'static str, e: reqwest::Error) -> Self {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        PublishError::Http { context, message }
    }
}

/// Largest answer body read from a WHIP endpoint or Janus (an SDP, a batch of events).
pub(crate) const MAX_ANSWER: usize = 256 * 1024;

/// Reads an answer's body, at most `max` bytes (a larger one is an error, and is not
/// read further).
pub(crate) async fn read_bounded(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, PublishError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| PublishError::http("reading the answer", e))?
    {
        if body.len() + chunk.len() > max {
            return Err(PublishError::Protocol(format!(
                "the server's answer is over {max} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The start of an error answer's body, for the status and the log.
pub(crate) async fn short_body(resp: reqwest::Response) -> String {
    let bytes = read_bounded(resp, 64 * 1024).await.unwrap_or_default();
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        .trim()
        .to_string();
    if s.is_empty() {
        "(no body)".into()
    } else {
        s
    }
}

/// What the API shows of a target besides its live counters.
#[derive(Debug, Clone)]
struct Status {
    state: &'static str,
    state_since: Instant,
    last_error: Option<String>,
    last_error_at: Option<SystemTime>,
    attempts: u64,
    /// Sessions that reached `connected`.
    sessions: u64,
    /// The current session in the target's registry.
    session: Option<u64>,
    /// The WHIP resource or Janus session of the current session.
    resource: Option<String>,
    /// Keyframe requests of sessions that have ended.
    keyframe_requests_done: u64,
    /// Current session's keyframe requests when last looked at.
    keyframe_requests_now: u64,
    publishing_since: Option<SystemTime>,
}

/// One place a detector is published to, and its supervisor.
pub struct Target {
    pub id: u64,
    pub spec: TargetSpec,
    pub detector: String,
    /// The target's sessions (one live at a time), as viewers are in a detector's.
    pub registry: lumacast_rtc::ViewerRegistry,
    status: Mutex<Status>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    metrics: TargetMetrics,
}

struct TargetMetrics {
    up: metrics::Gauge,
    bitrate: metrics::Gauge,
    attempts: metrics::Counter,
    sessions: metrics::Counter,
    failures: metrics::Counter,
    keyframe_requests: metrics::Counter,
}

impl TargetMetrics {
    fn new(detector: &str, target: &str) -> Self {
        let l = [
            ("detector", detector.to_string()),
            ("target", target.to_string()),
        ];
        TargetMetrics {
            up: metrics::gauge!("lumacast_publish_up", &l),
            bitrate: metrics::gauge!("lumacast_publish_bitrate_bps", &l),
            attempts: metrics::counter!("lumacast_publish_attempts_total", &l),
            sessions: metrics::counter!("lumacast_publish_sessions_total", &l),
            failures: metrics::counter!("lumacast_publish_failures_total", &l),
            keyframe_requests: metrics::counter!("lumacast_publish_keyframe_requests_total", &l),
        }
    }
}

impl Target {
    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_state(&self, state: &'static str) {
        let mut s = self.status();
        if s.state != state {
            info!(state, "publish state");
            s.state = state;
            s.state_since = Instant::now();
        }
        self.metrics
            .up
            .set(if state == "publishing" { 1.0 } else { 0.0 });
    }

    fn set_error(&self, e: &str) {
        let mut s = self.status();
        s.last_error = Some(e.to_string());
        s.last_error_at = Some(SystemTime::now());
    }

    /// The target as `/api/stats` and `/api/publish` show it.
    pub fn json(&self, window: Duration) -> Value {
        let s = self.status().clone();
        let live = s.session.and_then(|id| {
            self.registry
                .snapshot(window)
                .into_iter()
                .find(|v| v.id == id)
        });
        let (bitrate_bps, fps, link, packets, frames, kf_now) = match &live {
            Some(v) => {
                let span = v.age.as_secs_f64().min(window.as_secs_f64()).max(1e-3);
                (
                    v.window_bytes as f64 * 8.0 / span,
                    v.window_frames as f64 / span,
                    Some(crate::http::link_json(&v.link)),
                    v.packets_sent,
                    v.frames_sent,
                    v.keyframe_requests,
                )
            }
            None => (0.0, 0.0, None, 0, 0, 0),
        };
        let unix = |t: Option<SystemTime>| {
            t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64())
        };
        json!({
            "id": self.id,
            "detector": self.detector,
            "protocol": self.spec.protocol_name(),
            "target": self.spec.shown(),
            "state": s.state,
            "state_for_s": s.state_since.elapsed().as_secs_f64(),
            "publishing_since_unix_s": unix(s.publishing_since),
            "resource": s.resource,
            "attempts": s.attempts,
            "sessions": s.sessions,
            "last_error": s.last_error,
            "last_error_unix_s": unix(s.last_error_at),
            "bitrate_bps": bitrate_bps.round(),
            "fps": (fps * 10.0).round() / 10.0,
            "frames_sent": frames,
            "packets_sent": packets,
            "keyframe_requests": s.keyframe_requests_done + kf_now.max(s.keyframe_requests_now),
            "link": link,
        })
    }
}

/// Every publish target of the server.
#[derive(Default)]
pub struct Publishers {
    targets: Mutex<Vec<Arc<Target>>>,
    next_id: AtomicU64,
    /// Targets from the command line, started with the server.
    configured: Vec<TargetSpec>,
}

impl Publishers {
    /// The targets to start with the server (checked already).
    pub fn new(configured: Vec<TargetSpec>) -> Self {
        Publishers {
            targets: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            configured,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Target>>> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The targets from the command line.
    pub fn configured(&self) -> &[TargetSpec] {
        &self.configured
    }

    /// Starts the configured targets (at server start).
    pub fn start_configured(&self, state: &AppState) {
        for spec in self.configured.clone() {
            if let Err(e) = self.add(state, spec) {
                warn!(error = %e, "a publish target was not started");
            }
        }
    }

    /// Starts publishing to `spec`; returns the new target.
    pub fn add(&self, state: &AppState, spec: TargetSpec) -> Result<Arc<Target>, AddError> {
        let detector = state
            .detectors
            .resolve(spec.detector.as_deref())
            .map_err(|e| AddError::Detector(e.to_string()))?;
        let mut targets = self.lock();
        if targets.len() >= MAX_TARGETS {
            return Err(AddError::Full);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shown = spec.shown();
        let target = Arc::new(Target {
            id,
            metrics: TargetMetrics::new(&detector, &shown),
            spec,
            detector,
            registry: lumacast_rtc::ViewerRegistry::new(),
            status: Mutex::new(Status {
                state: "starting",
                state_since: Instant::now(),
                last_error: None,
                last_error_at: None,
                attempts: 0,
                sessions: 0,
                session: None,
                resource: None,
                keyframe_requests_done: 0,
                keyframe_requests_now: 0,
                publishing_since: None,
            }),
            stop: watch::Sender::new(false),
            task: Mutex::new(None),
        });
        let span =
            info_span!("publish", target_id = id, detector = %target.detector, target = %shown);
        info!(parent: &span, protocol = target.spec.protocol_name(), "publishing");
        let task = tokio::spawn(supervise(state.clone(), target.clone()).instrument(span));
        *target.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        targets.push(target.clone());
        Ok(target)
    }

    /// Every target.
    pub fn list(&self) -> Vec<Arc<Target>> {
        self.lock().clone()
    }

    /// Stops target `id` (closing its session on the server); false when there is none.
    pub async fn remove(&self, id: u64) -> bool {
        let target = {
            let mut targets = self.lock();
            let Some(i) = targets.iter().position(|t| t.id == id) else {
                return false;
            };
            targets.remove(i)
        };
        stop_target(&target).await;
        true
    }

    /// Stops every target (server shutdown), in parallel, bounded.
    pub async fn stop_all(&self) {
        let targets: Vec<_> = std::mem::take(&mut *self.lock());
        let stops = targets.iter().map(|t| stop_target(t));
        futures_util::future::join_all(stops).await;
    }
}

/// Why a target could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("{0}")]
    Detector(String),
    #[error("the server has its maximum of {MAX_TARGETS} publish targets")]
    Full,
}

/// Longest a target's stop waits for its session to close on the server.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

async fn stop_target(target: &Target) {
    target.stop.send_replace(true);
    let task = target.task.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(mut task) = task {
        if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
            warn!(target = %target.spec.shown(), "publish target did not stop in time");
            task.abort();
        }
    }
    target.registry.close_all();
    target.metrics.up.set(0.0);
    target.metrics.bitrate.set(0.0);
}

/// Resolves once `stop` is on or the server shuts down.
async fn stopping(stop: &mut watch::Receiver<bool>, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        _ = shutdown.wait_for(|s| *s) => {}
    }
}

/// How one attempt ended.
enum Outcome {
    /// The session ended by itself or the server ended it (try again).
    Ended(String),
    /// We were told to stop.
    Stopped,
}

/// The supervisor of one target: attempts, waits, backs off, until stopped.
async fn supervise(state: AppState, target: Arc<Target>) {
    let client = match reqwest::Client::builder()
        .connect_timeout(target::REQUEST_TIMEOUT)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            target.set_error(&format!("HTTP client: {e}"));
            target.set_state("stopped");
            return;
        }
    };
    let mut stop = target.stop.subscribe();
    let mut shutdown = state.shutting_down.subscribe();
    let mut backoff = Backoff::new();
    let mut started_detector = false;
    let mut ice = Vec::new();
    if target.spec.protocol == Protocol::Whip {
        ice = whip::preflight(&client, &target.spec).await;
    }
    loop {
        if *stop.borrow() || *shutdown.borrow() {
            break;
        }
        // A configured target starts its detector once; if the operator stops the
        // detector later, the target waits for it to run again.
        let running = match state.detectors.running(&target.detector) {
            Some(r) => Some(r),
            None if !started_detector => {
                let (s, n) = (state.clone(), target.detector.clone());
                match tokio::task::spawn_blocking(move || s.detectors.start(&n)).await {
                    Ok(Ok((r, _))) => Some(r),
                    Ok(Err(e)) => {
                        target.set_error(&format!("starting the detector: {e}"));
                        None
                    }
                    Err(e) => {
                        target.set_error(&format!("starting the detector: {e}"));
                        None
                    }
                }
            }
            None => None,
        };
        let Some(running) = running else {
            target.set_state("waiting for the detector");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stopping(&mut stop, &mut shutdown) => break,
            }
            continue;
        };
        started_detector = true;
        let began = Instant::now();
        target.status().attempts += 1;
        target.metrics.attempts.increment(1);
        let outcome = attempt(
            &state,
            &target,
            &client,
            &running,
            &mut ice,
            &mut stop,
            &mut shutdown,
        )
        .await;
        let lasted = {
            let mut s = target.status();
            s.keyframe_requests_done += s.keyframe_requests_now;
            s.keyframe_requests_now = 0;
            s.session = None;
            s.resource = None;
            s.publishing_since
                .take()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default()
        };
        target.metrics.bitrate.set(0.0);
        match outcome {
            Ok(Outcome::Stopped) => break,
            Ok(Outcome::Ended(why)) => {
                warn!(reason = %why, lasted_s = lasted.as_secs_f64(), "publish session ended");
                target.set_error(&why);
            }
            Err(e) => {
                warn!(error = %e, after_ms = began.elapsed().as_millis() as u64, "publishing failed");
                target.set_error(&e.to_string());
                target.metrics.failures.increment(1);
            }
        }
        target.set_state("retrying");
        let wait = backoff.after(lasted);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopping(&mut stop, &mut shutdown) => break,
        }
    }
    target.set_state("stopped");
}

/// The signalling side of a session, to watch and to close.
enum Signal {
    Whip(whip::WhipSession),
    Janus(janus::JanusSession),
}

impl Signal {
    /// Resolves when the server ends the session (Janus tells us; WHIP does not).
    async fn ended(&mut self) -> PublishError {
        match self {
            Signal::Whip(_) => std::future::pending().await,
            Signal::Janus(j) => j.ended().await,
        }
    }

    async fn close(self, client: &reqwest::Client) {
        match self {
            Signal::Whip(w) => w.close(client).await,
            Signal::Janus(j) => j.close().await,
        }
    }
}

/// One session: offer, signal, stream until it ends; the session is closed on the
/// server before returning.
async fn attempt(
    state: &AppState,
    target: &Target,
    client: &reqwest::Client,
    running: &crate::detector::Running,
    ice: &mut Vec<whip::IceServer>,
    stop: &mut watch::Receiver<bool>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Outcome, PublishError> {
    target.set_state("offering");
    let mut cfg = state.rtc.clone();
    if !ice.is_empty() {
        cfg.ice_servers = ice.iter().map(|s| s.url.clone()).collect();
        if let Some(s) = ice.iter().find(|s| s.username.is_some()) {
            cfg.ice_username = s.username.clone();
            cfg.ice_credential = s.credential.clone();
        }
    }
    let shown = target.spec.shown();
    let offer = lumacast_rtc::offer_publish(
        &cfg,
        &target.detector,
        &shown,
        &running.bus,
        &target.registry,
    )
    .await?;
    target.status().session = Some(offer.id());
    let signalled = async {
        match &target.spec.protocol {
            Protocol::Whip => {
                let (w, answer, servers) =
                    whip::open(client, &target.spec, offer.offer_sdp()).await?;
                if !servers.is_empty() {
                    // The offer is already gathered: these serve the next attempt.
                    *ice = servers;
                }
                target.status().resource = Some(w.resource().to_string());
                Ok::<_, PublishError>((Signal::Whip(w), answer))
            }
            Protocol::Janus(room) => {
                let display = room
                    .display
                    .clone()
                    .unwrap_or_else(|| target.detector.clone());
                let (j, answer) = janus::JanusSession::open(
                    client,
                    &target.spec.url,
                    room,
                    &display,
                    offer.offer_sdp(),
                )
                .await?;
                target.status().resource = Some(format!("publisher {}", j.publisher_id));
                Ok((Signal::Janus(j), answer))
            }
        }
    };
    let (mut signal, answer) = tokio::select! {
        r = signalled => r?,
        _ = stopping(stop, shutdown) => return Ok(Outcome::Stopped),
    };
    let mut session = match offer.accept(&answer, running.keyframe_request()).await {
        Ok(s) => s,
        Err(e) => {
            signal.close(client).await;
            return Err(e.into());
        }
    };
    target.set_state("connecting");
    let id = session.id;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut counted = false;
    let outcome = loop {
        tokio::select! {
            why = session.ended() => break Outcome::Ended(format!("the session ended: {why}")),
            e = signal.ended() => {
                target.registry.close(id);
                let _ = tokio::time::timeout(Duration::from_secs(2), session.ended()).await;
                break Outcome::Ended(e.to_string());
            }
            _ = stopping(stop, shutdown) => {
                target.registry.close(id);
                let _ = tokio::time::timeout(Duration::from_secs(2), session.ended()).await;
                break Outcome::Stopped;
            }
            _ = tick.tick() => {
                let Some(v) = target.registry.snapshot(Duration::from_secs(1)).into_iter().find(|v| v.id == id) else { continue };
                if v.state == "connected" && !counted {
                    counted = true;
                    let mut s = target.status();
                    s.sessions += 1;
                    s.publishing_since = Some(SystemTime::now());
                    drop(s);
                    target.metrics.sessions.increment(1);
                    target.set_state("publishing");
                }
                let mut s = target.status();
                let delta = v.keyframe_requests.saturating_sub(s.keyframe_requests_now);
                s.keyframe_requests_now = v.keyframe_requests;
                drop(s);
                target.metrics.keyframe_requests.increment(delta);
                let span = v.age.as_secs_f64().clamp(1e-3, 1.0);
                target.metrics.bitrate.set(v.window_bytes as f64 * 8.0 / span);
            }
        }
    };
    target.set_state("closing");
    signal.close(client).await;
    Ok(outcome)
}
