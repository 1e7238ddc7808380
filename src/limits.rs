//! Admission limits that protect the server from a single client: offers per client IP
//! address and second (token bucket). Viewer counts are limited where viewers live
//! (`crates/rtc` per detector, `src/http/liveview.rs` in total).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Client addresses remembered at most; idle ones are forgotten first.
const MAX_CLIENTS: usize = 4096;
/// A client not seen for this long starts again with a full bucket.
const IDLE: Duration = Duration::from_secs(60);

/// Token bucket per client IP: `rate` offers per second, bursts of `2 * rate`.
#[derive(Debug)]
pub struct OfferLimiter {
    rate: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl OfferLimiter {
    /// `rate <= 0` disables the limit.
    pub fn new(rate: f64) -> Self {
        OfferLimiter {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `ip` at `now`; false when the client is over its rate.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        // NaN and anything not above 0 mean "no limit".
        if self.rate.is_nan() || self.rate <= 0.0 {
            return true;
        }
        let burst = (2.0 * self.rate).max(1.0);
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() >= MAX_CLIENTS && !b.contains_key(&ip) {
            b.retain(|_, (_, t)| now.saturating_duration_since(*t) < IDLE);
            if b.len() >= MAX_CLIENTS {
                // Still full of active clients: forget the longest idle one.
                if let Some(oldest) = b.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k) {
                    b.remove(&oldest);
                }
            }
        }
        let (tokens, last) = b.entry(ip).or_insert((burst, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Offers per second allowed per client (0 or less: unlimited).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Clients currently remembered (bounded by an internal maximum).
    pub fn clients(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_the_rate_per_client() {
        let l = OfferLimiter::new(2.0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(
            (0..10).filter(|_| l.allow(a, t0)).count(),
            4,
            "burst of 2x rate"
        );
        assert!(l.allow(b, t0), "other clients are not affected");
        assert!(!l.allow(a, t0 + Duration::from_millis(100)));
        assert!(
            l.allow(a, t0 + Duration::from_millis(600)),
            "refilled at 2/s"
        );
    }

    #[test]
    fn remembers_a_bounded_number_of_clients() {
        let l = OfferLimiter::new(1.0);
        let t0 = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 100) {
            assert!(l.allow(IpAddr::from(i.to_be_bytes()), t0));
        }
        assert!(l.clients() <= MAX_CLIENTS);
        assert!(OfferLimiter::new(0.0).allow("1.2.3.4".parse().unwrap(), t0));
    }
}
