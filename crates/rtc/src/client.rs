//! A receiving WebRTC peer: offers a `recvonly` H.264 video section, and hands back
//! reassembled access units with their arrival times. Used by the scenario tests and the
//! latency probe, so the server is always exercised by a real, independent peer.

use crate::RtcError;
use bytes::{Bytes, BytesMut};
use rtc::interceptor::{
    Interceptor, NackGeneratorBuilder, Packet as InterceptorPacket, Registry, Slot, StreamInfo,
    TaggedPacket,
};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_RTX,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCOfferOptions;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use std::collections::{BTreeMap, HashMap};
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
    /// With `nack` (ignored without it): also offer RFC 4588 RTX, as Chromium does — a
    /// `video/rtx` payload type with `apt=` for every H.264 payload type — so the server
    /// can retransmit, and probe bandwidth, on a separate RTX stream (`a=ssrc-group:FID`
    /// in its answer). RTX packets are decapsulated back into the media stream; a copy of
    /// a packet already received is dropped and counted (see [`ClientStats::rtx`]).
    pub rtx: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            udp_addrs: vec!["127.0.0.1:0".to_string()],
            transport_cc: false,
            nack: false,
            rtx: false,
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
    /// RTX packets received on the server's RTX stream (RFC 4588), padding-only ones
    /// included: `rtx_useful + rtx_duplicates + rtx_padding` (once the last ones passed).
    /// A decapsulated RTX packet also counts in `packets` and `payload_bytes`, and one that
    /// fills a gap in `packets_recovered`; a duplicate does not count in `packets_late`.
    pub rtx: u64,
    /// RTX packets whose original had not arrived: handed on in its place.
    pub rtx_useful: u64,
    /// RTX packets whose original had arrived already (or whose gap was given up, or too
    /// old to matter): dropped, as a bandwidth probe's copies are meant to be.
    pub rtx_duplicates: u64,
    /// RTX packets with nothing to decapsulate (padding only, no original sequence
    /// number): dropped.
    pub rtx_padding: u64,
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
    rtx: AtomicU64,
    rtx_useful: AtomicU64,
    rtx_duplicates: AtomicU64,
    rtx_padding: AtomicU64,
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
            rtx: g(&self.rtx),
            rtx_useful: g(&self.rtx_useful),
            rtx_duplicates: g(&self.rtx_duplicates),
            rtx_padding: g(&self.rtx_padding),
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
        self.insert(ext, at, item)
    }

    /// Takes a retransmitted packet (a decapsulated RTX packet) that arrived at `at`.
    /// Returns false when it is dropped: its packet was handed out already or given up on,
    /// it is held already, it is more than the buffer holds ahead, or nothing arrived yet
    /// (nothing to repair). Unlike [`push`](Self::push) a packet far behind is never taken
    /// for a restarted numbering: a retransmission can be arbitrarily old.
    pub(crate) fn push_retransmission(&mut self, seq: u16, at: Instant, item: T) -> bool {
        let Some(next) = self.next else {
            return false;
        };
        let delta = i64::from(seq.wrapping_sub(next as u16) as i16);
        let ext = (next as i64 + delta) as u64;
        if ext < next || ext - next > self.max_packets as u64 {
            return false;
        }
        self.insert(ext, at, item)
    }

    fn insert(&mut self, ext: u64, at: Instant, item: T) -> bool {
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

/// RFC 4588 §4: the original packet an RTX packet carries, or `None` when it carries none
/// (a padding-only packet: fewer than the two bytes of the original sequence number once
/// the RTP padding is stripped).
///
/// The RTX payload is the original sequence number (OSN, big-endian) followed by the
/// original payload. The original is rebuilt on the media stream: `media_ssrc`,
/// `media_payload_type` (the RTX payload type's `apt`), sequence number = OSN; timestamp,
/// marker, CSRCs and header extensions (the transport-wide sequence number among them) as
/// the RTX packet has them. The original's padding was not retransmitted, so none is set.
pub(crate) fn decapsulate_rtx(
    rtx: &rtc::rtp::Packet,
    media_ssrc: u32,
    media_payload_type: u8,
) -> Option<rtc::rtp::Packet> {
    let osn = rtx.payload.get(..2)?;
    let mut header = rtx.header.clone();
    header.ssrc = media_ssrc;
    header.payload_type = media_payload_type;
    header.sequence_number = u16::from_be_bytes([osn[0], osn[1]]);
    header.padding = false;
    Some(rtc::rtp::Packet {
        header,
        payload: rtx.payload.slice(2..),
    })
}

/// The client's NACK generator with RFC 4588 RTX reception in front of it.
///
/// webrtc-rs 0.21 decapsulates RTX itself, but only in its endpoint handler, after the
/// interceptor chain: the NACK generator sees the RTX packet on the RTX SSRC, never learns
/// that the missing media packet came, and NACKs it again (up to the limit); and as the
/// RTX flow is bound to the interceptors like a stream of its own, with the media codec's
/// `nack` feedback, it also NACKs gaps in the RTX stream's sequence numbers. Neither is
/// what a browser does. So this decapsulates right before the generator:
///
/// * A packet on an RTX SSRC (announced by `a=ssrc-group:FID` in the answer), or with one
///   of the client's RTX payload types on an SSRC that is no media stream's, becomes the
///   original media packet (see [`decapsulate_rtx`]); the generator then counts the
///   original as arrived. It keeps the RTX payload type, the one mark webrtc-rs carries to
///   the track that the packet was a retransmission (packet attributes stay in the chain);
///   the receiving task restores the `apt`. webrtc-rs passes a media-SSRC packet on as it
///   is (its own RTX handling keys on the SSRC).
/// * A padding-only RTX packet passes unchanged; webrtc-rs drops it after the chain.
/// * The RTX flow is not bound to the generator: no NACKs for RTX sequence numbers.
///
/// The TWCC receiver comes after this slot and records every packet by its transport-wide
/// sequence number, whatever its SSRC; a decapsulated packet keeps the RTX packet's
/// header extensions, so RTX packets (padding ones too) are in the feedback.
struct RtxNackGenerator {
    nack: rtc::interceptor::NackGeneratorInterceptor,
    /// The client's RTX payload types and their `apt`.
    rtx_apt: HashMap<u8, u8>,
    /// Bound media streams: SSRC → payload type.
    media: HashMap<u32, u8>,
    /// RTX SSRC → the media SSRC it repairs.
    rtx_ssrcs: HashMap<u32, u32>,
    counters: Arc<Counters>,
}

impl RtxNackGenerator {
    fn new(
        nack: rtc::interceptor::NackGeneratorInterceptor,
        rtx_apt: HashMap<u8, u8>,
        counters: Arc<Counters>,
    ) -> Self {
        RtxNackGenerator {
            nack,
            rtx_apt,
            media: HashMap::new(),
            rtx_ssrcs: HashMap::new(),
            counters,
        }
    }

    /// The media SSRC an RTX packet repairs, or `None` when it is no RTX packet (or repairs
    /// no stream known yet).
    fn repaired_ssrc(&self, header: &rtc::rtp::Header) -> Option<u32> {
        if let Some(&media) = self.rtx_ssrcs.get(&header.ssrc) {
            return Some(media);
        }
        if self.media.contains_key(&header.ssrc) {
            return None;
        }
        let apt = *self.rtx_apt.get(&header.payload_type)?;
        let mut streams = self.media.iter().filter(|(_, &pt)| pt == apt);
        match (streams.next(), streams.next()) {
            (Some((&ssrc, _)), None) => Some(ssrc),
            _ => None,
        }
    }

    fn is_rtx_flow(&self, info: &StreamInfo) -> bool {
        self.rtx_ssrcs.contains_key(&info.ssrc) || self.rtx_apt.contains_key(&info.payload_type)
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtxNackGenerator {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let InterceptorPacket::Rtp(pkt) = &mut msg.message.packet {
            if let Some(media_ssrc) = self.repaired_ssrc(&pkt.header) {
                Counters::add(&self.counters.rtx, 1);
                let rtx_pt = pkt.header.payload_type;
                let media_pt = self
                    .rtx_apt
                    .get(&rtx_pt)
                    .or_else(|| self.media.get(&media_ssrc))
                    .copied()
                    .unwrap_or(rtx_pt);
                match decapsulate_rtx(pkt, media_ssrc, media_pt) {
                    Some(mut original) => {
                        original.header.payload_type = rtx_pt;
                        *pkt = original;
                    }
                    None => Counters::add(&self.counters.rtx_padding, 1),
                }
            }
        }
        self.nack.handle_read(msg)
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.nack.poll_read()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.nack.handle_write(msg)
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.nack.poll_write()
    }

    fn handle_event(&mut self, evt: ()) -> Result<(), Self::Error> {
        self.nack.handle_event(evt)
    }

    fn poll_event(&mut self) -> Option<()> {
        self.nack.poll_event()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.nack.handle_timeout(now)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.nack.poll_timeout()
    }

    fn close(&mut self) -> Result<(), Self::Error> {
        self.nack.close()
    }
}

impl Interceptor for RtxNackGenerator {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.nack.bind_local_stream(info);
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.nack.unbind_local_stream(info);
    }

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        // webrtc-rs binds a media stream first, naming its RTX flow, then the RTX flow.
        if self.is_rtx_flow(info) {
            return;
        }
        self.media.insert(info.ssrc, info.payload_type);
        if let Some(rtx) = info.ssrc_rtx {
            self.rtx_ssrcs.insert(rtx, info.ssrc);
        }
        self.nack.bind_remote_stream(info);
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        if self.is_rtx_flow(info) {
            return;
        }
        self.media.remove(&info.ssrc);
        self.rtx_ssrcs.retain(|_, media| *media != info.ssrc);
        self.nack.unbind_remote_stream(info);
    }
}

