//! Publishing into a media server (WHIP, Janus): our track on a peer connection that
//! *offers*, fed like any viewer from the detector's frame bus (no second encode).
//!
//! The signalling (an HTTP POST, Janus's API) lives in the server crate; this side only
//! makes the offer ([`offer_publish`]) and, given the server's answer, starts the same
//! streaming loop a viewer has ([`PublishOffer::accept`]): paced send queue, rendition
//! choice from the server's bandwidth feedback, our NACK responder, RTX and padding when
//! the server negotiates them, keyframes on the server's PLI/FIR through the detector's
//! keyframe coalescer.

use super::extensions::{extmap_id, SendExtensions};
use super::setup::{build_peer, gathered_local_sdp, negotiated_payload_type, LinkHandles, Peer};
use super::setup::{PeerSpec, TRANSPORT_CC_URI};
use super::task::{ViewerMetrics, ViewerTask};
use super::{RtcConfig, ViewerRegistry, ABS_CAPTURE_TIME_URI, PLAYOUT_DELAY_URI};
use crate::bus::{FrameBus, KeyframeRequest};
use crate::bwe::EstimateSnapshot;
use crate::RtcError;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tracing::{debug, info, info_span, Instrument, Span};
use webrtc::peer_connection::RTCSessionDescription;

/// The H.264 payload type and RTX payload type we offer.
const PUBLISH_PT: u8 = 102;
const PUBLISH_RTX_PT: u8 = 103;
/// Constrained baseline 3.1, packetization-mode 1: what our encoder produces and what
/// every SFU forwards to browsers.
const PUBLISH_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// Sessions a publish registry may hold at once (the live one and one still closing).
const MAX_PUBLISH_SESSIONS: usize = 2;

/// A publishing peer connection with its offer made, waiting for the server's answer.
/// Dropping it without [`PublishOffer::accept`] closes the peer connection.
pub struct PublishOffer {
    id: u64,
    offer_sdp: String,
    peer: Option<Peer>,
    link: Option<LinkHandles>,
    shared: Option<(
        Arc<super::registry::ViewerShared>,
        tokio::sync::watch::Receiver<bool>,
    )>,
    registry: ViewerRegistry,
    cfg: RtcConfig,
    detector: String,
    bus: FrameBus,
    span: Span,
}

/// A publishing session once the server's answer is applied.
pub struct PublishSession {
    /// Its id in the publish registry (as a viewer's in a viewer registry).
    pub id: u64,
    ended: oneshot::Receiver<&'static str>,
}

impl PublishSession {
    /// Resolves when the session has ended (connection failed or lost, detector stopped,
    /// closed through the registry), with why.
    pub async fn ended(&mut self) -> &'static str {
        (&mut self.ended).await.unwrap_or("publish task gone")
    }
}

/// Makes a send-only peer connection offering the detector's H.264 (with RTX, NACK,
/// PLI/FIR, REMB, transport-wide feedback, playout delay and capture time; the server
/// answers what it supports) and returns once the offer, with our candidates, is ready.
/// `target` names the destination in logs (a URL without secrets).
pub async fn offer_publish(
    cfg: &RtcConfig,
    detector: &str,
    target: &str,
    bus: &FrameBus,
    registry: &ViewerRegistry,
) -> Result<PublishOffer, RtcError> {
    let (shared, close_rx) = registry.reserve(MAX_PUBLISH_SESSIONS)?;
    let id = shared.id;
    let span = info_span!("publish_session", session = id);
    debug!(parent: &span, %detector, %target, "publish session");
    let top_bps = bus
        .ladder()
        .first()
        .map_or(4_000_000.0, |r| r.bitrate_bps as f64);
    let link = LinkHandles {
        estimate: Arc::new(Mutex::new(EstimateSnapshot::default())),
        remb: Arc::new(AtomicU64::new(0)),
        nack: Arc::default(),
    };
    let mut extensions = vec![ABS_CAPTURE_TIME_URI];
    if cfg.playout_delay.is_some() {
        extensions.push(PLAYOUT_DELAY_URI);
    }
    let spec = PeerSpec {
        payload_type: PUBLISH_PT,
        fmtp: PUBLISH_FMTP.to_owned(),
        rtx_payload_type: Some(PUBLISH_RTX_PT),
        extensions,
        transport_cc: true,
        send_only: true,
    };
    let built = build_peer(cfg, &spec, detector, id, top_bps * 1.25, &link)
        .instrument(span.clone())
        .await;
    let mut peer = match built {
        Ok(p) => p,
        Err(e) => {
            registry.remove(id);
            return Err(e);
        }
    };
    let offered = async {
        let offer = peer
            .pc
            .create_offer(None)
            .await
            .map_err(|e| RtcError::webrtc("create_offer", e))?;
        peer.pc
            .set_local_description(offer)
            .await
            .map_err(|e| RtcError::webrtc("set_local_description", e))?;
        gathered_local_sdp(cfg, &peer.pc, &mut peer.gathering_rx).await
    }
    .instrument(span.clone())
    .await;
    let offer_sdp = match offered {
        Ok(sdp) => sdp,
        Err(e) => {
            let _ = peer.pc.close().await;
            registry.remove(id);
            return Err(e);
        }
    };
    debug!(parent: &span, candidates = offer_sdp.matches("a=candidate").count(), "publish offer ready");
    Ok(PublishOffer {
        id,
        offer_sdp,
        peer: Some(peer),
        link: Some(link),
        shared: Some((shared, close_rx)),
        registry: registry.clone(),
        cfg: cfg.clone(),
        detector: detector.to_owned(),
        bus: bus.clone(),
        span,
    })
}

