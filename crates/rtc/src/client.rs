//! A receiving WebRTC peer: offers a `recvonly` H.264 video section, and hands back
//! reassembled access units with their arrival times. Used by the scenario tests and the
//! latency probe, so the server is always exercised by a real, independent peer.

use crate::RtcError;
use bytes::{Bytes, BytesMut};
use rtc::interceptor::{NackGeneratorBuilder, Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_H264};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Padding-only RTP packets (bandwidth probes) received since the previous frame.
    pub padding_before: u32,
    /// RTP packets given up on (never came, or too late) since the previous frame.
    pub packets_lost_before: u32,
    /// RTP packets that came out of order but in time (retransmissions after a NACK,
    /// reordering) since the previous frame.
    pub packets_recovered_before: u32,
}

/// What the client reports, in order.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    Connected(Instant),
    Frame(ReceivedFrame),
    /// Connection failed or closed.
    Closed,
}

/// How a [`ViewerClient`] receives.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Local UDP addresses ICE gathers host candidates on (e.g. a namespace's veth
    /// address with port 0).
    pub udp_addrs: Vec<String>,
    /// Offer `transport-cc` feedback and the transport-wide sequence number header
    /// extension, and send TransportLayerCC feedback like a browser does.
    pub transport_cc: bool,
    /// Offer `nack` and `nack pli`, ask for retransmissions of lost packets, and wait
    /// (bounded) for them before declaring a frame broken.
    pub nack: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            udp_addrs: vec!["127.0.0.1:0".to_string()],
            transport_cc: false,
            nack: false,
        }
    }
}

/// What a client received so far (all counters since it started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// RTP packets received (including padding and retransmissions).
    pub packets: u64,
    /// RTP payload bytes received.
    pub payload_bytes: u64,
    /// Padding-only packets (bandwidth probes).
    pub padding: u64,
    /// Packets given up on: never came, or too late.
    pub packets_lost: u64,
    /// Packets that came out of order but in time (retransmissions, reordering).
    pub packets_recovered: u64,
    /// Duplicates and packets that came after their gap was given up on.
    pub packets_late: u64,
    /// Frames handed out.
    pub frames: u64,
    /// Frames discarded: incomplete, or waiting for an IDR.
    pub frames_discarded: u64,
    /// Picture Loss Indications sent.
    pub plis: u64,
}

/// The counters behind [`ClientStats`], shared with the receiving task.
#[derive(Debug, Default)]
struct Counters {
    packets: AtomicU64,
    payload_bytes: AtomicU64,
    padding: AtomicU64,
    packets_lost: AtomicU64,
    packets_recovered: AtomicU64,
    packets_late: AtomicU64,
    frames: AtomicU64,
    frames_discarded: AtomicU64,
    plis: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ClientStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClientStats {
            packets: g(&self.packets),
            payload_bytes: g(&self.payload_bytes),
            padding: g(&self.padding),
            packets_lost: g(&self.packets_lost),
            packets_recovered: g(&self.packets_recovered),
            packets_late: g(&self.packets_late),
            frames: g(&self.frames),
            frames_discarded: g(&self.frames_discarded),
            plis: g(&self.plis),
        }
    }
}

/// Most packets the reorder buffer holds behind a gap before it gives up on the gap.
const REORDER_PACKETS: usize = 512;
/// Longest wait for a missing packet (a retransmission) once a later one arrived.
const REORDER_WAIT: Duration = Duration::from_millis(300);
/// An access unit larger than this is treated as broken (keeps reassembly bounded).
const MAX_ACCESS_UNIT: usize = 16 * 1024 * 1024;
/// SRTP replay window with NACK (packets), as in browsers.
const SRTP_REPLAY_WINDOW: usize = 1024;
/// Packets NACKed at most this many times (one NACK round every 100 ms).
const MAX_NACKS_PER_PACKET: u16 = 3;

/// What [`ReorderBuffer::pop`] hands out, in sequence order.
#[derive(Debug, PartialEq)]
pub(crate) enum Reordered<T> {
    /// The next packet in sequence, with its arrival time.
    Packet { at: Instant, item: T },
    /// This many packets never arrived in time: the gap is given up.
    Lost(u64),
}

