//! The viewers of this process: ids, counters, state, latency samples, the close switch
//! and trickled candidates, shared between the HTTP side and each viewer task.

use super::LinkStats;
use crate::RtcError;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use webrtc::peer_connection::RTCPeerConnectionState;

pub(super) struct ViewerShared {
    pub(super) link: Mutex<LinkStats>,
    pub(super) id: u64,
    pub(super) state: Mutex<&'static str>,
    pub(super) created: Instant,
    pub(super) packets_sent: AtomicU64,
    pub(super) bytes_sent: AtomicU64,
    pub(super) frames_sent: AtomicU64,
    pub(super) frames_dropped: AtomicU64,
    /// PLI/FIR received from the viewer.
    pub(super) keyframe_requests: AtomicU64,
    pub(super) samples: Mutex<Samples>,
    pub(super) close_tx: watch::Sender<bool>,
    /// Wall-clock creation time, for the sessions API.
    pub(super) since: std::time::SystemTime,
    /// Who sent the offer (the HTTP client), when known.
    pub(super) remote: Mutex<Option<std::net::SocketAddr>>,
    /// The viewer's ICE username fragment from its offer (trickle fragments must match).
    pub(super) remote_ufrag: Mutex<Option<String>>,
    /// Trickled remote candidates for the viewer task to add (bounded).
    pub(super) trickle_tx: mpsc::Sender<String>,
    pub(super) trickle_rx: Mutex<Option<mpsc::Receiver<String>>>,
    /// ICE restarts for the viewer task to carry out (one at a time).
    pub(super) restart_tx: mpsc::Sender<RestartRequest>,
    pub(super) restart_rx: Mutex<Option<mpsc::Receiver<RestartRequest>>>,
    /// ICE restarts done (WHEP's ETag changes with each).
    pub(super) ice_generation: AtomicU64,
}

/// The viewer's new ICE credentials and candidates (from a WHEP PATCH fragment or a
/// full offer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceParams {
    pub ufrag: String,
    pub pwd: String,
    /// `candidate:…` strings (without `a=`).
    pub candidates: Vec<String>,
}

impl IceParams {
    /// Reads `a=ice-ufrag`, `a=ice-pwd` and `a=candidate` lines (an RFC 8840 fragment or a
    /// whole SDP); both credentials are required.
    pub fn parse(text: &str) -> Result<Self, RtcError> {
        let (mut ufrag, mut pwd, mut candidates) = (None, None, Vec::new());
        for line in text.lines().map(str::trim) {
            if let Some(u) = line.strip_prefix("a=ice-ufrag:") {
                ufrag.get_or_insert_with(|| u.trim().to_string());
            } else if let Some(p) = line.strip_prefix("a=ice-pwd:") {
                pwd.get_or_insert_with(|| p.trim().to_string());
            } else if let Some(c) = line.strip_prefix("a=candidate:") {
                if c.split_whitespace().count() < 8 {
                    return Err(RtcError::BadFragment(format!(
                        "malformed candidate \"{line}\""
                    )));
                }
                if candidates.len() < MAX_RESTART_CANDIDATES {
                    candidates.push(format!("candidate:{c}"));
                }
            }
        }
        let ufrag = ufrag.ok_or_else(|| RtcError::BadFragment("no a=ice-ufrag".into()))?;
        let pwd = pwd.ok_or_else(|| RtcError::BadFragment("no a=ice-pwd".into()))?;
        // RFC 8445: ufrag 4-256 characters, pwd 22-256 (ice-chars).
        let ice_chars = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
        };
        if !(4..=256).contains(&ufrag.len())
            || !(22..=256).contains(&pwd.len())
            || !ice_chars(&ufrag)
            || !ice_chars(&pwd)
        {
            return Err(RtcError::BadFragment(
                "ice-ufrag must be 4-256 and ice-pwd 22-256 ICE characters".into(),
            ));
        }
        Ok(IceParams {
            ufrag,
            pwd,
            candidates,
        })
    }
}

/// What an ICE restart gives back: our new credentials and candidates, and the whole
/// new answer (for a client that sent a whole offer).
#[derive(Debug, Clone)]
pub struct IceRestarted {
    pub answer_sdp: String,
    pub local: IceParams,
    /// The new ETag generation of the session.
    pub generation: u64,
}

pub(super) struct RestartRequest {
    pub(super) remote: IceParams,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<IceRestarted, RtcError>>,
}

/// Remote candidates taken from one restart, at most.
const MAX_RESTART_CANDIDATES: usize = 64;
/// Longest an ICE restart may take to be answered by the viewer task.
const RESTART_TIMEOUT: Duration = Duration::from_secs(5);

/// Trickled candidates waiting for a viewer task, at most.
pub(super) const TRICKLE_QUEUE: usize = 64;

/// Latency samples kept per viewer (per kind), about 17 s at 30 fps.
pub(super) const LATENCY_WINDOW: usize = 512;

