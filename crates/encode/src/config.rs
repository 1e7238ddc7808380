//! Encoder configuration and its defaults.

use crate::EncodeError;

/// Largest width or height accepted (openh264 and [`lumacast_frame::I420Frame`] limit).
pub const MAX_DIMENSION: u32 = 3840;
/// Smallest width or height accepted (openh264 refuses smaller pictures).
pub const MIN_DIMENSION: u32 = 16;
/// openh264's per-frame limit: 36864 macroblocks (level 5.1/5.2 MaxFS), i.e. 3840x2160 or 2048x4608.
pub const MAX_MACROBLOCKS: u64 = 36_864;
/// openh264 clamps frame rates to 1..=60; values outside are rejected rather than silently clamped
/// (a clamped rate would make the rate control miss its target).
pub const MAX_FPS: f32 = 60.0;
/// Lowest accepted frame rate.
pub const MIN_FPS: f32 = 1.0;
/// Lowest accepted target bitrate.
pub const MIN_BITRATE_BPS: u32 = 10_000;
/// Highest accepted target bitrate (1 Gb/s; the peak limit is twice the target and must fit an `i32`).
pub const MAX_BITRATE_BPS: u32 = 1_000_000_000;
/// openh264 runs at most 4 encoding threads.
pub const MAX_THREADS: u16 = 4;
/// Upper bound for fixed slice counts (openh264 may lower it further for small pictures).
pub const MAX_SLICES: u16 = 32;

/// Frames of 640x480 pixels or more get 2 threads and 4 slices by default
/// (`examples/encode_sweep`, see [`EncoderConfig::new`]).
const MULTI_THREAD_MIN_PIXELS: u64 = 640 * 480;

/// openh264's encoder complexity (`iComplexityMode`): speed against compression efficiency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Complexity {
    /// Fastest (`LOW_COMPLEXITY`), for somewhat more bits at equal quality. The default,
    /// because frame-to-packet latency is what matters here.
    #[default]
    Low,
    /// `MEDIUM_COMPLEXITY`.
    Medium,
    /// `HIGH_COMPLEXITY`: best compression, slowest.
    High,
}

impl Complexity {
    pub(crate) fn to_native(self) -> openh264_sys2::ECOMPLEXITY_MODE {
        match self {
            Complexity::Low => openh264_sys2::LOW_COMPLEXITY,
            Complexity::Medium => openh264_sys2::MEDIUM_COMPLEXITY,
            Complexity::High => openh264_sys2::HIGH_COMPLEXITY,
        }
    }
}

/// Settings of an [`Encoder`](crate::Encoder). Build one with [`EncoderConfig::new`] and adjust
/// fields as needed; [`Encoder::new`](crate::Encoder::new) validates it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderConfig {
    /// Picture width in pixels: even, 16..=3840.
    pub width: u32,
    /// Picture height in pixels: even, 16..=3840 (and width x height within 36864 macroblocks).
    pub height: u32,
    /// Nominal input frame rate, 1..=60. Rate control spends `bitrate_bps / fps` bits per frame.
    pub fps: f32,
    /// Target bitrate in bit/s; the peak (`iMaxBitrate`) is set to twice this.
    pub bitrate_bps: u32,
    /// Frames between periodic IDR frames; 0 means IDRs only for the first frame and on
    /// [`Encoder::request_keyframe`](crate::Encoder::request_keyframe).
    pub keyframe_interval: u32,
    /// Encoding threads, 1..=4. More than one helps only together with `slices` > 1.
    pub threads: u16,
    /// Slices per picture, 1..=32 (1 = single slice). Each slice is one NAL unit.
    pub slices: u16,
    /// Speed/efficiency trade-off.
    pub complexity: Complexity,
    /// In-loop deblocking filter. On by default; off saves encode time at the price of
    /// visible block edges at low bitrates.
    pub deblocking: bool,
    /// Signal full-range luma/chroma (0..=255, `video_full_range_flag` = 1 in the SPS VUI)
    /// instead of limited range (16..=235). Must match the I420 data: `lumacast_frame` writes
    /// monochrome data full range (the default here) but RGB data limited range. A mismatch
    /// makes browsers clip shadows and highlights (full data, limited flag) or show greyish
    /// blacks (limited data, full flag). The colour description is always BT.601
    /// (SMPTE 170M), the matrix `lumacast_frame` converts RGB with.
    pub full_range: bool,
}

