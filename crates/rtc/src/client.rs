//! A receiving WebRTC peer: offers a `recvonly` H.264 video section, and hands back
//! reassembled access units with their arrival times. Used by the scenario tests and the
//! latency probe, so the server is always exercised by a real, independent peer.

use crate::RtcError;
use bytes::{Bytes, BytesMut};
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::configure_rtcp_reports;
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_H264};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription,
};

/// One access unit as received.
#[derive(Debug, Clone)]
pub struct ReceivedFrame {
    /// Annex-B access unit (start codes before each NAL).
    pub access_unit: Bytes,
    pub rtp_timestamp: u32,
    /// Arrival of the frame's first and last (marker) RTP packet.
    pub first_packet_at: Instant,
    pub last_packet_at: Instant,
    /// Frames discarded since the previous one handed out, because packets were lost
    /// (the client then waits for the next IDR and asks for one with a PLI).
    pub lost_before: u32,
    /// The access unit holds an IDR slice.
    pub keyframe: bool,
    pub packets: usize,
}

/// What the client reports, in order.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    Connected(Instant),
    Frame(ReceivedFrame),
    /// Connection failed or closed.
    Closed,
}

struct Handler {
    gathering_tx: watch::Sender<bool>,
    events: mpsc::Sender<ClientEvent>,
    track: Arc<std::sync::Mutex<Option<Arc<dyn TrackRemote>>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathering_tx.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let evt = match state {
            RTCPeerConnectionState::Connected => ClientEvent::Connected(Instant::now()),
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => ClientEvent::Closed,
            _ => return,
        };
        let _ = self.events.try_send(evt);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        *self.track.lock().unwrap_or_else(|e| e.into_inner()) = Some(track.clone());
        let events = self.events.clone();
        tokio::spawn(async move {
            let media_ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
            let mut depacketizer = H264Packet::default();
            let mut au = BytesMut::new();
            let mut first_at: Option<Instant> = None;
            let mut packets = 0usize;
            let mut last_seq: Option<u16> = None;
            let mut broken = false; // this frame lost packets
            let mut need_idr = false; // decoding state lost: wait for an IDR
            let mut lost = 0u32;
            let mut last_pli: Option<Instant> = None;
            while let Some(evt) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(pkt) = evt else {
                    continue;
                };
                let now = Instant::now();
                if let Some(prev) = last_seq {
                    let delta = pkt.header.sequence_number.wrapping_sub(prev);
                    if delta == 0 || delta > 0x8000 {
                        continue; // duplicate or late packet
                    }
                    if delta != 1 {
                        broken = true;
                    }
                }
                last_seq = Some(pkt.header.sequence_number);
                first_at.get_or_insert(now);
                packets += 1;
                match depacketizer.depacketize(&pkt.payload) {
                    Ok(b) => au.extend_from_slice(&b),
                    Err(_) => broken = true,
                }
                if !pkt.header.marker {
                    continue;
                }
                let access_unit = au.split().freeze();
                let keyframe = has_idr(&access_unit);
                let first_packet_at = first_at.take().unwrap_or(now);
                let n = std::mem::take(&mut packets);
                if std::mem::take(&mut broken) {
                    need_idr = true;
                }
                if need_idr && !keyframe {
                    lost += 1;
                    if last_pli.is_none_or(|t| t.elapsed() > Duration::from_millis(300)) {
                        last_pli = Some(now);
                        let _ = track
                            .write_rtcp(vec![Box::new(PictureLossIndication {
                                sender_ssrc: 0,
                                media_ssrc,
                            })])
                            .await;
                    }
                    continue;
                }
                need_idr = false;
                let frame = ReceivedFrame {
                    access_unit,
                    rtp_timestamp: pkt.header.timestamp,
                    first_packet_at,
                    last_packet_at: now,
                    lost_before: std::mem::take(&mut lost),
                    keyframe,
                    packets: n,
                };
                // Bounded: a consumer that stops reading loses frames, never memory.
                let _ = events.try_send(ClientEvent::Frame(frame));
            }
            let _ = events.try_send(ClientEvent::Closed);
        });
    }
}