impl PublishOffer {
    /// The offer to send to the server, with our candidates (no trickle needed).
    pub fn offer_sdp(&self) -> &str {
        &self.offer_sdp
    }

    /// The session id this offer will have.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Applies the server's answer and starts streaming once connected. Errors when the
    /// answer cannot be applied (the peer connection is then closed).
    pub async fn accept(
        mut self,
        answer_sdp: &str,
        keyframe: KeyframeRequest,
    ) -> Result<PublishSession, RtcError> {
        let peer = self.peer.take().expect("a PublishOffer is accepted once");
        let link = self.link.take().expect("a PublishOffer is accepted once");
        let (shared, close_rx) = self.shared.take().expect("a PublishOffer is accepted once");
        let applied = async {
            let answer = RTCSessionDescription::answer(answer_sdp.to_owned())
                .map_err(|e| RtcError::BadSdp(e.to_string()))?;
            peer.pc
                .set_remote_description(answer)
                .await
                .map_err(|e| RtcError::Unanswerable(e.to_string()))?;
            negotiated_payload_type(&peer.sender).await
        }
        .await;
        let payload_type = match applied {
            Ok(pt) => pt,
            Err(e) => {
                let _ = peer.pc.close().await;
                self.registry.remove(self.id);
                return Err(e);
            }
        };
        // What the server took of our offer: RTX (an `apt=` our payload type in its
        // answer), transport-wide feedback, the header extensions (ids are ours).
        let rtx = answer_sdp.lines().any(|l| {
            l.starts_with("a=fmtp:") && l.trim_end().ends_with(&format!("apt={payload_type}"))
        });
        let transport_cc = answer_sdp.contains(TRANSPORT_CC_URI);
        let extensions = SendExtensions {
            playout_delay: self
                .cfg
                .playout_delay
                .and_then(|d| Some((extmap_id(answer_sdp, PLAYOUT_DELAY_URI)?, d.payload()))),
            abs_capture_time: extmap_id(answer_sdp, ABS_CAPTURE_TIME_URI),
        };
        info!(parent: &self.span, payload_type, rtx, transport_cc, "publish answer applied");
        let (done_tx, ended) = oneshot::channel();
        let task = ViewerTask {
            metrics: ViewerMetrics::publisher(&self.detector),
            cfg: self.cfg.clone(),
            pc: peer.pc,
            track: peer.track,
            payload_type,
            ssrc: peer.tap.ssrc(),
            tap: peer.tap,
            state_rx: peer.state_rx,
            meta_rx: peer.meta_rx,
            meta: None,
            sizes: Vec::new(),
            close_rx,
            bus: self.bus.clone(),
            keyframe,
            shared,
            registry: self.registry.clone(),
            link,
            rtx,
            extensions,
            transport_cc,
            done: Some(done_tx),
        };
        tokio::spawn(task.run().instrument(self.span.clone()));
        Ok(PublishSession { id: self.id, ended })
    }
}

impl Drop for PublishOffer {
    fn drop(&mut self) {
        if let Some(peer) = self.peer.take() {
            self.registry.remove(self.id);
            let pc = peer.pc;
            // Closing is async; outside a runtime the peer connection's own drop cleans up.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = pc.close().await;
                });
            }
        }
    }
}