/// Recent per-frame delivery timings of one viewer (bounded rings).
#[derive(Default)]
pub(super) struct Samples {
    /// (when, capture → first packet handed to webrtc-rs µs, → last packet µs, bytes).
    pub(super) handoff: VecDeque<(Instant, u32, u32, u32)>,
    /// (when, capture → first packet on the socket µs, → last packet on the socket µs).
    pub(super) wire: VecDeque<(Instant, u32, u32)>,
}

pub(super) fn push_bounded<T>(q: &mut VecDeque<T>, v: T) {
    if q.len() == LATENCY_WINDOW {
        q.pop_front();
    }
    q.push_back(v);
}

/// What `/api/detectors` and stats show of a viewer.
#[derive(Debug, Clone)]
pub struct ViewerSnapshot {
    pub id: u64,
    pub state: &'static str,
    pub age: Duration,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub frames_sent: u64,
    pub frames_dropped: u64,
    /// Keyframe requests (PLI/FIR) the viewer sent.
    pub keyframe_requests: u64,
    /// The link estimate and rendition of this viewer.
    pub link: LinkStats,
    /// Capture → first RTP packet of the frame sent on the UDP socket, µs, for the frames
    /// of the snapshot's window.
    pub first_packet_us: Vec<u32>,
    /// Capture → last RTP packet of the frame sent on the UDP socket, µs.
    pub last_packet_us: Vec<u32>,
    /// Capture → first RTP packet handed to webrtc-rs (`write_rtp`), µs.
    pub handoff_first_us: Vec<u32>,
    /// Capture → last RTP packet handed to webrtc-rs, µs.
    pub handoff_last_us: Vec<u32>,
    /// Frames and payload bytes handed over within the window.
    pub window_frames: u64,
    pub window_bytes: u64,
    /// When the session was created (wall clock).
    pub since: std::time::SystemTime,
    /// The HTTP client that sent the offer, when known.
    pub remote: Option<std::net::SocketAddr>,
}

/// The viewers of one detector. Each viewer task owns its connection; the registry only
/// holds counters and a close switch, so it can be read from HTTP handlers cheaply.
#[derive(Clone, Default)]
pub struct ViewerRegistry {
    pub(super) inner: Arc<Mutex<HashMap<u64, Arc<ViewerShared>>>>,
}

static NEXT_VIEWER_ID: AtomicU64 = AtomicU64::new(1);

