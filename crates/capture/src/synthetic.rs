//! A synthetic detector: a moving pattern with noise and the timestamp stripe.
//!
//! It lets the whole pipeline (and any browser client) be exercised and its latency
//! measured without hardware: every frame carries its capture time and sequence number
//! in the stripe (see `lumacast_frame::stripe`).
//!
//! Generation is cheap by construction: the pattern is precomputed once, periodic with
//! period [`PERIOD`] in both directions, on a canvas one period larger than the frame;
//! each frame copies a window of it at a moving offset (seamless thanks to the
//! periodicity) and adds noise from a precomputed table at random row offsets.

use std::time::{Instant, SystemTime};

use lumacast_frame::{stripe, Frame, PixelFormat};

use crate::pace::Pacer;
use crate::{CaptureError, FrameSource, SourceInfo};

/// Spatial period of the pattern, in pixels.
pub const PERIOD: usize = 256;
/// Motion per frame (x, y) in pixels.
const STEP: (usize, usize) = (3, 2);
/// Number of distinct row start offsets into the noise table.
const NOISE_SPAN: usize = 1 << 16;
/// Noise amplitude as a fraction of full scale (uniform in +-NOISE_FRACTION).
const NOISE_FRACTION: f64 = 0.03;

/// Settings of a [`SyntheticSource`].
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    /// Frame width in pixels (the stripe needs >= 512).
    pub width: u32,
    /// Frame height in pixels (the stripe needs >= 48).
    pub height: u32,
    /// Frames per second the source paces itself to.
    pub fps: f64,
    /// 8 gives Mono8 frames; 9..=16 give Mono16 frames with that many significant bits.
    pub bit_depth: u8,
}

impl Default for SyntheticConfig {
    /// 1280x720, 12-bit Mono16, 30 fps: a typical sCMOS-like stream.
    fn default() -> Self {
        SyntheticConfig {
            width: 1280,
            height: 720,
            fps: 30.0,
            bit_depth: 12,
        }
    }
}

/// Synthetic detector; see the module docs.
pub struct SyntheticSource {
    config: SyntheticConfig,
    format: PixelFormat,
    /// Pattern canvas, `(width + PERIOD) x (height + PERIOD)`, values in
    /// `amp..=max - amp` so that adding noise never leaves the valid range.
    base: Vec<u16>,
    base_width: usize,
    /// Noise values in `-amp..=amp`, `NOISE_SPAN + width` long.
    noise: Vec<i16>,
    rng: u64,
    seq: u64,
    pacer: Pacer,
}

impl SyntheticSource {
    /// Builds the source and precomputes its pattern and noise tables.
    ///
    /// Fails with [`CaptureError::InvalidConfig`] for a zero size, a non-positive or
    /// non-finite fps, or a bit depth outside 8..=16.
    pub fn new(config: SyntheticConfig) -> Result<Self, CaptureError> {
        let bad = |msg: String| Err(CaptureError::InvalidConfig(msg));
        if config.width == 0 || config.height == 0 {
            return bad(format!(
                "synthetic size {}x{} must be non-zero",
                config.width, config.height
            ));
        }
        if !config.fps.is_finite() || config.fps <= 0.0 || config.fps > 10_000.0 {
            return bad(format!(
                "synthetic fps {} must be in (0, 10000]",
                config.fps
            ));
        }
        let format = match config.bit_depth {
            8 => PixelFormat::Mono8,
            9..=16 => PixelFormat::Mono16 {
                bit_depth: config.bit_depth,
            },
            other => return bad(format!("synthetic bit depth {other} must be in 8..=16")),
        };
        let max = format.max_value() as i32;
        let amp = ((f64::from(max) * NOISE_FRACTION).round() as i32).max(1);

        let tile = pattern_tile(amp, max - amp);
        let (w, h) = (config.width as usize, config.height as usize);
        let base_width = w + PERIOD;
        let mut base = Vec::with_capacity(base_width * (h + PERIOD));
        for y in 0..h + PERIOD {
            let row = &tile[(y % PERIOD) * PERIOD..][..PERIOD];
            base.extend((0..base_width).map(|x| row[x % PERIOD]));
        }

        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let span = 2 * amp as u64 + 1;
        let noise = (0..NOISE_SPAN + w)
            .map(|_| ((xorshift(&mut rng) % span) as i32 - amp) as i16)
            .collect();

        Ok(SyntheticSource {
            pacer: Pacer::new(config.fps),
            config,
            format,
            base,
            base_width,
            noise,
            rng,
            seq: 0,
        })
    }

