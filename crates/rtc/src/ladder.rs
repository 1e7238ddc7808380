//! The rendition ladder and each viewer's choice on it.
//!
//! A detector's encoder thread encodes each rendition once (full size, half, quarter...)
//! while at least one viewer is on it; every viewer picks the best rendition its link
//! carries. [`RenditionChooser`] is that choice: the estimate and the time in, a switch
//! out, no clock read inside, so the policy is unit-tested as a sequence of instants.
//!
//! Policy:
//! - a rendition *fits* when its bitrate is at most [`UP_HEADROOM`] × the estimate;
//! - the current rendition is left downwards as soon as its bitrate exceeds
//!   [`DOWN_MARGIN`] × the estimate or the path reports congestion, to the best one that
//!   fits (the smallest when none does);
//! - upwards only after a better rendition has fitted for [`UP_HOLD`] and at least
//!   [`MIN_DWELL`] after the last switch (hysteresis: the bands 0.8 and 0.95 do not touch);
//! - an estimate can only grow to about 1.5 × what the path delivers, so a viewer on a
//!   small rendition cannot see that its link got faster. After the path has been clean
//!   for the probe interval the chooser *tries* one step up; the trial succeeds once the
//!   estimate has caught up with the new rendition, and fails on congestion, which sends
//!   the viewer back to where it was and makes the interval 1.5 times longer (6 s, 9 s,
//!   13.5 s, ... 60 s).
//! - a viewer whose peer takes RTX (RFC 4588) and sends transport-wide feedback is
//!   probed instead, at no cost to its picture: below the top rendition, its link is
//!   filled up to the estimate (capped at what the next step up needs) with RTX copies
//!   of packets it already has, so the estimate can grow past what the media alone
//!   delivers, and the viewer moves up by the ordinary rule above once the step fits.
//!   Such a viewer gets no blind trials. Congestion while padding pauses the padding for
//!   [`PAD_PAUSE`] (the link is full: the probe found its ceiling).

use std::time::{Duration, Instant};

/// A rendition fits when its bitrate is at most this share of the estimate.
pub const UP_HEADROOM: f64 = 0.80;
/// The current rendition is kept while its bitrate is at most this share of the estimate.
pub const DOWN_MARGIN: f64 = 0.95;
/// How long a better rendition must fit before moving up to it.
pub const UP_HOLD: Duration = Duration::from_secs(1);
/// The same for a viewer probed with padding: its estimate was earned with real bytes.
pub const UP_HOLD_PADDED: Duration = Duration::from_millis(500);
/// No move up sooner than this after any switch.
pub const MIN_DWELL: Duration = Duration::from_secs(2);
/// First interval between upward trials on a clean path; x1.5 after each failure.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(6);
/// Longest interval between upward trials.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(60);
/// A trial that has not caught up by then has failed.
pub const TRIAL_TIMEOUT: Duration = Duration::from_secs(6);

/// Padding pauses this long after congestion seen while padding.
pub const PAD_PAUSE: Duration = Duration::from_secs(2);
/// Padding aims this far above what the next step up needs to fit, so that the estimate
/// does not stop just short of it.
pub const PAD_OVERSHOOT: f64 = 1.05;

/// One step of a detector's ladder, as the encoder thread publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rendition {
    /// The size divisor this step was made with (1 = the top rendition).
    pub divisor: u32,
    pub width: u32,
    pub height: u32,
    pub bitrate_bps: u64,
}

/// A viewer's place on the ladder. Index 0 is the full-size rendition.
#[derive(Debug, Clone)]
pub struct RenditionChooser {
    current: usize,
    last_switch: Option<Instant>,
    better_fits_since: Option<Instant>,
    clean_since: Option<Instant>,
    probe_interval: Duration,
    /// An upward trial in progress: when it started.
    trial: Option<Instant>,
    switches: u64,
    /// The viewer can be probed with padding (RTX and transport-wide feedback).
    can_pad: bool,
    /// Padding was asked for at the last look.
    padding: bool,
    /// No padding before this instant (congestion was seen while padding).
    pad_paused_until: Option<Instant>,
}

/// Why a viewer moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchReason {
    /// The estimate no longer carries the current rendition.
    Down,
    /// A better rendition has fitted for a while.
    Up,
    /// A trial step up on a clean path.
    Probe,
}

impl SwitchReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchReason::Down => "down",
            SwitchReason::Up => "up",
            SwitchReason::Probe => "probe",
        }
    }
}

impl Default for RenditionChooser {
    fn default() -> Self {
        Self::new()
    }
}

