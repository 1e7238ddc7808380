//! One peer connection per viewer, each with its own track, all fed from one frame bus.
//!
//! `setup` answers the offer and builds the peer connection, `task` streams to it,
//! `registry` keeps what the HTTP side sees of every viewer, `extensions` the header
//! extensions we fill in.

mod extensions;
mod publish;
mod registry;
mod setup;
mod task;

pub use extensions::{abs_capture_time, PlayoutDelay, ABS_CAPTURE_TIME_URI, PLAYOUT_DELAY_URI};
pub use publish::{offer_publish, PublishOffer, PublishSession};
pub use registry::{IceParams, IceRestarted, ViewerRegistry, ViewerSnapshot};

use extensions::{extmap_id, SendExtensions};
use setup::{rtx_payload_type, setup_peer, LinkHandles, TRANSPORT_CC_URI};
use task::{ViewerMetrics, ViewerTask};

use crate::bus::{FrameBus, KeyframeRequest};
use crate::bwe::EstimateSnapshot;
use crate::{analyze_offer, RtcError};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, info_span, Instrument};

/// Aborts a helper task when the viewer task ends, however it ends.
pub(super) struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.abort();
        }
    }
}

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
    /// ICE over TCP (RFC 6544): each viewer also gets a passive TCP host candidate, on
    /// its own listener on an ephemeral port on the IPs of `udp_addrs`, for viewers on
    /// networks that drop UDP. webrtc-rs 0.21 binds one listener per peer connection, so
    /// this does not go through the single-port socket; `tcp_mux` is the shared port.
    pub ice_tcp: bool,
    /// One TCP port for every viewer's ICE-TCP (`--ice-tcp-port`): answers advertise it
    /// and connections to it are routed to the viewer's own listener (`None`: each
    /// viewer's passive candidate carries its listener's ephemeral port).
    pub tcp_mux: Option<crate::IceTcpMux>,
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
            ice_tcp: true,
            tcp_mux: None,
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

/// The result of answering an offer.
#[derive(Debug, Clone)]
pub struct ViewerSession {
    pub id: u64,
    /// The complete answer, with our ICE candidates (no trickle needed).
    pub answer_sdp: String,
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
        done: None,
    };
    tokio::spawn(task.run().instrument(span));
    Ok(ViewerSession { id, answer_sdp })
}