impl ViewerRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Viewers that exist (negotiating, connected or closing).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every viewer, with the timings of the frames sent within the last `window`.
    pub fn snapshot(&self, window: Duration) -> Vec<ViewerSnapshot> {
        let since = Instant::now().checked_sub(window);
        let recent = |t: &Instant| since.is_none_or(|s| *t >= s);
        let mut out: Vec<ViewerSnapshot> = self
            .lock()
            .values()
            .map(|v| {
                let s = lock_samples(&v.samples);
                let (first_packet_us, last_packet_us) = s
                    .wire
                    .iter()
                    .filter(|x| recent(&x.0))
                    .map(|x| (x.1, x.2))
                    .unzip();
                let handoff: Vec<_> = s.handoff.iter().filter(|x| recent(&x.0)).collect();
                let handoff_first_us = handoff.iter().map(|x| x.1).collect();
                let handoff_last_us = handoff.iter().map(|x| x.2).collect();
                let window_frames = handoff.len() as u64;
                let window_bytes = handoff.iter().map(|x| u64::from(x.3)).sum();
                drop(s);
                ViewerSnapshot {
                    id: v.id,
                    state: *v.state.lock().unwrap_or_else(|e| e.into_inner()),
                    age: v.created.elapsed(),
                    packets_sent: v.packets_sent.load(Ordering::Relaxed),
                    bytes_sent: v.bytes_sent.load(Ordering::Relaxed),
                    frames_sent: v.frames_sent.load(Ordering::Relaxed),
                    frames_dropped: v.frames_dropped.load(Ordering::Relaxed),
                    keyframe_requests: v.keyframe_requests.load(Ordering::Relaxed),
                    link: *v.link.lock().unwrap_or_else(|e| e.into_inner()),
                    first_packet_us,
                    last_packet_us,
                    handoff_first_us,
                    handoff_last_us,
                    window_frames,
                    window_bytes,
                    since: v.since,
                    remote: *v.remote.lock().unwrap_or_else(|e| e.into_inner()),
                }
            })
            .collect();
        out.sort_by_key(|v| v.id);
        out
    }

    /// Asks one viewer to close; false when there is no such viewer.
    pub fn close(&self, id: u64) -> bool {
        match self.lock().get(&id) {
            Some(v) => {
                v.close_tx.send_replace(true);
                true
            }
            None => false,
        }
    }

    /// Records who sent viewer `id`'s offer.
    pub fn set_remote(&self, id: u64, addr: std::net::SocketAddr) {
        if let Some(v) = self.lock().get(&id) {
            *v.remote.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr);
        }
    }

    /// Whether viewer `id` exists in this registry.
    pub fn contains(&self, id: u64) -> bool {
        self.lock().contains_key(&id)
    }

    /// Adds trickled remote candidates (an `application/trickle-ice-sdpfrag` body, RFC 8840)
    /// to viewer `id`. A fragment whose `a=ice-ufrag` differs from the offer's asks for an
    /// ICE restart, which is refused; the queue towards the viewer is bounded.
    pub fn trickle(&self, id: u64, fragment: &str) -> Result<usize, RtcError> {
        let v = self
            .lock()
            .get(&id)
            .cloned()
            .ok_or(RtcError::NoSession(id))?;
        let mut candidates = Vec::new();
        for line in fragment.lines().map(str::trim) {
            if let Some(ufrag) = line.strip_prefix("a=ice-ufrag:") {
                let ours = v
                    .remote_ufrag
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if ours.as_deref() != Some(ufrag.trim()) {
                    return Err(RtcError::IceRestart);
                }
            } else if let Some(c) = line.strip_prefix("a=candidate:") {
                if c.split_whitespace().count() < 8 {
                    return Err(RtcError::BadFragment(format!(
                        "malformed candidate \"{line}\""
                    )));
                }
                candidates.push(format!("candidate:{c}"));
            }
        }
        let n = candidates.len();
        for c in candidates {
            v.trickle_tx
                .try_send(c)
                .map_err(|_| RtcError::BadFragment("too many pending candidates".into()))?;
        }
        Ok(n)
    }

    /// Restarts ICE on viewer `id` with its new credentials and candidates (RFC 9725 ICE
    /// restart): the same session, peer connection, DTLS and track; only the ICE agent
    /// starts over. Returns our new credentials, candidates and answer.
    pub async fn restart_ice(&self, id: u64, remote: IceParams) -> Result<IceRestarted, RtcError> {
        let v = self
            .lock()
            .get(&id)
            .cloned()
            .ok_or(RtcError::NoSession(id))?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        v.restart_tx
            .try_send(RestartRequest { remote, reply })
            .map_err(|_| {
                RtcError::Unanswerable("an ICE restart of this session is already under way".into())
            })?;
        match tokio::time::timeout(RESTART_TIMEOUT, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RtcError::NoSession(id)),
            Err(_) => Err(RtcError::Unanswerable(
                "the ICE restart was not answered in time".into(),
            )),
        }
    }

    /// The ETag generation of viewer `id` (ICE restarts done), `None` when unknown.
    pub fn ice_generation(&self, id: u64) -> Option<u64> {
        self.lock()
            .get(&id)
            .map(|v| v.ice_generation.load(Ordering::Relaxed))
    }

    /// Asks every viewer to close (detector stopped).
    pub fn close_all(&self) {
        for v in self.lock().values() {
            v.close_tx.send_replace(true);
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ViewerShared>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single
        // inserts/removes), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn reserve(
        &self,
        max: usize,
    ) -> Result<(Arc<ViewerShared>, watch::Receiver<bool>), RtcError> {
        let mut map = self.lock();
        if map.len() >= max {
            return Err(RtcError::TooManyViewers(max));
        }
        let (close_tx, close_rx) = watch::channel(false);
        let (trickle_tx, trickle_rx) = mpsc::channel(TRICKLE_QUEUE);
        let (restart_tx, restart_rx) = mpsc::channel(1);
        let shared = Arc::new(ViewerShared {
            remote_ufrag: Mutex::new(None),
            since: std::time::SystemTime::now(),
            remote: Mutex::new(None),
            trickle_tx,
            trickle_rx: Mutex::new(Some(trickle_rx)),
            restart_tx,
            restart_rx: Mutex::new(Some(restart_rx)),
            ice_generation: AtomicU64::new(0),
            id: NEXT_VIEWER_ID.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new("new"),
            created: Instant::now(),
            packets_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            frames_sent: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            keyframe_requests: AtomicU64::new(0),
            link: Mutex::new(LinkStats {
                feedback: "none",
                ..Default::default()
            }),
            samples: Mutex::new(Samples::default()),
            close_tx,
        });
        map.insert(shared.id, shared.clone());
        Ok((shared, close_rx))
    }

    pub(super) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }
}

pub(super) fn lock_samples(m: &Mutex<Samples>) -> std::sync::MutexGuard<'_, Samples> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn state_name(state: RTCPeerConnectionState) -> &'static str {
    match state {
        RTCPeerConnectionState::New => "new",
        RTCPeerConnectionState::Connecting => "connecting",
        RTCPeerConnectionState::Connected => "connected",
        RTCPeerConnectionState::Disconnected => "disconnected",
        RTCPeerConnectionState::Failed => "failed",
        RTCPeerConnectionState::Closed => "closed",
        _ => "unknown",
    }
}

pub(super) fn set_state(shared: &ViewerShared, s: &'static str) {
    *shared.state.lock().unwrap_or_else(|e| e.into_inner()) = s;
}
