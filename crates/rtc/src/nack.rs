//! Our NACK responder: retransmits what a viewer reports lost, but only while it is still
//! useful and within the viewer's link.
//!
//! webrtc-rs' own responder resends every NACKed packet on every NACK, however old and
//! however often asked, past any pacing. A viewer behind a slow link that loses part of
//! a keyframe NACKs it again and again, and the retransmissions (measured: 7.5 packets on
//! the wire per media packet behind 500 kb/s with Chromium) crowd out the new frames and
//! the estimate collapses. Here a packet is resent only if it is younger than
//! [`MAX_AGE`], not resent within [`MIN_RESEND_INTERVAL`], at most [`MAX_RESENDS`] times,
//! and while retransmissions stay under [`BUDGET_SHARE`] of the viewer's estimate.
//! Time is an input (`TaggedPacket::now`), so the rules are unit-tested without sockets.
//!
//! When the viewer negotiated RTX (RFC 4588: a repair SSRC and payload type, as browsers
//! offer), retransmissions go out as RTX packets: the original sequence number in front of
//! the original payload, on the repair stream's own sequence numbers. The same stream
//! carries *padding*: while the viewer task asks for it (a bandwidth probe, see
//! `crate::ladder`), copies of recently sent packets fill the link up to the asked rate.
//! The viewer already has them and drops them, but its transport-wide feedback reports
//! them, so the estimate can grow past what the media alone delivers, without a trial
//! step up that stalls the picture when the link cannot carry it.

use crate::bwe::EstimateSnapshot;
use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket,
};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::TransportContext;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Packets kept for retransmission: 1.2 s of a 4 Mb/s stream, more than [`MAX_AGE`]
/// (each holds a reference to its frame's buffer, so a longer history only keeps memory).
pub const HISTORY: usize = 512;
/// Older packets are not resent: the viewer's own queue bound is 250 ms, after which it
/// resumes on a keyframe anyway.
pub const MAX_AGE: Duration = Duration::from_millis(500);
/// A packet is resent at most this often (about a round trip on a slow link).
pub const MIN_RESEND_INTERVAL: Duration = Duration::from_millis(80);
/// Times one packet is resent at most.
pub const MAX_RESENDS: u8 = 3;
/// Retransmissions may use this share of the estimate (token bucket, 200 ms burst).
pub const BUDGET_SHARE: f64 = 0.5;
/// Padding rides on media packets: its bucket holds at most this much time's worth, one
/// frame interval and a half at 30 fps.
pub const PADDING_BURST: Duration = Duration::from_millis(50);
/// Padding copies the largest of this many most recent packets.
const PADDING_CANDIDATES: usize = 16;

/// What the responder did, for stats.
#[derive(Debug, Default)]
pub struct NackCounters {
    /// Packets the viewer asked for.
    pub requested: AtomicU64,
    /// Packets resent.
    pub resent: AtomicU64,
    /// Asked for but not resent (too old, unknown, asked again too soon, over budget).
    pub refused: AtomicU64,
    /// Padding packets sent (RTX copies of packets already sent) and their payload bytes.
    pub padding_packets: AtomicU64,
    pub padding_bytes: AtomicU64,
    /// The padding rate the viewer task asks for, bits per second (0: none). Only a stream
    /// with RTX is padded.
    pub padding_bps: AtomicU64,
}

/// A local stream whose viewer negotiated NACK, and its repair stream if it has one.
#[derive(Debug, Clone, Copy)]
struct Stream {
    rtx: Option<(u32, u8)>,
    rtx_seq: u16,
}

/// The RTX form (RFC 4588) of `p`: the original sequence number, then its payload, on the
/// repair SSRC, payload type and sequence number.
pub(crate) fn rtx_packet(p: &rtc::rtp::Packet, ssrc: u32, pt: u8, seq: u16) -> rtc::rtp::Packet {
    let mut payload = Vec::with_capacity(2 + p.payload.len());
    payload.extend_from_slice(&p.header.sequence_number.to_be_bytes());
    payload.extend_from_slice(&p.payload);
    let mut header = p.header.clone();
    header.ssrc = ssrc;
    header.payload_type = pt;
    header.sequence_number = seq;
    header.padding = false;
    rtc::rtp::Packet {
        header,
        payload: payload.into(),
    }
}

struct Sent {
    packet: rtc::rtp::Packet,
    at: Instant,
    resent_at: Option<Instant>,
    resends: u8,
}

