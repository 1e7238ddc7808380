//! Conversion of detector frames to I420, the only input the H.264 encoder takes.
//!
//! Monochrome data goes through a display window (raw `min` -> 0, raw `max` -> 255,
//! clamped, linear) into a **full-range** luma plane with neutral chroma (U = V = 128).
//! RGB8 becomes **BT.601 limited-range** YCbCr (white -> Y 235, black -> Y 16), with
//! chroma averaged over each 2x2 block. Either way full-scale white lands at Y >= 128 and
//! black below it, which keeps the timestamp stripe readable with the default window.
//!
//! Geometry: odd widths/heights lose their last column/row (I420 needs even sizes);
//! pictures larger than [`MAX_WIDTH`] x [`MAX_HEIGHT`] are box-downscaled by the smallest
//! integer factor that makes them fit (the stripe is then *not* readable any more at the
//! spec's pixel positions, which is unavoidable).

use crate::display::{check_frame, GeoPlan, Geometry, Painter, Resampler, Shade};
use crate::kernels::INDEX_MAX;
use crate::{Frame, FrameError, PixelFormat};

/// Largest I420 width the encoder is given.
pub const MAX_WIDTH: u32 = 3840;
/// Largest I420 height the encoder is given.
pub const MAX_HEIGHT: u32 = 2160;
/// Smallest width and height the encoder accepts.
pub const MIN_SIDE: u32 = 16;

/// A planar YUV 4:2:0 picture with tightly packed planes, ready for the encoder.
///
/// `y` has stride `width`, `u` and `v` have stride `width / 2`; `width` and `height`
/// are always even after a successful conversion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct I420Frame {
    /// Luma width in pixels (even).
    pub width: u32,
    /// Luma height in pixels (even).
    pub height: u32,
    /// Luma plane, `width * height` bytes.
    pub y: Vec<u8>,
    /// Cb plane, `(width / 2) * (height / 2)` bytes.
    pub u: Vec<u8>,
    /// Cr plane, `(width / 2) * (height / 2)` bytes.
    pub v: Vec<u8>,
    /// Sequence number of the source [`Frame`], carried along for drop accounting.
    pub seq: u64,
    /// Capture time of the source frame in microseconds since the UNIX epoch, carried
    /// along so that the encoder/RTP side can timestamp without the original frame.
    pub captured_us: u64,
}

impl I420Frame {
    /// Row stride of the luma plane in bytes (planes are tightly packed).
    pub fn y_stride(&self) -> usize {
        self.width as usize
    }

    /// Row stride of each chroma plane in bytes.
    pub fn uv_stride(&self) -> usize {
        self.width as usize / 2
    }

    /// Sets the size and resizes the planes, reusing their allocations when they are
    /// already big enough (the steady-state conversion then allocates nothing).
    pub(crate) fn set_size(&mut self, width: u32, height: u32) {
        self.width = width;
        self.height = height;
        let luma = width as usize * height as usize;
        self.y.resize(luma, 0);
        self.u.resize(luma / 4, 128);
        self.v.resize(luma / 4, 128);
    }

    /// Writes this picture shrunk by `factor` in each direction into `out` (a box filter:
    /// each output sample is the rounded mean of a `factor` x `factor` block). The output
    /// size is rounded down to even; the right and bottom edges that do not fill a whole
    /// block are left out. Used for the smaller renditions of a ladder, which are made
    /// from the full-size picture once per frame however many viewers watch them.
    pub fn downscale_into(&self, factor: u32, out: &mut I420Frame) {
        let f = factor.max(1) as usize;
        let (w, h) = (
            (self.width as usize / f) & !1,
            (self.height as usize / f) & !1,
        );
        out.set_size(w as u32, h as u32);
        out.seq = self.seq;
        out.captured_us = self.captured_us;
        box_shrink(&self.y, self.width as usize, f, &mut out.y, w, h);
        let cw = self.width as usize / 2;
        box_shrink(&self.u, cw, f, &mut out.u, w / 2, h / 2);
        box_shrink(&self.v, cw, f, &mut out.v, w / 2, h / 2);
    }
}

