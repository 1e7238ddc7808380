//! Mono16 -> I420 conversion speed: this runs once per frame on the capture path, so it
//! bounds the frame rate a single core can sustain (target: 2048x2048 in ~1-2 ms).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lumacast_frame::{Converter, Frame, I420Frame, PixelFormat};

fn mono16_frame(width: u32, height: u32) -> Frame {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut data = Vec::with_capacity(width as usize * height as usize * 2);
    for _ in 0..width as usize * height as usize {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&((state as u16) & 0x0fff).to_le_bytes());
    }
    Frame::new(
        width,
        height,
        PixelFormat::Mono16 { bit_depth: 12 },
        0,
        data,
    )
    .unwrap()
}

fn bench_mono16(c: &mut Criterion) {
    let mut group = c.benchmark_group("mono16_to_i420");
    for (w, h) in [(1280, 720), (2048, 2048)] {
        let frame = mono16_frame(w, h);
        let mut conv = Converter::default();
        let mut out = I420Frame::default();
        group.throughput(Throughput::Elements(u64::from(w) * u64::from(h)));
        group.bench_function(format!("{w}x{h}"), |b| {
            b.iter(|| conv.convert(black_box(&frame), &mut out).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_mono16);
criterion_main!(benches);
