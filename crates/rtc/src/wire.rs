//! When a frame's RTP packets actually leave through the UDP socket.
//!
//! `TrackLocalStaticRTP::write_rtp` only hands a packet to the peer connection's driver
//! task, which runs the interceptors, encrypts it (SRTP) and sends it later. To time the
//! real departure, every WebRTC socket made by our runtime (`runtime.rs`) passes
//! each datagram it sent to `on_datagram`. SRTP leaves the 12-byte RTP header in clear
//! text, so the sender's SSRC, the RTP timestamp and the marker bit (last packet of a
//! frame) can be read there without any key.
//!
//! A viewer registers a [`WireTap`] for its SSRC and announces each frame
//! ([`WireTap::expect`]) before writing it; the socket side fills in when the frame's first
//! and last packets went out, and the viewer collects the results
//! ([`WireTap::drain`]). Everything is bounded: a tap keeps at most [`MAX_PENDING`]
//! announced frames and [`MAX_DONE`] results, dropping the oldest.
//!
//! Invariants: SSRCs of registered taps are unique (registration re-draws on collision);
//! a tap is removed from the table when dropped; a datagram that is not RTP, or whose SSRC
//! or timestamp is unknown (RTCP, retransmissions, other peers), is ignored.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Instant;

/// Frames announced but not yet fully sent, per tap.
pub const MAX_PENDING: usize = 16;
/// Finished frames waiting to be collected, per tap.
pub const MAX_DONE: usize = 64;

/// When a frame's first and last RTP packet went out through the socket, measured from its
/// capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireTimes {
    /// Capture → first packet on the socket, µs.
    pub first_us: u32,
    /// Capture → last packet (marker bit) on the socket, µs.
    pub last_us: u32,
}

#[derive(Debug)]
struct Pending {
    rtp_ts: u32,
    captured: Instant,
    first: Option<Instant>,
}

#[derive(Debug, Default)]
struct TapState {
    pending: VecDeque<Pending>,
    done: VecDeque<WireTimes>,
}

type Taps = RwLock<HashMap<u32, Arc<Mutex<TapState>>>>;

static TAPS: LazyLock<Taps> = LazyLock::new(Default::default);
/// Number of registered taps, so sockets skip all work while nobody listens.
static TAP_COUNT: AtomicUsize = AtomicUsize::new(0);

fn lock(m: &Mutex<TapState>) -> std::sync::MutexGuard<'_, TapState> {
    // Plain data updated in single steps: usable even after a panic elsewhere.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One sender SSRC whose packets are timed on the wire; unregistered on drop.
#[derive(Debug)]
pub struct WireTap {
    ssrc: u32,
    state: Arc<Mutex<TapState>>,
}

impl WireTap {
    /// Registers a tap under a fresh random SSRC that no other tap uses.
    pub fn register() -> Self {
        let state = Arc::new(Mutex::new(TapState::default()));
        let mut taps = TAPS.write().unwrap_or_else(|e| e.into_inner());
        let ssrc = loop {
            let s: u32 = rand::random();
            if s != 0 && !taps.contains_key(&s) {
                break s;
            }
        };
        taps.insert(ssrc, state.clone());
        TAP_COUNT.fetch_add(1, Ordering::Relaxed);
        WireTap { ssrc, state }
    }

    /// The SSRC this tap listens for; use it as the track's SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Announces a frame about to be written with RTP timestamp `rtp_ts`.
    pub fn expect(&self, rtp_ts: u32, captured: Instant) {
        let mut s = lock(&self.state);
        if s.pending.len() == MAX_PENDING {
            s.pending.pop_front();
        }
        s.pending.push_back(Pending {
            rtp_ts,
            captured,
            first: None,
        });
    }

    /// Hands every finished frame's times to `f`, oldest first.
    pub fn drain(&self, mut f: impl FnMut(WireTimes)) {
        let done: Vec<WireTimes> = lock(&self.state).done.drain(..).collect();
        for t in done {
            f(t);
        }
    }
}

