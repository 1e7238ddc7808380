//! Encode-latency report (mean / p50 / p99 per frame), ignored by default because timings need
//! a quiet machine and a release build:
//!
//! `cargo test -p lumacast-encode --release --test latency -- --ignored --nocapture`
//!
//! `LUMACAST_LATENCY_FRAMES` (default 300) sets the frames per case, `LUMACAST_LATENCY_NOISE`
//! (default 4) the per-frame noise amplitude of the synthetic scene, `LUMACAST_LATENCY_STILL=1`
//! keeps the scene still (only the noise changes, like an idle detector). Each line also gives the
//! process CPU time per frame and how busy the rest of the machine was (Linux), so numbers
//! taken on a shared machine can be judged.

mod common;

use std::time::Instant;

use common::Scene;
use lumacast_encode::{build_info, Encoder, EncoderConfig};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This process's user+system CPU time in clock ticks (Linux; `None` elsewhere).
fn process_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Machine-wide (busy, total) jiffies from /proc/stat (Linux; `None` elsewhere).
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let nums: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = nums.iter().sum();
    let idle = nums.get(3)? + nums.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

fn report(label: &str, cfg: EncoderConfig, frames: u64, noise: u8, still: bool) {
    let mut enc = Encoder::new(cfg).unwrap();
    let mut scene = Scene::new(cfg.width, cfg.height, noise);
    // Pre-generate so the CPU accounting below covers encoding only; at most ~150 MB, played
    // forwards then backwards (the pan reverses: continuous motion, no cut at the wrap).
    let frame_bytes = u64::from(cfg.width) * u64::from(cfg.height) * 3 / 2;
    let pool_len = frames.min(150_000_000 / frame_bytes).clamp(2, 64);
    let pool: Vec<_> = (0..pool_len)
        .map(|i| scene.frame(if still { 0 } else { i }))
        .collect();
    let period = 2 * (pool_len - 1);
    let mut times = Vec::with_capacity(frames as usize);
    let mut bytes = 0usize;
    let (cpu0, mach0) = (process_cpu_ticks(), machine_jiffies());
    for i in 0..frames {
        let phase = i % period;
        let frame = &pool[phase.min(period - phase) as usize];
        let start = Instant::now();
        let out = enc.encode(frame, i as i64 * 33).unwrap();
        times.push(start.elapsed().as_secs_f64() * 1e3);
        bytes += out.data.len();
    }
    let (cpu1, mach1) = (process_cpu_ticks(), machine_jiffies());
    let load = match (cpu0, cpu1, mach0, mach1) {
        (Some(c0), Some(c1), Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
            // Jiffies and clock ticks are both USER_HZ (100/s) on Linux.
            let own = (c1 - c0) as f64;
            let others = (b1 - b0) as f64 - own;
            format!(
                "cpu {:5.2} ms/frame, other load {:3.0}%",
                own * 10.0 / frames as f64,
                100.0 * others.max(0.0) / (t1 - t0) as f64
            )
        }
        _ => String::new(),
    };
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let mbps = bytes as f64 * 8.0 / (frames as f64 / f64::from(cfg.fps)) / 1e6;
    println!(
        "{label:<24} mean {mean:6.2} ms  p50 {:6.2}  p99 {:6.2}  max {:6.2}  {mbps:5.2}/{:.0} Mb/s  {load}",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        f64::from(cfg.bitrate_bps) / 1e6
    );
}

#[test]
#[ignore = "timing report; run explicitly in release on a quiet machine"]
fn encode_latency_report() {
    let frames = env_or("LUMACAST_LATENCY_FRAMES", 300);
    let noise = env_or("LUMACAST_LATENCY_NOISE", 4).min(64) as u8;
    let still = env_or("LUMACAST_LATENCY_STILL", 0) != 0;
    println!(
        "openh264: {}; {frames} frames per case, noise {noise}, {}",
        build_info().note,
        if still {
            "still scene"
        } else {
            "panning scene"
        }
    );
    for (w, h) in [(640, 480), (1280, 720), (1920, 1080), (2048, 2048)] {
        let cfg = EncoderConfig::new(w, h);
        report(
            &format!("{w}x{h} default {}t{}s", cfg.threads, cfg.slices),
            cfg,
            frames,
            noise,
            still,
        );
        let alt = if cfg.threads == 1 { (2, 2) } else { (1, 1) };
        let alt_cfg = EncoderConfig {
            threads: alt.0,
            slices: alt.1,
            ..cfg
        };
        report(
            &format!("{w}x{h} {}t{}s", alt.0, alt.1),
            alt_cfg,
            frames,
            noise,
            still,
        );
    }
}