    /// The configuration this source was built with.
    pub fn config(&self) -> &SyntheticConfig {
        &self.config
    }

    /// Renders the picture for frame `seq` (without stripe).
    fn render(&mut self, seq: u64) -> Vec<u8> {
        let (w, h) = (self.config.width as usize, self.config.height as usize);
        let ox = (seq as usize).wrapping_mul(STEP.0) % PERIOD;
        let oy = (seq as usize).wrapping_mul(STEP.1) % PERIOD;
        let bpp = self.format.bytes_per_pixel();
        let mut data = vec![0u8; w * h * bpp];
        // No clamping needed: the pattern stays within amp..=max-amp and the noise within
        // +-amp (see `new`), so the sum is always in 0..=max.
        for (y, dst) in data.chunks_exact_mut(w * bpp).enumerate() {
            let base = &self.base[(oy + y) * self.base_width + ox..][..w];
            let start = (xorshift(&mut self.rng) as usize) % NOISE_SPAN;
            let noise = &self.noise[start..start + w];
            if bpp == 2 {
                for ((d, &b), &n) in dst.chunks_exact_mut(2).zip(base).zip(noise) {
                    d.copy_from_slice(&b.wrapping_add_signed(n).to_le_bytes());
                }
            } else {
                for ((d, &b), &n) in dst.iter_mut().zip(base).zip(noise) {
                    *d = b.wrapping_add_signed(n) as u8;
                }
            }
        }
        data
    }
}

