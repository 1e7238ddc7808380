//! One viewer's send queue: packets of whole frames, released at a paced rate, bounded
//! in time and latest-wins (whole old frames are dropped, never parts of one).
//!
//! Time is an input: [`SendQueue::pop`] and [`SendQueue::next_release`] take `now`, so the
//! schedule is unit-tested without sockets or sleeps.

use crate::MediaFrame;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The most a viewer's queue may hold, in time at its pacing rate: more is dropped (whole
/// frames that have not started) and the viewer resumes on a keyframe.
pub const MAX_QUEUE_DELAY: Duration = Duration::from_millis(250);
/// The pacing rate is this multiple of the viewer's estimate: frames leave as short
/// bursts well above the encoder's rate, which bounds their own delay, yet a keyframe
/// does not overrun the viewer's bottleneck buffer at once.
pub const PACING_FACTOR: f64 = 2.0;
/// The burst the pacer lets out at once, in time at its rate (at least two packets).
const BURST: Duration = Duration::from_millis(25);
/// Packets held at most, whatever the rate (a bound on memory).
const MAX_PACKETS: usize = 4096;

/// A packet waiting to leave, with what the viewer task needs to write and time it.
#[derive(Debug, Clone)]
pub struct QueuedPacket {
    pub payload: Bytes,
    /// Last packet of its frame (RTP marker).
    pub marker: bool,
    /// First packet of its frame.
    pub first: bool,
    /// The frame's RTP timestamp (before the viewer's offset).
    pub rtp_ts: u32,
    pub captured: Instant,
    /// The frame's capture time, microseconds since the UNIX epoch.
    pub captured_us: u64,
    pub frame_seq: u64,
    pub frame_bytes: u32,
    pub packets_in_frame: u32,
    /// The frame is an IDR; its rendition; capture → encoded.
    pub keyframe: bool,
    pub rendition: usize,
    pub encode_us: u64,
}

/// See the module docs.
#[derive(Debug)]
pub struct SendQueue {
    packets: VecDeque<QueuedPacket>,
    queued_bits: f64,
    /// Pacing rate, bits per second; `None` sends at once (no feedback from the viewer).
    rate: Option<f64>,
    budget_bits: f64,
    last_refill: Option<Instant>,
}

impl Default for SendQueue {
    fn default() -> Self {
        Self::new()
    }
}

fn bits(p: &QueuedPacket) -> f64 {
    // Payload plus RTP/SRTP/UDP/IP overhead, as the link sees it.
    (p.payload.len() + 60) as f64 * 8.0
}

impl SendQueue {
    pub fn new() -> Self {
        SendQueue {
            packets: VecDeque::new(),
            queued_bits: 0.0,
            rate: None,
            budget_bits: 0.0,
            last_refill: None,
        }
    }

    /// Paces at `bps` from now on (`None`: no pacing).
    pub fn set_rate(&mut self, bps: Option<f64>) {
        let was_paced = self.rate.is_some();
        self.rate = bps.map(|b| b.max(100_000.0));
        if !was_paced {
            // Pacing starts with a full burst, as after an idle moment.
            self.budget_bits = self.burst_bits();
        }
        self.budget_bits = self.budget_bits.min(self.burst_bits());
    }

    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    fn burst_bits(&self) -> f64 {
        self.rate.map_or(f64::INFINITY, |r| {
            (r * BURST.as_secs_f64()).max(2.0 * 1500.0 * 8.0)
        })
    }

    fn refill(&mut self, now: Instant) {
        if let (Some(rate), Some(last)) = (self.rate, self.last_refill) {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.budget_bits = (self.budget_bits + dt * rate).min(self.burst_bits());
        }
        self.last_refill = Some(now);
    }

    /// Appends a frame's packets.
    pub fn push_frame(&mut self, frame: &MediaFrame) {
        let n = frame.payloads.len();
        let frame_bytes = frame.bytes() as u32;
        for (i, payload) in frame.payloads.iter().enumerate() {
            if self.packets.len() == MAX_PACKETS {
                break;
            }
            let p = QueuedPacket {
                payload: payload.clone(),
                marker: i + 1 == n,
                first: i == 0,
                rtp_ts: frame.rtp_ts,
                captured: frame.captured,
                captured_us: frame.captured_us,
                frame_seq: frame.seq,
                frame_bytes,
                packets_in_frame: n as u32,
                keyframe: frame.keyframe,
                rendition: frame.rendition,
                encode_us: frame
                    .encoded
                    .saturating_duration_since(frame.captured)
                    .as_micros() as u64,
            };
            self.queued_bits += bits(&p);
            self.packets.push_back(p);
        }
    }

