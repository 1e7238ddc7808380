//! Per-frame encode time with the default live-view configuration.
//!
//! `cargo bench -p lumacast-encode` (release). Frames are a panning, slightly noisy synthetic
//! scene generated outside the timed region, so the encoder sees continuous motion (and its
//! periodic IDR every 60 frames) exactly as in live use.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::Scene;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lumacast_encode::{build_info, Encoder, EncoderConfig};

const SIZES: [(u32, u32); 4] = [(640, 480), (1280, 720), (1920, 1080), (2048, 2048)];

/// Times `iters` consecutive encodes of fresh frames with `cfg`.
fn time_encodes(cfg: EncoderConfig, iters: u64) -> Duration {
    let mut enc = Encoder::new(cfg).expect("encoder");
    let mut scene = Scene::new(cfg.width, cfg.height, 4);
    let mut total = Duration::ZERO;
    for i in 0..iters {
        let frame = scene.frame(i);
        let start = Instant::now();
        let out = enc.encode(&frame, i as i64 * 33).expect("encode");
        total += start.elapsed();
        black_box(out);
    }
    total
}

fn bench_default_config(c: &mut Criterion) {
    eprintln!("openh264: {}", build_info().note);
    let mut group = c.benchmark_group("encode_default");
    group.throughput(Throughput::Elements(1));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(6));
    group.sample_size(20);
    for (w, h) in SIZES {
        let cfg = EncoderConfig::new(w, h);
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{w}x{h}")),
            &cfg,
            |b, cfg| b.iter_custom(|iters| time_encodes(*cfg, iters)),
        );
    }
    group.finish();
}

fn bench_threading(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_threads_slices");
    group.throughput(Throughput::Elements(1));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(20);
    for (w, h) in [(640, 480), (1280, 720), (1920, 1080)] {
        for (threads, slices) in [(1u16, 1u16), (2, 2)] {
            let cfg = EncoderConfig {
                threads,
                slices,
                ..EncoderConfig::new(w, h)
            };
            let id = BenchmarkId::new(format!("{w}x{h}"), format!("{threads}t{slices}s"));
            group.bench_with_input(id, &cfg, |b, cfg| {
                b.iter_custom(|iters| time_encodes(*cfg, iters))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_default_config, bench_threading);
criterion_main!(benches);