impl EncoderConfig {
    /// Live-view defaults for a `width` x `height` stream:
    ///
    /// - 30 fps;
    /// - bitrate from [`default_bitrate_bps`]: 2 Mb/s at 640x480, 4 Mb/s at 1280x720,
    ///   6 Mb/s at 1920x1080, 8 Mb/s at 2048x2048;
    /// - an IDR every 60 frames (2 s), so a viewer that lost a packet recovers within 2 s even
    ///   without sending a PLI;
    /// - 2 threads and 4 slices from 640x480 pixels up, 1 thread and a single slice below,
    ///   where the absolute gain is tiny. Four slices rather than two because a live
    ///   encoder idles between frames: on this 2-vCPU VM, encoding frames 30 ms apart
    ///   (`PACE_MS=30 cargo run --release --example encode_sweep`) took 720p p50 5.7 ms
    ///   with 2 threads/4 slices, 8.0 ms with 2/2 and 10.5 ms with 1/1 (1080p 12.0 / 15.5 /
    ///   21.5 ms; 480p 2.7 / 3.6 / 4.8 ms). A worker thread that wakes late then still finds
    ///   slices to take. Back to back, 2/2 and 2/4 are equal (720p 4.5-4.7 ms);
    /// - [`Complexity::Low`];
    /// - full-range signalling (`full_range = true`), right for monochrome detector frames.
    pub fn new(width: u32, height: u32) -> Self {
        let fps = 30.0;
        let pixels = u64::from(width) * u64::from(height);
        let (threads, slices) = if pixels >= MULTI_THREAD_MIN_PIXELS {
            (2, 4)
        } else {
            (1, 1)
        };
        Self {
            width,
            height,
            fps,
            bitrate_bps: default_bitrate_bps(width, height, fps),
            keyframe_interval: 60,
            threads,
            slices,
            complexity: Complexity::Low,
            deblocking: true,
            full_range: true,
        }
    }

    /// Checks every field against the ranges openh264 accepts, with a message naming the field.
    pub fn validate(&self) -> Result<(), EncodeError> {
        let bad = |msg: String| Err(EncodeError::InvalidConfig(msg));
        for (name, v) in [("width", self.width), ("height", self.height)] {
            if !(MIN_DIMENSION..=MAX_DIMENSION).contains(&v) || v % 2 != 0 {
                return bad(format!(
                    "{name} {v} must be even and within {MIN_DIMENSION}..={MAX_DIMENSION}"
                ));
            }
        }
        let mbs = u64::from(self.width.div_ceil(16)) * u64::from(self.height.div_ceil(16));
        if mbs > MAX_MACROBLOCKS {
            return bad(format!(
                "{}x{} is {mbs} macroblocks, openh264 allows at most {MAX_MACROBLOCKS} (e.g. 3840x2160)",
                self.width, self.height
            ));
        }
        if !self.fps.is_finite() || !(MIN_FPS..=MAX_FPS).contains(&self.fps) {
            return bad(format!(
                "fps {} must be within {MIN_FPS}..={MAX_FPS} (openh264 limit)",
                self.fps
            ));
        }
        if !(MIN_BITRATE_BPS..=MAX_BITRATE_BPS).contains(&self.bitrate_bps) {
            return bad(format!(
                "bitrate_bps {} must be within {MIN_BITRATE_BPS}..={MAX_BITRATE_BPS}",
                self.bitrate_bps
            ));
        }
        if !(1..=MAX_THREADS).contains(&self.threads) {
            return bad(format!(
                "threads {} must be within 1..={MAX_THREADS}",
                self.threads
            ));
        }
        if !(1..=MAX_SLICES).contains(&self.slices) {
            return bad(format!(
                "slices {} must be within 1..={MAX_SLICES}",
                self.slices
            ));
        }
        Ok(())
    }

    /// Peak bitrate handed to openh264 (`iMaxBitrate`/`iMaxSpatialBitrate`): twice the target.
    pub(crate) fn max_bitrate_bps(bitrate_bps: u32) -> i32 {
        i32::try_from(u64::from(bitrate_bps) * 2).unwrap_or(i32::MAX)
    }

    /// Macroblocks per picture.
    pub(crate) fn macroblocks(&self) -> u64 {
        u64::from(self.width.div_ceil(16)) * u64::from(self.height.div_ceil(16))
    }
}

/// Anchor points (pixels per frame, bit/s at 30 fps) of the default bitrate curve.
const BITRATE_ANCHORS: [(u64, u64); 5] = [
    (320 * 240, 600_000),
    (640 * 480, 2_000_000),
    (1280 * 720, 4_000_000),
    (1920 * 1080, 6_000_000),
    (2048 * 2048, 8_000_000),
];

