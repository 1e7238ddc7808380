//! Answering a viewer's offer: the media engine, the interceptor chain (reports, our NACK
//! responder, transport-wide feedback and the estimator), the peer connection, the answer.

use super::extensions::{ABS_CAPTURE_TIME_URI, PLAYOUT_DELAY_URI};
use super::RtcConfig;
use crate::bwe::{EstimateSnapshot, LinkEstimator};
use crate::interceptor::{KeyframeRequestForwarder, PublishingEstimator, RtxAlias};
use crate::nack::{NackCounters, NackResponder};
use crate::wire::WireTap;
use crate::RtcError;
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
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::RtpSender;

/// The transport-wide sequence number header extension (draft-holmer-rmcat-transport-wide-cc).
pub(super) const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// The RTX payload type to answer with: the offer's for the chosen format, when the
/// viewer also asks for NACK (RTX only carries retransmissions and padding).
pub(super) fn rtx_payload_type(offer_sdp: &str, choice: &crate::H264Choice) -> Option<u8> {
    let nack = format!("a=rtcp-fb:{} nack", choice.payload_type);
    let asks_nack = offer_sdp.lines().any(|l| l.trim_end() == nack);
    choice.rtx_payload_type.filter(|_| asks_nack)
}

/// ICE connectivity-check interval; see `setup_peer` for why it is short.
pub(super) const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(5);
/// Connectivity-check attempts per pair: 280 x 5 ms = the 1.4 s webrtc-rs gives by default.
pub(super) const ICE_CHECK_ATTEMPTS: u16 = 280;

pub(super) struct Handler {
    pub(super) state_tx: watch::Sender<RTCPeerConnectionState>,
    pub(super) gathering_tx: watch::Sender<bool>,
    /// The viewer's first data channel, for the metadata channel (crates/rtc/src/meta.rs).
    pub(super) meta_tx: mpsc::Sender<Arc<dyn DataChannel>>,
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

pub(super) type SetupParts = (
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
pub(super) struct LinkHandles {
    pub(super) estimate: Arc<Mutex<EstimateSnapshot>>,
    pub(super) remb: Arc<AtomicU64>,
    pub(super) nack: Arc<NackCounters>,
}

/// What a peer connection of ours sends and negotiates: the H.264 format, RTX, header
/// extensions and transport-wide feedback. An answer takes these from the viewer's offer;
/// a publisher (crates/rtc/src/viewer/publish.rs) offers them.
pub(super) struct PeerSpec {
    pub(super) payload_type: u8,
    pub(super) fmtp: String,
    pub(super) rtx_payload_type: Option<u8>,
    /// Header extension URIs to register (ours: playout delay, capture time).
    pub(super) extensions: Vec<&'static str>,
    pub(super) transport_cc: bool,
    /// Add the track on a send-only transceiver (publishing) instead of `add_track`
    /// (answering, where the offer's direction decides).
    pub(super) send_only: bool,
}

impl PeerSpec {
    /// What to answer a viewer's offer with.
    pub(super) fn answering(cfg: &RtcConfig, offer_sdp: &str, choice: &crate::H264Choice) -> Self {
        let mut extensions = vec![ABS_CAPTURE_TIME_URI];
        if cfg.playout_delay.is_some() {
            extensions.push(PLAYOUT_DELAY_URI);
        }
        extensions.retain(|u| offer_sdp.contains(u));
        PeerSpec {
            payload_type: choice.payload_type,
            fmtp: choice.fmtp.clone(),
            rtx_payload_type: rtx_payload_type(offer_sdp, choice),
            extensions,
            transport_cc: offer_sdp.contains(TRANSPORT_CC_URI),
            send_only: false,
        }
    }
}

/// A peer connection with our track on it, before any description is set.
pub(super) struct Peer {
    pub(super) pc: Arc<dyn PeerConnection>,
    pub(super) track: Arc<TrackLocalStaticRTP>,
    pub(super) sender: Arc<dyn RtpSender>,
    pub(super) tap: WireTap,
    pub(super) state_rx: watch::Receiver<RTCPeerConnectionState>,
    pub(super) meta_rx: mpsc::Receiver<Arc<dyn DataChannel>>,
    pub(super) gathering_rx: watch::Receiver<bool>,
}

/// Builds the media engine, the interceptor chain (reports, our NACK responder,
/// transport-wide numbering and the estimator), the peer connection and its track.
pub(super) async fn build_peer(
    cfg: &RtcConfig,
    spec: &PeerSpec,
    detector: &str,
    id: u64,
    initial_bps: f64,
    link: &LinkHandles,
) -> Result<Peer, RtcError> {
    let codec = RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: spec.fmtp.clone(),
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
                payload_type: spec.payload_type,
            },
            RtpCodecKind::Video,
        )
        .map_err(|e| RtcError::webrtc("register_codec", e))?;
    // RTX (RFC 4588) when the viewer offers it for the chosen format and asks for NACK:
    // retransmissions and padding then travel on their own SSRC (crates/rtc/src/nack.rs).
    if let Some(rtx_pt) = spec.rtx_payload_type {
        media_engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: MIME_TYPE_RTX.to_owned(),
                        clock_rate: 90_000,
                        channels: 0,
                        sdp_fmtp_line: format!("apt={}", spec.payload_type),
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
    for uri in &spec.extensions {
        media_engine
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: (*uri).to_owned(),
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
    let registry = if spec.transport_cc {
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
    let (gathering_tx, gathering_rx) = watch::channel(false);
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
        .with_tcp_addrs(tcp_addrs(cfg))
        .build()
        .await
        .map_err(|e| RtcError::webrtc("creating the peer connection", e))?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);

    let tap = WireTap::register();
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "lumacast".to_string(),
        format!("{detector}-video-{id}"),
        detector.to_string(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(tap.ssrc()),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )));
    let sender = if spec.send_only {
        match pc
            .add_transceiver_from_track(
                track.clone() as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| RtcError::webrtc("add_transceiver", e))
        {
            Ok(t) => match t.sender().await {
                Ok(Some(s)) => Ok(s),
                Ok(None) => Err(RtcError::webrtc("transceiver sender", "missing")),
                Err(e) => Err(RtcError::webrtc("transceiver sender", e)),
            },
            Err(e) => Err(e),
        }
    } else {
        pc.add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| RtcError::webrtc("add_track", e))
    };
    let sender = match sender {
        Ok(s) => s,
        Err(e) => {
            let _ = pc.close().await;
            return Err(e);
        }
    };
    Ok(Peer {
        pc,
        track,
        sender,
        tap,
        state_rx,
        meta_rx,
        gathering_rx,
    })
}