struct Handler {
    gathering_tx: watch::Sender<bool>,
    events: mpsc::Sender<ClientEvent>,
    track: Arc<std::sync::Mutex<Option<Arc<dyn TrackRemote>>>>,
    reorder_wait: Duration,
    counters: Arc<Counters>,
    /// The client's RTX payload types and their `apt` (empty without RTX).
    rtx_apt: Arc<HashMap<u8, u8>>,
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
            self.rtx_apt.clone(),
        ));
    }
}

/// Reads the track until it ends: reorders, reassembles, asks for an IDR after a loss.
async fn receive(
    track: Arc<dyn TrackRemote>,
    events: mpsc::Sender<ClientEvent>,
    reorder_wait: Duration,
    counters: Arc<Counters>,
    rtx_apt: Arc<HashMap<u8, u8>>,
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
        if let Some(TrackRemoteEvent::OnRtpPacket(mut pkt)) = evt {
            Counters::add(&counters.packets, 1);
            Counters::add(&counters.payload_bytes, pkt.payload.len() as u64);
            if carries_nothing(&pkt.payload) {
                Counters::add(&counters.padding, 1);
            }
            // A decapsulated RTX packet still has its RTX payload type (see RtxNackGenerator).
            let apt = rtx_apt.get(&pkt.header.payload_type).copied();
            let seq = pkt.header.sequence_number;
            if let Some(apt) = apt {
                pkt.header.payload_type = apt;
                if reorder.push_retransmission(seq, Instant::now(), pkt) {
                    Counters::add(&counters.rtx_useful, 1);
                } else {
                    Counters::add(&counters.rtx_duplicates, 1);
                }
            } else if !reorder.push(seq, Instant::now(), pkt) {
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

/// The H.264 and RTX payload types an offer carries (what [`ViewerClient::answering`]
/// registers so that its answer accepts them).
#[derive(Debug, Default, PartialEq)]
struct OfferedPayloads {
    /// H.264 payload types with their `a=fmtp` line (empty when the offer has none).
    h264: Vec<(u8, String)>,
    /// RTX payload types and the H.264 payload type each repairs (`apt=`).
    rtx_apt: HashMap<u8, u8>,
    /// Every `a=rtpmap` encoding offered, for the error message.
    offered: Vec<String>,
}

impl OfferedPayloads {
    fn parse(sdp: &str) -> Self {
        let mut rtpmap: Vec<(u8, String)> = Vec::new();
        let mut fmtp: HashMap<u8, String> = HashMap::new();
        for line in sdp.lines().map(str::trim) {
            let (attr, rest) = if let Some(r) = line.strip_prefix("a=rtpmap:") {
                ("rtpmap", r)
            } else if let Some(r) = line.strip_prefix("a=fmtp:") {
                ("fmtp", r)
            } else {
                continue;
            };
            let (pt, value) = rest.split_once(' ').unwrap_or((rest, ""));
            let Ok(pt) = pt.parse::<u8>() else { continue };
            if attr == "rtpmap" {
                rtpmap.push((pt, value.trim().to_owned()));
            } else {
                fmtp.insert(pt, value.trim().to_owned());
            }
        }
        let mut out = OfferedPayloads::default();
        for (pt, encoding) in &rtpmap {
            out.offered.push(format!("{pt} {encoding}"));
            let name = encoding.split('/').next().unwrap_or("");
            if name.eq_ignore_ascii_case("H264") {
                out.h264
                    .push((*pt, fmtp.get(pt).cloned().unwrap_or_default()));
            }
        }
        for (pt, encoding) in &rtpmap {
            let name = encoding.split('/').next().unwrap_or("");
            if !name.eq_ignore_ascii_case("rtx") {
                continue;
            }
            let apt = fmtp.get(pt).and_then(|f| {
                f.split(';')
                    .find_map(|p| p.trim().strip_prefix("apt="))
                    .and_then(|a| a.parse::<u8>().ok())
            });
            if let Some(apt) = apt.filter(|a| out.h264.iter().any(|(p, _)| p == a)) {
                out.rtx_apt.insert(*pt, apt);
            }
        }
        out
    }

    fn describe(&self) -> String {
        if self.offered.is_empty() {
            "nothing".to_owned()
        } else {
            self.offered.join(", ")
        }
    }
}

/// The receive-only peer both [`ViewerClient::with_options`] (offering) and
/// [`ViewerClient::answering`] build, before any description is applied.
struct Peer {
    pc: Arc<dyn PeerConnection>,
    track: Arc<std::sync::Mutex<Option<Arc<dyn TrackRemote>>>>,
    events: mpsc::Receiver<ClientEvent>,
    counters: Arc<Counters>,
    gathering_rx: watch::Receiver<bool>,
}

impl Peer {
    /// A peer accepting the H.264 payload types `h264` (payload type, fmtp line), and with
    /// NACK and RTX the RTX payload types `rtx_apt` (RTX payload type → its `apt`).
    async fn build(
        h264: &[(u8, String)],
        rtx_apt: HashMap<u8, u8>,
        opts: ClientOptions,
    ) -> Result<Peer, RtcError> {
        let counters = Arc::new(Counters::default());
        let mut media_engine = MediaEngine::default();
        for (payload_type, fmtp) in h264 {
            media_engine
                .register_codec(
                    RTCRtpCodecParameters {
                        rtp_codec: RTCRtpCodec {
                            mime_type: MIME_TYPE_H264.to_owned(),
                            clock_rate: 90_000,
                            channels: 0,
                            sdp_fmtp_line: fmtp.clone(),
                            rtcp_feedback: vec![],
                        },
                        payload_type: *payload_type,
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
            let nack = NackGeneratorBuilder::new()
                .with_max_nacks_per_packet(MAX_NACKS_PER_PACKET)
                .build();
            registry = if !rtx_apt.is_empty() {
                registry.with(
                    Slot::NackGenerator,
                    RtxNackGenerator::new(nack, rtx_apt.clone(), counters.clone()),
                )
            } else {
                registry.with(Slot::NackGenerator, nack)
            };
        }
        if opts.transport_cc {
            // `transport-cc` feedback, the transport-wide sequence number extension, and
            // the interceptor that records arrivals and sends TransportLayerCC.
            registry = configure_twcc_receiver_only(registry, &mut media_engine)
                .map_err(|e| RtcError::webrtc("transport-cc", e))?;
        }
        // RTX codecs last, so that they get no RTCP feedback of their own (as in Chromium).
        let mut rtx_pts: Vec<_> = rtx_apt.iter().map(|(&pt, &apt)| (pt, apt)).collect();
        rtx_pts.sort_unstable();
        for (payload_type, apt) in rtx_pts {
            media_engine
                .register_codec(
                    RTCRtpCodecParameters {
                        rtp_codec: RTCRtpCodec {
                            mime_type: MIME_TYPE_RTX.to_owned(),
                            clock_rate: 90_000,
                            channels: 0,
                            sdp_fmtp_line: format!("apt={apt}"),
                            rtcp_feedback: vec![],
                        },
                        payload_type,
                    },
                    RtpCodecKind::Video,
                )
                .map_err(|e| RtcError::webrtc("register_codec", e))?;
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
        let (gathering_tx, gathering_rx) = watch::channel(false);
        let (events_tx, events) = mpsc::channel(256);
        let track = Arc::new(std::sync::Mutex::new(None));
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
                rtx_apt: Arc::new(rtx_apt),
            }))
            .with_runtime(crate::runtime::media_runtime(None))
            .with_udp_addrs(opts.udp_addrs)
            .build()
            .await
            .map_err(|e| RtcError::webrtc("client peer connection", e))?;
        Ok(Peer {
            pc: Arc::new(pc),
            track,
            events,
            counters,
            gathering_rx,
        })
    }

    /// The local description once ICE gathering completed (or after 2 s).
    async fn gathered_local_description(&mut self) -> Result<String, RtcError> {
        let _ =
            tokio::time::timeout(Duration::from_secs(2), self.gathering_rx.wait_for(|d| *d)).await;
        Ok(self
            .pc
            .local_description()
            .await
            .ok_or_else(|| RtcError::webrtc("local_description", "missing"))?
            .sdp)
    }

    fn into_client(self, local_sdp: String) -> ViewerClient {
        ViewerClient {
            pc: self.pc,
            track: self.track,
            events: self.events,
            offer_sdp: local_sdp,
            counters: self.counters,
        }
    }
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
        // H.264 payload types are 102, 103, ...; with RTX, the RTX ones follow them (one
        // profile: `a=rtpmap:103 rtx/90000`, `a=fmtp:103 apt=102`, as Chromium offers).
        let rtx = opts.rtx && opts.nack;
        if rtx && 102 + 2 * profiles.len() > 128 {
            return Err(RtcError::webrtc(
                "register_codec",
                "too many profiles for RTX payload types",
            ));
        }
        let h264: Vec<(u8, String)> = profiles
            .iter()
            .enumerate()
            .map(|(i, profile)| {
                (
                    102 + i as u8,
                    format!(
                        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"
                    ),
                )
            })
            .collect();
        let rtx_apt: HashMap<u8, u8> = if rtx {
            (0..profiles.len())
                .map(|i| ((102 + profiles.len() + i) as u8, 102 + i as u8))
                .collect()
        } else {
            HashMap::new()
        };
        let mut peer = Peer::build(&h264, rtx_apt, opts).await?;
        let pc = &peer.pc;
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
        let offer_sdp = peer.gathered_local_description().await?;
        Ok(peer.into_client(offer_sdp))
    }

    /// The answering side of the same receive-only peer, for servers that send the offer
    /// (e.g. a Janus VideoRoom subscription): applies `offer_sdp`, answers it `recvonly`,
    /// waits (at most 2 s) for ICE gathering and returns the client with the complete
    /// answer SDP (candidates included) to send back.
    ///
    /// The H.264 payload types are the offer's own (`a=rtpmap:PT H264/90000`), registered
    /// with the offer's `a=fmtp` line so that they match and are accepted; with `opts.nack`
    /// and `opts.rtx` the offer's RTX payload types (`apt=` one of those) are accepted too.
    /// NACK and transport-wide feedback follow `opts` as in [`ViewerClient::with_options`]
    /// (a feedback the offer lacks is simply not negotiated). [`offer_sdp`](Self::offer_sdp)
    /// then returns the answer.
    ///
    /// Errors: [`RtcError::NoH264`] when the offer has no H.264 payload type, or any error
    /// applying the offer or creating the answer.
    pub async fn answering(
        offer_sdp: &str,
        opts: ClientOptions,
    ) -> Result<(ViewerClient, String), RtcError> {
        let offered = OfferedPayloads::parse(offer_sdp);
        if offered.h264.is_empty() {
            return Err(RtcError::NoH264(offered.describe()));
        }
        let rtx_apt = if opts.rtx && opts.nack {
            offered.rtx_apt
        } else {
            HashMap::new()
        };
        let mut peer = Peer::build(&offered.h264, rtx_apt, opts).await?;
        let pc = &peer.pc;
        let offer = RTCSessionDescription::offer(offer_sdp.to_owned())
            .map_err(|e| RtcError::BadSdp(e.to_string()))?;
        pc.set_remote_description(offer)
            .await
            .map_err(|e| RtcError::webrtc("set_remote_description", e))?;
        let answer = pc
            .create_answer(None)
            .await
            .map_err(|e| RtcError::webrtc("create_answer", e))?;
        pc.set_local_description(answer)
            .await
            .map_err(|e| RtcError::webrtc("set_local_description", e))?;
        let answer_sdp = peer.gathered_local_description().await?;
        Ok((peer.into_client(answer_sdp.clone()), answer_sdp))
    }

    /// What was received so far (packets, losses, retransmissions, frames).
    pub fn stats(&self) -> ClientStats {
        self.counters.snapshot()
    }

    /// The gathered offer to POST (for a client made by [`ViewerClient::answering`]: its
    /// gathered answer).
    pub fn offer_sdp(&self) -> &str {
        &self.offer_sdp
    }

    /// An ICE restart offer (new credentials, our candidates), applied locally; send it
    /// to the server (WHEP PATCH fragment or `/api/sessions/{id}/ice-restart`) and apply
    /// its answer with [`ViewerClient::accept_answer`].
    pub async fn restart_ice_offer(&self) -> Result<String, RtcError> {
        let offer = self
            .pc
            .create_offer(Some(RTCOfferOptions { ice_restart: true }))
            .await
            .map_err(|e| RtcError::webrtc("create_offer (ICE restart)", e))?;
        self.pc
            .set_local_description(offer)
            .await
            .map_err(|e| RtcError::webrtc("set_local_description (ICE restart)", e))?;
        // Our candidates are kept through the restart; give the agent a moment to list
        // them again (bounded).
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let sdp = self
                .pc
                .local_description()
                .await
                .ok_or_else(|| RtcError::webrtc("local_description", "missing"))?
                .sdp;
            if sdp.contains("a=candidate:") || Instant::now() >= deadline {
                return Ok(sdp);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The server's description last applied (its answer).
    pub async fn remote_sdp(&self) -> Option<String> {
        self.pc.remote_description().await.map(|d| d.sdp)
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

    #[tokio::test]
    async fn the_offer_asks_for_rtx_for_every_h264_payload_type_when_told() {
        let c = ViewerClient::with_options(
            &["42e01f", "640c1f"],
            ClientOptions {
                nack: true,
                rtx: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let sdp = c.offer_sdp().to_string();
        c.close().await;
        assert!(sdp.contains("a=rtpmap:102 H264/90000\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:103 H264/90000\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:104 rtx/90000\r\n"), "{sdp}");
        assert!(sdp.contains("a=fmtp:104 apt=102\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:105 rtx/90000\r\n"), "{sdp}");
        assert!(sdp.contains("a=fmtp:105 apt=103\r\n"), "{sdp}");
        // the RTX payload types are offered with the media ones, and get no feedback
        assert!(
            sdp.contains("m=video 9 UDP/TLS/RTP/SAVPF 102 103 104 105"),
            "{sdp}"
        );
        assert!(!sdp.contains("a=rtcp-fb:104") && !sdp.contains("a=rtcp-fb:105"));
        assert!(sdp.contains("a=rtcp-fb:102 nack\r\n"), "{sdp}");
        // one profile: as Chromium offers it
        let c = ViewerClient::with_options(
            &["42e01f"],
            ClientOptions {
                nack: true,
                rtx: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let sdp = c.offer_sdp().to_string();
        c.close().await;
        assert!(
            sdp.contains("a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n"),
            "{sdp}"
        );
        // RTX without NACK is not offered, and neither is it by default
        for opts in [
            ClientOptions {
                rtx: true,
                ..Default::default()
            },
            ClientOptions {
                nack: true,
                ..Default::default()
            },
        ] {
            let c = ViewerClient::with_options(&["42e01f"], opts).await.unwrap();
            let sdp = c.offer_sdp().to_string();
            c.close().await;
            assert!(!sdp.contains("rtx") && !sdp.contains("apt="), "{sdp}");
        }
    }

    /// A Janus 1.1 VideoRoom subscriber offer (H.264 with RTX, transport-cc).
    const JANUS_OFFER: &str = "v=0\r\no=- 1796679101930176 1 IN IP4 192.0.2.2\r\ns=VideoRoom 1234\r\nt=0 0\r\na=group:BUNDLE 0\r\na=ice-options:trickle\r\na=fingerprint:sha-256 88:C2:BC:11:E4:B9:2C:0E:87:D1:F2:EA:C0:A1:73:69:99:32:4B:75:C6:F6:C2:97:28:CB:61:74:FF:4E:F0:72\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS *\r\nm=video 9 UDP/TLS/RTP/SAVPF 107 108\r\nc=IN IP4 192.0.2.2\r\na=sendonly\r\na=mid:0\r\na=rtcp-mux\r\na=ice-ufrag:niB5\r\na=ice-pwd:sDDbV09ogTfKPiKisQTD1i\r\na=ice-options:trickle\r\na=setup:actpass\r\na=rtpmap:107 H264/90000\r\na=fmtp:107 profile-level-id=42e01f;packetization-mode=1\r\na=rtcp-fb:107 ccm fir\r\na=rtcp-fb:107 nack\r\na=rtcp-fb:107 nack pli\r\na=rtcp-fb:107 goog-remb\r\na=rtcp-fb:107 transport-cc\r\na=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\na=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=rtpmap:108 rtx/90000\r\na=fmtp:108 apt=107\r\na=ssrc-group:FID 1058997909 3323774532\r\na=msid:janus janus0\r\na=ssrc:1058997909 cname:janus\r\na=ssrc:3323774532 cname:janus\r\na=candidate:1 1 udp 2015363327 192.0.2.2 41046 typ host\r\na=end-of-candidates\r\n";

    #[test]
    fn an_offers_h264_and_rtx_payload_types_are_read() {
        let o = OfferedPayloads::parse(JANUS_OFFER);
        assert_eq!(
            o.h264,
            vec![(
                107,
                "profile-level-id=42e01f;packetization-mode=1".to_owned()
            )]
        );
        assert_eq!(o.rtx_apt, HashMap::from([(108, 107)]));
        let o =
            OfferedPayloads::parse("m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n");
        assert!(o.h264.is_empty());
        assert_eq!(o.describe(), "96 VP8/90000");
    }

    #[tokio::test]
    async fn an_answer_accepts_the_offers_h264_payload_type() {
        let opts = ClientOptions {
            nack: true,
            rtx: true,
            transport_cc: true,
            ..Default::default()
        };
        let (c, sdp) = ViewerClient::answering(JANUS_OFFER, opts).await.unwrap();
        assert_eq!(c.offer_sdp(), sdp);
        c.close().await;
        assert!(sdp.contains("a=recvonly"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:107 H264/90000"), "{sdp}");
        assert!(sdp.contains("a=fmtp:108 apt=107"), "{sdp}");
        assert!(sdp.contains("a=rtcp-fb:107 nack\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtcp-fb:107 transport-cc"), "{sdp}");
        assert!(sdp.contains("a=candidate"), "{sdp}");
        // without NACK: no RTX, no NACK
        let (c, sdp) = ViewerClient::answering(JANUS_OFFER, ClientOptions::default())
            .await
            .unwrap();
        c.close().await;
        assert!(sdp.contains("a=rtpmap:107 H264/90000"), "{sdp}");
        assert!(!sdp.contains("rtx") && !sdp.contains("nack"), "{sdp}");
        // no H.264 offered
        let vp8 = JANUS_OFFER
            .replace("H264/90000", "VP8/90000")
            .replace("apt=107", "apt=1");
        assert!(matches!(
            ViewerClient::answering(&vp8, ClientOptions::default()).await,
            Err(RtcError::NoH264(_))
        ));
    }

    fn rtx_packet(ssrc: u32, seq: u16, payload: &[u8]) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                payload_type: 103,
                ssrc,
                sequence_number: seq,
                timestamp: 90_000,
                marker: true,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn an_rtx_packet_is_decapsulated_into_its_original() {
        let mut rtx = rtx_packet(2000, 7, &[0x12, 0x34, 0x41, 0x9a, 0x02]);
        rtx.header.padding = true;
        rtx.header
            .set_extension(3, Bytes::from_static(&[0x00, 0x2a]))
            .unwrap();
        let original = decapsulate_rtx(&rtx, 1000, 102).unwrap();
        assert_eq!(original.header.ssrc, 1000);
        assert_eq!(original.header.payload_type, 102);
        assert_eq!(original.header.sequence_number, 0x1234);
        assert_eq!(original.header.timestamp, 90_000);
        assert!(original.header.marker);
        assert!(!original.header.padding);
        // the transport-wide sequence number the RTX packet was sent with stays
        assert_eq!(
            original.header.get_extension(3),
            Some(Bytes::from_static(&[0x00, 0x2a]))
        );
        assert_eq!(&original.payload[..], &[0x41, 0x9a, 0x02]);
        // the original of a retransmitted padding-only packet: the OSN and nothing else
        let empty = decapsulate_rtx(&rtx_packet(2000, 8, &[0xff, 0xff]), 1000, 102).unwrap();
        assert_eq!(empty.header.sequence_number, 0xffff);
        assert!(empty.payload.is_empty());
        // padding only (payload empty once the padding is stripped), or no whole OSN
        assert!(decapsulate_rtx(&rtx_packet(2000, 9, &[]), 1000, 102).is_none());
        assert!(decapsulate_rtx(&rtx_packet(2000, 9, &[0x12]), 1000, 102).is_none());
    }

    #[test]
    fn a_retransmission_fills_a_gap_but_is_never_taken_for_a_new_numbering() {
        let t = Instant::now();
        let mut b = ReorderBuffer::new(16, WAIT);
        // nothing to repair yet
        assert!(!b.push_retransmission(5, t, 5));
        b.push(10, t, 10);
        b.push(12, t, 12);
        assert_eq!(seqs(&drain(&mut b, t)), vec![10]);
        assert!(b.push_retransmission(11, t, 11));
        // a copy of what is held, or of what was handed out, or of anything older
        assert!(!b.push_retransmission(12, t, 12));
        assert!(!b.push_retransmission(10, t, 10));
        assert!(!b.push_retransmission(60000, t, 60000));
        // further ahead than the buffer holds
        assert!(!b.push_retransmission(40, t, 40));
        assert_eq!(seqs(&drain(&mut b, t)), vec![11, 12]);
        assert_eq!(b.take_filled(), 1);
        // a late original after the retransmission is a duplicate
        assert!(!b.push(11, t, 11));
    }

    fn stream(ssrc: u32, payload_type: u8, rtx: Option<(u32, u8)>) -> StreamInfo {
        StreamInfo {
            ssrc,
            payload_type,
            ssrc_rtx: rtx.map(|(s, _)| s),
            payload_type_rtx: rtx.map(|(_, pt)| pt),
            clock_rate: 90_000,
            mime_type: MIME_TYPE_H264.to_owned(),
            rtcp_feedback: vec![rtc::interceptor::RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: String::new(),
            }],
            ..Default::default()
        }
    }

    fn tagged(now: Instant, pkt: rtc::rtp::Packet) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: Default::default(),
            message: rtc::interceptor::AttributedPacket::new(InterceptorPacket::Rtp(pkt)),
        }
    }

    fn read_through(
        g: &mut RtxNackGenerator,
        now: Instant,
        pkt: rtc::rtp::Packet,
    ) -> rtc::rtp::Packet {
        g.handle_read(tagged(now, pkt)).unwrap();
        match g.poll_read().unwrap().message.packet {
            InterceptorPacket::Rtp(p) => p,
            _ => panic!("not RTP"),
        }
    }

    fn nacks(g: &mut RtxNackGenerator) -> Vec<(u32, Vec<u16>)> {
        use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
        std::iter::from_fn(|| g.poll_write())
            .flat_map(|m| match m.message.packet {
                InterceptorPacket::Rtcp(v) => v,
                _ => vec![],
            })
            .filter_map(|p| {
                p.as_any().downcast_ref::<TransportLayerNack>().map(|n| {
                    let seqs = n.nacks.iter().flat_map(|p| p.packet_list()).collect();
                    (n.media_ssrc, seqs)
                })
            })
            .collect()
    }

    #[test]
    fn rtx_is_decapsulated_before_the_nack_generator() {
        let t = Instant::now();
        let counters = Arc::new(Counters::default());
        let mut g = RtxNackGenerator::new(
            NackGeneratorBuilder::new().build(),
            HashMap::from([(103, 102)]),
            counters.clone(),
        );
        // as webrtc-rs binds an answer's `a=ssrc-group:FID 1000 2000`
        g.bind_remote_stream(&stream(1000, 102, Some((2000, 103))));
        g.bind_remote_stream(&stream(2000, 103, None));
        let media = |seq| rtc::rtp::Packet {
            header: rtc::rtp::Header {
                payload_type: 102,
                ssrc: 1000,
                sequence_number: seq,
                ..Default::default()
            },
            payload: Bytes::from_static(P),
        };
        for seq in [1, 2, 4, 5] {
            assert_eq!(
                read_through(&mut g, t, media(seq)).header.sequence_number,
                seq
            );
        }
        // 3 comes on the RTX stream: on to the track as the original, with the RTX
        // payload type as its mark
        let p = read_through(&mut g, t, rtx_packet(2000, 50, &[0, 3, 0x41, 0x9a]));
        assert_eq!((p.header.ssrc, p.header.sequence_number), (1000, 3));
        assert_eq!(p.header.payload_type, 103);
        assert_eq!(&p.payload[..], &[0x41, 0x9a]);
        // padding-only RTX packets (with a gap in the RTX numbering) pass unchanged
        let p = read_through(&mut g, t, rtx_packet(2000, 52, &[]));
        assert_eq!((p.header.ssrc, p.header.sequence_number), (2000, 52));
        g.handle_timeout(t + Duration::from_millis(150)).unwrap();
        // nothing is missing: 3 arrived, and the RTX stream's numbers are nobody's concern
        assert_eq!(nacks(&mut g), vec![]);
        // a real loss is still asked for
        read_through(&mut g, t, media(7));
        g.handle_timeout(t + Duration::from_millis(300)).unwrap();
        assert_eq!(nacks(&mut g), vec![(1000, vec![6])]);
        let s = counters.snapshot();
        assert_eq!((s.rtx, s.rtx_padding), (2, 1));
        // an RTX payload type on an SSRC nobody announced repairs the one media stream
        let p = read_through(&mut g, t, rtx_packet(3000, 1, &[0, 6, 0x41]));
        assert_eq!((p.header.ssrc, p.header.sequence_number), (1000, 6));
        // the media stream's own packets are never taken for RTX
        let mut m = media(8);
        m.header.payload_type = 103;
        assert_eq!(read_through(&mut g, t, m).header.sequence_number, 8);
        assert_eq!(counters.snapshot().rtx, 3);
    }
}