/// Puts RTP packets back in sequence-number order, waiting a bounded time (and a bounded
/// number of packets) for a missing one, e.g. a retransmission, before giving up on it.
///
/// Sequence numbers are extended to 64 bits relative to the next expected one; a packet
/// older than that (already given up on, or a duplicate) is dropped.
#[derive(Debug)]
pub(crate) struct ReorderBuffer<T> {
    next: Option<u64>,
    pending: BTreeMap<u64, (Instant, T)>,
    max_packets: usize,
    max_wait: Duration,
    /// Packets dropped at a resynchronisation, reported as lost on the next pop.
    flushed: u64,
    /// Highest extended sequence number seen.
    highest: u64,
    /// Packets that arrived after a later one (reordered, or retransmitted) and were in
    /// time; taken by [`take_filled`](Self::take_filled).
    filled: u64,
}

impl<T> ReorderBuffer<T> {
    /// Holds at most `max_packets` behind a gap, for at most `max_wait` (zero: a gap is
    /// given up as soon as a later packet is there, i.e. no reordering tolerated).
    pub(crate) fn new(max_packets: usize, max_wait: Duration) -> Self {
        ReorderBuffer {
            next: None,
            pending: BTreeMap::new(),
            max_packets: max_packets.max(1),
            max_wait,
            flushed: 0,
            highest: 0,
            filled: 0,
        }
    }

    /// Takes a packet that arrived at `at`. Returns false when it is dropped (a duplicate,
    /// or a packet whose gap was already given up on).
    pub(crate) fn push(&mut self, seq: u16, at: Instant, item: T) -> bool {
        // Extended numbers start high so that nothing below the first packet underflows.
        let next = *self.next.get_or_insert(1 << 32 | u64::from(seq));
        let delta = i64::from(seq.wrapping_sub(next as u16) as i16);
        let ext = (next as i64 + delta) as u64;
        if ext < next {
            if next - ext > self.max_packets as u64 {
                // Far behind anything a retransmission could be: the sender restarted its
                // numbering. Give up what is held and follow the new numbering.
                self.flushed += self.pending.len() as u64;
                self.pending.clear();
                self.next = Some(1 << 32 | u64::from(seq));
                self.highest = 1 << 32 | u64::from(seq);
                self.pending.insert(1 << 32 | u64::from(seq), (at, item));
                return true;
            }
            return false;
        }
        if self.pending.contains_key(&ext) {
            return false;
        }
        if ext < self.highest {
            self.filled += 1;
        }
        self.highest = self.highest.max(ext);
        self.pending.insert(ext, (at, item));
        true
    }

    /// The next packet in order, or a lost gap once it waited too long, or `None` when
    /// the buffer is waiting (or empty).
    pub(crate) fn pop(&mut self, now: Instant) -> Option<Reordered<T>> {
        if self.flushed > 0 {
            return Some(Reordered::Lost(std::mem::take(&mut self.flushed)));
        }
        let next = self.next?;
        if let Some((at, item)) = self.pending.remove(&next) {
            self.next = Some(next + 1);
            return Some(Reordered::Packet { at, item });
        }
        let (&first, &(at, _)) = self.pending.first_key_value()?;
        if self.pending.len() > self.max_packets || now >= at + self.max_wait {
            self.next = Some(first);
            return Some(Reordered::Lost(first - next));
        }
        None
    }

    /// Packets that filled a gap in time since the last call (retransmissions, reordering).
    pub(crate) fn take_filled(&mut self) -> u64 {
        std::mem::take(&mut self.filled)
    }

    /// When [`pop`](Self::pop) gives up the current gap if nothing fills it.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let next = self.next?;
        if self.pending.contains_key(&next) {
            return None;
        }
        self.pending
            .first_key_value()
            .map(|(_, (at, _))| *at + self.max_wait)
    }

    /// Packets held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending.len()
    }
}

/// What the frame assembler produces.
#[derive(Debug)]
enum Assembled {
    Frame(ReceivedFrame),
    /// A frame was discarded: packets were lost, or decoding waits for an IDR.
    Discarded,
}

