//! Mono16 -> I420 conversion speed: this runs once per frame on the capture path, so it
//! bounds the frame rate a single core can sustain (target: 2048x2048 in ~1-2 ms).
//!
//! Group "display" covers the display mapping settings on 2048x2048 12-bit data:
//! `cargo bench -p lumacast-frame --bench convert -- display`. Group "histogram" times
//! the auto window's sampling alone.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lumacast_frame::{
    histogram, Colormap, Converter, DisplayMapper, DisplaySettings, Frame, Geometry, I420Frame,
    PixelFormat, Roi, WindowMode,
};

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

fn bench_display(c: &mut Criterion) {
    // `BENCH_DISPLAY_SIZE=2048x128` keeps the frame in L2, timing the kernels without
    // the memory traffic that other tenants of a shared L3 make noisy.
    let (w, h) = std::env::var("BENCH_DISPLAY_SIZE")
        .ok()
        .and_then(|v| {
            let (w, h) = v.split_once('x')?;
            Some((w.parse().ok()?, h.parse().ok()?))
        })
        .unwrap_or((2048, 2048));
    let frame = mono16_frame(w, h);
    let manual = WindowMode::Manual {
        min: 100,
        max: 3000,
    };
    let settings = |window, gamma, colormap| DisplaySettings {
        window,
        gamma,
        colormap,
    };
    let geometry = |roi, binning, max_width| Geometry {
        roi,
        binning,
        max_width,
        max_height: None,
    };
    let full = Geometry::default();
    let cases = [
        ("gray_full", DisplaySettings::default(), full),
        ("gray_manual", settings(manual, 1.0, Colormap::Gray), full),
        (
            "gray_auto",
            settings(WindowMode::auto(), 1.0, Colormap::Gray),
            full,
        ),
        ("gray_gamma", settings(manual, 0.5, Colormap::Gray), full),
        ("inverted", settings(manual, 1.0, Colormap::Inverted), full),
        ("viridis", settings(manual, 1.0, Colormap::Viridis), full),
        (
            "saturation",
            settings(manual, 1.0, Colormap::Saturation),
            full,
        ),
        (
            "saturation_gamma",
            settings(manual, 0.5, Colormap::Saturation),
            full,
        ),
        (
            "viridis_gamma",
            settings(manual, 0.5, Colormap::Viridis),
            full,
        ),
        (
            "viridis_gamma_auto",
            settings(WindowMode::auto(), 0.5, Colormap::Viridis),
            full,
        ),
        (
            "binning2",
            DisplaySettings::default(),
            geometry(None, 2, None),
        ),
        (
            "max_width_1000",
            DisplaySettings::default(),
            geometry(None, 1, Some(1000)),
        ),
        (
            "roi_1024",
            DisplaySettings::default(),
            geometry(
                Some(Roi {
                    x: 512,
                    y: 512,
                    width: 1024,
                    height: 1024,
                }),
                1,
                None,
            ),
        ),
    ];
    let mut group = c.benchmark_group("display");
    group.throughput(Throughput::Elements(u64::from(w) * u64::from(h)));
    for (name, settings, geometry) in cases {
        let mut mapper = DisplayMapper::new(settings, geometry);
        let mut out = I420Frame::default();
        group.bench_function(format!("{w}x{h}/{name}"), |b| {
            b.iter(|| mapper.map(black_box(&frame), &mut out).unwrap())
        });
    }
    group.finish();
}

/// The auto window's histogram alone: 65536 samples (every 8th pixel of every 8th row)
/// of 2048x2048 12-bit data into 4096 bins, as `WindowMode::Auto` takes it per frame.
fn bench_histogram(c: &mut Criterion) {
    let frame = mono16_frame(2048, 2048);
    let mut group = c.benchmark_group("histogram");
    group.throughput(Throughput::Elements(65_536));
    group.bench_function("2048x2048/auto_samples", |b| {
        b.iter(|| histogram(black_box(&frame), 4096, 8))
    });
    group.finish();
}

criterion_group!(benches, bench_mono16, bench_display, bench_histogram);
criterion_main!(benches);