/// Box-filters a plane of row stride `stride` by `f` into `out` (`w` x `h`, packed).
fn box_shrink(src: &[u8], stride: usize, f: usize, out: &mut [u8], w: usize, h: usize) {
    let n = (f * f) as u32;
    let mut sums = vec![0u32; w];
    for (oy, row) in out.chunks_exact_mut(w.max(1)).take(h).enumerate() {
        sums.iter_mut().for_each(|s| *s = 0);
        for sy in oy * f..oy * f + f {
            let line = &src[sy * stride..sy * stride + w * f];
            for (s, block) in sums.iter_mut().zip(line.chunks_exact(f)) {
                *s += block.iter().map(|&v| u32::from(v)).sum::<u32>();
            }
        }
        for (o, s) in row.iter_mut().zip(&sums) {
            *o = ((s + n / 2) / n) as u8;
        }
    }
}

/// Raw-value range that is stretched linearly over the 8-bit output (min -> 0,
/// max -> 255, clamped outside). Lets a user look at a faint 12-bit signal without the
/// server having to rescale the data itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DisplayWindow {
    /// Raw value shown as black (and everything below it).
    pub min: u32,
    /// Raw value shown as white (and everything above it).
    pub max: u32,
}

impl DisplayWindow {
    /// A window, rejecting empty or inverted ranges (they have no meaningful mapping).
    pub fn new(min: u32, max: u32) -> Result<Self, FrameError> {
        if min >= max {
            return Err(FrameError::BadWindow { min, max });
        }
        Ok(DisplayWindow { min, max })
    }

    /// The whole range of `format` (`0..=format.max_value()`), the default: full-scale
    /// white maps to 255, so the timestamp stripe stays readable.
    pub fn full(format: PixelFormat) -> Self {
        DisplayWindow {
            min: 0,
            max: format.max_value(),
        }
    }

    /// The 8-bit output for raw value `v`, rounded to nearest.
    pub(crate) fn map(self, v: u32) -> u8 {
        self.scaled(v, 255) as u8
    }

    /// The 12-bit table index (`0..=INDEX_MAX`) for raw value `v`, rounded to nearest.
    pub(crate) fn index(self, v: u32) -> u16 {
        self.scaled(v, u64::from(INDEX_MAX)) as u16
    }

    /// `v`'s position in the window scaled to `0..=top`, clamped and rounded.
    fn scaled(self, v: u32, top: u64) -> u64 {
        if v <= self.min {
            0
        } else if v >= self.max {
            top
        } else {
            let range = u64::from(self.max - self.min);
            (u64::from(v - self.min) * top + range / 2) / range
        }
    }
}

/// Size of the I420 picture a `width` x `height` frame converts to.
///
/// Lets the encoder be configured before the first frame arrives. Fails with
/// [`FrameError::TooSmall`] when either side is below [`MIN_SIDE`] (before or after
/// downscaling).
pub fn i420_dimensions(width: u32, height: u32) -> Result<(u32, u32), FrameError> {
    Geometry::default().output_size(width, height)
}

/// Converts one frame to I420 with `window` (or the format's full range), reusing the
/// buffers of `out`.
///
/// Convenience for one-off conversions; loops should keep a [`Converter`], which also
/// keeps its downscaling scratch buffer between frames.
pub fn to_i420(
    frame: &Frame,
    window: Option<DisplayWindow>,
    out: &mut I420Frame,
) -> Result<(), FrameError> {
    Converter::new(window).convert(frame, out)
}

/// Reusable frame-to-I420 converter holding the display window, the lookup tables built
/// from it, and a scratch buffer for downscaling, so steady-state conversion allocates
/// nothing.
///
/// This is [`crate::DisplayMapper`] reduced to a linear grey window without geometry
/// (the two share their code, so their default output is identical); it stays for
/// callers that need nothing more, and it accepts windows reaching beyond the format's
/// range, which [`crate::DisplaySettings::validate`] rejects.
///
/// 8-bit data (Mono8, each RGB channel) goes through a 256-entry table. Mono16 uses
/// 16-bit fixed-point arithmetic instead of a 65536-entry table: it auto-vectorises and
/// runs ~3x faster (a 64 KiB table does not fit L1, and table gathers do not vectorise).
/// It equals exact round-to-nearest except for ~0.15% of values sitting next to a .5
/// tie (1 LSB off); `min` and below give exactly 0, `max` and above exactly 255.
#[derive(Debug, Clone)]
pub struct Converter {
    window: Option<DisplayWindow>,
    resampler: Resampler,
    painter: Painter,
}

