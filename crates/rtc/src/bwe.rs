//! Send-side bandwidth estimation for one viewer, from its transport-wide feedback.
//!
//! [`LinkEstimator`] is a delay- and loss-based estimator in the manner of GCC
//! (draft-ietf-rmcat-gcc): it reads the per-packet reports that webrtc-rs's congestion
//! control interceptor resolves from the viewer's `transport-cc` feedback (departure on
//! our clock, arrival on theirs, size, lost or not) and keeps one number, the rate the
//! path can carry. It takes every instant as an argument and reads no clock, so its
//! trajectory is unit-tested from synthetic reports.
//!
//! Why not webrtc-rs's own `Gcc`: it starts low (300 kb/s) and grows at 8 %/s, and after
//! its first back-off it climbs additively (one packet per 200 ms) for the rest of the
//! session: a viewer on a fast link would wait 20 s for the full-size picture, and after a
//! congested minute it could never get back. We start from the rate the top rendition
//! needs (a good link loses nothing) and forget the ceiling once the path carries more
//! than it did then.
//!
//! The signals:
//! - **standing queue**: per feedback batch, the smallest one-way delay of its packets
//!   minus the smallest seen over the last 10 s. A frame's own burst queues behind itself
//!   at a slow bottleneck, but the least-delayed packet of a batch only waits for what
//!   was left from before: a queue that does not drain between frames.
//! - **loss**: the fraction of a batch reported lost, smoothed.
//! - **delivered rate**: what arrived at the viewer over the last 500 ms (receiver clock).
//!
//! Rules: a standing queue over [`OVERUSE_QUEUE_MS`] or loss over [`HIGH_LOSS`] backs off
//! to 0.85 × the delivered rate (at most once per [`DECREASE_HOLD`], so the queue drains
//! before the next look); a clean path (queue under [`CLEAN_QUEUE_MS`], loss under
//! [`LOW_LOSS`]) lets the estimate grow by [`INCREASE_PER_S`] per second, but never past
//! 1.5 × what is delivered plus a margin: an estimate that the path never confirmed
//! would only send a viewer to a rendition it cannot carry. Near the rate of the last
//! back-off (from 0.9 to 1.05 × it) growth is [`NEAR_CEILING_SHARE`] of that, so a capped
//! link is approached gently; past it, the full rate resumes (the link got faster).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A standing queue above this is congestion (ms).
pub const OVERUSE_QUEUE_MS: f64 = 40.0;
/// A standing queue below this is a clean path (ms).
pub const CLEAN_QUEUE_MS: f64 = 12.0;
/// Smoothed loss above this backs off.
pub const HIGH_LOSS: f64 = 0.10;
/// Smoothed loss below this allows growth.
pub const LOW_LOSS: f64 = 0.03;
/// After a back-off, the next is considered only this much later.
pub const DECREASE_HOLD: Duration = Duration::from_millis(450);
/// Multiplicative growth per second on a clean path.
pub const INCREASE_PER_S: f64 = 0.25;
/// Share of [`INCREASE_PER_S`] near the rate of the last back-off.
pub const NEAR_CEILING_SHARE: f64 = 1.0 / 3.0;
/// The window the delivered rate is measured over.
const RATE_WINDOW: Duration = Duration::from_millis(500);
/// The window the base (queue-free) delay is the minimum of.
const BASE_WINDOW: Duration = Duration::from_secs(10);
/// Bounds of the estimator's rings (arrivals kept for the rate, base-delay buckets).
const MAX_ARRIVALS: usize = 8192;
const MAX_BASE_BUCKETS: usize = 64;

/// One acknowledged (or lost) packet, as the congestion control interceptor resolves it.
#[derive(Debug, Clone, Copy)]
pub struct PacketFate {
    /// When the packet left (our clock).
    pub departure: Instant,
    /// When it arrived (the receiver's clock, arbitrary origin), `None` when lost.
    pub arrival: Option<Duration>,
    /// Bytes on the wire.
    pub size: usize,
}

/// What the estimator currently says, for stats and for choosing a rendition.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EstimateSnapshot {
    /// The path's estimated rate, bits per second.
    pub bitrate_bps: f64,
    /// Smoothed fraction of packets lost (0..1).
    pub loss: f64,
    /// Smoothed standing queue, ms.
    pub queue_ms: f64,
    /// Delivered rate over the last 500 ms, when known.
    pub delivered_bps: Option<f64>,
    /// Feedback batches seen (0: the viewer sends no transport-cc feedback yet).
    pub reports: u64,
    /// True while the estimate is in back-off (congestion seen within the last second).
    pub congested: bool,
}

