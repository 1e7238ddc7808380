//! One peer connection per viewer, each with its own track, all fed from one frame bus.

use crate::bus::{FrameBus, KeyframeRequest};
use crate::bwe::{EstimateSnapshot, LinkEstimator};
use crate::interceptor::{
    has_keyframe_request, KeyframeRequestForwarder, PublishingEstimator, RtxAlias,
};
use crate::ladder::RenditionChooser;
use crate::nack::{NackCounters, NackResponder};
use crate::pacing::{SendQueue, PACING_FACTOR};
use crate::wire::WireTap;
use crate::{analyze_offer, MediaFrame, RtcError};
use bytes::Bytes;
use rtc::interceptor::Registry;
use rtc::interceptor::{CongestionControlBuilder, Slot, TwccSenderBuilder};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers,
};
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_RTX,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
    TYPE_RTCP_FB_TRANSPORT_CC,
};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{debug, info, info_span, warn, Instrument};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState,
    RTCSessionDescription,
};

/// Aborts a helper task when the viewer task ends, however it ends.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.abort();
        }
    }
}

/// The transport-wide sequence number header extension (draft-holmer-rmcat-transport-wide-cc).
const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// The RTX payload type to answer with: the offer's for the chosen format, when the
/// viewer also asks for NACK (RTX only carries retransmissions and padding).
fn rtx_payload_type(offer_sdp: &str, choice: &crate::H264Choice) -> Option<u8> {
    let nack = format!("a=rtcp-fb:{} nack", choice.payload_type);
    let asks_nack = offer_sdp.lines().any(|l| l.trim_end() == nack);
    choice.rtx_payload_type.filter(|_| asks_nack)
}

/// The playout-delay header extension: the receiver's render delay bounds, per frame.
pub const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
/// The absolute-capture-time header extension: when the frame was captured (NTP time).
pub const ABS_CAPTURE_TIME_URI: &str =
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";

/// Bounds on how long a viewer's browser may hold a frame before rendering it, sent in
/// the playout-delay RTP header extension to viewers that offer it (Chromium does).
/// `0, 0` asks for each frame to be rendered as soon as it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayoutDelay {
    /// Milliseconds, in steps of 10, at most 40 950.
    pub min_ms: u16,
    pub max_ms: u16,
}

impl PlayoutDelay {
    /// The extension's 3 bytes: two 12-bit values in units of 10 ms.
    pub fn payload(self) -> [u8; 3] {
        let min = (self.min_ms / 10).min(0xfff);
        let max = (self.max_ms / 10).min(0xfff).max(min);
        [
            (min >> 4) as u8,
            (((min & 0xf) << 4) | (max >> 8)) as u8,
            (max & 0xff) as u8,
        ]
    }
}

/// The absolute-capture-time extension's 8 bytes: the capture time as a 64-bit NTP
/// timestamp (UQ32.32 seconds since 1900).
pub fn abs_capture_time(captured_us: u64) -> [u8; 8] {
    const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;
    let secs = captured_us / 1_000_000 + NTP_UNIX_OFFSET_S;
    let frac = ((captured_us % 1_000_000) << 32) / 1_000_000;
    (((secs & 0xffff_ffff) << 32) | frac).to_be_bytes()
}

/// The id our answer gave `uri` (`a=extmap:<id>[/direction] <uri>`).
fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|l| {
        let rest = l.trim_end().strip_prefix("a=extmap:")?;
        let (id, u) = rest.split_once(' ')?;
        let u = u.split_whitespace().next()?;
        (u == uri).then_some(())?;
        id.split('/').next()?.parse().ok()
    })
}

/// Header extensions this viewer negotiated that we fill in: their ids in the answer.
#[derive(Debug, Clone, Copy, Default)]
struct SendExtensions {
    playout_delay: Option<(u8, [u8; 3])>,
    abs_capture_time: Option<u8>,
}

/// ICE connectivity-check interval; see `setup_peer` for why it is short.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(5);
/// Connectivity-check attempts per pair: 280 x 5 ms = the 1.4 s webrtc-rs gives by default.
const ICE_CHECK_ATTEMPTS: u16 = 280;

/// WebRTC settings shared by every viewer.
#[derive(Debug, Clone)]
pub struct RtcConfig {
    /// Local UDP addresses to gather host candidates on (`127.0.0.1:0` lets same-machine
    /// viewers in; `0.0.0.0:0` opens one socket per non-loopback interface).
    pub udp_addrs: Vec<String>,
    /// STUN/TURN URLs handed to ICE (empty: host candidates only, nothing contacted).
    pub ice_servers: Vec<String>,
    /// Username and credential for the TURN servers among `ice_servers`.
    pub ice_username: Option<String>,
    pub ice_credential: Option<String>,
    /// Public addresses to advertise instead of the host's (NAT 1:1, e.g. a cloud VM's
    /// elastic IP or a Docker host's address).
    pub public_ips: Vec<String>,
    /// Longest wait for our own ICE gathering before answering with what we have.
    pub gather_timeout: Duration,
    /// A viewer that has not connected by then is closed (an offer that never connects).
    pub connect_timeout: Duration,
    /// A viewer whose connection stays `disconnected` this long is closed.
    pub disconnect_timeout: Duration,
    /// Most viewers per detector.
    pub max_viewers: usize,
    /// Playout delay sent to viewers that negotiate the extension (`None`: not negotiated).
    pub playout_delay: Option<PlayoutDelay>,
    /// Single-port mode: every viewer's media through this one socket.
    pub mux: Option<crate::UdpMux>,
}

impl Default for RtcConfig {
    fn default() -> Self {
        RtcConfig {
            udp_addrs: vec!["127.0.0.1:0".into()],
            ice_servers: vec![],
            ice_username: None,
            ice_credential: None,
            public_ips: vec![],
            gather_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(15),
            disconnect_timeout: Duration::from_secs(5),
            max_viewers: 64,
            playout_delay: Some(PlayoutDelay {
                min_ms: 0,
                max_ms: 0,
            }),
            mux: None,
        }
    }
}