impl Default for Converter {
    /// Full-range conversion (no window).
    fn default() -> Self {
        Converter::new(None)
    }
}

impl Converter {
    /// A converter using `window`, or each frame's full range when `None`.
    pub fn new(window: Option<DisplayWindow>) -> Self {
        Converter {
            window,
            resampler: Resampler::default(),
            painter: Painter::default(),
        }
    }

    /// The configured window (`None` = full range of each frame's format).
    pub fn window(&self) -> Option<DisplayWindow> {
        self.window
    }

    /// Changes the window; it applies from the next conversion on.
    pub fn set_window(&mut self, window: Option<DisplayWindow>) {
        self.window = window;
    }

    /// Converts `frame` into `out`, resizing `out`'s planes only when the size changes.
    ///
    /// Errors: [`FrameError::TooSmall`] below 16 px, [`FrameError::BadLength`] /
    /// [`FrameError::BadBitDepth`] for frames whose public fields were made inconsistent,
    /// [`FrameError::BadWindow`] for a hand-built window with `min >= max`.
    pub fn convert(&mut self, frame: &Frame, out: &mut I420Frame) -> Result<(), FrameError> {
        check_frame(frame)?;
        let plan = GeoPlan::new(&Geometry::default(), frame.width, frame.height)?;
        let window = self.window.unwrap_or(DisplayWindow::full(frame.format));
        if window.min >= window.max {
            return Err(FrameError::BadWindow {
                min: window.min,
                max: window.max,
            });
        }
        let view = self.resampler.view(frame, &plan, false);
        out.set_size(plan.width, plan.height);
        out.seq = frame.seq;
        out.captured_us = frame.captured_us();
        self.painter.paint(&view, window, Shade::LINEAR_GRAY, out);
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {

    #[test]
    fn downscale_is_the_rounded_block_mean_with_even_sizes() {
        let mut src = I420Frame::default();
        src.set_size(10, 6);
        for (i, v) in src.y.iter_mut().enumerate() {
            *v = (i * 7 % 256) as u8;
        }
        src.u
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = i as u8 * 3);
        src.seq = 9;
        let mut out = I420Frame::default();
        src.downscale_into(2, &mut out);
        assert_eq!((out.width, out.height, out.seq), (4, 2, 9));
        let mean = |x: usize, y: usize| {
            let at = |dx: usize, dy: usize| u32::from(src.y[(2 * y + dy) * 10 + 2 * x + dx]);
            ((at(0, 0) + at(1, 0) + at(0, 1) + at(1, 1) + 2) / 4) as u8
        };
        for y in 0..2 {
            for x in 0..4 {
                assert_eq!(out.y[y * 4 + x], mean(x, y), "({x},{y})");
            }
        }
        assert_eq!(out.u.len(), 2);
        // chroma (5x3) by 2: samples (0,0),(1,0),(5,0)... of the 5-wide plane
        let u = |x: usize, y: usize| u32::from(src.u[y * 5 + x]);
        assert_eq!(
            u32::from(out.u[1]),
            (u(2, 0) + u(3, 0) + u(2, 1) + u(3, 1) + 2) / 4
        );
        src.downscale_into(1, &mut out);
        assert_eq!((out.width, out.height), (10, 6));
        assert_eq!(out.y, src.y);
    }

    use super::*;
    use crate::stripe;

    fn mono16(width: u32, height: u32, bit_depth: u8, f: impl Fn(u32, u32) -> u16) -> Frame {
        let mut data = Vec::with_capacity((width * height * 2) as usize);
        for y in 0..height {
            for x in 0..width {
                data.extend_from_slice(&f(x, y).to_le_bytes());
            }
        }
        Frame::new(width, height, PixelFormat::Mono16 { bit_depth }, 7, data).unwrap()
    }

    fn fnv(out: &I420Frame) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let size = out
            .width
            .to_le_bytes()
            .into_iter()
            .chain(out.height.to_le_bytes());
        let planes = out.y.iter().chain(&out.u).chain(&out.v).copied();
        for b in size.chain(planes) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        h
    }