/// Reassembles access units from packets in sequence order (after the reorder buffer).
///
/// A frame is handed out only when all its packets arrived: a gap inside it, a missing
/// marker (the timestamp changed first) or a gap before its first packet makes it broken,
/// and then every frame up to the next IDR is discarded (the decoder lost its reference).
/// One exception: a keyframe whose first packet starts with its SPS is whole even after a
/// gap, because nothing before it belongs to it. Padding-only packets (empty payload after
/// the RTP padding is stripped) carry nothing and never break a frame.
struct Assembler {
    depacketizer: H264Packet,
    au: BytesMut,
    ts: u32,
    first_at: Option<Instant>,
    packets: usize,
    /// Packets were lost after this frame's first one, or a payload did not parse.
    broken: bool,
    /// Packets were lost right before this frame's first one.
    gap_before: bool,
    /// This frame's first packet starts with an SPS.
    starts_with_sps: bool,
    /// Packets were lost since the last packet handled.
    gap: bool,
    /// Decoding state lost: discard until an IDR.
    need_idr: bool,
    lost: u32,
    padding: u32,
    packets_lost: u32,
    packets_filled: u32,
}

/// True for a payload with nothing to decode: empty (a padding-only packet once the RTP
/// padding is stripped) or a reserved NAL unit type (0, 30, 31), which RFC 6184 receivers
/// ignore. webrtc-rs marshals at most 4 padding bytes, so a sender probing bandwidth with
/// bigger packets may fill the payload with zeros instead.
fn carries_nothing(payload: &[u8]) -> bool {
    payload
        .first()
        .is_none_or(|b| matches!(b & 0x1f, 0 | 30 | 31))
}

/// True when an RTP payload (single NAL or STAP-A) begins with an SPS.
fn payload_starts_with_sps(payload: &[u8]) -> bool {
    match payload.first().map(|b| b & 0x1f) {
        Some(7) => true,
        Some(24) => payload.get(3).is_some_and(|b| b & 0x1f == 7),
        _ => false,
    }
}

impl Assembler {
    fn new() -> Self {
        Assembler {
            depacketizer: H264Packet::default(),
            au: BytesMut::new(),
            ts: 0,
            first_at: None,
            packets: 0,
            broken: false,
            gap_before: false,
            starts_with_sps: false,
            gap: false,
            need_idr: false,
            lost: 0,
            padding: 0,
            packets_lost: 0,
            packets_filled: 0,
        }
    }

    /// Packets were given up on (they will never be handed on).
    fn lost_packets(&mut self, n: u64) {
        self.packets_lost = self
            .packets_lost
            .saturating_add(n.min(u64::from(u32::MAX)) as u32);
        self.gap = true;
        self.depacketizer = H264Packet::default();
    }

    fn packet(
        &mut self,
        at: Instant,
        pkt: &rtc::rtp::Packet,
        now: Instant,
        out: &mut Vec<Assembled>,
    ) {
        if carries_nothing(&pkt.payload) {
            // Padding only (bandwidth probing): in sequence, carries nothing.
            self.padding = self.padding.saturating_add(1);
            return;
        }
        if self.packets > 0 && pkt.header.timestamp != self.ts {
            // The previous frame's last packet never came.
            self.broken = true;
            out.push(self.finish(now));
        }
        if self.packets == 0 {
            self.ts = pkt.header.timestamp;
            self.first_at = Some(at);
            self.gap_before = std::mem::take(&mut self.gap);
            self.starts_with_sps = payload_starts_with_sps(&pkt.payload);
        } else if std::mem::take(&mut self.gap) {
            self.broken = true;
        }
        self.packets += 1;
        match self.depacketizer.depacketize(&pkt.payload) {
            Ok(b) if self.au.len() + b.len() <= MAX_ACCESS_UNIT => self.au.extend_from_slice(&b),
            Ok(_) => {
                self.broken = true;
                self.au.clear();
            }
            Err(_) => self.broken = true,
        }
        if pkt.header.marker {
            out.push(self.finish(now));
        }
    }