impl RenditionChooser {
    /// Starts on the full-size rendition.
    pub fn new() -> Self {
        RenditionChooser {
            current: 0,
            last_switch: None,
            better_fits_since: None,
            clean_since: None,
            probe_interval: PROBE_INTERVAL,
            trial: None,
            switches: 0,
            can_pad: false,
            padding: false,
            pad_paused_until: None,
        }
    }

    /// Starts on the full-size rendition; `can_pad` says the viewer is probed with padding
    /// instead of blind trials (see the module docs).
    pub fn with_padding(can_pad: bool) -> Self {
        RenditionChooser {
            can_pad,
            ..Self::new()
        }
    }

    /// The rate the viewer's link should carry in all, media and padding, bits per second;
    /// 0 for no padding. Call once per look, after [`RenditionChooser::decide`].
    pub fn padding_target(
        &mut self,
        now: Instant,
        estimate_bps: f64,
        congested: bool,
        bitrates: &[u64],
    ) -> f64 {
        if congested && self.padding {
            self.pad_paused_until = Some(now + PAD_PAUSE);
        }
        let paused = self.pad_paused_until.is_some_and(|t| now < t);
        self.padding = self.can_pad
            && !congested
            && !paused
            && self.current > 0
            && self.current < bitrates.len();
        if !self.padding {
            return 0.0;
        }
        let next_needs = bitrates[self.current - 1] as f64 / UP_HEADROOM * PAD_OVERSHOOT;
        estimate_bps.min(next_needs)
    }

    pub fn current(&self) -> usize {
        self.current
    }

    /// Puts the viewer on `r` without a decision (the ladder lost its step).
    pub fn reset_to(&mut self, r: usize) {
        self.current = r;
        self.trial = None;
        self.better_fits_since = None;
    }

    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// Whether an upward trial is running.
    pub fn on_trial(&self) -> bool {
        self.trial.is_some()
    }

    /// Decides on one more look at the estimate: returns the rendition to move to, if any.
    /// `bitrates` are the ladder's, best first; `congested` says the path backed off just now.
    pub fn decide(
        &mut self,
        now: Instant,
        estimate_bps: f64,
        congested: bool,
        bitrates: &[u64],
    ) -> Option<(usize, SwitchReason)> {
        if bitrates.is_empty() {
            return None;
        }
        let last = bitrates.len() - 1;
        if self.current > last {
            return Some(self.switch(now, last, SwitchReason::Down));
        }
        let best_fit = bitrates
            .iter()
            .position(|&b| b as f64 <= estimate_bps * UP_HEADROOM)
            .unwrap_or(last);
        let cur_bps = bitrates[self.current] as f64;
        if congested {
            self.clean_since = None;
        } else {
            self.clean_since.get_or_insert(now);
        }

        if let Some(started) = self.trial {
            if congested || now.saturating_duration_since(started) > TRIAL_TIMEOUT {
                // The path could not carry it: back down, and wait longer next time.
                self.trial = None;
                self.probe_interval = (self.probe_interval * 3 / 2).min(MAX_PROBE_INTERVAL);
                // Back to where it was: the congestion is the trial's own, and the
                // estimate needs a moment to read the path again.
                let to = (self.current + 1).min(last);
                return Some(self.switch(now, to, SwitchReason::Down));
            }
            if cur_bps <= estimate_bps * DOWN_MARGIN {
                self.trial = None;
                self.probe_interval = PROBE_INTERVAL;
            }
            return None;
        }

        if cur_bps > estimate_bps * DOWN_MARGIN {
            let to = best_fit.max(self.current + 1).min(last);
            if to != self.current {
                return Some(self.switch(now, to, SwitchReason::Down));
            }
            return None;
        }

        let dwelt = self
            .last_switch
            .is_none_or(|t| now.saturating_duration_since(t) >= MIN_DWELL);
        if best_fit < self.current {
            let since = *self.better_fits_since.get_or_insert(now);
            let hold = if self.can_pad {
                UP_HOLD_PADDED
            } else {
                UP_HOLD
            };
            if dwelt && now.saturating_duration_since(since) >= hold {
                return Some(self.switch(now, best_fit, SwitchReason::Up));
            }
            return None;
        }
        self.better_fits_since = None;

        if self.current > 0
            && !self.can_pad
            && dwelt
            && self
                .clean_since
                .is_some_and(|t| now.saturating_duration_since(t) >= self.probe_interval)
            && self
                .last_switch
                .is_none_or(|t| now.saturating_duration_since(t) >= self.probe_interval)
        {
            self.trial = Some(now);
            return Some(self.switch(now, self.current - 1, SwitchReason::Probe));
        }
        None
    }

    fn switch(&mut self, now: Instant, to: usize, why: SwitchReason) -> (usize, SwitchReason) {
        self.current = to;
        self.last_switch = Some(now);
        self.better_fits_since = None;
        self.switches += 1;
        (to, why)
    }
}