pub(crate) struct NackResponder {
    /// Local streams whose viewer negotiated NACK: only their packets are kept.
    streams: HashMap<u32, Stream>,
    history: VecDeque<Sent>,
    estimate: Arc<Mutex<EstimateSnapshot>>,
    budget_bits: f64,
    last_refill: Option<Instant>,
    padding_bits: f64,
    last_padding_refill: Option<Instant>,
    pub(crate) counters: Arc<NackCounters>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl NackResponder {
    pub(crate) fn new(estimate: Arc<Mutex<EstimateSnapshot>>, counters: Arc<NackCounters>) -> Self {
        NackResponder {
            streams: HashMap::new(),
            history: VecDeque::new(),
            estimate,
            budget_bits: 0.0,
            last_refill: None,
            padding_bits: 0.0,
            last_padding_refill: None,
            counters,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    /// The retransmission budget's rate now (`None`: no estimate yet, no limit).
    fn budget_rate(&self) -> Option<f64> {
        let e = *self.estimate.lock().unwrap_or_else(|e| e.into_inner());
        (e.reports > 0).then_some(e.bitrate_bps * BUDGET_SHARE)
    }

    fn resend(&mut self, now: Instant, ssrc: u32, seq: u16) -> bool {
        let rate = self.budget_rate();
        if let (Some(rate), Some(last)) = (rate, self.last_refill) {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.budget_bits = (self.budget_bits + dt * rate).min(rate * 0.2);
        } else if let Some(rate) = rate {
            self.budget_bits = rate * 0.2;
        }
        self.last_refill = Some(now);
        let Some(sent) = self
            .history
            .iter_mut()
            .rev()
            .find(|s| s.packet.header.ssrc == ssrc && s.packet.header.sequence_number == seq)
        else {
            return false;
        };
        if now.saturating_duration_since(sent.at) > MAX_AGE
            || sent.resends >= MAX_RESENDS
            || sent
                .resent_at
                .is_some_and(|t| now.saturating_duration_since(t) < MIN_RESEND_INTERVAL)
        {
            return false;
        }
        let bits = (sent.packet.payload.len() + 60) as f64 * 8.0;
        if rate.is_some() {
            if self.budget_bits < bits {
                return false;
            }
            self.budget_bits -= bits;
        }
        sent.resent_at = Some(now);
        sent.resends += 1;
        let packet = match self.streams.get_mut(&ssrc) {
            Some(Stream {
                rtx: Some((rtx_ssrc, rtx_pt)),
                rtx_seq,
            }) => {
                *rtx_seq = rtx_seq.wrapping_add(1);
                rtx_packet(&sent.packet, *rtx_ssrc, *rtx_pt, *rtx_seq)
            }
            _ => sent.packet.clone(),
        };
        // Tagged so the send history counts it as new bytes on the wire.
        self.write_queue.push_back(TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(packet)).with(Attribute::Retransmission),
        });
        true
    }

    /// Sends what padding the asked rate allows since the last media packet of `ssrc`.
    fn pad(&mut self, now: Instant, ssrc: u32) {
        let rate = self.counters.padding_bps.load(Ordering::Relaxed) as f64;
        let Some(Stream {
            rtx: Some((rtx_ssrc, rtx_pt)),
            rtx_seq,
        }) = self.streams.get_mut(&ssrc)
        else {
            return;
        };
        if rate <= 0.0 {
            self.padding_bits = 0.0;
            self.last_padding_refill = None;
            return;
        }
        let dt = self
            .last_padding_refill
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.last_padding_refill = Some(now);
        self.padding_bits = (self.padding_bits + dt * rate).min(rate * PADDING_BURST.as_secs_f64());
        let Some(model) = self
            .history
            .iter()
            .rev()
            .take(PADDING_CANDIDATES)
            .filter(|s| s.packet.header.ssrc == ssrc)
            .max_by_key(|s| s.packet.payload.len())
        else {
            return;
        };
        let bits = (model.packet.payload.len() + 2 + 60) as f64 * 8.0;
        while self.padding_bits >= bits {
            self.padding_bits -= bits;
            *rtx_seq = rtx_seq.wrapping_add(1);
            let packet = rtx_packet(&model.packet, *rtx_ssrc, *rtx_pt, *rtx_seq);
            self.counters
                .padding_packets
                .fetch_add(1, Ordering::Relaxed);
            self.counters
                .padding_bytes
                .fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
            self.write_queue.push_back(TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtp(packet)).with(Attribute::Retransmission),
            });
        }
    }

    fn handle_nack(&mut self, now: Instant, nack: &TransportLayerNack) {
        for pair in &nack.nacks {
            let seqs = std::iter::once(pair.packet_id).chain(
                (0..16u16)
                    .filter(|i| pair.lost_packets & (1 << i) != 0)
                    .map(|i| pair.packet_id.wrapping_add(i + 1)),
            );
            for seq in seqs {
                self.counters.requested.fetch_add(1, Ordering::Relaxed);
                if self.resend(now, nack.media_ssrc, seq) {
                    self.counters.resent.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for NackResponder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let nacks: Vec<TransportLayerNack> = packets
                .iter()
                .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>().cloned())
                .collect();
            for nack in &nacks {
                self.handle_nack(msg.now, nack);
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        let mut padded = None;
        if let Packet::Rtp(p) = &msg.message.packet {
            if self.streams.contains_key(&p.header.ssrc) {
                padded = Some(p.header.ssrc);
                // Bounded in time as well as in count: what is older than MAX_AGE is never
                // resent, and each entry holds its frame's buffer.
                while self.history.len() == HISTORY
                    || self
                        .history
                        .front()
                        .is_some_and(|s| msg.now.saturating_duration_since(s.at) > MAX_AGE)
                {
                    self.history.pop_front();
                }
                self.history.push_back(Sent {
                    packet: p.clone(),
                    at: msg.now,
                    resent_at: None,
                    resends: 0,
                });
            }
        }
        let now = msg.now;
        self.write_queue.push_back(msg);
        if let Some(ssrc) = padded {
            self.pad(now, ssrc);
        }
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for NackResponder {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        // A viewer that did not offer `nack` never asks: keeping its packets would only
        // hold memory (and their frames' buffers).
        if info
            .rtcp_feedback
            .iter()
            .any(|f| f.typ == "nack" && f.parameter.is_empty())
        {
            let rtx = info.ssrc_rtx.zip(info.payload_type_rtx);
            self.streams.insert(
                info.ssrc,
                Stream {
                    rtx,
                    rtx_seq: rand::random(),
                },
            );
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
        self.history.retain(|s| s.packet.header.ssrc != info.ssrc);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    fn rtp(seq: u16) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    ssrc: 7,
                    sequence_number: seq,
                    ..Default::default()
                },
                payload: vec![0u8; 1140].into(),
            })),
        }
    }

    fn nack(seq: u16, more: u16) -> TransportLayerNack {
        TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 7,
            nacks: vec![NackPair {
                packet_id: seq,
                lost_packets: more,
            }],
        }
    }

    fn responder(estimate_bps: Option<f64>) -> (NackResponder, Instant) {
        let e = EstimateSnapshot {
            bitrate_bps: estimate_bps.unwrap_or(0.0),
            reports: u64::from(estimate_bps.is_some()),
            ..Default::default()
        };
        let mut r = NackResponder::new(Arc::new(Mutex::new(e)), Arc::default());
        r.streams.insert(
            7,
            Stream {
                rtx: None,
                rtx_seq: 0,
            },
        );
        let t0 = Instant::now();
        for seq in 0..100u16 {
            let mut p = rtp(seq);
            p.now = t0;
            r.handle_write(p).unwrap();
        }
        while r.poll_write().is_some() {}
        (r, t0)
    }

    fn resent(r: &mut NackResponder) -> Vec<u16> {
        std::iter::from_fn(|| r.poll_write())
            .map(|m| match m.message.packet {
                Packet::Rtp(p) => p.header.sequence_number,
                _ => panic!("not RTP"),
            })
            .collect()
    }

    #[test]
    fn a_lost_packet_is_resent_once_per_interval_and_at_most_three_times() {
        let (mut r, t0) = responder(None);
        let at = |ms| t0 + Duration::from_millis(ms);
        r.handle_nack(at(20), &nack(10, 0b101)); // 10, 11, 13
        assert_eq!(resent(&mut r), vec![10, 11, 13]);
        r.handle_nack(at(50), &nack(10, 0)); // asked again too soon
        assert_eq!(resent(&mut r), Vec::<u16>::new());
        for (i, ms) in [110, 200, 290].iter().enumerate() {
            r.handle_nack(at(*ms), &nack(10, 0));
            let want: Vec<u16> = if i < 2 { vec![10] } else { vec![] };
            assert_eq!(resent(&mut r), want, "at {ms} ms");
        }
        let c = &r.counters;
        assert_eq!(c.resent.load(Ordering::Relaxed), 5);
        assert_eq!(c.refused.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn packets_of_a_stream_without_nack_are_not_kept() {
        let (mut r, _) = responder(None);
        r.streams.clear();
        r.history.clear();
        r.handle_write(rtp(1)).unwrap();
        assert!(r.history.is_empty());
        assert_eq!(resent(&mut r).len(), 1, "passed through");
    }

    #[test]
    fn old_or_unknown_packets_are_not_resent() {
        let (mut r, t0) = responder(None);
        r.handle_nack(t0 + Duration::from_millis(600), &nack(10, 0));
        r.handle_nack(t0 + Duration::from_millis(10), &nack(5000, 0));
        assert!(resent(&mut r).is_empty());
    }

    #[test]
    fn retransmissions_stay_within_half_the_estimate() {
        // 1 Mb/s estimate: 500 kb/s of retransmissions, 100 kbit of burst (~10 packets).
        let (mut r, t0) = responder(Some(1_000_000.0));
        r.handle_nack(t0, &nack(0, 0xffff)); // 17 packets at once
        let first = resent(&mut r).len();
        assert!((9..=11).contains(&first), "{first}");
        // 40 ms later: 20 kbit more, two packets.
        r.handle_nack(t0 + Duration::from_millis(40), &nack(40, 0xffff));
        let more = resent(&mut r).len();
        assert!((1..=3).contains(&more), "{more}");
    }

    fn with_rtx(r: &mut NackResponder) {
        r.streams.insert(
            7,
            Stream {
                rtx: Some((70, 103)),
                rtx_seq: 999,
            },
        );
    }

    #[test]
    fn with_rtx_a_retransmission_is_an_rtx_packet() {
        let (mut r, t0) = responder(None);
        with_rtx(&mut r);
        r.handle_nack(t0 + Duration::from_millis(20), &nack(10, 0b1)); // 10, 11
        let out: Vec<rtc::rtp::Packet> = std::iter::from_fn(|| r.poll_write())
            .map(|m| match m.message.packet {
                Packet::Rtp(p) => p,
                _ => panic!("not RTP"),
            })
            .collect();
        assert_eq!(out.len(), 2);
        for (p, osn) in out.iter().zip([10u16, 11]) {
            assert_eq!((p.header.ssrc, p.header.payload_type), (70, 103));
            assert_eq!(&p.payload[..2], &osn.to_be_bytes());
            assert_eq!(p.payload.len(), 1142);
        }
        assert_eq!(out[0].header.sequence_number, 1000);
        assert_eq!(out[1].header.sequence_number, 1001);
    }

    #[test]
    fn padding_fills_the_asked_rate_with_rtx_copies_only_when_asked() {
        let (mut r, t0) = responder(Some(2_000_000.0));
        let send = |r: &mut NackResponder, ms: u64, seq: u16| {
            let mut p = rtp(seq);
            p.now = t0 + Duration::from_millis(ms);
            r.handle_write(p).unwrap();
            std::iter::from_fn(|| r.poll_write())
                .filter_map(|m| match m.message.packet {
                    Packet::Rtp(p) if p.header.ssrc == 70 => Some(p),
                    _ => None,
                })
                .count()
        };
        // Without RTX, or without a rate, nothing is padded.
        r.counters.padding_bps.store(1_000_000, Ordering::Relaxed);
        assert_eq!(send(&mut r, 0, 100), 0);
        with_rtx(&mut r);
        r.counters.padding_bps.store(0, Ordering::Relaxed);
        assert_eq!(send(&mut r, 10, 101), 0);
        // 1 Mb/s of padding over one second of media packets every 10 ms: ~1 Mbit.
        r.counters.padding_bps.store(1_000_000, Ordering::Relaxed);
        let mut padded = 0;
        for i in 0..=100u16 {
            padded += send(&mut r, 20 + u64::from(i) * 10, 102 + i);
        }
        let bits = padded as f64 * (1142.0 + 60.0) * 8.0;
        assert!(
            (0.9e6..1.05e6).contains(&bits),
            "{padded} packets, {bits} bits"
        );
        assert_eq!(
            r.counters.padding_packets.load(Ordering::Relaxed),
            padded as u64
        );
        // A long pause does not turn into a burst: at most PADDING_BURST's worth.
        let burst = send(&mut r, 5_000, 300);
        assert!(burst <= 6, "{burst}");
        r.counters.padding_bps.store(0, Ordering::Relaxed);
        assert_eq!(send(&mut r, 5_010, 301), 0);
    }
}