/// How a viewer's link is doing and where it is on the ladder (written by its task).
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkStats {
    /// Where the estimate comes from: "transport-cc", "remb" or "none" (no feedback: the
    /// viewer stays on the full-size rendition, unpaced, as before estimation existed).
    pub feedback: &'static str,
    /// The path's estimated rate, bits per second (0 when unknown).
    pub estimate_bps: f64,
    /// Smoothed fraction of packets the viewer reported lost.
    pub loss: f64,
    /// Standing queue on the path, ms.
    pub queue_ms: f64,
    /// The rendition sent (0 = full size) and its picture size.
    pub rendition: usize,
    pub width: u32,
    pub height: u32,
    /// Rendition changes so far.
    pub switches: u64,
    /// The pacing rate (0: unpaced) and how long the viewer's queue takes to drain.
    pub pacing_bps: f64,
    pub send_queue_ms: f64,
    /// Whole frames dropped from this viewer's queue because its link could not keep up.
    pub frames_dropped_queue: u64,
    /// Packets the viewer asked for again (NACK), those resent, and those refused (too
    /// old, asked again too soon, or over the retransmission budget).
    pub nack_requested: u64,
    pub nack_resent: u64,
    pub nack_refused: u64,
    /// Whether the viewer negotiated RTX (RFC 4588): retransmissions and padding then go
    /// on its repair stream, and its link is probed with padding instead of trial moves.
    pub rtx: bool,
    /// The padding rate asked for now (bits per second), and padding packets sent so far.
    pub padding_bps: f64,
    pub padding_packets: u64,
    /// Frame messages sent on the viewer's metadata channel, and dropped because its
    /// send buffer was full (`None`: the viewer opened no data channel).
    pub meta_sent: Option<u64>,
    pub meta_dropped: u64,
}

struct ViewerShared {
    link: Mutex<LinkStats>,
    id: u64,
    state: Mutex<&'static str>,
    created: Instant,
    packets_sent: AtomicU64,
    bytes_sent: AtomicU64,
    frames_sent: AtomicU64,
    frames_dropped: AtomicU64,
    samples: Mutex<Samples>,
    close_tx: watch::Sender<bool>,
    /// Wall-clock creation time, for the sessions API.
    since: std::time::SystemTime,
    /// Who sent the offer (the HTTP client), when known.
    remote: Mutex<Option<std::net::SocketAddr>>,
    /// The viewer's ICE username fragment from its offer (trickle fragments must match).
    remote_ufrag: Mutex<Option<String>>,
    /// Trickled remote candidates for the viewer task to add (bounded).
    trickle_tx: mpsc::Sender<String>,
    trickle_rx: Mutex<Option<mpsc::Receiver<String>>>,
}

/// Trickled candidates waiting for a viewer task, at most.
const TRICKLE_QUEUE: usize = 64;

/// Latency samples kept per viewer (per kind), about 17 s at 30 fps.
const LATENCY_WINDOW: usize = 512;

/// Recent per-frame delivery timings of one viewer (bounded rings).
#[derive(Default)]
struct Samples {
    /// (when, capture → first packet handed to webrtc-rs µs, → last packet µs, bytes).
    handoff: VecDeque<(Instant, u32, u32, u32)>,
    /// (when, capture → first packet on the socket µs, → last packet on the socket µs).
    wire: VecDeque<(Instant, u32, u32)>,
}