/// Delay- and loss-based estimator for one viewer's path. See the module docs.
#[derive(Debug, Clone)]
pub struct LinkEstimator {
    min_bps: f64,
    max_bps: f64,
    target: f64,
    /// `departure` of the first packet seen: origin of our side of the one-way delay.
    epoch: Option<Instant>,
    /// (bucket start, smallest one-way delay in it, ms), one bucket per second.
    base: VecDeque<(Instant, f64)>,
    queue_ms: f64,
    loss: f64,
    /// (arrival, bytes) of recent arrivals, for the delivered rate.
    arrivals: VecDeque<(Duration, usize)>,
    delivered: Option<f64>,
    last_increase: Option<Instant>,
    last_decrease: Option<Instant>,
    /// The delivered rate at the last back-off: growth slows near it.
    ceiling: Option<f64>,
    reports: u64,
}

impl LinkEstimator {
    /// An estimator starting at `initial_bps`, held within `min_bps..=max_bps`.
    pub fn new(initial_bps: f64, min_bps: f64, max_bps: f64) -> Self {
        LinkEstimator {
            min_bps,
            max_bps,
            target: initial_bps.clamp(min_bps, max_bps),
            epoch: None,
            base: VecDeque::new(),
            queue_ms: 0.0,
            loss: 0.0,
            arrivals: VecDeque::new(),
            delivered: None,
            last_increase: None,
            last_decrease: None,
            ceiling: None,
            reports: 0,
        }
    }

    /// The current estimate, bits per second.
    pub fn bitrate_bps(&self) -> f64 {
        self.target
    }

