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

/// An encoder fed with a continuous scene across all of criterion's samples, so IDRs occur
/// every 60 frames as in live use (not at the start of every sample).
struct Stream {
    enc: Encoder,
    scene: Scene,
    next: u64,
}

impl Stream {
    fn new(cfg: EncoderConfig) -> Self {
        Self {
            enc: Encoder::new(cfg).expect("encoder"),
            scene: Scene::new(cfg.width, cfg.height, 4),
            next: 0,
        }
    }

    /// Times `iters` consecutive encodes of fresh frames (frame generation is not timed).
    fn time_encodes(&mut self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let i = self.next;
            self.next += 1;
            let frame = self.scene.frame(i);
            let start = Instant::now();
            let out = self.enc.encode(&frame, i as i64 * 33).expect("encode");
            total += start.elapsed();
            black_box(out);
        }
        total
    }
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
        let mut stream = Stream::new(cfg);
        group.bench_function(BenchmarkId::from_parameter(format!("{w}x{h}")), |b| {
            b.iter_custom(|iters| stream.time_encodes(iters))
        });
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
            let mut stream = Stream::new(cfg);
            group.bench_function(id, |b| b.iter_custom(|iters| stream.time_encodes(iters)));
        }
    }
    group.finish();
}

criterion_group!(benches, bench_default_config, bench_threading);
criterion_main!(benches);