/// Our local description once ICE gathering is complete (bounded by
/// `cfg.gather_timeout`), rewritten for the single-port sockets and public addresses.
pub(super) async fn gathered_local_sdp(
    cfg: &RtcConfig,
    pc: &Arc<dyn PeerConnection>,
    gathering_rx: &mut watch::Receiver<bool>,
) -> Result<String, RtcError> {
    // Non-trickle: answer once our candidates are in the SDP. Host-only gathering
    // takes well under a millisecond; STUN/TURN may take longer, hence the bound.
    let gathered = tokio::time::timeout(cfg.gather_timeout, gathering_rx.wait_for(|done| *done))
        .await
        .is_ok();
    if !gathered {
        warn!(
            timeout_ms = cfg.gather_timeout.as_millis() as u64,
            "ICE gathering did not complete in time; going on with the candidates so far"
        );
    }
    let sdp = pc
        .local_description()
        .await
        .ok_or_else(|| RtcError::webrtc("local_description", "missing after set"))?
        .sdp;
    Ok(registered_local_sdp(cfg, sdp))
}

/// Our local description as viewers get it: its ufrag registered with the single-port
/// sockets (UDP and TCP; their candidates moved to the shared ports), public addresses.
pub(super) fn registered_local_sdp(cfg: &RtcConfig, sdp: String) -> String {
    let sdp = match &cfg.mux {
        Some(mux) => mux.register(&sdp),
        None => sdp,
    };
    let sdp = match &cfg.tcp_mux {
        Some(tcp_mux) if cfg.ice_tcp => tcp_mux.register(&sdp),
        _ => sdp,
    };
    with_public_ips(&sdp, &cfg.public_ips)
}