    /// Pseudo-random frame (xorshift), values within the format's range.
    pub(crate) fn noise(w: u32, h: u32, format: PixelFormat, seed: u64) -> Frame {
        let mut s = seed | 1;
        let n = w as usize * h as usize * format.bytes_per_pixel();
        let mask = format.max_value() as u16;
        let mut data = Vec::with_capacity(n);
        while data.len() < n {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            match format {
                PixelFormat::Mono16 { .. } => {
                    data.extend_from_slice(&((s as u16) & mask).to_le_bytes())
                }
                _ => data.push(s as u8),
            }
        }
        Frame::new(w, h, format, 0, data).unwrap()
    }

    /// Hashes of what `to_i420` wrote before the display module existed: Converter now
    /// shares DisplayMapper's code, and must still write exactly the same bytes.
    #[test]
    fn output_is_unchanged_since_before_display_mapping() {
        let m12 = PixelFormat::Mono16 { bit_depth: 12 };
        let m16 = PixelFormat::Mono16 { bit_depth: 16 };
        let win = |min, max| Some(DisplayWindow { min, max });
        let cases = [
            (noise(64, 48, m12, 1), None, 0xf1a4_f5dc_dc5e_0c15),
            (noise(64, 48, m12, 1), win(100, 3000), 0xd415_7364_1685_8c0d),
            (noise(64, 48, m12, 1), win(0, 70000), 0x1c77_6084_f643_efad),
            (noise(33, 17, m16, 2), None, 0xa8c0_a974_548c_5ae7),
            (
                noise(35, 19, PixelFormat::Mono8, 3),
                None,
                0x03c8_ef9a_4418_9642,
            ),
            (
                noise(35, 19, PixelFormat::Mono8, 3),
                win(10, 200),
                0xb424_1d0c_9e8e_250a,
            ),
            (
                noise(34, 20, PixelFormat::Rgb8, 4),
                None,
                0x9be3_9396_7325_ef9e,
            ),
            (
                noise(34, 20, PixelFormat::Rgb8, 4),
                win(20, 230),
                0xb045_2e88_7683_12b2,
            ),
            (noise(3850, 40, m12, 5), None, 0xdf6b_8ff7_7a58_6816),
            (
                noise(3845, 36, PixelFormat::Rgb8, 6),
                None,
                0x9ed0_bd78_38cf_c3eb,
            ),
            (
                noise(7690, 50, PixelFormat::Mono8, 7),
                None,
                0x14c2_5b3f_9e6a_0c80,
            ),
            (
                noise(7690, 50, m16, 8),
                win(1000, 60000),
                0x92f0_da84_ccf4_2230,
            ),
        ];
        let mut out = I420Frame::default();
        for (i, (frame, window, hash)) in cases.into_iter().enumerate() {
            to_i420(&frame, window, &mut out).unwrap();
            assert_eq!(fnv(&out), hash, "case {i}");
        }
    }

    #[test]
    fn mono16_12bit_default_window() {
        let frame = mono16(32, 16, 12, |x, _| if x < 16 { 0 } else { 4095 });
        let mut out = I420Frame::default();
        to_i420(&frame, None, &mut out).unwrap();
        assert_eq!((out.width, out.height), (32, 16));
        assert_eq!(out.y.len(), 32 * 16);
        assert_eq!(out.u.len(), 16 * 8);
        assert!(out.y.chunks(32).all(|r| r[..16].iter().all(|&v| v == 0)));
        assert!(out.y.chunks(32).all(|r| r[16..].iter().all(|&v| v == 255)));
        assert!(out.u.iter().chain(&out.v).all(|&v| v == 128));
        assert_eq!(out.seq, 7);
        assert_eq!(out.captured_us, frame.captured_us());
    }