/// True when an Annex-B access unit contains an IDR slice (NAL type 5).
fn has_idr(au: &[u8]) -> bool {
    au.windows(4)
        .any(|w| w[0] == 0 && w[1] == 0 && w[2] == 1 && (w[3] & 0x1f) == 5)
}

/// A receive-only viewer.
pub struct ViewerClient {
    pc: Arc<dyn PeerConnection>,
    track: Arc<std::sync::Mutex<Option<Arc<dyn TrackRemote>>>>,
    events: mpsc::Receiver<ClientEvent>,
    offer_sdp: String,
}

impl ViewerClient {
    /// Creates the peer and a fully gathered offer offering `profiles` (profile-level-id
    /// values, packetization-mode 1) in that order.
    pub async fn new(profiles: &[&str]) -> Result<Self, RtcError> {
        let mut media_engine = MediaEngine::default();
        for (i, profile) in profiles.iter().enumerate() {
            media_engine
                .register_codec(
                    RTCRtpCodecParameters {
                        rtp_codec: RTCRtpCodec {
                            mime_type: MIME_TYPE_H264.to_owned(),
                            clock_rate: 90_000,
                            channels: 0,
                            sdp_fmtp_line: format!(
                                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"
                            ),
                            rtcp_feedback: vec![],
                        },
                        payload_type: 102 + i as u8,
                    },
                    RtpCodecKind::Video,
                )
                .map_err(|e| RtcError::webrtc("register_codec", e))?;
        }
        // Reports only, no NACK: a lost packet makes the client wait for the next IDR and
        // ask for it (PLI), which is what a live viewer needs and keeps reassembly simple.
        let registry = configure_rtcp_reports(Registry::new());
        let (gathering_tx, mut gathering_rx) = watch::channel(false);
        let (events_tx, events) = mpsc::channel(256);
        let track = Arc::new(std::sync::Mutex::new(None));
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                gathering_tx,
                events: events_tx,
                track: track.clone(),
            }))
            .with_runtime(crate::runtime::media_runtime(None))
            .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
            .build()
            .await
            .map_err(|e| RtcError::webrtc("client peer connection", e))?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        pc.add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| RtcError::webrtc("add_transceiver", e))?;
        let offer = pc
            .create_offer(None)
            .await
            .map_err(|e| RtcError::webrtc("create_offer", e))?;
        pc.set_local_description(offer)
            .await
            .map_err(|e| RtcError::webrtc("set_local_description", e))?;
        let _ = tokio::time::timeout(Duration::from_secs(2), gathering_rx.wait_for(|d| *d)).await;
        let offer_sdp = pc
            .local_description()
            .await
            .ok_or_else(|| RtcError::webrtc("local_description", "missing"))?
            .sdp;
        Ok(ViewerClient {
            pc,
            track,
            events,
            offer_sdp,
        })
    }

    /// The gathered offer to POST.
    pub fn offer_sdp(&self) -> &str {
        &self.offer_sdp
    }

    /// Applies the server's answer; the connection then starts.
    pub async fn accept_answer(&self, sdp: String) -> Result<(), RtcError> {
        let answer =
            RTCSessionDescription::answer(sdp).map_err(|e| RtcError::BadSdp(e.to_string()))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(|e| RtcError::webrtc("set_remote_description", e))
    }

    /// Next event, or `None` after `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<ClientEvent> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Sends a Picture Loss Indication, as a browser does when it cannot decode.
    pub async fn send_pli(&self) -> Result<(), RtcError> {
        let track = self
            .track
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| RtcError::webrtc("send_pli", "no track received yet"))?;
        let media_ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
        track
            .write_rtcp(vec![Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            })])
            .await
            .map_err(|e| RtcError::webrtc("send_pli", e))
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

impl Drop for ViewerClient {
    /// A dropped client stops its peer (the driver task would otherwise keep answering
    /// ICE consent checks, and the server would keep streaming to it).
    fn drop(&mut self) {
        let pc = self.pc.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}