fn push_bounded<T>(q: &mut VecDeque<T>, v: T) {
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
    inner: Arc<Mutex<HashMap<u64, Arc<ViewerShared>>>>,
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

    /// Asks every viewer to close (detector stopped).
    pub fn close_all(&self) {
        for v in self.lock().values() {
            v.close_tx.send_replace(true);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ViewerShared>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single
        // inserts/removes), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reserve(&self, max: usize) -> Result<(Arc<ViewerShared>, watch::Receiver<bool>), RtcError> {
        let mut map = self.lock();
        if map.len() >= max {
            return Err(RtcError::TooManyViewers(max));
        }
        let (close_tx, close_rx) = watch::channel(false);
        let (trickle_tx, trickle_rx) = mpsc::channel(TRICKLE_QUEUE);
        let shared = Arc::new(ViewerShared {
            remote_ufrag: Mutex::new(None),
            since: std::time::SystemTime::now(),
            remote: Mutex::new(None),
            trickle_tx,
            trickle_rx: Mutex::new(Some(trickle_rx)),
            id: NEXT_VIEWER_ID.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new("new"),
            created: Instant::now(),
            packets_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            frames_sent: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
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

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }
}

fn lock_samples(m: &Mutex<Samples>) -> std::sync::MutexGuard<'_, Samples> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The result of answering an offer.
#[derive(Debug, Clone)]
pub struct ViewerSession {
    pub id: u64,
    /// The complete answer, with our ICE candidates (no trickle needed).
    pub answer_sdp: String,
}

struct Handler {
    state_tx: watch::Sender<RTCPeerConnectionState>,
    gathering_tx: watch::Sender<bool>,
    /// The viewer's first data channel, for the metadata channel (crates/rtc/src/meta.rs).
    meta_tx: mpsc::Sender<Arc<dyn DataChannel>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathering_tx.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state_tx.send_replace(state);
    }

    async fn on_data_channel(&self, data_channel: Arc<dyn DataChannel>) {
        // The first one is the metadata channel; others are left unanswered.
        if self.meta_tx.try_send(data_channel).is_err() {
            debug!("a further data channel from the viewer is ignored");
        }
    }
}

fn state_name(state: RTCPeerConnectionState) -> &'static str {
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

/// Answers a viewer's fully gathered offer and starts streaming `bus` to it once it
/// connects. Returns when the answer (with our candidates) is ready.
pub async fn answer_offer(
    cfg: &RtcConfig,
    offer_sdp: &str,
    detector: &str,
    bus: &FrameBus,
    keyframe: KeyframeRequest,
    registry: &ViewerRegistry,
) -> Result<ViewerSession, RtcError> {
    let choice = analyze_offer(offer_sdp)?;
    let (shared, close_rx) = registry.reserve(cfg.max_viewers)?;
    let id = shared.id;
    let span = info_span!("viewer", detector = %detector, viewer = id);
    // The estimate starts where the full-size rendition fits with room (a good link
    // loses nothing); a slower link backs it off within the first second.
    let top_bps = bus
        .ladder()
        .first()
        .map_or(4_000_000.0, |r| r.bitrate_bps as f64);
    let link = LinkHandles {
        estimate: Arc::new(Mutex::new(EstimateSnapshot::default())),
        remb: Arc::new(AtomicU64::new(0)),
        nack: Arc::default(),
    };
    let setup = setup_peer(cfg, offer_sdp, &choice, detector, id, top_bps * 1.25, &link)
        .instrument(span.clone())
        .await;
    let (pc, track, answer_sdp, payload_type, tap, state_rx, meta_rx) = match setup {
        Ok(parts) => parts,
        Err(e) => {
            registry.remove(id);
            return Err(e);
        }
    };
    info!(parent: &span, profile = %choice.profile_level_id, payload_type, "answered offer");
    *shared
        .remote_ufrag
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = offer_sdp
        .lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(|u| u.trim().to_string());

    let task = ViewerTask {
        metrics: ViewerMetrics::new(detector),
        cfg: cfg.clone(),
        pc,
        track,
        payload_type,
        ssrc: tap.ssrc(),
        tap,
        state_rx,
        meta_rx,
        meta: None,
        sizes: Vec::new(),
        close_rx,
        bus: bus.clone(),
        keyframe,
        shared,
        registry: registry.clone(),
        link,
        rtx: rtx_payload_type(offer_sdp, &choice).is_some(),
        extensions: SendExtensions {
            playout_delay: cfg
                .playout_delay
                .and_then(|d| Some((extmap_id(&answer_sdp, PLAYOUT_DELAY_URI)?, d.payload()))),
            abs_capture_time: extmap_id(&answer_sdp, ABS_CAPTURE_TIME_URI),
        },
        transport_cc: offer_sdp.contains(TRANSPORT_CC_URI),
    };
    tokio::spawn(task.run().instrument(span));
    Ok(ViewerSession { id, answer_sdp })
}

type SetupParts = (
    Arc<dyn PeerConnection>,
    Arc<TrackLocalStaticRTP>,
    String,
    u8,
    WireTap,
    watch::Receiver<RTCPeerConnectionState>,
    mpsc::Receiver<Arc<dyn DataChannel>>,
);

/// Where a viewer's feedback lands for its task to read: the transport-cc estimate
/// (written by the estimator inside the interceptor chain) and the latest REMB.
struct LinkHandles {
    estimate: Arc<Mutex<EstimateSnapshot>>,
    remb: Arc<AtomicU64>,
    nack: Arc<NackCounters>,
}

async fn setup_peer(
    cfg: &RtcConfig,
    offer_sdp: &str,
    choice: &crate::H264Choice,
    detector: &str,
    id: u64,
    initial_bps: f64,
    link: &LinkHandles,
) -> Result<SetupParts, RtcError> {
    let codec = RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: choice.fmtp.clone(),
        rtcp_feedback: vec![
            RTCPFeedback {
                typ: "nack".into(),
                parameter: String::new(),
            },
            RTCPFeedback {
                typ: "nack".into(),
                parameter: "pli".into(),
            },
            RTCPFeedback {
                typ: "ccm".into(),
                parameter: "fir".into(),
            },
            // For viewers without transport-wide feedback (REMB is what they send).
            RTCPFeedback {
                typ: "goog-remb".into(),
                parameter: String::new(),
            },
        ],
    };
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: codec.clone(),
                payload_type: choice.payload_type,
            },
            RtpCodecKind::Video,
        )
        .map_err(|e| RtcError::webrtc("register_codec", e))?;
    // RTX (RFC 4588) when the viewer offers it for the chosen format and asks for NACK:
    // retransmissions and padding then travel on their own SSRC (crates/rtc/src/nack.rs).
    if let Some(rtx_pt) = rtx_payload_type(offer_sdp, choice) {
        media_engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: MIME_TYPE_RTX.to_owned(),
                        clock_rate: 90_000,
                        channels: 0,
                        sdp_fmtp_line: format!("apt={}", choice.payload_type),
                        rtcp_feedback: vec![],
                    },
                    payload_type: rtx_pt,
                },
                RtpCodecKind::Video,
            )
            .map_err(|e| RtcError::webrtc("register_codec (rtx)", e))?;
    }
    // RTCP reports, the MID/RID extensions browsers demultiplex by, and our own NACK
    // responder (crates/rtc/src/nack.rs) in place of webrtc-rs' unbounded one.
    configure_simulcast_extension_headers(&mut media_engine)
        .map_err(|e| RtcError::webrtc("interceptors", e))?;
    // Playout delay (so the browser renders each frame when decoded, whatever the page
    // asks) and the capture time, when the viewer offers them.
    let mut extensions = vec![ABS_CAPTURE_TIME_URI];
    if cfg.playout_delay.is_some() {
        extensions.push(PLAYOUT_DELAY_URI);
    }
    for uri in extensions.into_iter().filter(|u| offer_sdp.contains(u)) {
        media_engine
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: uri.to_owned(),
                },
                RtpCodecKind::Video,
                None,
            )
            .map_err(|e| RtcError::webrtc("header extension", e))?;
    }
    let registry = configure_rtcp_reports(Registry::new())
        .with(
            Slot::NackResponder,
            NackResponder::new(link.estimate.clone(), link.nack.clone()),
        )
        .with(
            14_000usize.into(),
            KeyframeRequestForwarder::with_remb(link.remb.clone()),
        );
    // Send-side estimation from the viewer's transport-wide feedback: `transport-cc`
    // and the sequence-number extension are offered, webrtc-rs numbers what leaves and
    // resolves the feedback, and our estimator (crates/rtc/src/bwe.rs) turns it into a
    // rate. No webrtc-rs pacer: the viewer task paces its own queue, so that it can drop
    // whole old frames (the pacer's queue is out of our reach).
    // Only for a viewer that offers the extension: the send history costs memory per
    // packet, and without feedback it would only be pruned.
    // Numbering and the send history are wrapped so that they see the RTX stream too
    // (`RtxAlias`): padding only helps the estimate if the viewer can report it.
    let registry = if offer_sdp.contains(TRANSPORT_CC_URI) {
        media_engine.register_feedback(
            RTCPFeedback {
                typ: TYPE_RTCP_FB_TRANSPORT_CC.to_owned(),
                parameter: String::new(),
            },
            RtpCodecKind::Video,
        );
        media_engine
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: TRANSPORT_CC_URI.to_owned(),
                },
                RtpCodecKind::Video,
                None,
            )
            .map_err(|e| RtcError::webrtc("transport-cc", e))?;
        registry
            .with(Slot::TwccSender, RtxAlias(TwccSenderBuilder::new().build()))
            .with(
                Slot::CongestionControl,
                RtxAlias(
                    CongestionControlBuilder::new(PublishingEstimator {
                        inner: LinkEstimator::new(initial_bps, 150_000.0, 50_000_000.0),
                        out: link.estimate.clone(),
                    })
                    .build(),
                ),
            )
    } else {
        registry
    };

    let ice_servers = if cfg.ice_servers.is_empty() {
        vec![]
    } else {
        vec![RTCIceServer {
            urls: cfg.ice_servers.clone(),
            username: cfg.ice_username.clone().unwrap_or_default(),
            credential: cfg.ice_credential.clone().unwrap_or_default(),
        }]
    };
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(ice_servers)
        .build();

    let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
    let (meta_tx, meta_rx) = mpsc::channel(1);
    let (gathering_tx, mut gathering_rx) = watch::channel(false);
    let handler = Arc::new(Handler {
        state_tx,
        gathering_tx,
        meta_tx,
    });
    // webrtc-rs 0.21 queues the DTLS ClientHello (we are the DTLS client when answering)
    // the moment ICE selects a pair, but only hands it to the socket on the connection's
    // next timer tick: the ICE check interval, 200 ms by default. A 5 ms check interval
    // (with 280 attempts, the same 1.4 s of trying) bounds that wait to 5 ms. The interval
    // only applies while ICE is checking (then the 2 s keepalive does), so the extra
    // wakeups last for the handshake only.
    let setting_engine = SettingEngineBuilder::new()
        .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_CHECK_ATTEMPTS))
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_setting_engine(setting_engine)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_data_channel_send_buffer_limit(crate::meta::SEND_BUFFER_LIMIT)
        .with_runtime(crate::runtime::media_runtime(cfg.mux.clone()))
        .with_udp_addrs(cfg.udp_addrs.clone())
        .build()
        .await
        .map_err(|e| RtcError::webrtc("creating the peer connection", e))?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);

    let result = async {
        let tap = WireTap::register();
        let ssrc = tap.ssrc();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "lumacast".to_string(),
            format!("{detector}-video-{id}"),
            detector.to_string(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        )));
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| RtcError::webrtc("add_track", e))?;

        let offer = RTCSessionDescription::offer(offer_sdp.to_owned())
            .map_err(|e| RtcError::BadSdp(e.to_string()))?;
        pc.set_remote_description(offer)
            .await
            .map_err(|e| RtcError::Unanswerable(e.to_string()))?;
        let answer = pc
            .create_answer(None)
            .await
            .map_err(|e| RtcError::Unanswerable(e.to_string()))?;
        pc.set_local_description(answer)
            .await
            .map_err(|e| RtcError::webrtc("set_local_description", e))?;

        // Non-trickle: answer once our candidates are in the SDP. Host-only gathering
        // takes well under a millisecond; STUN/TURN may take longer, hence the bound.
        let gathered =
            tokio::time::timeout(cfg.gather_timeout, gathering_rx.wait_for(|done| *done))
                .await
                .is_ok();
        if !gathered {
            warn!(
                timeout_ms = cfg.gather_timeout.as_millis() as u64,
                "ICE gathering did not complete in time; answering with the candidates so far"
            );
        }
        let answer_sdp = pc
            .local_description()
            .await
            .ok_or_else(|| RtcError::webrtc("local_description", "missing after set"))?
            .sdp;
        let answer_sdp = match &cfg.mux {
            Some(mux) => mux.register(&answer_sdp),
            None => answer_sdp,
        };
        let answer_sdp = with_public_ips(&answer_sdp, &cfg.public_ips);
        let payload_type = sender
            .get_parameters()
            .await
            .map_err(|e| RtcError::webrtc("sender parameters", e))?
            .rtp_parameters
            .codecs
            .first()
            .map(|c| c.payload_type)
            .ok_or_else(|| RtcError::Unanswerable("no codec was negotiated for video".into()))?;
        debug!(
            candidates = answer_sdp.matches("a=candidate").count(),
            "answer ready"
        );
        Ok((track, answer_sdp, payload_type, tap))
    }
    .await;

    match result {
        Ok((track, answer_sdp, payload_type, tap)) => {
            Ok((pc, track, answer_sdp, payload_type, tap, state_rx, meta_rx))
        }
        Err(e) => {
            let _ = pc.close().await;
            Err(e)
        }
    }
}