/// The ladder for a top rendition of `width` x `height` at `bitrate_bps`, one step per
/// divisor in `divisors` (1 = full size, 2 = half, 4 = quarter...). Sizes are even and at
/// least 16 (steps that would be smaller are left out); a step's bitrate is the top's times
/// (1/d)^1.85, so the smaller pictures get more bits per pixel than a linear share
/// (4 Mb/s at 720p: 1.11 Mb/s at 640x360, 307 kb/s at 320x180: the quarter step fits a
/// 500 kb/s link with room for its queue to drain).
pub fn ladder(width: u32, height: u32, bitrate_bps: u64, divisors: &[u32]) -> Vec<Rendition> {
    let mut out: Vec<Rendition> = Vec::new();
    for &d in divisors {
        let d = d.max(1);
        let (w, h) = ((width / d) & !1, (height / d) & !1);
        if w < 16 || h < 16 {
            continue;
        }
        if out.last().is_some_and(|r| r.width <= w) {
            continue; // divisors must grow; a repeated or shrinking one is skipped
        }
        let bitrate = (bitrate_bps as f64 * (1.0 / d as f64).powf(1.85)).round() as u64;
        out.push(Rendition {
            divisor: d,
            width: w,
            height: h,
            bitrate_bps: bitrate.max(50_000),
        });
    }
    if out.is_empty() {
        out.push(Rendition {
            divisor: 1,
            width,
            height,
            bitrate_bps,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LADDER: [u64; 3] = [4_000_000, 1_110_000, 307_000];

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn the_default_ladder_of_720p() {
        let l = ladder(1280, 720, 4_000_000, &[1, 2, 4]);
        assert_eq!(l.len(), 3);
        assert_eq!((l[1].width, l[1].height), (640, 360));
        assert_eq!((l[2].width, l[2].height), (320, 180));
        assert!((1_100_000..1_120_000).contains(&l[1].bitrate_bps));
        assert!((300_000..315_000).contains(&l[2].bitrate_bps));
        assert_eq!(ladder(1280, 720, 4_000_000, &[1]).len(), 1);
        // Too small steps are dropped, odd sizes made even.
        let tiny = ladder(50, 30, 100_000, &[1, 2, 4]);
        assert_eq!(tiny.len(), 1);
        assert_eq!(ladder(1282, 722, 1, &[2])[0].width, 640);
    }

    #[test]
    fn a_fast_link_stays_on_full_size() {
        let t0 = Instant::now();
        let mut c = RenditionChooser::new();
        for i in 0..200 {
            assert_eq!(c.decide(at(t0, i * 100), 5_000_000.0, false, &LADDER), None);
        }
        assert_eq!(c.current(), 0);
    }

    #[test]
    fn a_2_mbps_estimate_moves_down_at_once_to_half_size() {
        let t0 = Instant::now();
        let mut c = RenditionChooser::new();
        assert_eq!(
            c.decide(t0, 1_700_000.0, true, &LADDER),
            Some((1, SwitchReason::Down))
        );
        // And stays there while the estimate hovers around 1.6-2 Mb/s.
        for i in 1..100 {
            let e = 1_600_000.0 + (i % 5) as f64 * 100_000.0;
            let d = c.decide(at(t0, i * 100), e, false, &LADDER);
            assert!(d.is_none() || d == Some((0, SwitchReason::Probe)), "{d:?}");
            if d.is_some() {
                // a trial up; congestion ends it and sends the viewer back down
                assert_eq!(
                    c.decide(at(t0, i * 100 + 50), 1_700_000.0, true, &LADDER),
                    Some((1, SwitchReason::Down))
                );
            }
        }
    }

    #[test]
    fn below_the_smallest_the_smallest_is_kept() {
        let t0 = Instant::now();
        let mut c = RenditionChooser::new();
        assert_eq!(
            c.decide(t0, 200_000.0, true, &LADDER),
            Some((2, SwitchReason::Down))
        );
        assert_eq!(c.decide(at(t0, 100), 150_000.0, true, &LADDER), None);
    }

    #[test]
    fn hysteresis_an_estimate_between_the_bands_does_not_move_the_viewer() {
        let t0 = Instant::now();
        let mut c = RenditionChooser::new();
        // 4 Mb/s needs 5 Mb/s to move up to (0.8) but only 4.21 to stay (0.95).
        for i in 0..30 {
            assert_eq!(c.decide(at(t0, i * 100), 4_500_000.0, false, &LADDER), None);
        }
        assert_eq!(
            c.decide(at(t0, 3100), 4_100_000.0, false, &LADDER),
            Some((1, SwitchReason::Down))
        );
        // Up again only after the full rendition fits for UP_HOLD and MIN_DWELL passed.
        assert_eq!(c.decide(at(t0, 3200), 5_100_000.0, false, &LADDER), None);
        assert_eq!(c.decide(at(t0, 4300), 5_100_000.0, false, &LADDER), None);
        assert_eq!(
            c.decide(at(t0, 5200), 5_100_000.0, false, &LADDER),
            Some((0, SwitchReason::Up))
        );
    }

    #[test]
    fn failed_trials_back_off_and_a_successful_one_stays() {
        let t0 = Instant::now();
        let mut c = RenditionChooser::new();
        c.decide(t0, 1_700_000.0, true, &LADDER);
        assert_eq!(c.current(), 1);
        let mut trials = vec![];
        let mut t = 0;
        // 60 s of a clean 1.9 Mb/s path whose trials always congest.
        while t < 60_000 {
            t += 100;
            if let Some((to, why)) = c.decide(at(t0, t), 1_900_000.0, false, &LADDER) {
                assert_eq!((to, why), (0, SwitchReason::Probe));
                trials.push(t);
                t += 300;
                assert_eq!(
                    c.decide(at(t0, t), 1_600_000.0, true, &LADDER),
                    Some((1, SwitchReason::Down))
                );
            }
        }
        assert!(trials.len() >= 4 && trials.len() <= 8, "{trials:?}");
        let gaps: Vec<_> = trials.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.windows(2).all(|g| g[1] > g[0]), "{gaps:?}");

        // Now the link is fast: the next trial's estimate catches up and it stays.
        let mut c = RenditionChooser::new();
        c.decide(t0, 1_700_000.0, true, &LADDER);
        let mut t = 0;
        let mut est = 1_900_000.0;
        let mut moved = None;
        while t < 20_000 {
            t += 100;
            if c.on_trial() {
                est *= 1.025;
            }
            if let Some(d) = c.decide(at(t0, t), est, false, &LADDER) {
                moved.get_or_insert((t, d));
            }
        }
        assert_eq!(moved.map(|m| m.1), Some((0, SwitchReason::Probe)));
        assert_eq!(c.current(), 0);
        assert!(!c.on_trial());
    }

    #[test]
    fn a_padded_viewer_is_probed_up_to_the_next_step_and_never_tried_blindly() {
        let t0 = Instant::now();
        let mut c = RenditionChooser::with_padding(true);
        assert_eq!(
            c.decide(t0, 1_700_000.0, true, &LADDER),
            Some((1, SwitchReason::Down))
        );
        // Congested now: no padding.
        assert_eq!(c.padding_target(t0, 1_700_000.0, true, &LADDER), 0.0);
        // A capped link: padding fills it to the estimate; no trial ever comes.
        let mut t = 0;
        let mut est = 1_800_000.0;
        while t < 60_000 {
            t += 200;
            assert_eq!(c.decide(at(t0, t), est, false, &LADDER), None, "at {t} ms");
            let pad = c.padding_target(at(t0, t), est, false, &LADDER);
            assert_eq!(pad, est, "at {t} ms");
        }
        // The probe hits the ceiling: padding pauses for PAD_PAUSE, then resumes.
        t += 200;
        assert_eq!(c.decide(at(t0, t), est, true, &LADDER), None);
        assert_eq!(c.padding_target(at(t0, t), est, true, &LADDER), 0.0);
        assert_eq!(c.padding_target(at(t0, t + 1000), est, false, &LADDER), 0.0);
        assert_eq!(c.padding_target(at(t0, t + 2100), est, false, &LADDER), est);
        // The cap is lifted: padding lets the estimate grow; capped at what 720p needs.
        t += 2100;
        let mut moved = None;
        while t < 80_000 && moved.is_none() {
            t += 200;
            moved = c.decide(at(t0, t), est, false, &LADDER);
            let pad = c.padding_target(at(t0, t), est, false, &LADDER);
            assert!(pad <= 4_000_000.0 / UP_HEADROOM * PAD_OVERSHOOT + 1.0);
            est = (est * 1.05).min(pad * 1.05).max(est);
        }
        assert_eq!(moved, Some((0, SwitchReason::Up)));
        // On the top rendition nothing is padded.
        assert_eq!(c.padding_target(at(t0, t + 200), est, false, &LADDER), 0.0);
    }

    #[test]
    fn without_padding_nothing_is_padded() {
        let t0 = Instant::now();
        let mut c = RenditionChooser::new();
        c.decide(t0, 1_700_000.0, true, &LADDER);
        assert_eq!(
            c.padding_target(at(t0, 5000), 1_900_000.0, false, &LADDER),
            0.0
        );
    }
}