    #[test]
    fn window_maps_linearly_and_clamps() {
        let w = DisplayWindow::new(100, 355).unwrap();
        let frame = mono16(16, 16, 12, |x, _| {
            [0, 100, 101, 227, 355, 4095][x as usize % 6]
        });
        let mut out = I420Frame::default();
        to_i420(&frame, Some(w), &mut out).unwrap();
        assert_eq!(&out.y[..6], &[0, 0, 1, 127, 255, 255]);
        assert_eq!(
            DisplayWindow::new(5, 5),
            Err(FrameError::BadWindow { min: 5, max: 5 })
        );
        let mut c = Converter::new(Some(DisplayWindow { min: 9, max: 3 }));
        assert!(matches!(
            c.convert(&frame, &mut out),
            Err(FrameError::BadWindow { .. })
        ));
    }

    #[test]
    fn converter_reuses_buffers_and_follows_window_changes() {
        let frame = mono16(64, 32, 16, |_, _| 1000);
        let mut c = Converter::default();
        let mut out = I420Frame::default();
        c.convert(&frame, &mut out).unwrap();
        let ptr = out.y.as_ptr();
        assert_eq!(out.y[0], 4); // 1000 * 255 / 65535 = 3.9
        c.set_window(Some(DisplayWindow::new(0, 1000).unwrap()));
        c.convert(&frame, &mut out).unwrap();
        assert_eq!(out.y[0], 255);
        assert_eq!(out.y.as_ptr(), ptr);
    }

    #[test]
    fn odd_sizes_are_cropped_to_even() {
        let frame = Frame::new(
            33,
            17,
            PixelFormat::Mono8,
            0,
            (0..33 * 17).map(|i| i as u8).collect(),
        )
        .unwrap();
        let mut out = I420Frame::default();
        to_i420(&frame, None, &mut out).unwrap();
        assert_eq!((out.width, out.height), (32, 16));
        assert_eq!(out.y.len(), 32 * 16);
        assert_eq!(out.u.len(), 16 * 8);
        assert_eq!(out.v.len(), 16 * 8);
        // Row 1 starts with source pixel (0, 1) = index 33: the source stride is kept.
        assert_eq!(out.y[32], 33);
        assert_eq!(i420_dimensions(33, 17), Ok((32, 16)));
    }

    #[test]
    fn too_small_is_rejected() {
        let mut out = I420Frame::default();
        for (w, h) in [(15, 100), (100, 15), (0, 0)] {
            let frame = Frame::new(w, h, PixelFormat::Mono8, 0, vec![0; (w * h) as usize]).unwrap();
            assert_eq!(
                to_i420(&frame, None, &mut out),
                Err(FrameError::TooSmall {
                    width: w,
                    height: h
                })
            );
        }
        // 17 wide crops to 16: still acceptable.
        assert_eq!(i420_dimensions(17, 16), Ok((16, 16)));
    }

    #[test]
    fn size_limits() {
        assert_eq!(i420_dimensions(2048, 2048), Ok((2048, 2048)));
        assert_eq!(i420_dimensions(3840, 2160), Ok((3840, 2160)));
        assert_eq!(i420_dimensions(3841, 2160), Ok((1920, 1080)));
        assert_eq!(i420_dimensions(7680, 4320), Ok((3840, 2160)));
        assert_eq!(i420_dimensions(2160, 3840), Ok((1080, 1920)));
        assert_eq!(
            i420_dimensions(4000, 30),
            Err(FrameError::TooSmall {
                width: 4000,
                height: 30
            })
        );
    }