impl Drop for WireTap {
    fn drop(&mut self) {
        let mut taps = TAPS.write().unwrap_or_else(|e| e.into_inner());
        if taps.remove(&self.ssrc).is_some() {
            TAP_COUNT.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The fields of an RTP header that identify a frame's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RtpId {
    ssrc: u32,
    timestamp: u32,
    marker: bool,
}

/// Reads the clear-text RTP header of an (S)RTP datagram; `None` for RTCP, STUN, DTLS, ...
fn parse_rtp(buf: &[u8]) -> Option<RtpId> {
    if buf.len() < 12 || buf[0] >> 6 != 2 {
        return None;
    }
    // RFC 5761 demultiplexing: payload types 64..=95 (with the marker bit folded in,
    // second byte 192..=223) are RTCP.
    let pt = buf[1] & 0x7f;
    if (64..=95).contains(&pt) {
        return None;
    }
    Some(RtpId {
        marker: buf[1] & 0x80 != 0,
        timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
    })
}

/// Called by our sockets for every datagram just sent (at time `now`).
pub(crate) fn on_datagram(buf: &[u8], now: Instant) {
    if TAP_COUNT.load(Ordering::Relaxed) == 0 {
        return;
    }
    let Some(id) = parse_rtp(buf) else {
        return;
    };
    let state = {
        let taps = TAPS.read().unwrap_or_else(|e| e.into_inner());
        match taps.get(&id.ssrc) {
            Some(s) => s.clone(),
            None => return,
        }
    };
    let mut s = lock(&state);
    let Some(i) = s.pending.iter().rposition(|p| p.rtp_ts == id.timestamp) else {
        return;
    };
    let first = *s.pending[i].first.get_or_insert(now);
    if id.marker {
        let p = s.pending.remove(i).expect("index from rposition");
        let us = |t: Instant| t.saturating_duration_since(p.captured).as_micros() as u32;
        if s.done.len() == MAX_DONE {
            s.done.pop_front();
        }
        s.done.push_back(WireTimes {
            first_us: us(first),
            last_us: us(now),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rtp(ssrc: u32, ts: u32, marker: bool) -> Vec<u8> {
        let mut b = vec![0x80, 96 | if marker { 0x80 } else { 0 }, 0, 1];
        b.extend_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(&ssrc.to_be_bytes());
        b.extend_from_slice(&[0xAA; 100]);
        b
    }

    #[test]
    fn first_and_last_packet_of_a_frame_are_timed() {
        let tap = WireTap::register();
        let captured = Instant::now();
        tap.expect(9000, captured);
        let t1 = captured + Duration::from_millis(5);
        let t2 = captured + Duration::from_millis(7);
        on_datagram(&rtp(tap.ssrc(), 9000, false), t1);
        on_datagram(&rtp(tap.ssrc(), 9000, false), t1 + Duration::from_millis(1));
        on_datagram(&rtp(tap.ssrc(), 9000, true), t2);
        let mut got = vec![];
        tap.drain(|t| got.push(t));
        assert_eq!(
            got,
            vec![WireTimes {
                first_us: 5000,
                last_us: 7000
            }]
        );
        // A retransmission of that frame later is ignored.
        on_datagram(&rtp(tap.ssrc(), 9000, true), t2 + Duration::from_millis(50));
        tap.drain(|_| panic!("no second result"));
    }

    #[test]
    fn rtcp_and_unknown_ssrcs_are_ignored() {
        let tap = WireTap::register();
        let now = Instant::now();
        tap.expect(1, now);
        // RTCP sender report (PT 200) with our SSRC in the same place.
        let mut sr = rtp(tap.ssrc(), 1, false);
        sr[1] = 200;
        on_datagram(&sr, now);
        on_datagram(&rtp(tap.ssrc().wrapping_add(1), 1, true), now);
        on_datagram(&[0x16, 0xfe, 0xfd], now); // DTLS
        tap.drain(|_| panic!("nothing finished"));
        on_datagram(&rtp(tap.ssrc(), 1, true), now);
        let mut n = 0;
        tap.drain(|_| n += 1);
        assert_eq!(n, 1);
    }

    #[test]
    fn bounded_and_unregistered_on_drop() {
        let tap = WireTap::register();
        let ssrc = tap.ssrc();
        let now = Instant::now();
        for ts in 0..(MAX_PENDING as u32 * 3) {
            tap.expect(ts, now);
        }
        assert_eq!(lock(&tap.state).pending.len(), MAX_PENDING);
        for ts in 0..(MAX_PENDING as u32 * 3) {
            on_datagram(&rtp(ssrc, ts, true), now);
        }
        assert!(lock(&tap.state).done.len() <= MAX_DONE);
        drop(tap);
        assert!(!TAPS.read().unwrap().contains_key(&ssrc));
    }
}
