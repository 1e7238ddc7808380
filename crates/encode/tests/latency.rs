//! Encode-latency report (mean / p50 / p99 per frame), ignored by default because timings need
//! a quiet machine and a release build:
//!
//! `cargo test -p lumacast-encode --release --test latency -- --ignored --nocapture`
//!
//! `LUMACAST_LATENCY_FRAMES` (default 300) sets the frames per case, `LUMACAST_LATENCY_NOISE`
//! (default 4) the per-frame noise amplitude of the synthetic scene.

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

fn report(label: &str, cfg: EncoderConfig, frames: u64, noise: u8) {
    let mut enc = Encoder::new(cfg).unwrap();
    let mut scene = Scene::new(cfg.width, cfg.height, noise);
    let mut times = Vec::with_capacity(frames as usize);
    let mut bytes = 0usize;
    for i in 0..frames {
        let frame = scene.frame(i);
        let start = Instant::now();
        let out = enc.encode(&frame, i as i64 * 33).unwrap();
        times.push(start.elapsed().as_secs_f64() * 1e3);
        bytes += out.data.len();
    }
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let mbps = bytes as f64 * 8.0 / (frames as f64 / f64::from(cfg.fps)) / 1e6;
    println!(
        "{label:<28} mean {mean:6.2} ms  p50 {:6.2}  p99 {:6.2}  max {:6.2}  ({mbps:.2} Mb/s, target {:.1})",
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
    println!(
        "openh264: {}; {frames} frames per case, noise {noise}",
        build_info().note
    );
    for (w, h) in [(640, 480), (1280, 720), (1920, 1080), (2048, 2048)] {
        let cfg = EncoderConfig::new(w, h);
        report(
            &format!("{w}x{h} default {}t{}s", cfg.threads, cfg.slices),
            cfg,
            frames,
            noise,
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
        );
    }
}