    #[test]
    fn oversized_is_downscaled_even() {
        let mut out = I420Frame::default();
        let frame = Frame::new(7680, 4320, PixelFormat::Mono8, 0, vec![200; 7680 * 4320]).unwrap();
        to_i420(&frame, None, &mut out).unwrap();
        assert_eq!((out.width, out.height), (3840, 2160));
        assert!(out.y.iter().all(|&v| v == 200));

        // Factor 3 (7682 / 2 > 3840); 100 / 3 = 33 rows, cropped to 32.
        let (w, h) = (7682, 100);
        let frame = mono16(
            w,
            h,
            12,
            |x, y| if (x / 3 + y / 3) % 2 == 0 { 4095 } else { 0 },
        );
        to_i420(&frame, None, &mut out).unwrap();
        assert!(out.width <= MAX_WIDTH && out.height <= MAX_HEIGHT);
        assert_eq!((out.width % 2, out.height % 2), (0, 0));
        assert_eq!((out.width, out.height), (2560, 32));
        // 3x3 boxes align with the checkerboard squares: output is a pixel checkerboard.
        assert_eq!(&out.y[..4], &[255, 0, 255, 0]);
        assert_eq!(&out.y[2560..2564], &[0, 255, 0, 255]);

        let frame = Frame::new(3842, 100, PixelFormat::Rgb8, 0, vec![255; 3842 * 100 * 3]).unwrap();
        to_i420(&frame, None, &mut out).unwrap();
        assert_eq!((out.width, out.height), (1920, 50));
        assert!(out.y.iter().all(|&v| v == 235));
        assert!(out.u.iter().chain(&out.v).all(|&v| v == 128));
    }

    #[test]
    fn rgb_is_bt601_limited_range() {
        let px = |rgb: [u8; 3]| {
            let frame = Frame::new(16, 16, PixelFormat::Rgb8, 0, rgb.repeat(256)).unwrap();
            let mut out = I420Frame::default();
            to_i420(&frame, None, &mut out).unwrap();
            (out.y[0], out.u[0], out.v[0])
        };
        assert_eq!(px([255, 255, 255]), (235, 128, 128));
        assert_eq!(px([0, 0, 0]), (16, 128, 128));
        assert_eq!(px([255, 0, 0]), (82, 90, 240));
        assert_eq!(px([0, 0, 255]), (41, 240, 110));
    }

    #[test]
    fn bad_frames_are_rejected() {
        let mut frame = Frame::new(16, 16, PixelFormat::Mono8, 0, vec![0; 256]).unwrap();
        frame.data.pop();
        let mut out = I420Frame::default();
        assert!(matches!(
            to_i420(&frame, None, &mut out),
            Err(FrameError::BadLength { .. })
        ));
        let mut frame = mono16(16, 16, 12, |_, _| 0);
        frame.format = PixelFormat::Mono16 { bit_depth: 17 };
        assert_eq!(
            to_i420(&frame, None, &mut out),
            Err(FrameError::BadBitDepth(17))
        );
    }

    #[test]
    fn stripe_round_trip() {
        let t = 1_763_700_000_123_456;
        let formats = [
            PixelFormat::Mono8,
            PixelFormat::Mono16 { bit_depth: 12 },
            PixelFormat::Mono16 { bit_depth: 16 },
            PixelFormat::Rgb8,
        ];
        let mut conv = Converter::default();
        let mut out = I420Frame::default();
        for format in formats {
            // Odd size on purpose: cropping must not move the stripe.
            let (w, h) = (641, 481);
            let len = w as usize * h as usize * format.bytes_per_pixel();
            // A mid-grey background, so only the stripe itself decides the bits.
            let fill = match format {
                PixelFormat::Mono16 { bit_depth } => {
                    (((1u32 << bit_depth) / 2) as u16).to_le_bytes().to_vec()
                }
                _ => vec![128],
            };
            let data = fill.iter().copied().cycle().take(len).collect();
            let mut frame = Frame::new(w, h, format, 42, data).unwrap();
            for seq in [0, 42, u32::MAX] {
                stripe::write(&mut frame, t + u64::from(seq), seq);
                conv.convert(&frame, &mut out).unwrap();
                let r = stripe::read_i420(&out).unwrap();
                assert_eq!(
                    r,
                    stripe::StripeReading {
                        t_us: t + u64::from(seq),
                        seq
                    },
                    "{format:?}"
                );
            }
        }
    }
}