impl std::fmt::Debug for SyntheticSource {
    // Manual: the derived impl would print megabytes of tables.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticSource")
            .field("config", &self.config)
            .field("format", &self.format)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl FrameSource for SyntheticSource {
    fn describe(&self) -> SourceInfo {
        SourceInfo {
            kind: "synthetic",
            width: self.config.width,
            height: self.config.height,
            format: self.format,
            fps: self.config.fps,
        }
    }

    /// Renders first, then waits for the deadline, then stamps: the stripe time is the
    /// moment the frame is released, as close to the schedule as possible.
    fn next_frame(&mut self) -> Result<Frame, CaptureError> {
        let seq = self.seq;
        let data = self.render(seq);
        self.pacer.wait_until_due();
        let mut frame = Frame::new(
            self.config.width,
            self.config.height,
            self.format,
            seq,
            data,
        )?;
        frame.captured_at = SystemTime::now();
        frame.captured_mono = Instant::now();
        let t_us = frame.captured_us();
        stripe::write(&mut frame, t_us, seq as u32);
        self.seq += 1;
        Ok(frame)
    }
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// One `PERIOD x PERIOD` tile of the pattern with values in `lo..=hi`: diagonal
/// sinusoidal stripes plus a bright Gaussian blob, both periodic so tiles join
/// seamlessly.
fn pattern_tile(lo: i32, hi: i32) -> Vec<u16> {
    use std::f64::consts::TAU;
    let p = PERIOD as f64;
    let sigma = p / 8.0;
    let mut tile = Vec::with_capacity(PERIOD * PERIOD);
    for y in 0..PERIOD {
        for x in 0..PERIOD {
            let (fx, fy) = (x as f64, y as f64);
            let stripes = 0.5 + 0.5 * (TAU * (fx + fy) / p).sin();
            // Distance to the blob centre at (p/2, p/2); the tile is periodic, so the
            // blob never touches the tile edge noticeably (sigma = p/8).
            let (dx, dy) = (fx - p / 2.0, fy - p / 2.0);
            let blob = (-(dx * dx + dy * dy) / (2.0 * sigma * sigma)).exp();
            let v = 0.1 + 0.4 * stripes + 0.5 * blob; // 0.1..=1.0
            tile.push((f64::from(lo) + v.min(1.0) * f64::from(hi - lo)).round() as u16);
        }
    }
    tile
}

#[cfg(test)]
mod tests {
    use super::*;
    use lumacast_frame::{to_i420, I420Frame};
    use std::time::Duration;

    fn source(width: u32, height: u32, fps: f64, bit_depth: u8) -> SyntheticSource {
        SyntheticSource::new(SyntheticConfig {
            width,
            height,
            fps,
            bit_depth,
        })
        .unwrap()
    }

    #[test]
    fn defaults() {
        let mut s = SyntheticSource::new(SyntheticConfig::default()).unwrap();
        let info = s.describe();
        assert_eq!(info.kind, "synthetic");
        assert_eq!((info.width, info.height), (1280, 720));
        assert_eq!(info.format, PixelFormat::Mono16 { bit_depth: 12 });
        assert_eq!(info.fps, 30.0);
        let f = s.next_frame().unwrap();
        assert_eq!((f.width, f.height, f.format), (1280, 720, info.format));
        assert_eq!(f.data.len(), 1280 * 720 * 2);
        assert!(f
            .data
            .chunks_exact(2)
            .all(|p| u16::from_le_bytes([p[0], p[1]]) <= 4095));
    }

    #[test]
    fn bit_depth_8_is_mono8() {
        let mut s = source(600, 60, 1000.0, 8);
        assert_eq!(s.describe().format, PixelFormat::Mono8);
        let f = s.next_frame().unwrap();
        assert_eq!(f.data.len(), 600 * 60);
        assert_eq!(stripe::read_luma(&f.data, 600, 600, 60).unwrap().seq, 0);
    }

    #[test]
    fn invalid_configs_are_rejected() {
        for (w, h, fps, bits) in [
            (0, 10, 30.0, 12),
            (10, 10, 0.0, 12),
            (10, 10, f64::NAN, 12),
            (10, 10, 30.0, 7),
            (10, 10, 30.0, 17),
        ] {
            let r = SyntheticSource::new(SyntheticConfig {
                width: w,
                height: h,
                fps,
                bit_depth: bits,
            });
            assert!(
                matches!(r, Err(CaptureError::InvalidConfig(_))),
                "{w} {h} {fps} {bits}"
            );
        }
    }

    #[test]
    fn seq_rises_and_picture_moves() {
        let mut s = source(640, 480, 1000.0, 12);
        let frames: Vec<Frame> = (0..3).map(|_| s.next_frame().unwrap()).collect();
        let seqs: Vec<u64> = frames.iter().map(|f| f.seq).collect();
        assert_eq!(seqs, [0, 1, 2]);
        // Compare well below the stripe: the pattern must differ between frames.
        let row = 200 * 640 * 2;
        assert_ne!(
            &frames[0].data[row..row + 1280],
            &frames[1].data[row..row + 1280]
        );
        assert!(frames[1].captured_mono >= frames[0].captured_mono);
    }

    #[test]
    fn stripe_readable_after_conversion() {
        let mut s = source(1280, 720, 1000.0, 12);
        let mut out = I420Frame::default();
        for expected in 0..3u32 {
            let f = s.next_frame().unwrap();
            to_i420(&f, None, &mut out).unwrap();
            let r = stripe::read_i420(&out).unwrap();
            assert_eq!(r.seq, expected);
            assert_eq!(r.t_us, f.captured_us());
            let now_us = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64;
            assert!(
                now_us >= r.t_us && now_us - r.t_us < 5_000_000,
                "{now_us} {}",
                r.t_us
            );
        }
    }

    #[test]
    fn paced_at_fps() {
        let mut s = source(64, 32, 100.0, 12);
        let t0 = Instant::now();
        for _ in 0..10 {
            s.next_frame().unwrap();
        }
        // First frame is immediate, then 9 periods of 10 ms.
        let elapsed = t0.elapsed();
        assert!(elapsed >= Duration::from_millis(80), "{elapsed:?}");
    }

    /// Generation speed; run with
    /// `cargo test --release -p lumacast-capture -- --ignored --nocapture generation_speed`.
    #[test]
    #[ignore]
    fn generation_speed() {
        let mut s = SyntheticSource::new(SyntheticConfig::default()).unwrap();
        let n = 200;
        let t0 = Instant::now();
        for seq in 0..n {
            std::hint::black_box(s.render(seq));
        }
        println!(
            "1280x720 Mono16 render: {:?} per frame",
            t0.elapsed() / n as u32
        );
    }
}
