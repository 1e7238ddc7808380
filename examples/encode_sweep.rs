//! Encoder settings sweep on the synthetic detector's real content.
//! Run: cargo run --release --example encode_sweep -- [WIDTH HEIGHT]
//!
//! Prints mean/p50/p99 encode time per (threads, slices, deblocking) so the defaults in
//! `crates/encode/src/config.rs` can be checked on the machine at hand.
//!
//! `CONFIGS=1x1,2x4` picks (threads x slices) pairs, `DEBLOCK=on|off|both` the loop filter.
//! `PACE_MS=30` sleeps before each frame, as a live 30 fps source leaves the encoder
//! idle; `PREWARM_US=1500` (with `PACE_MS`) spins both cores for the last 1.5 ms of each
//! gap instead of sleeping (an experiment: it did not help on our VM).

use lumacast_capture::{FrameSource, SyntheticConfig, SyntheticSource};
use lumacast_encode::{Complexity, Encoder, EncoderConfig};
use lumacast_frame::{Converter, I420Frame};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (w, h) = (*args.first().unwrap_or(&1280), *args.get(1).unwrap_or(&720));
    let mut src = SyntheticSource::new(SyntheticConfig {
        width: w,
        height: h,
        fps: 240.0,
        bit_depth: 12,
    })?;
    let mut conv = Converter::new(None);
    let frames: Vec<I420Frame> = (0..150)
        .map(|_| {
            let f = src.next_frame().expect("frame");
            let mut out = I420Frame::default();
            conv.convert(&f, &mut out).expect("convert");
            out
        })
        .collect();
    println!(
        "{w}x{h}, {} frames, assembly={}",
        frames.len(),
        lumacast_encode::build_info().assembly
    );
    // PACE_MS=33 sleeps between frames as a 30 fps source would.
    let pace: u64 = std::env::var("PACE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let prewarm: Option<std::time::Duration> = std::env::var("PREWARM_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_micros);
    // CONFIGS=1x1,2x4 picks (threads x slices); DEBLOCK=on|off|both (default both).
    let configs: Vec<(u16, u16)> = std::env::var("CONFIGS")
        .unwrap_or_else(|_| "1x1,2x2,2x4,2x6,2x8".into())
        .split(',')
        .filter_map(|c| {
            let (t, s) = c.split_once('x')?;
            Some((t.trim().parse().ok()?, s.trim().parse().ok()?))
        })
        .collect();
    let deblock: Vec<bool> = match std::env::var("DEBLOCK").as_deref() {
        Ok("on") => vec![true],
        Ok("off") => vec![false],
        _ => vec![true, false],
    };
    for (threads, slices) in configs {
        for (complexity, deblocking) in deblock.iter().map(|&d| (Complexity::Low, d)) {
            let mut cfg = EncoderConfig::new(w, h);
            cfg.threads = threads;
            cfg.slices = slices;
            cfg.complexity = complexity;
            cfg.deblocking = deblocking;
            let mut enc = Encoder::new(cfg)?;
            let mut times = Vec::new();
            let mut bytes = 0usize;
            for (i, f) in frames.iter().enumerate() {
                if pace > 0 {
                    // Like a live source: the encoder idles between frames.
                    if let Some(pre) = prewarm {
                        // Sleep most of the gap, then keep both vCPUs busy for the last
                        // `pre` ms before the frame.
                        let gap = std::time::Duration::from_millis(pace);
                        std::thread::sleep(gap.saturating_sub(pre));
                        let until = Instant::now() + pre;
                        let helper = std::thread::spawn(move || {
                            while Instant::now() < until {
                                std::hint::spin_loop();
                            }
                        });
                        while Instant::now() < until {
                            std::hint::spin_loop();
                        }
                        let _ = helper.join();
                    } else {
                        std::thread::sleep(std::time::Duration::from_millis(pace));
                    }
                }
                let t = Instant::now();
                let out = enc.encode(f, i as i64 * 33)?;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                bytes += out.data.len();
            }
            let times = &mut times[10..];
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let mean = times.iter().sum::<f64>() / times.len() as f64;
            println!(
                "{threads}t{slices}s {complexity:?} deblock={deblocking}: mean {mean:.2} ms, p50 {:.2}, p99 {:.2}, {:.2} Mb/s",
                times[times.len() / 2],
                times[times.len() * 99 / 100],
                bytes as f64 * 8.0 / (frames.len() as f64 / 30.0) / 1e6
            );
        }
    }
    Ok(())
}