    fn finish(&mut self, now: Instant) -> Assembled {
        let access_unit = self.au.split().freeze();
        let keyframe = has_idr(&access_unit);
        let first_packet_at = self.first_at.take().unwrap_or(now);
        let packets = std::mem::take(&mut self.packets);
        let broken = std::mem::take(&mut self.broken);
        let gap_before = std::mem::take(&mut self.gap_before);
        let whole_keyframe = std::mem::take(&mut self.starts_with_sps) && keyframe;
        if broken || (gap_before && !whole_keyframe) {
            self.depacketizer = H264Packet::default();
            self.need_idr = true;
        }
        if broken || (self.need_idr && !keyframe) {
            self.lost = self.lost.saturating_add(1);
            return Assembled::Discarded;
        }
        self.need_idr = false;
        Assembled::Frame(ReceivedFrame {
            access_unit,
            rtp_timestamp: self.ts,
            first_packet_at,
            last_packet_at: now,
            lost_before: std::mem::take(&mut self.lost),
            keyframe,
            packets,
            padding_before: std::mem::take(&mut self.padding),
            packets_lost_before: std::mem::take(&mut self.packets_lost),
            packets_recovered_before: std::mem::take(&mut self.packets_filled),
        })
    }
}

struct Handler {
    gathering_tx: watch::Sender<bool>,
    events: mpsc::Sender<ClientEvent>,
    track: Arc<std::sync::Mutex<Option<Arc<dyn TrackRemote>>>>,
    reorder_wait: Duration,
    counters: Arc<Counters>,
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
        tokio::spawn(receive(
            track,
            self.events.clone(),
            self.reorder_wait,
            self.counters.clone(),
        ));
    }
}

/// Reads the track until it ends: reorders, reassembles, asks for an IDR after a loss.
async fn receive(
    track: Arc<dyn TrackRemote>,
    events: mpsc::Sender<ClientEvent>,
    reorder_wait: Duration,
    counters: Arc<Counters>,
) {
    let media_ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
    let mut reorder = ReorderBuffer::new(REORDER_PACKETS, reorder_wait);
    let mut assembler = Assembler::new();
    let mut last_pli: Option<Instant> = None;
    let mut out = Vec::new();
    loop {
        let deadline = reorder.deadline();
        let evt = tokio::select! {
            evt = track.poll() => match evt {
                Some(evt) => Some(evt),
                None => break,
            },
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()),
                if deadline.is_some() => None,
        };
        if let Some(TrackRemoteEvent::OnRtpPacket(pkt)) = evt {
            Counters::add(&counters.packets, 1);
            Counters::add(&counters.payload_bytes, pkt.payload.len() as u64);
            if carries_nothing(&pkt.payload) {
                Counters::add(&counters.padding, 1);
            }
            if !reorder.push(pkt.header.sequence_number, Instant::now(), pkt) {
                Counters::add(&counters.packets_late, 1);
            }
        }
        let now = Instant::now();
        let filled = reorder.take_filled();
        Counters::add(&counters.packets_recovered, filled);
        let filled = filled.min(u64::from(u32::MAX)) as u32;
        assembler.packets_filled = assembler.packets_filled.saturating_add(filled);
        while let Some(r) = reorder.pop(now) {
            match r {
                Reordered::Lost(n) => {
                    Counters::add(&counters.packets_lost, n);
                    assembler.lost_packets(n);
                }
                Reordered::Packet { at, item } => assembler.packet(at, &item, now, &mut out),
            }
        }
        for a in out.drain(..) {
            match a {
                Assembled::Frame(frame) => {
                    Counters::add(&counters.frames, 1);
                    // Bounded: a consumer that stops reading loses frames, never memory.
                    let _ = events.try_send(ClientEvent::Frame(frame));
                }
                Assembled::Discarded => {
                    Counters::add(&counters.frames_discarded, 1);
                    if last_pli.is_none_or(|t| t.elapsed() > Duration::from_millis(300)) {
                        last_pli = Some(now);
                        Counters::add(&counters.plis, 1);
                        let _ = track
                            .write_rtcp(vec![Box::new(PictureLossIndication {
                                sender_ssrc: 0,
                                media_ssrc,
                            })])
                            .await;
                    }
                }
            }
        }
    }
    let _ = events.try_send(ClientEvent::Closed);
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
    counters: Arc<Counters>,
}

impl ViewerClient {
    /// Creates the peer and a fully gathered offer offering `profiles` (profile-level-id
    /// values, packetization-mode 1) in that order, with the default [`ClientOptions`]
    /// (loopback, no NACK, no transport-wide feedback).
    pub async fn new(profiles: &[&str]) -> Result<Self, RtcError> {
        Self::with_options(profiles, ClientOptions::default()).await
    }