/// Default target bitrate for a `width` x `height` stream at `fps`.
///
/// Piecewise linear in the pixel count through 0.6 Mb/s at 320x240, 2 Mb/s at 640x480,
/// 4 Mb/s at 1280x720, 6 Mb/s at 1920x1080 and 8 Mb/s at 2048x2048 (for 30 fps), extrapolated
/// with the last slope above (about 11.9 Mb/s at 3840x2160) and proportionally below
/// 320x240 with a 150 kb/s floor; then scaled linearly by `fps / 30` so every frame gets the
/// same bit budget whatever the rate. Clamped to the accepted bitrate range.
pub fn default_bitrate_bps(width: u32, height: u32, fps: f32) -> u32 {
    let px = u64::from(width) * u64::from(height);
    let at30 = if px <= BITRATE_ANCHORS[0].0 {
        (BITRATE_ANCHORS[0].1 * px / BITRATE_ANCHORS[0].0).max(150_000)
    } else {
        let seg = BITRATE_ANCHORS
            .windows(2)
            .find(|w| px <= w[1].0)
            .unwrap_or(&BITRATE_ANCHORS[BITRATE_ANCHORS.len() - 2..]);
        let ((p0, b0), (p1, b1)) = (seg[0], seg[1]);
        // Linear inter/extrapolation; b1 > b0 and p1 > p0 for every segment.
        b0 + (b1 - b0) * (px - p0) / (p1 - p0)
    };
    let fps = if fps.is_finite() && fps > 0.0 {
        f64::from(fps)
    } else {
        30.0
    };
    let bps = (at30 as f64 * fps / 30.0).round();
    bps.clamp(f64::from(MIN_BITRATE_BPS), f64::from(MAX_BITRATE_BPS)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_bitrates_hit_the_anchors() {
        assert_eq!(default_bitrate_bps(640, 480, 30.0), 2_000_000);
        assert_eq!(default_bitrate_bps(1280, 720, 30.0), 4_000_000);
        assert_eq!(default_bitrate_bps(1920, 1080, 30.0), 6_000_000);
        assert_eq!(default_bitrate_bps(2048, 2048, 30.0), 8_000_000);
        assert_eq!(default_bitrate_bps(1280, 720, 60.0), 8_000_000);
        let uhd = default_bitrate_bps(3840, 2160, 30.0);
        assert!((11_000_000..13_000_000).contains(&uhd), "{uhd}");
        assert_eq!(default_bitrate_bps(16, 16, 30.0), 150_000);
        // Monotonic in pixel count.
        let mut last = 0;
        for side in (16..=3840).step_by(64) {
            let b = default_bitrate_bps(side, side.min(2160), 30.0);
            assert!(b >= last);
            last = b;
        }
    }

    #[test]
    fn new_picks_threads_by_size() {
        let small = EncoderConfig::new(320, 240);
        assert_eq!((small.threads, small.slices), (1, 1));
        let vga = EncoderConfig::new(640, 480);
        assert_eq!((vga.threads, vga.slices), (2, 4));
        let hd = EncoderConfig::new(1280, 720);
        assert_eq!((hd.threads, hd.slices), (2, 4));
        assert_eq!(hd.keyframe_interval, 60);
        assert_eq!(hd.complexity, Complexity::Low);
        hd.validate().unwrap();
    }

    #[test]
    fn validate_rejects_bad_fields() {
        let ok = EncoderConfig::new(1280, 720);
        let cases = [
            EncoderConfig { width: 15, ..ok },
            EncoderConfig { width: 641, ..ok },
            EncoderConfig { height: 3842, ..ok },
            EncoderConfig {
                width: 3840,
                height: 3840,
                ..ok
            },
            EncoderConfig { fps: 0.0, ..ok },
            EncoderConfig { fps: 120.0, ..ok },
            EncoderConfig {
                fps: f32::NAN,
                ..ok
            },
            EncoderConfig {
                bitrate_bps: 0,
                ..ok
            },
            EncoderConfig { threads: 0, ..ok },
            EncoderConfig { threads: 5, ..ok },
            EncoderConfig { slices: 0, ..ok },
            EncoderConfig { slices: 100, ..ok },
        ];
        for c in cases {
            assert!(
                matches!(c.validate(), Err(EncodeError::InvalidConfig(_))),
                "{c:?}"
            );
        }
        EncoderConfig::new(3840, 2160).validate().unwrap();
        EncoderConfig::new(16, 16).validate().unwrap();
    }
}