/// The viewer's offer again, with new ICE credentials and candidates (an ICE restart):
/// the old `a=ice-ufrag`/`a=ice-pwd` replaced, old candidates dropped, the new ones in the
/// first media section, and the session version bumped (RFC 3264 section 8).
pub(super) fn restarted_offer(offer: &str, remote: &super::IceParams) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut first_media_end = None;
    let mut media_sections = 0;
    for line in offer.lines() {
        let l = line.trim_end();
        if l.starts_with("a=candidate:") || l == "a=end-of-candidates" {
            continue;
        }
        if l.starts_with("m=") {
            media_sections += 1;
            if media_sections == 2 {
                first_media_end = Some(lines.len());
            }
        }
        if let Some(o) = l.strip_prefix("o=") {
            // o=<username> <sess-id> <sess-version> IN IP4 <address>
            let mut f: Vec<String> = o.split(' ').map(str::to_string).collect();
            if let Some(v) = f.get(2).and_then(|v| v.parse::<u64>().ok()) {
                f[2] = (v + 1).to_string();
            }
            lines.push(format!("o={}", f.join(" ")));
        } else if l.starts_with("a=ice-ufrag:") {
            lines.push(format!("a=ice-ufrag:{}", remote.ufrag));
        } else if l.starts_with("a=ice-pwd:") {
            lines.push(format!("a=ice-pwd:{}", remote.pwd));
        } else {
            lines.push(l.to_string());
        }
    }
    // The new candidates at the end of the first media section (the bundle's transport).
    let at = first_media_end.unwrap_or(lines.len());
    let candidates = remote.candidates.iter().map(|c| format!("a={c}"));
    lines.splice(at..at, candidates);
    let mut out = lines.join("\r\n");
    out.push_str("\r\n");
    out
}

/// The payload type the sender ended up with after negotiation.
pub(super) async fn negotiated_payload_type(sender: &Arc<dyn RtpSender>) -> Result<u8, RtcError> {
    sender
        .get_parameters()
        .await
        .map_err(|e| RtcError::webrtc("sender parameters", e))?
        .rtp_parameters
        .codecs
        .first()
        .map(|c| c.payload_type)
        .ok_or_else(|| RtcError::Unanswerable("no codec was negotiated for video".into()))
}

pub(super) async fn setup_peer(
    cfg: &RtcConfig,
    offer_sdp: &str,
    choice: &crate::H264Choice,
    detector: &str,
    id: u64,
    initial_bps: f64,
    link: &LinkHandles,
) -> Result<SetupParts, RtcError> {
    let spec = PeerSpec::answering(cfg, offer_sdp, choice);
    let Peer {
        pc,
        track,
        sender,
        tap,
        state_rx,
        meta_rx,
        mut gathering_rx,
    } = build_peer(cfg, &spec, detector, id, initial_bps, link).await?;

    let result = async {
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
        let answer_sdp = gathered_local_sdp(cfg, &pc, &mut gathering_rx).await?;
        let payload_type = negotiated_payload_type(&sender).await?;
        debug!(
            candidates = answer_sdp.matches("a=candidate").count(),
            "answer ready"
        );
        Ok((answer_sdp, payload_type))
    }
    .await;

    match result {
        Ok((answer_sdp, payload_type)) => {
            Ok((pc, track, answer_sdp, payload_type, tap, state_rx, meta_rx))
        }
        Err(e) => {
            let _ = pc.close().await;
            Err(e)
        }
    }
}

/// Where a viewer's passive ICE-TCP listener binds: the IPs of the UDP host candidates,
/// each on an ephemeral port (a fixed UDP port would collide between viewers over TCP,
/// since webrtc-rs binds one listener per peer connection). Empty with `ice_tcp` off.
pub(super) fn tcp_addrs(cfg: &RtcConfig) -> Vec<String> {
    if !cfg.ice_tcp {
        return vec![];
    }
    cfg.udp_addrs
        .iter()
        .map(|a| match a.parse::<std::net::SocketAddr>() {
            Ok(mut s) => {
                s.set_port(0);
                s.to_string()
            }
            Err(_) => a.clone(),
        })
        .collect()
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

    #[test]
    fn passive_tcp_candidates_move_to_the_public_address_too() {
        let sdp = "a=candidate:4 1 tcp 1671430143 172.17.0.2 40001 typ host tcptype passive\r\n";
        let out = with_public_ips(sdp, &["203.0.113.7".to_string()]);
        assert_eq!(
            out,
            "a=candidate:49 1 tcp 1671430143 203.0.113.7 40001 typ host tcptype passive\r\n"
        );
    }

    #[test]
    fn tcp_listeners_take_ephemeral_ports_on_the_udp_addresses() {
        let mut cfg = super::RtcConfig {
            udp_addrs: vec!["127.0.0.1:50000".into(), "0.0.0.0:0".into()],
            ..Default::default()
        };
        assert_eq!(super::tcp_addrs(&cfg), vec!["127.0.0.1:0", "0.0.0.0:0"]);
        cfg.ice_tcp = false;
        assert!(super::tcp_addrs(&cfg).is_empty());
    }
}