    pub fn snapshot(&self, now: Instant) -> EstimateSnapshot {
        EstimateSnapshot {
            bitrate_bps: self.target,
            loss: self.loss,
            queue_ms: self.queue_ms,
            delivered_bps: self.delivered,
            reports: self.reports,
            congested: self
                .last_decrease
                .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)),
        }
    }

    /// Folds in one feedback batch (packets in send order) received at `now`.
    pub fn on_feedback(&mut self, now: Instant, batch: &[PacketFate]) {
        if batch.is_empty() {
            return;
        }
        self.reports += 1;
        let epoch = *self.epoch.get_or_insert(batch[0].departure);

        // One-way delays (ms, arbitrary offset) of the packets that arrived.
        let mut batch_min = f64::INFINITY;
        let mut lost = 0usize;
        for p in batch {
            match p.arrival {
                Some(arrival) => {
                    let sent = p.departure.saturating_duration_since(epoch);
                    let owd = arrival.as_secs_f64() * 1e3 - sent.as_secs_f64() * 1e3;
                    batch_min = batch_min.min(owd);
                    if self.arrivals.len() == MAX_ARRIVALS {
                        self.arrivals.pop_front();
                    }
                    self.arrivals.push_back((arrival, p.size));
                }
                None => lost += 1,
            }
        }

        // Loss, smoothed; a batch that is mostly lost counts at once.
        let sample = lost as f64 / batch.len() as f64;
        self.loss = if sample > 0.5 {
            sample
        } else {
            0.8 * self.loss + 0.2 * sample
        };

        // Standing queue over the base delay.
        if batch_min.is_finite() {
            match self.base.back_mut() {
                Some((start, m))
                    if now.saturating_duration_since(*start) < Duration::from_secs(1) =>
                {
                    *m = m.min(batch_min);
                }
                _ => {
                    if self.base.len() == MAX_BASE_BUCKETS {
                        self.base.pop_front();
                    }
                    self.base.push_back((now, batch_min));
                }
            }
            while self
                .base
                .front()
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) > BASE_WINDOW)
            {
                self.base.pop_front();
            }
            let base = self
                .base
                .iter()
                .map(|(_, m)| *m)
                .fold(f64::INFINITY, f64::min);
            let queue = (batch_min - base).max(0.0);
            self.queue_ms = 0.6 * self.queue_ms + 0.4 * queue;
        }

        // Delivered rate over the receiver's last 500 ms.
        if let Some(&(last, _)) = self.arrivals.back() {
            let from = last.saturating_sub(RATE_WINDOW);
            while self.arrivals.front().is_some_and(|(a, _)| *a < from) {
                self.arrivals.pop_front();
            }
            let first = self.arrivals.front().map_or(last, |(a, _)| *a);
            // Only once the window is (nearly) covered, or the rate of a short start reads high.
            self.delivered = (last.saturating_sub(first) >= RATE_WINDOW * 4 / 5).then(|| {
                let bytes: usize = self.arrivals.iter().map(|(_, s)| s).sum();
                bytes as f64 * 8.0 / RATE_WINDOW.as_secs_f64()
            });
        }

        self.update(now);
    }

    fn update(&mut self, now: Instant) {
        let overuse = self.queue_ms > OVERUSE_QUEUE_MS || self.loss > HIGH_LOSS;
        if overuse {
            let held = self
                .last_decrease
                .is_some_and(|t| now.saturating_duration_since(t) < DECREASE_HOLD);
            if !held {
                // Back off from what the path delivers, not from what we aimed at; with
                // no rate yet (the first half second), halve.
                let from = self.delivered.unwrap_or(self.target / 2.0 / 0.85);
                let next = (from * 0.85).min(self.target);
                self.ceiling = Some(from);
                self.target = next.clamp(self.min_bps, self.max_bps);
                self.last_decrease = Some(now);
                self.last_increase = Some(now);
            }
            return;
        }
        let clean = self.queue_ms < CLEAN_QUEUE_MS && self.loss < LOW_LOSS;
        let last = self.last_increase.replace(now);
        if !clean {
            return;
        }
        let dt = last.map_or(0.0, |t| {
            now.saturating_duration_since(t).as_secs_f64().min(1.0)
        });
        if let (Some(c), Some(d)) = (self.ceiling, self.delivered) {
            if d > c * 1.15 {
                self.ceiling = None; // the path carries more than when it last congested
            }
        }
        let rate = match self.ceiling {
            Some(c) if self.target > c * 0.9 && self.target < c * 1.05 => {
                INCREASE_PER_S * NEAR_CEILING_SHARE
            }
            _ => INCREASE_PER_S,
        };
        let grown = self.target * (1.0 + rate).powf(dt);
        // Never more than the path has shown it carries, with a margin to find more.
        let cap = self
            .delivered
            .map_or(f64::INFINITY, |d| d * 1.5 + 150_000.0)
            .max(self.target);
        self.target = grown.min(cap).clamp(self.min_bps, self.max_bps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path of `capacity_bps` with a FIFO queue, fed at `send_bps` in 1200-byte packets:
    /// returns feedback batches every 50 ms as the receiver would report them.
    struct Path {
        t0: Instant,
        capacity_bps: f64,
        busy_until_ms: f64,
        queue_limit_ms: f64,
    }

    impl Path {
        fn new(capacity_bps: f64) -> Self {
            Path {
                t0: Instant::now(),
                capacity_bps,
                busy_until_ms: 0.0,
                queue_limit_ms: 200.0,
            }
        }

        /// Sends `send_bps` for `ms` starting at `from_ms`; returns the packets' fates.
        fn send(&mut self, from_ms: f64, ms: f64, send_bps: f64) -> Vec<PacketFate> {
            let size = 1200usize;
            let interval = size as f64 * 8.0 / send_bps * 1000.0;
            let mut out = vec![];
            let mut t = from_ms;
            while t < from_ms + ms {
                let start = self.busy_until_ms.max(t);
                let arrival = if start - t > self.queue_limit_ms {
                    None
                } else {
                    self.busy_until_ms = start + size as f64 * 8.0 / self.capacity_bps * 1000.0;
                    Some(Duration::from_secs_f64(
                        (self.busy_until_ms + 20.0) / 1000.0,
                    ))
                };
                out.push(PacketFate {
                    departure: self.t0 + Duration::from_secs_f64(t / 1000.0),
                    arrival,
                    size,
                });
                t += interval;
            }
            out
        }
    }

    /// Runs `secs` of sending at `send(estimate)` over `path`; returns the final estimate.
    fn run(
        est: &mut LinkEstimator,
        path: &mut Path,
        from_s: f64,
        secs: f64,
        send: impl Fn(f64) -> f64,
    ) -> f64 {
        let mut t = from_s * 1000.0;
        while t < (from_s + secs) * 1000.0 {
            let batch = path.send(t, 50.0, send(est.bitrate_bps()));
            est.on_feedback(
                path.t0 + Duration::from_secs_f64((t + 50.0) / 1000.0),
                &batch,
            );
            t += 50.0;
        }
        est.bitrate_bps()
    }

    #[test]
    fn a_sender_over_a_2_mbps_bottleneck_backs_off_below_it_within_a_second() {
        let mut est = LinkEstimator::new(5_000_000.0, 100_000.0, 50_000_000.0);
        let mut path = Path::new(2_000_000.0);
        // The sender sends what the estimate says.
        let after = run(&mut est, &mut path, 0.0, 1.0, |e| e);
        assert!(after < 2_000_000.0, "estimate {after}");
        assert!(after > 1_000_000.0, "estimate {after}");
    }

    #[test]
    fn the_estimate_settles_near_the_bottleneck_without_collapsing() {
        let mut est = LinkEstimator::new(5_000_000.0, 100_000.0, 50_000_000.0);
        let mut path = Path::new(2_000_000.0);
        run(&mut est, &mut path, 0.0, 2.0, |e| e);
        let mut lowest = f64::MAX;
        let mut highest: f64 = 0.0;
        for s in 2..20 {
            let e = run(&mut est, &mut path, s as f64, 1.0, |e| e);
            lowest = lowest.min(e);
            highest = highest.max(e);
        }
        assert!(lowest > 1_200_000.0, "collapsed to {lowest}");
        assert!(highest < 2_600_000.0, "overshot to {highest}");
    }

    #[test]
    fn a_clean_fast_path_keeps_the_initial_estimate() {
        let mut est = LinkEstimator::new(5_000_000.0, 100_000.0, 50_000_000.0);
        let mut path = Path::new(1_000_000_000.0);
        // App-limited at 4 Mb/s (21 packets per 50 ms: 4.03 Mb/s): the estimate holds at
        // or above the start, capped near 1.5 x what is delivered.
        let e = run(&mut est, &mut path, 0.0, 10.0, |_| 4_000_000.0);
        assert!(e >= 5_000_000.0, "estimate {e}");
        assert!(e <= 4_100_000.0 * 1.5 + 150_000.0, "estimate {e}");
    }

    #[test]
    fn growth_is_bounded_by_what_the_path_has_delivered() {
        let mut est = LinkEstimator::new(1_000_000.0, 100_000.0, 50_000_000.0);
        let mut path = Path::new(1_000_000_000.0);
        // 1 Mb/s asked, 6 packets per 50 ms sent: 1.15 Mb/s delivered.
        let e = run(&mut est, &mut path, 0.0, 20.0, |_| 1_000_000.0);
        assert!(e <= 1_180_000.0 * 1.5 + 150_000.0, "estimate {e}");
        assert!(e >= 1_700_000.0, "estimate {e}");
    }

    #[test]
    fn when_a_cap_is_lifted_the_estimate_climbs_within_seconds() {
        let mut est = LinkEstimator::new(5_000_000.0, 100_000.0, 50_000_000.0);
        let mut path = Path::new(2_000_000.0);
        run(&mut est, &mut path, 0.0, 5.0, |e| e);
        path.capacity_bps = 100_000_000.0;
        let e = run(&mut est, &mut path, 5.0, 6.0, |e| e);
        assert!(e > 5_000_000.0, "estimate {e} 6 s after the cap was lifted");
    }

    #[test]
    fn random_loss_of_two_percent_does_not_back_off() {
        let mut est = LinkEstimator::new(5_000_000.0, 100_000.0, 50_000_000.0);
        let t0 = Instant::now();
        let mut n = 0u64;
        for i in 0..400u64 {
            let batch: Vec<PacketFate> = (0..20)
                .map(|k| {
                    n += 1;
                    let ms = i * 50 + k * 2;
                    PacketFate {
                        departure: t0 + Duration::from_millis(ms),
                        arrival: (!n.is_multiple_of(50)).then(|| Duration::from_millis(ms + 30)),
                        size: 1200,
                    }
                })
                .collect();
            est.on_feedback(t0 + Duration::from_millis(i * 50 + 50), &batch);
        }
        assert!(est.bitrate_bps() >= 5_000_000.0, "{}", est.bitrate_bps());
        assert!(est.snapshot(t0).loss < 0.05);
    }

    #[test]
    fn heavy_loss_backs_off() {
        let mut est = LinkEstimator::new(5_000_000.0, 100_000.0, 50_000_000.0);
        let t0 = Instant::now();
        for i in 0..40u64 {
            let batch: Vec<PacketFate> = (0..20)
                .map(|k| {
                    let ms = i * 50 + k * 2;
                    PacketFate {
                        departure: t0 + Duration::from_millis(ms),
                        arrival: (!k.is_multiple_of(3)).then(|| Duration::from_millis(ms + 30)),
                        size: 1200,
                    }
                })
                .collect();
            est.on_feedback(t0 + Duration::from_millis(i * 50 + 50), &batch);
        }
        assert!(est.bitrate_bps() < 3_000_000.0, "{}", est.bitrate_bps());
    }

    #[test]
    fn growth_is_gentle_only_near_the_last_back_off() {
        let t0 = Instant::now();
        let grow_from = |target: f64| {
            let mut e = LinkEstimator::new(target, 150_000.0, 50_000_000.0);
            e.ceiling = Some(2_000_000.0);
            e.delivered = Some(2_000_000.0);
            e.last_increase = Some(t0);
            e.update(t0 + Duration::from_secs(1));
            e.target / target
        };
        let full = 1.0 + INCREASE_PER_S;
        let gentle = 1.0 + INCREASE_PER_S * NEAR_CEILING_SHARE;
        // Below 0.9 x the ceiling, and past 1.05 x it: the full rate.
        assert!(
            (grow_from(1_500_000.0) - full).abs() < 1e-6,
            "{}",
            grow_from(1_500_000.0)
        );
        assert!((grow_from(2_200_000.0) - full).abs() < 1e-6);
        // In between: a third of it.
        assert!((grow_from(1_900_000.0) - gentle).abs() < 1e-6);
        assert!((grow_from(2_050_000.0) - gentle).abs() < 1e-6);
    }
}