/// NAT 1:1 (a cloud VM's public IP, a Docker host's address): every host candidate on a
/// non-loopback address is advertised on each public address instead, with the same
/// port (the NAT maps public:port to that socket); loopback candidates stay, for viewers
/// on the same machine. (webrtc-rs 0.21 stores a `nat_1to1_ips` setting but its gatherer
/// never reads it.)
pub fn with_public_ips(sdp: &str, public_ips: &[String]) -> String {
    if public_ips.is_empty() {
        return sdp.to_string();
    }
    let mut out = String::with_capacity(sdp.len() * 2);
    for line in sdp.split_inclusive('\n') {
        let l = line.trim_end();
        let Some(rest) = l.strip_prefix("a=candidate:") else {
            out.push_str(line);
            continue;
        };
        // foundation component transport priority address port "typ" type ...
        let f: Vec<&str> = rest.split_whitespace().collect();
        let loopback = f
            .get(4)
            .and_then(|a| a.parse::<std::net::IpAddr>().ok())
            .is_some_and(|ip| ip.is_loopback());
        if f.len() < 8 || f[6] != "typ" || f[7] != "host" || loopback {
            out.push_str(line);
            continue;
        }
        let priority: u32 = f[3].parse().unwrap_or(0);
        for (i, ip) in public_ips.iter().enumerate() {
            let mut g: Vec<String> = f.iter().map(|s| s.to_string()).collect();
            g[0] = format!("{}{}", f[0], 9 - i.min(8));
            g[3] = priority.saturating_sub(i as u32).to_string();
            g[4] = ip.clone();
            out.push_str("a=candidate:");
            out.push_str(&g.join(" "));
            out.push_str("\r\n");
        }
    }
    out
}