    /// Like [`ViewerClient::new`] with the given options.
    pub async fn with_options(profiles: &[&str], opts: ClientOptions) -> Result<Self, RtcError> {
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
        // Without NACK a lost packet makes the client wait for the next IDR and ask for it
        // (PLI). With it, the client asks for the packet again (up to 3 times, 100 ms
        // apart) and reassembly waits up to REORDER_WAIT for it, as a browser does.
        // (Feedback is registered after the codecs: it is added to the codecs known.)
        let mut registry = configure_rtcp_reports(Registry::new());
        if opts.nack {
            for parameter in ["", "pli"] {
                media_engine.register_feedback(
                    RTCPFeedback {
                        typ: "nack".to_owned(),
                        parameter: parameter.to_owned(),
                    },
                    RtpCodecKind::Video,
                );
            }
            registry = registry.with(
                Slot::NackGenerator,
                NackGeneratorBuilder::new()
                    .with_max_nacks_per_packet(MAX_NACKS_PER_PACKET)
                    .build(),
            );
        }
        if opts.transport_cc {
            // `transport-cc` feedback, the transport-wide sequence number extension, and
            // the interceptor that records arrivals and sends TransportLayerCC.
            registry = configure_twcc_receiver_only(registry, &mut media_engine)
                .map_err(|e| RtcError::webrtc("transport-cc", e))?;
        }
        let reorder_wait = if opts.nack {
            REORDER_WAIT
        } else {
            Duration::ZERO
        };
        // webrtc-rs checks SRTP replays over a 64-packet window: a retransmission that
        // comes after a keyframe's burst (hundreds of packets) would be dropped as a
        // replay. Browsers use 1024 packets (libwebrtc's SrtpSession).
        let mut settings = SettingEngineBuilder::new();
        if opts.nack {
            settings = settings.with_srtp_replay_protection_window(SRTP_REPLAY_WINDOW);
        }
        let (gathering_tx, mut gathering_rx) = watch::channel(false);
        let (events_tx, events) = mpsc::channel(256);
        let track = Arc::new(std::sync::Mutex::new(None));
        let counters = Arc::new(Counters::default());
        let pc = PeerConnectionBuilder::new()
            .with_setting_engine(settings.build())
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                gathering_tx,
                events: events_tx,
                track: track.clone(),
                reorder_wait,
                counters: counters.clone(),
            }))
            .with_runtime(crate::runtime::media_runtime(None))
            .with_udp_addrs(opts.udp_addrs)
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
            counters,
        })
    }

    /// What was received so far (packets, losses, retransmissions, frames).
    pub fn stats(&self) -> ClientStats {
        self.counters.snapshot()
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

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(300);

    fn drain(b: &mut ReorderBuffer<u16>, now: Instant) -> Vec<Reordered<u16>> {
        std::iter::from_fn(|| b.pop(now)).collect()
    }

    fn seqs(out: &[Reordered<u16>]) -> Vec<i64> {
        // packets as their number, gaps as minus their length
        out.iter()
            .map(|r| match r {
                Reordered::Packet { item, .. } => i64::from(*item),
                Reordered::Lost(n) => -(*n as i64),
            })
            .collect()
    }

    #[test]
    fn in_order_packets_pass_straight_through() {
        let t = Instant::now();
        let mut b = ReorderBuffer::new(512, WAIT);
        for s in 10..15u16 {
            assert!(b.push(s, t, s));
            assert_eq!(seqs(&drain(&mut b, t)), vec![i64::from(s)]);
        }
        assert_eq!(b.len(), 0);
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn a_retransmission_fills_its_gap_before_the_deadline() {
        let t = Instant::now();
        let mut b = ReorderBuffer::new(512, WAIT);
        b.push(1, t, 1);
        b.push(3, t, 3);
        b.push(4, t, 4);
        assert_eq!(seqs(&drain(&mut b, t)), vec![1]);
        assert_eq!(b.deadline(), Some(t + WAIT));
        // nothing is given up before the deadline
        assert!(drain(&mut b, t + Duration::from_millis(299)).is_empty());
        // the retransmission arrives: everything in order, no loss
        b.push(2, t + Duration::from_millis(120), 2);
        assert_eq!(
            seqs(&drain(&mut b, t + Duration::from_millis(120))),
            vec![2, 3, 4]
        );
        assert_eq!(b.deadline(), None);
        assert_eq!(b.take_filled(), 1, "2 filled its gap");
        assert_eq!(b.take_filled(), 0);
    }

    #[test]
    fn a_gap_is_given_up_after_the_wait_and_a_late_packet_is_dropped() {
        let t = Instant::now();
        let mut b = ReorderBuffer::new(512, WAIT);
        b.push(1, t, 1);
        b.push(4, t + Duration::from_millis(10), 4);
        b.push(5, t + Duration::from_millis(20), 5);
        assert_eq!(seqs(&drain(&mut b, t + Duration::from_millis(20))), vec![1]);
        // the wait counts from the arrival of the packet right after the gap
        assert_eq!(b.deadline(), Some(t + Duration::from_millis(10) + WAIT));
        let later = t + Duration::from_millis(310);
        assert_eq!(seqs(&drain(&mut b, later)), vec![-2, 4, 5]);
        // 2 and 3 come after all: too late, dropped; a duplicate too
        assert!(!b.push(2, later, 2));
        assert!(!b.push(3, later, 3));
        b.push(6, later, 6);
        assert!(!b.push(6, later, 6));
        assert_eq!(seqs(&drain(&mut b, later)), vec![6]);
    }

    #[test]
    fn without_a_wait_a_gap_is_lost_at_the_next_packet() {
        let t = Instant::now();
        let mut b = ReorderBuffer::new(512, Duration::ZERO);
        b.push(7, t, 7);
        b.push(9, t, 9);
        assert_eq!(seqs(&drain(&mut b, t)), vec![7, -1, 9]);
    }

    #[test]
    fn reordering_within_the_window_is_undone() {
        let t = Instant::now();
        let mut b = ReorderBuffer::new(512, WAIT);
        let mut out = Vec::new();
        for s in [0u16, 2, 1, 5, 3, 4, 6] {
            b.push(s, t, s);
            out.extend(drain(&mut b, t));
        }
        assert_eq!(seqs(&out), vec![0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let t = Instant::now();
        let mut b = ReorderBuffer::new(512, WAIT);
        let mut out = Vec::new();
        for s in [65534u16, 0, 65535, 1] {
            b.push(s, t, s);
            out.extend(drain(&mut b, t));
        }
        assert_eq!(seqs(&out), vec![65534, 65535, 0, 1]);
    }

    #[test]
    fn the_buffer_is_bounded_in_packets() {
        let t = Instant::now();
        let mut b = ReorderBuffer::new(8, WAIT);
        b.push(0, t, 0);
        assert_eq!(seqs(&drain(&mut b, t)), vec![0]);
        // 1 is missing; 2..=9 wait behind it, the 9th packet held gives the gap up
        for s in 2..=9u16 {
            b.push(s, t, s);
            assert!(drain(&mut b, t).is_empty());
        }
        b.push(10, t, 10);
        assert_eq!(
            seqs(&drain(&mut b, t)),
            vec![-1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        );
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn a_restarted_numbering_is_followed() {
        let t = Instant::now();
        let mut b = ReorderBuffer::new(16, WAIT);
        b.push(30000, t, 30000);
        b.push(30002, t, 30002);
        assert_eq!(seqs(&drain(&mut b, t)), vec![30000]);
        // far behind: not a retransmission but a new numbering
        assert!(b.push(100, t, 100));
        b.push(101, t, 101);
        assert_eq!(seqs(&drain(&mut b, t)), vec![-1, 100, 101]);
    }

    fn rtp(seq: u16, ts: u32, marker: bool, payload: &'static [u8]) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: rtc::rtp::Header {
                sequence_number: seq,
                timestamp: ts,
                marker,
                ..Default::default()
            },
            payload: Bytes::from_static(payload),
        }
    }

    const SPS: &[u8] = &[0x67, 0x42, 0xe0, 0x1f];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00];
    const P: &[u8] = &[0x41, 0x9a, 0x02, 0x00];

    fn frames(out: &mut Vec<Assembled>) -> Vec<Option<(u32, bool)>> {
        out.drain(..)
            .map(|a| match a {
                Assembled::Frame(f) => Some((f.rtp_timestamp, f.keyframe)),
                Assembled::Discarded => None,
            })
            .collect()
    }

    #[test]
    fn padding_packets_do_not_break_frames() {
        let t = Instant::now();
        let mut a = Assembler::new();
        let mut out = Vec::new();
        a.packet(t, &rtp(1, 0, false, SPS), t, &mut out);
        a.packet(t, &rtp(2, 0, false, PPS), t, &mut out);
        a.packet(t, &rtp(3, 0, true, IDR), t, &mut out);
        a.packet(t, &rtp(4, 0, false, b""), t, &mut out);
        a.packet(t, &rtp(5, 0, false, b""), t, &mut out);
        // zero-filled probes (reserved NAL type 0) are ignored the same way
        a.packet(t, &rtp(6, 0, false, &[0; 200]), t, &mut out);
        a.packet(t, &rtp(7, 3000, false, P), t, &mut out);
        a.packet(t, &rtp(8, 3000, false, &[0; 4]), t, &mut out);
        a.packet(t, &rtp(9, 3000, true, P), t, &mut out);
        assert_eq!(frames(&mut out), vec![Some((0, true)), Some((3000, false))]);
        assert_eq!(a.padding, 0, "counted into the frame handed out");
    }

    #[test]
    fn a_loss_discards_until_the_next_whole_keyframe() {
        let t = Instant::now();
        let mut a = Assembler::new();
        let mut out = Vec::new();
        a.packet(t, &rtp(1, 0, true, P), t, &mut out);
        // a lost packet inside the next frame
        a.packet(t, &rtp(2, 3000, false, P), t, &mut out);
        a.lost_packets(1);
        a.packet(t, &rtp(4, 3000, true, P), t, &mut out);
        // a whole P frame after it: its reference is gone
        a.packet(t, &rtp(5, 6000, true, P), t, &mut out);
        // a gap right before a keyframe starting with its SPS: the keyframe is whole
        a.lost_packets(1);
        a.packet(t, &rtp(7, 9000, false, SPS), t, &mut out);
        a.packet(t, &rtp(8, 9000, false, PPS), t, &mut out);
        a.packet(t, &rtp(9, 9000, true, IDR), t, &mut out);
        a.packet(t, &rtp(10, 12000, true, P), t, &mut out);
        assert_eq!(
            frames(&mut out),
            vec![
                Some((0, false)),
                None,
                None,
                Some((9000, true)),
                Some((12000, false))
            ]
        );
    }

    #[test]
    fn a_frame_whose_marker_was_lost_ends_when_the_timestamp_changes() {
        let t = Instant::now();
        let mut a = Assembler::new();
        let mut out = Vec::new();
        a.packet(t, &rtp(1, 0, false, SPS), t, &mut out);
        a.packet(t, &rtp(2, 0, false, IDR), t, &mut out);
        // the marker packet is lost
        a.lost_packets(1);
        // the next frame's first packet may be lost too: discarded
        a.packet(t, &rtp(4, 3000, true, P), t, &mut out);
        assert_eq!(frames(&mut out), vec![None, None]);
        // a lost padding packet before a P frame also counts as a gap (as in a browser)
        let mut a = Assembler::new();
        a.packet(t, &rtp(1, 0, true, P), t, &mut out);
        a.lost_packets(1);
        a.packet(t, &rtp(3, 3000, true, P), t, &mut out);
        assert_eq!(frames(&mut out), vec![Some((0, false)), None]);
    }

    #[tokio::test]
    async fn the_offer_asks_for_nack_and_transport_wide_feedback_when_told() {
        let c = ViewerClient::with_options(
            &["42e01f"],
            ClientOptions {
                nack: true,
                transport_cc: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let sdp = c.offer_sdp().to_string();
        c.close().await;
        assert!(sdp.contains("a=rtcp-fb:102 nack\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtcp-fb:102 nack pli"), "{sdp}");
        assert!(sdp.contains("a=rtcp-fb:102 transport-cc"), "{sdp}");
        assert!(
            sdp.contains(
                "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
            ),
            "{sdp}"
        );
        // the default stays as before: none of it
        let c = ViewerClient::new(&["42e01f"]).await.unwrap();
        let sdp = c.offer_sdp().to_string();
        c.close().await;
        assert!(
            !sdp.contains("nack") && !sdp.contains("transport-cc"),
            "{sdp}"
        );
    }
}
