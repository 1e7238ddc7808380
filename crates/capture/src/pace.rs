//! Frame pacing shared by the sources that produce frames on their own clock.

use std::time::{Duration, Instant};

/// Paces frames on an absolute schedule: frame `n` is due at `anchor + n * period`, so
/// sleep overshoot does not accumulate into drift. If the caller fell behind by more than
/// a period (e.g. the process was stopped), the schedule is re-anchored instead of
/// producing a burst of catch-up frames.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    period: Duration,
    /// `(anchor, index of the next frame)`; `None` until the first frame.
    schedule: Option<(Instant, u64)>,
}

impl Pacer {
    /// A pacer for `fps` frames per second; `fps` must be positive and finite (the
    /// sources validate it before).
    pub(crate) fn new(fps: f64) -> Self {
        Pacer {
            period: Duration::from_secs_f64(1.0 / fps),
            schedule: None,
        }
    }

    /// Sleeps until the next frame is due and advances the schedule. The first frame is
    /// due immediately.
    pub(crate) fn wait_until_due(&mut self) {
        let now = Instant::now();
        let (anchor, index) = self.schedule.get_or_insert((now, 0));
        let due = *anchor + self.period.mul_f64(*index as f64);
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > self.period {
            *anchor = now;
            *index = 0;
        }
        *index += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_frames_at_100_fps_take_about_90_ms() {
        let mut p = Pacer::new(100.0);
        let t0 = Instant::now();
        for _ in 0..10 {
            p.wait_until_due();
        }
        // First frame is immediate, then 9 periods of 10 ms.
        assert!(
            t0.elapsed() >= Duration::from_millis(80),
            "{:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn falling_behind_reanchors_instead_of_bursting() {
        let mut p = Pacer::new(100.0);
        p.wait_until_due();
        std::thread::sleep(Duration::from_millis(60));
        // Late: frame 1 is released at once and re-anchors the schedule...
        p.wait_until_due();
        // ...so frame 2 waits a full period instead of catching up immediately.
        let t0 = Instant::now();
        p.wait_until_due();
        assert!(
            t0.elapsed() >= Duration::from_millis(5),
            "{:?}",
            t0.elapsed()
        );
    }
}