/// Resolves once the close switch is on (or its sender is gone).
async fn wait_closed(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await;
}

fn set_state(shared: &ViewerShared, s: &'static str) {
    *shared.state.lock().unwrap_or_else(|e| e.into_inner()) = s;
}

/// Prometheus handles of one viewer, labelled by detector.
struct ViewerMetrics {
    viewers: metrics::Gauge,
    first_packet: metrics::Histogram,
    last_packet: metrics::Histogram,
    handoff_first: metrics::Histogram,
    packets: metrics::Counter,
    bytes: metrics::Counter,
    frames_dropped: metrics::Counter,
    /// Viewers' link estimates, bits per second (one sample per look).
    estimate: metrics::Histogram,
    rendition_moves: metrics::Counter,
}

impl ViewerMetrics {
    fn new(detector: &str) -> Self {
        let d = detector.to_string();
        ViewerMetrics {
            viewers: metrics::gauge!("lumacast_viewers", "detector" => d.clone()),
            first_packet: metrics::histogram!("lumacast_frame_to_first_packet_seconds", "detector" => d.clone()),
            last_packet: metrics::histogram!("lumacast_frame_to_last_packet_seconds", "detector" => d.clone()),
            handoff_first: metrics::histogram!("lumacast_frame_to_first_handoff_seconds", "detector" => d.clone()),
            packets: metrics::counter!("lumacast_rtp_packets_sent_total", "detector" => d.clone()),
            bytes: metrics::counter!("lumacast_rtp_bytes_sent_total", "detector" => d.clone()),
            frames_dropped: metrics::counter!("lumacast_viewer_frames_dropped_total", "detector" => d.clone()),
            estimate: metrics::histogram!("lumacast_viewer_estimate_bps", "detector" => d.clone()),
            rendition_moves: metrics::counter!("lumacast_viewer_rendition_moves_total", "detector" => d),
        }
    }
}

struct ViewerTask {
    metrics: ViewerMetrics,
    cfg: RtcConfig,
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    payload_type: u8,
    ssrc: u32,
    /// Times this viewer's packets on the socket; unregisters when the task ends.
    tap: WireTap,
    state_rx: watch::Receiver<RTCPeerConnectionState>,
    /// The viewer's data channel once it opens one, and the channel in use.
    meta_rx: mpsc::Receiver<Arc<dyn DataChannel>>,
    meta: Option<MetaChannel>,
    /// Each rendition's picture size (refreshed at every look), for the frame messages.
    sizes: Vec<(u32, u32)>,
    close_rx: watch::Receiver<bool>,
    bus: FrameBus,
    keyframe: KeyframeRequest,
    shared: Arc<ViewerShared>,
    registry: ViewerRegistry,
    link: LinkHandles,
    /// The viewer negotiated RTX, and transport-wide feedback: its link can be probed
    /// with padding.
    rtx: bool,
    transport_cc: bool,
    /// Header extensions filled in on every packet (playout delay) or every frame's
    /// first packet (capture time).
    extensions: SendExtensions,
}

/// The metadata channel of a viewer (see crates/rtc/src/meta.rs).
struct MetaChannel {
    dc: Arc<dyn DataChannel>,
    open: Arc<std::sync::atomic::AtomicBool>,
    sent: u64,
    dropped: u64,
    _reader: AbortOnDrop,
}

impl MetaChannel {
    /// Takes the viewer's channel: a task answers its pings and follows its state.
    fn start(dc: Arc<dyn DataChannel>) -> Self {
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (dc, open) = (dc.clone(), open.clone());
            tokio::spawn(
                async move {
                    while let Some(event) = dc.poll().await {
                        match event {
                            DataChannelEvent::OnOpen => {
                                debug!("metadata channel open");
                                open.store(true, Ordering::Relaxed);
                            }
                            DataChannelEvent::OnMessage(m) => {
                                if let Some(pong) =
                                    crate::meta::answer(&m.data, crate::meta::unix_us())
                                {
                                    let _ = dc.try_send_text(&pong).await;
                                }
                            }
                            DataChannelEvent::OnClose => break,
                            _ => {}
                        }
                    }
                    open.store(false, Ordering::Relaxed);
                }
                .in_current_span(),
            )
        };
        MetaChannel {
            dc,
            open,
            sent: 0,
            dropped: 0,
            _reader: AbortOnDrop(Some(reader)),
        }
    }
}

/// How often a viewer task looks at its estimate (rendition choice, pacing rate, stats).
const LOOK_INTERVAL: Duration = Duration::from_millis(200);
/// No padding while the viewer's own send queue holds more than this.
const PADDING_MAX_QUEUE: Duration = Duration::from_millis(50);

/// The viewer's own RTP numbering and the timing of the frame being sent.
struct Outgoing {
    seq: u16,
    ts_offset: u32,
    write_errors: u64,
    frame_first_us: u32,
    frame_bytes: u64,
}