    /// How long the queue takes to drain at the pacing rate.
    pub fn delay(&self) -> Duration {
        match self.rate {
            Some(r) => Duration::from_secs_f64((self.queued_bits - self.budget_bits).max(0.0) / r),
            None => Duration::ZERO,
        }
    }

    /// True when the queue holds more than [`MAX_QUEUE_DELAY`].
    pub fn over_bound(&self) -> bool {
        self.delay() > MAX_QUEUE_DELAY || self.packets.len() >= MAX_PACKETS
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Drops every frame whose first packet has not left (a frame already started is
    /// finished, so the viewer never gets half a frame). Returns how many frames.
    pub fn drop_unstarted(&mut self) -> u64 {
        let keep = self.packets.iter().take_while(|p| !p.first).count();
        let dropped = self.packets.iter().skip(keep).filter(|p| p.first).count() as u64;
        for p in self.packets.drain(keep..) {
            self.queued_bits -= bits(&p);
        }
        if self.packets.is_empty() {
            self.queued_bits = 0.0;
        }
        dropped
    }

    /// The next packet, if the pacer lets it out at `now`.
    pub fn pop(&mut self, now: Instant) -> Option<QueuedPacket> {
        self.refill(now);
        let head = self.packets.front()?;
        let b = bits(head);
        if self.rate.is_some() && self.budget_bits < b.min(self.burst_bits()) {
            return None;
        }
        let p = self.packets.pop_front()?;
        self.queued_bits -= b;
        if self.rate.is_some() {
            self.budget_bits -= b;
        }
        Some(p)
    }

    /// When the head of the queue may leave (`None`: nothing queued).
    pub fn next_release(&self, now: Instant) -> Option<Instant> {
        let head = self.packets.front()?;
        let Some(rate) = self.rate else {
            return Some(now);
        };
        let need = bits(head).min(self.burst_bits()) - self.budget_bits;
        if need <= 0.0 {
            return Some(now);
        }
        let from = self.last_refill.unwrap_or(now).max(now);
        Some(from + Duration::from_secs_f64(need / rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, packets: usize, size: usize, keyframe: bool) -> MediaFrame {
        let now = Instant::now();
        MediaFrame {
            seq,
            rtp_ts: seq as u32 * 3000,
            keyframe,
            payloads: (0..packets).map(|_| Bytes::from(vec![0u8; size])).collect(),
            captured: now,
            captured_us: 0,
            encoded: now,
            rendition: 0,
        }
    }

    #[test]
    fn without_a_rate_everything_leaves_at_once() {
        let mut q = SendQueue::new();
        q.push_frame(&frame(1, 100, 1200, true));
        let t = Instant::now();
        assert_eq!((0..100).filter(|_| q.pop(t).is_some()).count(), 100);
        assert!(q.is_empty());
        assert_eq!(q.next_release(t), None);
    }

    #[test]
    fn a_paced_frame_leaves_at_the_rate_after_a_short_burst() {
        let mut q = SendQueue::new();
        q.set_rate(Some(2_000_000.0));
        let t0 = Instant::now();
        q.pop(t0); // start the clock
        q.push_frame(&frame(1, 50, 1190, true)); // 50 x 1250 B = 500 kbit: 250 ms at 2 Mb/s
        let mut t = t0;
        let mut sent = 0;
        let mut last = t0;
        while sent < 50 {
            while let Some(_p) = q.pop(t) {
                sent += 1;
                last = t;
            }
            t = q
                .next_release(t)
                .unwrap_or(t)
                .max(t + Duration::from_micros(100));
        }
        let took = last.duration_since(t0).as_secs_f64();
        assert!((0.2..0.26).contains(&took), "took {took} s");
    }

    #[test]
    fn the_queue_is_bounded_in_time_and_drops_whole_unstarted_frames() {
        let mut q = SendQueue::new();
        q.set_rate(Some(1_000_000.0));
        let t0 = Instant::now();
        q.push_frame(&frame(1, 10, 1190, true));
        q.pop(t0).unwrap();
        q.pop(t0).unwrap(); // frame 1 started
        for s in 2..6 {
            q.push_frame(&frame(s, 10, 1190, false));
        }
        // 48 packets of 10 kbit at 1 Mb/s is far over 250 ms.
        assert!(q.over_bound());
        assert_eq!(q.drop_unstarted(), 4);
        assert_eq!(q.len(), 8, "the started frame stays whole");
        assert!(!q.over_bound());
        let mut left = vec![];
        let mut t = t0;
        while let Some(r) = q.next_release(t) {
            t = r.max(t);
            if let Some(p) = q.pop(t) {
                left.push(p.frame_seq);
            }
        }
        assert!(left.iter().all(|&s| s == 1));
        assert!(q.is_empty());
    }
}
