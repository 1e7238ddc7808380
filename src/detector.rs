//! The detectors this server offers and, for each running one, its capture thread,
//! encoder thread, frame bus and viewers.
//!
//! Ownership: [`Detectors`] owns the table; a running detector's threads own the source
//! and the encoder; viewer tasks own their peer connections. The table lock is a std
//! `Mutex` held only for map lookups and inserts, never across an `.await`, and never
//! while threads are started or joined.

use crate::config::{DetectorSpec, SourceKind};
use crate::params::{ParamsCell, SourceShape, StreamParams};
use crate::pipeline::{EncoderThread, KeyframeGate, LatestFrame, PipelineStats};
use lumacast_capture::{
    latest_queue, push_channel, spawn_capture, CameraSource, CaptureError, FrameSource, PushHandle,
    ReplaySource, SourceInfo, SyntheticConfig, SyntheticSource,
};
use lumacast_rtc::{FrameBus, KeyframeRequest, ViewerRegistry};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;
use tracing::{info, warn};

/// Errors of starting and finding detectors.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    #[error("unknown detector \"{0}\"")]
    Unknown(String),
    #[error("no detector is configured")]
    NoneConfigured,
    #[error("detector \"{name}\" cannot start: {source}")]
    Start {
        name: String,
        #[source]
        source: CaptureError,
    },
    #[error("detector \"{0}\" is already running")]
    AlreadyRunning(String),
    #[error("detector \"{name}\" cannot start a thread: {source}")]
    Thread {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running detector: what viewers attach to.
pub struct Running {
    pub info: SourceInfo,
    pub started: Instant,
    pub bus: FrameBus,
    pub viewers: ViewerRegistry,
    pub gate: Arc<KeyframeGate>,
    pub stats: Arc<PipelineStats>,
    /// The newest raw frame (snapshots, histograms).
    pub latest: Arc<LatestFrame>,
    /// Where pushed frames go (push detectors only).
    pub push: Option<PushHandle>,
    /// Why the pipeline ended by itself (the source failed or ended), once it has.
    pub failure: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Running {
    /// Why this detector's pipeline ended by itself, if it has (its viewers were closed).
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How a viewer asks this detector's encoder for a keyframe.
    pub fn keyframe_request(&self) -> KeyframeRequest {
        let gate = self.gate.clone();
        KeyframeRequest::new(move |rendition, _reason| gate.request(rendition))
    }

    /// Stops the threads and closes the viewers; blocks until the threads have ended
    /// (at most a frame period plus one encode), so call it off the async runtime.
    fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(p) = &self.push {
            // Wakes the capture thread waiting for the next pushed frame.
            p.close();
        }
        self.viewers.close_all();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

struct Slot {
    spec: DetectorSpec,
    /// Stream parameters; they outlive a stop and restart.
    params: Arc<ParamsCell>,
    running: Option<Arc<Running>>,
}

/// The table of configured detectors.
pub struct Detectors {
    order: Vec<String>,
    slots: Mutex<BTreeMap<String, Slot>>,
}

/// What `/api/detectors` shows of one detector.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DetectorStatus {
    pub name: String,
    pub kind: &'static str,
    pub running: bool,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub pixel_format: String,
    pub viewers: usize,
    /// µm per detector pixel (the `pixel_um` stream parameter); `null` when unknown.
    pub pixel_um: Option<f64>,
    /// Why the detector stopped by itself (its source failed); cleared by a restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Detectors {
    pub fn new(specs: Vec<DetectorSpec>) -> Self {
        let order = specs.iter().map(|s| s.name.clone()).collect();
        let slots = specs
            .into_iter()
            .map(|spec| {
                (
                    spec.name.clone(),
                    Slot {
                        params: Arc::new(ParamsCell::new(StreamParams {
                            pixel_um: spec.pixel_um,
                            ..StreamParams::new(spec.bitrate, spec.keyint, spec.ladder.clone())
                        })),
                        spec,
                        running: None,
                    },
                )
            })
            .collect();
        Detectors {
            order,
            slots: Mutex::new(slots),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `name`, or the first configured detector when `None`/empty.
    pub fn resolve(&self, name: Option<&str>) -> Result<String, DetectorError> {
        match name.filter(|n| !n.is_empty()) {
            Some(n) if self.lock().contains_key(n) => Ok(n.to_string()),
            Some(n) => Err(DetectorError::Unknown(n.to_string())),
            None => self
                .order
                .first()
                .cloned()
                .ok_or(DetectorError::NoneConfigured),
        }
    }

    /// The first running detector, if any (ImSwitch's `stopLiveView` default).
    pub fn first_running(&self) -> Option<String> {
        let slots = self.lock();
        self.order
            .iter()
            .find(|n| {
                slots
                    .get(*n)
                    .and_then(|s| s.running.as_ref())
                    .is_some_and(|r| r.failure().is_none())
            })
            .cloned()
    }

    /// The live pipeline of `name`; `None` when it is stopped or stopped by itself.
    pub fn running(&self, name: &str) -> Option<Arc<Running>> {
        self.lock()
            .get(name)
            .and_then(|s| s.running.clone())
            .filter(|r| r.failure().is_none())
    }

    pub fn names(&self) -> Vec<String> {
        self.order.clone()
    }

    /// The kind of detector `name` is ("synthetic", "camera", "replay", "push").
    pub fn kind(&self, name: &str) -> Result<&'static str, DetectorError> {
        self.lock()
            .get(name)
            .map(|s| s.spec.kind_name())
            .ok_or_else(|| DetectorError::Unknown(name.to_string()))
    }

    /// The stream parameters of `name` and the shape of its frames (from the running
    /// source, else from the configuration).
    pub fn params(&self, name: &str) -> Result<(Arc<ParamsCell>, SourceShape), DetectorError> {
        let slots = self.lock();
        let slot = slots
            .get(name)
            .ok_or_else(|| DetectorError::Unknown(name.to_string()))?;
        let shape = match &slot.running {
            Some(r) => SourceShape {
                width: r.info.width,
                height: r.info.height,
                format: r.info.format,
            },
            None => slot.spec.nominal_shape(),
        };
        // A replay file's size is known only once it is read: until then, only the
        // checks that need no frame size apply.
        let shape = if shape.width == 0 {
            SourceShape {
                width: u32::MAX,
                height: u32::MAX,
                ..shape
            }
        } else {
            shape
        };
        Ok((slot.params.clone(), shape))
    }

    /// Starts `name` if it is not running. Returns the running detector and whether this
    /// call started it. Blocking (opens the source): call it from `spawn_blocking`.
    pub fn start(&self, name: &str) -> Result<(Arc<Running>, bool), DetectorError> {
        let spec = {
            let slots = self.lock();
            let slot = slots
                .get(name)
                .ok_or_else(|| DetectorError::Unknown(name.to_string()))?;
            if let Some(r) = slot.running.as_ref().filter(|r| r.failure().is_none()) {
                return Ok((r.clone(), false));
            }
            (slot.spec.clone(), slot.params.clone())
        };
        self.reap_failed(name);
        let running = Arc::new(launch(&spec.0, spec.1)?);
        self.install(name, running)
    }

    /// Runs detector `name` from a source the embedding program opened itself (a
    /// detector SDK lumacast does not know), in place of its configured one. Fails if
    /// `name` is running.
    pub fn start_with_source(
        &self,
        name: &str,
        source: Box<dyn FrameSource>,
    ) -> Result<Arc<Running>, DetectorError> {
        let params = {
            let slots = self.lock();
            let slot = slots
                .get(name)
                .ok_or_else(|| DetectorError::Unknown(name.to_string()))?;
            slot.params.clone()
        };
        self.reap_failed(name);
        let running = Arc::new(launch_source(name, source, None, params)?);
        match self.install(name, running)? {
            (r, true) => Ok(r),
            (_, false) => Err(DetectorError::AlreadyRunning(name.to_string())),
        }
    }

    /// Removes `name`'s pipeline if it ended by itself (joining its threads).
    fn reap_failed(&self, name: &str) {
        let failed = {
            let mut slots = self.lock();
            let Some(slot) = slots.get_mut(name) else {
                return;
            };
            if slot.running.as_ref().is_some_and(|r| r.failure().is_some()) {
                slot.running.take()
            } else {
                None
            }
        };
        if let Some(r) = failed {
            info!(detector = name, reason = ?r.failure(), "restarting a detector that had stopped by itself");
            r.shutdown();
        }
    }

    /// Makes `running` the pipeline of `name`, unless another start won the race.
    fn install(
        &self,
        name: &str,
        running: Arc<Running>,
    ) -> Result<(Arc<Running>, bool), DetectorError> {
        let mut slots = self.lock();
        let slot = slots
            .get_mut(name)
            .ok_or_else(|| DetectorError::Unknown(name.to_string()))?;
        if let Some(r) = &slot.running {
            // Lost a race with a concurrent start: keep theirs, stop ours.
            let winner = r.clone();
            drop(slots);
            running.shutdown();
            return Ok((winner, false));
        }
        slot.running = Some(running.clone());
        info!(detector = name, "detector started");
        Ok((running, true))
    }

    /// Stops `name`; false when it was not running. Blocking (joins threads).
    pub fn stop(&self, name: &str) -> Result<bool, DetectorError> {
        let running = {
            let mut slots = self.lock();
            let slot = slots
                .get_mut(name)
                .ok_or_else(|| DetectorError::Unknown(name.to_string()))?;
            slot.running.take()
        };
        match running {
            Some(r) => {
                r.shutdown();
                info!(detector = name, "detector stopped");
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Stops everything (server shutdown). Blocking: it also waits, at most `linger`, for
    /// the closed viewers' tasks to have closed their peer connections, so that each viewer
    /// is told (DTLS close_notify) before the process exits.
    pub fn stop_all(&self, linger: std::time::Duration) {
        let registries: Vec<ViewerRegistry> = {
            let slots = self.lock();
            slots
                .values()
                .filter_map(|s| s.running.as_ref().map(|r| r.viewers.clone()))
                .collect()
        };
        for name in self.names() {
            let _ = self.stop(&name);
        }
        let until = std::time::Instant::now() + linger;
        while registries.iter().any(|r| !r.is_empty()) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub fn status(&self) -> Vec<DetectorStatus> {
        let slots = self.lock();
        self.order
            .iter()
            .filter_map(|n| slots.get(n))
            .map(|slot| {
                let (w, h, fps, fmt) = match &slot.running {
                    Some(r) => (
                        r.info.width,
                        r.info.height,
                        r.info.fps,
                        r.info.format.name().to_string(),
                    ),
                    None => {
                        let shape = slot.spec.nominal_shape();
                        (
                            shape.width,
                            shape.height,
                            slot.spec.nominal_fps(),
                            shape.format.name().to_string(),
                        )
                    }
                };
                DetectorStatus {
                    name: slot.spec.name.clone(),
                    kind: slot.spec.kind_name(),
                    running: slot.running.as_ref().is_some_and(|r| r.failure().is_none()),
                    width: w,
                    height: h,
                    fps,
                    pixel_format: fmt,
                    viewers: slot.running.as_ref().map_or(0, |r| r.viewers.len()),
                    pixel_um: slot.params.get().pixel_um,
                    error: slot.running.as_ref().and_then(|r| r.failure()),
                }
            })
            .collect()
    }
}

/// Opens the source of `spec`; for a push detector also the handle frames are pushed
/// through.
fn open_source(
    spec: &DetectorSpec,
) -> Result<(Box<dyn FrameSource>, Option<PushHandle>), CaptureError> {
    Ok(match &spec.kind {
        SourceKind::Synthetic {
            width,
            height,
            fps,
            bits,
        } => (
            Box::new(SyntheticSource::new(SyntheticConfig {
                width: *width,
                height: *height,
                fps: *fps,
                bit_depth: *bits,
            })?),
            None,
        ),
        SourceKind::Camera {
            index,
            width,
            height,
            fps,
        } => (
            Box::new(CameraSource::open(
                *index,
                *width,
                *height,
                fps.round() as u32,
            )?),
            None,
        ),
        SourceKind::Replay { path, fps } => (Box::new(ReplaySource::open(path, *fps)?), None),
        SourceKind::Push { fps, .. } => {
            let shape = spec.nominal_shape();
            let (source, handle) = push_channel(SourceInfo {
                kind: "push",
                width: shape.width,
                height: shape.height,
                format: shape.format,
                fps: *fps,
            });
            (Box::new(source), Some(handle))
        }
    })
}

fn launch(spec: &DetectorSpec, params: Arc<ParamsCell>) -> Result<Running, DetectorError> {
    let name = spec.name.clone();
    let (source, push) = open_source(spec).map_err(|source| {
        warn!(detector = %name, error = %source, "detector cannot start");
        DetectorError::Start {
            name: name.clone(),
            source,
        }
    })?;
    launch_source(&name, source, push, params)
}

/// Starts the capture and encoder threads of `name` around an opened source.
fn launch_source(
    name: &str,
    source: Box<dyn FrameSource>,
    push: Option<PushHandle>,
    params: Arc<ParamsCell>,
) -> Result<Running, DetectorError> {
    let name = name.to_string();
    let info = source.describe();
    let (tx, rx) = latest_queue();
    let stop = Arc::new(AtomicBool::new(false));
    let bus = FrameBus::new();
    let gate = Arc::new(KeyframeGate::default());
    let stats = Arc::new(PipelineStats::default());
    let latest = Arc::new(LatestFrame::default());
    let viewers = ViewerRegistry::new();
    let failure = Arc::new(Mutex::new(None));
    let thread_err = |source| DetectorError::Thread {
        name: name.clone(),
        source,
    };
    let encoder = EncoderThread {
        name: name.clone(),
        rx,
        bus: bus.clone(),
        gate: gate.clone(),
        stats: stats.clone(),
        stop: stop.clone(),
        fps: info.fps,
        params,
        latest: latest.clone(),
        viewers: viewers.clone(),
        failure: failure.clone(),
    }
    .spawn()
    .map_err(thread_err)?;
    let capture = match spawn_capture(name.clone(), source, tx, stop.clone()) {
        Ok(t) => t,
        Err(e) => {
            stop.store(true, Ordering::Release);
            let _ = encoder.join();
            return Err(thread_err(e));
        }
    };
    info!(detector = %name, width = info.width, height = info.height, fps = info.fps, format = info.format.name(), "capture running");
    Ok(Running {
        info,
        started: Instant::now(),
        bus,
        viewers,
        gate,
        stats,
        latest,
        push,
        failure,
        stop,
        threads: Mutex::new(vec![capture, encoder]),
    })
}