impl ViewerTask {
    /// Writes every packet the pacer lets out now, with this viewer's RTP header.
    async fn send_ready(&mut self, queue: &mut SendQueue, out: &mut Outgoing) {
        while let Some(p) = queue.pop(Instant::now()) {
            let rtp_ts = out.ts_offset.wrapping_add(p.rtp_ts);
            let mut pkt = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    marker: p.marker,
                    payload_type: self.payload_type,
                    sequence_number: out.seq,
                    timestamp: rtp_ts,
                    ssrc: self.ssrc,
                    ..Default::default()
                },
                payload: p.payload.clone(),
            };
            // Ids 1-14 and payloads this small always fit a one-byte header extension.
            if let Some((id, delay)) = self.extensions.playout_delay {
                let _ = pkt.header.set_extension(id, Bytes::copy_from_slice(&delay));
            }
            if let (Some(id), true) = (self.extensions.abs_capture_time, p.first) {
                let _ = pkt
                    .header
                    .set_extension(id, Bytes::copy_from_slice(&abs_capture_time(p.captured_us)));
            }
            out.seq = out.seq.wrapping_add(1);
            let len = p.payload.len() as u64;
            if let Err(e) = self.track.write_rtp(pkt).await {
                out.write_errors += 1;
                if out.write_errors == 1 {
                    warn!(error = %e, "writing RTP failed (further errors only counted)");
                }
            }
            if p.first {
                out.frame_first_us = p.captured.elapsed().as_micros() as u32;
                out.frame_bytes = 0;
            }
            out.frame_bytes += len;
            self.metrics.packets.increment(1);
            self.metrics.bytes.increment(len);
            self.shared.packets_sent.fetch_add(1, Ordering::Relaxed);
            self.shared.bytes_sent.fetch_add(len, Ordering::Relaxed);
            if !p.marker {
                continue;
            }
            let now = Instant::now();
            let first_us = out.frame_first_us;
            let last_us = now.saturating_duration_since(p.captured).as_micros() as u32;
            if let Some(meta) = self
                .meta
                .as_mut()
                .filter(|m| m.open.load(Ordering::Relaxed))
            {
                let (width, height) = self.sizes.get(p.rendition).copied().unwrap_or((0, 0));
                let message = crate::meta::FrameMeta {
                    seq: p.frame_seq,
                    rtp_ts,
                    captured_us: p.captured_us,
                    encode_us: p.encode_us,
                    send_us: u64::from(last_us),
                    keyframe: p.keyframe,
                    bytes: out.frame_bytes,
                    rendition: p.rendition,
                    width,
                    height,
                }
                .message();
                // Never waits: a message that does not fit the bounded buffer is dropped.
                if meta.dc.try_send_text(&message).await.is_ok() {
                    meta.sent += 1;
                } else {
                    meta.dropped += 1;
                }
            }
            self.metrics.handoff_first.record(f64::from(first_us) / 1e6);
            {
                let mut s = lock_samples(&self.shared.samples);
                push_bounded(
                    &mut s.handoff,
                    (now, first_us, last_us, out.frame_bytes as u32),
                );
                // Frames whose packets have left the socket by now (usually
                // the previous ones: the driver sends after we hand over).
                self.tap.drain(|t| {
                    self.metrics
                        .first_packet
                        .record(f64::from(t.first_us) / 1e6);
                    self.metrics.last_packet.record(f64::from(t.last_us) / 1e6);
                    push_bounded(&mut s.wire, (now, t.first_us, t.last_us));
                });
            }
            self.shared.frames_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn run(mut self) {
        self.metrics.viewers.increment(1.0);
        let reason = self.stream().await;
        self.metrics.viewers.decrement(1.0);
        set_state(&self.shared, "closed");
        info!(
            reason,
            frames_sent = self.shared.frames_sent.load(Ordering::Relaxed),
            frames_dropped = self.shared.frames_dropped.load(Ordering::Relaxed),
            "viewer closed"
        );
        if let Err(e) = self.pc.close().await {
            debug!(error = %e, "closing the peer connection");
        }
        self.registry.remove(self.shared.id);
    }

    /// Streams until the viewer goes away; returns why it ended.
    async fn stream(&mut self) -> &'static str {
        let started = Instant::now();
        set_state(&self.shared, "connecting");
        // Subscribe and ask for the viewer's IDR now, while ICE and DTLS run: the IDR is
        // encoded in parallel with the handshake and waits in the (bounded) bus until we
        // are connected, instead of being requested only afterwards. If connecting takes
        // longer than the bus holds, `Lagged` below asks for a fresh one.
        let mut rx = self.bus.subscribe();
        self.keyframe.request("new viewer");
        // Trickled remote candidates (WHEP PATCH) go to the peer connection as they come.
        let trickle_rx = self
            .shared
            .trickle_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let trickle_task = trickle_rx.map(|mut rx| {
            let pc = self.pc.clone();
            tokio::spawn(
                async move {
                    while let Some(candidate) = rx.recv().await {
                        let init = RTCIceCandidateInit {
                            candidate,
                            sdp_mline_index: Some(0),
                            ..Default::default()
                        };
                        match pc.add_ice_candidate(init).await {
                            Ok(()) => debug!("trickled candidate added"),
                            Err(e) => warn!(error = %e, "a trickled candidate was refused"),
                        }
                    }
                }
                .in_current_span(),
            )
        });
        let _trickle_guard = AbortOnDrop(trickle_task);
        // Wait for the connection (ICE + DTLS), bounded.
        let connected = tokio::select! {
            r = tokio::time::timeout(
                self.cfg.connect_timeout,
                self.state_rx.wait_for(|s| matches!(
                    s,
                    RTCPeerConnectionState::Connected
                        | RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                )),
            ) => match r {
                Ok(Ok(s)) => *s,
                Ok(Err(_)) => return "peer connection dropped before connecting",
                Err(_) => {
                    warn!(timeout_s = self.cfg.connect_timeout.as_secs(), "viewer never connected (ICE/DTLS did not complete): is its network reachable from our candidates?");
                    return "connect timeout";
                }
            },
            _ = wait_closed(&mut self.close_rx) => return "closed by server",
        };
        if connected != RTCPeerConnectionState::Connected {
            warn!(state = state_name(connected), "viewer failed to connect");
            return "failed to connect";
        }
        info!(
            connect_ms = started.elapsed().as_millis() as u64,
            "viewer connected"
        );
        set_state(&self.shared, "connected");

        // Keyframe requests from the viewer (PLI/FIR) go to the encoder of the rendition
        // it is on.
        let track = self.track.clone();
        let kf = self.keyframe.clone();
        let on_rendition = Arc::new(AtomicUsize::new(0));
        let on = on_rendition.clone();
        let rtcp_task = tokio::spawn(
            async move {
                while let Some(evt) = track.poll().await {
                    if let TrackLocalEvent::OnRtcpPacket(packets) = evt {
                        if has_keyframe_request(&packets) {
                            debug!("viewer asked for a keyframe (PLI/FIR)");
                            kf.request_for(on.load(Ordering::Relaxed), "pli");
                        }
                    }
                }
            }
            .in_current_span(),
        );

        let mut out = Outgoing {
            seq: rand::random(),
            ts_offset: rand::random(),
            write_errors: 0,
            frame_first_us: 0,
            frame_bytes: 0,
        };
        let mut queue = SendQueue::new();
        let mut chooser = RenditionChooser::with_padding(self.rtx && self.transport_cc);
        let mut current = 0usize;
        // A move in progress: the target's subscription, until its first keyframe.
        let mut pending: Option<(usize, broadcast::Receiver<Arc<MediaFrame>>, Instant)> = None;
        let mut waiting_for_keyframe = true;
        let mut disconnected_since: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut look = tokio::time::interval(LOOK_INTERVAL);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut queue_drops = 0u64;

        let reason = loop {
            let release = queue.next_release(Instant::now());
            tokio::select! {
                biased;
                _ = wait_closed(&mut self.close_rx) => break "closed by server",
                changed = self.state_rx.changed() => {
                    if changed.is_err() {
                        break "peer connection dropped";
                    }
                    let s = *self.state_rx.borrow_and_update();
                    match s {
                        RTCPeerConnectionState::Failed => break "connection failed",
                        RTCPeerConnectionState::Closed => break "closed by viewer",
                        RTCPeerConnectionState::Disconnected => {
                            set_state(&self.shared, "disconnected");
                            disconnected_since.get_or_insert_with(Instant::now);
                        }
                        RTCPeerConnectionState::Connected => {
                            set_state(&self.shared, "connected");
                            disconnected_since = None;
                        }
                        _ => {}
                    }
                }
                Some(dc) = self.meta_rx.recv(), if self.meta.is_none() => {
                    info!("the viewer opened a metadata channel");
                    self.meta = Some(MetaChannel::start(dc));
                }
                _ = tick.tick() => {
                    if disconnected_since.is_some_and(|t| t.elapsed() > self.cfg.disconnect_timeout) {
                        break "disconnected too long";
                    }
                }
                _ = async { tokio::time::sleep_until(release.unwrap_or_else(Instant::now).into()).await }, if release.is_some() => {
                    self.send_ready(&mut queue, &mut out).await;
                }
                _ = look.tick() => {
                    // The estimate, where the viewer's feedback says one.
                    let now = Instant::now();
                    let est = *self.link.estimate.lock().unwrap_or_else(|e| e.into_inner());
                    let remb = self.link.remb.load(Ordering::Relaxed) as f64;
                    let (feedback, estimate, congested) = if est.reports > 0 {
                        ("transport-cc", est.bitrate_bps, est.congested)
                    } else if remb > 0.0 {
                        ("remb", remb, false)
                    } else {
                        ("none", 0.0, false)
                    };
                    queue.set_rate((estimate > 0.0).then_some(estimate * PACING_FACTOR));
                    let ladder = self.bus.ladder();
                    self.sizes = ladder.iter().map(|r| (r.width, r.height)).collect();
                    if current >= ladder.len().max(1) && pending.is_none() {
                        // The ladder lost this step (turned off, or the picture shrank):
                        // back to the full size.
                        info!(from = current, "the ladder changed: viewer moves to the full-size rendition");
                        chooser.reset_to(0);
                        pending = Some((0, self.bus.subscribe_to(0), now));
                        self.keyframe.request_for(0, "rendition gone");
                    } else if estimate > 0.0 && ladder.len() > 1 {
                        let bitrates: Vec<u64> = ladder.iter().map(|r| r.bitrate_bps).collect();
                        if let Some((to, why)) = chooser.decide(now, estimate, congested, &bitrates) {
                            if to != current || pending.is_some() {
                                info!(
                                    from = current,
                                    to,
                                    why = why.as_str(),
                                    estimate_kbps = (estimate / 1000.0) as u64,
                                    loss = est.loss,
                                    queue_ms = est.queue_ms as u64,
                                    "viewer moves to another rendition"
                                );
                                if to == current {
                                    // Back where it is: nothing to wait for, but frames of
                                    // this rendition dropped meanwhile need a keyframe.
                                    pending = None;
                                    if waiting_for_keyframe {
                                        self.keyframe.request_for(current, "rendition move cancelled");
                                    }
                                } else {
                                    if to > current {
                                        // Down: the link cannot carry what is queued of this
                                        // rendition; let the smaller IDR through first.
                                        queue_drops += queue.drop_unstarted();
                                    }
                                    pending = Some((to, self.bus.subscribe_to(to), now));
                                    self.keyframe.request_for(to, "rendition switch");
                                }
                            }
                        }
                    }
                    // A move whose keyframe has not come: ask again.
                    if let Some((to, _, since)) = pending.as_mut() {
                        if now.saturating_duration_since(*since) > Duration::from_secs(1) {
                            *since = now;
                            self.keyframe.request_for(*to, "rendition switch (again)");
                        }
                    }
                    // Padding probes the link above the media (only with RTX; nothing
                    // while a move is under way or the viewer's own queue is behind).
                    let padding_bps = if ladder.len() > 1 && estimate > 0.0 {
                        let bitrates: Vec<u64> = ladder.iter().map(|r| r.bitrate_bps).collect();
                        let total = chooser.padding_target(now, estimate, congested, &bitrates);
                        let media = bitrates.get(current).copied().unwrap_or(0) as f64;
                        if pending.is_none() && queue.delay() < PADDING_MAX_QUEUE {
                            (total - media).max(0.0)
                        } else {
                            0.0
                        }
                    } else {
                        0.0
                    };
                    self.link.nack.padding_bps.store(padding_bps as u64, Ordering::Relaxed);
                    let r = ladder.get(current).copied();
                    let mut l = self.shared.link.lock().unwrap_or_else(|e| e.into_inner());
                    *l = LinkStats {
                        feedback,
                        estimate_bps: estimate,
                        loss: if feedback == "transport-cc" { est.loss } else { 0.0 },
                        queue_ms: est.queue_ms,
                        rendition: current,
                        width: r.map_or(0, |r| r.width),
                        height: r.map_or(0, |r| r.height),
                        switches: chooser.switches(),
                        pacing_bps: queue.rate().unwrap_or(0.0),
                        send_queue_ms: queue.delay().as_secs_f64() * 1e3,
                        frames_dropped_queue: queue_drops,
                        nack_requested: self.link.nack.requested.load(Ordering::Relaxed),
                        nack_resent: self.link.nack.resent.load(Ordering::Relaxed),
                        nack_refused: self.link.nack.refused.load(Ordering::Relaxed),
                        rtx: self.rtx,
                        padding_bps,
                        padding_packets: self.link.nack.padding_packets.load(Ordering::Relaxed),
                        meta_sent: self.meta.as_ref().map(|m| m.sent),
                        meta_dropped: self.meta.as_ref().map_or(0, |m| m.dropped),
                    };
                    drop(l);
                    self.metrics.estimate.record(estimate);
                }
                r = async {
                    match pending.as_mut() {
                        Some((_, rx, _)) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => match r {
                    Ok(frame) if frame.keyframe => {
                        // The target's first keyframe: the move happens here, on the same
                        // track and SSRC; what is queued of the old rendition and has not
                        // started is dropped (the new picture replaces it).
                        let Some((to, new_rx, _)) = pending.take() else { continue };
                        queue.drop_unstarted();
                        rx = new_rx;
                        current = to;
                        on_rendition.store(to, Ordering::Relaxed);
                        self.metrics.rendition_moves.increment(1);
                        waiting_for_keyframe = false;
                        queue.push_frame(&frame);
                        self.tap.expect(out.ts_offset.wrapping_add(frame.rtp_ts), frame.captured);
                        self.send_ready(&mut queue, &mut out).await;
                    }
                    Ok(_) => {} // not decodable on its own: wait for the keyframe
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break "detector stopped",
                },
                r = rx.recv() => match r {
                        Ok(_) if pending.as_ref().is_some_and(|(to, _, _)| *to > current) => {
                        // Moving down: frames of the rendition being left only delay the
                        // smaller keyframe on a link that cannot carry them.
                        self.shared.frames_dropped.fetch_add(1, Ordering::Relaxed);
                        waiting_for_keyframe = true;
                    }
                    Ok(frame) => {
                        if waiting_for_keyframe {
                            if !frame.keyframe {
                                self.shared.frames_dropped.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            waiting_for_keyframe = false;
                            debug!(seq = frame.seq, rendition = current, "keyframe to viewer");
                        }
                        queue.push_frame(&frame);
                        if queue.over_bound() {
                            // The link cannot carry what is queued: drop whole frames that
                            // have not started and resume on a keyframe (latest wins).
                            let n = queue.drop_unstarted();
                            queue_drops += n;
                            self.shared.frames_dropped.fetch_add(n, Ordering::Relaxed);
                            self.metrics.frames_dropped.increment(n);
                            if queue_drops == n {
                                warn!(dropped = n, pacing_kbps = queue.rate().unwrap_or(0.0) as u64 / 1000, "viewer's link is too slow for its rendition: frames dropped, resyncing on a keyframe (further drops only counted)");
                            }
                            waiting_for_keyframe = true;
                            self.keyframe.request_for(current, "viewer queue full");
                            continue;
                        }
                        self.tap.expect(out.ts_offset.wrapping_add(frame.rtp_ts), frame.captured);
                        self.send_ready(&mut queue, &mut out).await;
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // This viewer fell behind; the others did not wait for it. Resume on
                        // the next keyframe so it never decodes from a broken reference.
                        self.shared.frames_dropped.fetch_add(missed, Ordering::Relaxed);
                        self.metrics.frames_dropped.increment(missed);
                        warn!(missed, "viewer too slow: frames dropped, resyncing on a keyframe");
                        queue.drop_unstarted();
                        waiting_for_keyframe = true;
                        self.keyframe.request_for(current, "viewer lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => break "detector stopped",
                }
            }
        };
        rtcp_task.abort();
        reason
    }
}

#[cfg(test)]
mod public_ip_tests {
    use super::with_public_ips;

    #[test]
    fn interface_candidates_move_to_the_public_address_and_loopback_stays() {
        let sdp = "v=0\r\n\
            a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n\
            a=candidate:2 1 udp 2130706175 172.17.0.2 50001 typ host\r\n\
            a=candidate:3 1 udp 1694498815 198.51.100.1 50001 typ srflx raddr 0.0.0.0 rport 0\r\n\
            a=end-of-candidates\r\n";
        let out = with_public_ips(sdp, &["203.0.113.7".to_string()]);
        assert!(out.contains("a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n"));
        assert!(!out.contains("172.17.0.2"), "{out}");
        assert!(
            out.contains("a=candidate:29 1 udp 2130706175 203.0.113.7 50001 typ host\r\n"),
            "{out}"
        );
        assert!(out.contains("198.51.100.1 50001 typ srflx"), "{out}");
        assert!(out.ends_with("a=end-of-candidates\r\n"));
        assert_eq!(with_public_ips(sdp, &[]), sdp);
    }
}

#[cfg(test)]
mod extension_tests {
    use super::*;

    #[test]
    fn header_extension_payloads() {
        let d = |min_ms, max_ms| PlayoutDelay { min_ms, max_ms }.payload();
        assert_eq!(d(0, 0), [0, 0, 0]);
        // 100 ms = 10 units, 1 s = 100 units: 0x00a, 0x064.
        assert_eq!(d(100, 1000), [0x00, 0xa0, 0x64]);
        assert_eq!(d(40_950, 40_950), [0xff, 0xff, 0xff]);
        // 2026-12-07 00:00:00.5 UTC as NTP: seconds since 1900, then half a second.
        let t = abs_capture_time(1796601600 * 1_000_000 + 500_000);
        assert_eq!(t, [0xee, 0xc0, 0x75, 0x80, 0x80, 0x00, 0x00, 0x00]);
    }

    #[test]
    fn extension_ids_are_read_from_the_answer() {
        let sdp = "v=0\r\na=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:5/sendonly http://www.webrtc.org/experiments/rtp-hdrext/playout-delay\r\n";
        assert_eq!(extmap_id(sdp, PLAYOUT_DELAY_URI), Some(5));
        assert_eq!(extmap_id(sdp, ABS_CAPTURE_TIME_URI), None);
    }
}
