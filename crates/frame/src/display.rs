//! Server-side display mapping: what a microscopist adjusts in a desktop viewer
//! (contrast window, gamma, colour map, region of interest, binning, size), applied to
//! each raw frame on its way to the H.264 encoder.
//!
//! The order is fixed: **geometry** first (crop to the [`Roi`], box-average
//! [`Geometry::binning`] x `binning` blocks, shrink by an integer box factor to fit
//! `max_width` / `max_height`, then the encoder limits of [`crate::i420_dimensions`]:
//! even sizes, at most 3840x2160), all in raw units of the source format; then the
//! **mapping** of each raw value through the window (auto windows are measured on
//! that geometry-reduced picture), gamma and colour map to full-range BT.601 I420.
//!
//! Invariants:
//! - with [`DisplaySettings::default`] and [`Geometry::default`], [`DisplayMapper`]
//!   produces exactly the bytes [`crate::Converter`] produces (they share one code
//!   path), so the timestamp stripe stays readable;
//! - mono output is **full-range** BT.601 (Y, Cb, Cr in 0..=255, JPEG-style): the
//!   stream must signal `video_full_range_flag = 1` with the SMPTE 170M matrix; grey
//!   maps (gray, inverted) have neutral chroma (U = V = 128), colour maps average
//!   chroma over each 2x2 block;
//! - RGB8 frames keep the limited-range BT.601 conversion of [`crate::Converter`]; the
//!   window and gamma apply to each channel alike and the colour map is ignored;
//! - a [`DisplayMapper`] allocates only when the output size or settings change; in
//!   steady state it reuses its scratch buffers and tables.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::convert::{DisplayWindow, I420Frame, MAX_HEIGHT, MAX_WIDTH, MIN_SIDE};
use crate::kernels::{self, DownscaleScratch, Linear16, View, INDEX_MAX, SATURATED, TABLE_LEN};
use crate::viridis::VIRIDIS;
use crate::{Frame, FrameError, PixelFormat};

/// Accepted gamma values; 1.0 is linear.
pub const GAMMA_RANGE: RangeInclusive<f32> = 0.1..=10.0;
/// Largest binning factor.
pub const MAX_BINNING: u32 = 8;
/// Default low percentile of [`WindowMode::auto`].
pub const DEFAULT_LOW_PERCENT: f64 = 0.1;
/// Default high percentile of [`WindowMode::auto`].
pub const DEFAULT_HIGH_PERCENT: f64 = 99.9;
/// Time constant of the auto window's exponential smoothing: after a scene change the
/// window covers ~63% of the way to the new percentiles within this time, ~95% within
/// three times it, whatever the frame rate.
pub const AUTO_SMOOTHING: Duration = Duration::from_millis(250);
/// Bounds on the weight a single frame gets in the auto window's smoothing. The
/// weight is `1 - exp(-dt / AUTO_SMOOTHING)` for a frame `dt` after the previous one,
/// kept within these bounds: at most half the way per frame, so one odd frame cannot
/// make the picture jump even at 1 fps, and at least 5% so that the window still
/// converges when frames arrive in bursts with equal timestamps.
pub const AUTO_WEIGHT: RangeInclusive<f64> = 0.05..=0.5;
/// The auto window samples every n-th pixel in x and y, with n chosen to look at about
/// this many pixels (n = 8 for 2048x2048): plenty for the 0.1% tails, and cheap
/// (~0.1 ms) compared with mapping every pixel.
pub const AUTO_SAMPLES: usize = 65_536;

/// Colour map for monochrome data (RGB frames ignore it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Colormap {
    /// Black to white.
    #[default]
    Gray,
    /// White to black.
    Inverted,
    /// Perceptually uniform dark violet -> green -> yellow (matplotlib's viridis).
    Viridis,
    /// Grey, except pixels whose *raw* value is at the top of the format's range
    /// (`>= format.max_value()`) are painted red. Binning and downscaling keep the
    /// warning: a block holding any such pixel is shown saturated.
    Saturation,
}

impl Colormap {
    /// The name used in the API ("gray", "inverted", "viridis", "saturation").
    pub fn name(&self) -> &'static str {
        match self {
            Colormap::Gray => "gray",
            Colormap::Inverted => "inverted",
            Colormap::Viridis => "viridis",
            Colormap::Saturation => "saturation",
        }
    }

    /// Every colour map, in the order a UI should offer them.
    pub fn all() -> &'static [Colormap] {
        &[
            Colormap::Gray,
            Colormap::Inverted,
            Colormap::Viridis,
            Colormap::Saturation,
        ]
    }
}

impl fmt::Display for Colormap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Colormap {
    type Err = FrameError;

    /// Parses a name case-insensitively; "grey" is accepted for gray.
    fn from_str(s: &str) -> Result<Self, FrameError> {
        let lower = s.trim().to_ascii_lowercase();
        if lower == "grey" {
            return Ok(Colormap::Gray);
        }
        Colormap::all()
            .iter()
            .copied()
            .find(|c| c.name() == lower)
            .ok_or_else(|| FrameError::InvalidParam {
                field: "colormap",
                message: format!(
                    "unknown colormap {s:?}, expected one of gray, inverted, viridis, saturation"
                ),
            })
    }
}

/// How the raw range shown from black to white is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum WindowMode {
    /// The whole range of the format, `0..=format.max_value()`.
    #[default]
    Full,
    /// A fixed range in raw units: `min` and below are black, `max` and above white.
    Manual { min: u32, max: u32 },
    /// From percentiles of each frame (measured on a subsample of the displayed
    /// picture), smoothed over time so that the picture does not flicker; see
    /// [`AUTO_SMOOTHING`] and [`AUTO_WEIGHT`].
    Auto { low_percent: f64, high_percent: f64 },
}

impl WindowMode {
    /// Auto window with the default percentiles (0.1% and 99.9%).
    pub fn auto() -> Self {
        WindowMode::Auto {
            low_percent: DEFAULT_LOW_PERCENT,
            high_percent: DEFAULT_HIGH_PERCENT,
        }
    }
}

/// What the user adjusts: window, gamma and colour map.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DisplaySettings {
    pub window: WindowMode,
    /// Exponent applied to the windowed value `t` in 0..=1 (`t^gamma`): below 1 brightens
    /// dark values, above 1 darkens them; black and white stay fixed. See [`GAMMA_RANGE`].
    pub gamma: f32,
    pub colormap: Colormap,
}

impl Default for DisplaySettings {
    /// Full window, linear, grey: the same picture as [`crate::Converter`].
    fn default() -> Self {
        DisplaySettings {
            window: WindowMode::Full,
            gamma: 1.0,
            colormap: Colormap::Gray,
        }
    }
}

fn invalid(field: &'static str, message: String) -> FrameError {
    FrameError::InvalidParam { field, message }
}

impl DisplaySettings {
    /// Checks the settings against a source format, naming the offending API field
    /// ("window_min", "window_max", "low_percent", "high_percent", "gamma").
    pub fn validate(&self, format: PixelFormat) -> Result<(), FrameError> {
        match self.window {
            WindowMode::Full => {}
            WindowMode::Manual { min, max } => {
                let top = format.max_value();
                if max > top {
                    return Err(invalid(
                        "window_max",
                        format!("{max} is above {top}, the largest {} value", format.name()),
                    ));
                }
                if min >= max {
                    return Err(invalid(
                        "window_min",
                        format!("{min} must be below window_max {max}"),
                    ));
                }
            }
            WindowMode::Auto {
                low_percent,
                high_percent,
            } => {
                for (field, p) in [("low_percent", low_percent), ("high_percent", high_percent)] {
                    if !(0.0..=100.0).contains(&p) {
                        return Err(invalid(field, format!("{p} is outside 0..=100")));
                    }
                }
                if low_percent >= high_percent {
                    return Err(invalid(
                        "low_percent",
                        format!("{low_percent} must be below high_percent {high_percent}"),
                    ));
                }
            }
        }
        if !self.gamma.is_finite() || !GAMMA_RANGE.contains(&self.gamma) {
            return Err(invalid(
                "gamma",
                format!(
                    "{} is outside {}..={}",
                    self.gamma,
                    GAMMA_RANGE.start(),
                    GAMMA_RANGE.end()
                ),
            ));
        }
        Ok(())
    }
}

/// Region of interest in source pixels; it must lie inside the frame and be at least
/// 16x16 (the encoder's minimum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Roi {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Which part of the frame is shown and how small: crop, then bin, then shrink to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Crop to this region first (`None`: the whole frame).
    pub roi: Option<Roi>,
    /// Average `binning` x `binning` blocks (1..=[`MAX_BINNING`], 1 = none). Values stay
    /// in raw units, so windows keep their meaning.
    pub binning: u32,
    /// Largest output width (>= 16). The picture shrinks by the smallest integer box
    /// factor that fits both limits, keeping its aspect ratio; integer factors keep
    /// every output pixel an average of whole source pixels (no resampling blur) at
    /// the price of sometimes ending up to half the allowed size.
    pub max_width: Option<u32>,
    /// Largest output height (>= 16); see `max_width`.
    pub max_height: Option<u32>,
}

impl Default for Geometry {
    /// The whole frame, no binning, no size limit (beyond the encoder's).
    fn default() -> Self {
        Geometry {
            roi: None,
            binning: 1,
            max_width: None,
            max_height: None,
        }
    }
}

impl Geometry {
    /// Checks the geometry against a source size, naming the offending API field
    /// ("roi", "binning", "max_width", "max_height"); fails with
    /// [`FrameError::TooSmall`] when the source itself is below 16x16.
    pub fn validate(&self, src_width: u32, src_height: u32) -> Result<(), FrameError> {
        GeoPlan::new(self, src_width, src_height).map(|_| ())
    }

    /// Size of the I420 picture a `src_width` x `src_height` frame maps to (even, within
    /// the encoder limits), so that an encoder can be configured before the first frame.
    pub fn output_size(&self, src_width: u32, src_height: u32) -> Result<(u32, u32), FrameError> {
        GeoPlan::new(self, src_width, src_height).map(|p| (p.width, p.height))
    }
}

/// Resolved geometry: crop origin, one total box factor, final even size.
///
/// Binning `b`, fit factor `d` and encoder factor `f` combine into one `b * d * f` box
/// average, which equals averaging in stages up to rounding, because
/// `floor(floor(n / b) / d) == floor(n / (b * d))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GeoPlan {
    pub x0: u32,
    pub y0: u32,
    pub factor: u32,
    pub width: u32,
    pub height: u32,
}

impl GeoPlan {
    pub fn new(g: &Geometry, src_width: u32, src_height: u32) -> Result<Self, FrameError> {
        if src_width < MIN_SIDE || src_height < MIN_SIDE {
            return Err(FrameError::TooSmall {
                width: src_width,
                height: src_height,
            });
        }
        let b = g.binning;
        if !(1..=MAX_BINNING).contains(&b) {
            return Err(invalid(
                "binning",
                format!("{b} is outside 1..={MAX_BINNING}"),
            ));
        }
        for (field, limit) in [("max_width", g.max_width), ("max_height", g.max_height)] {
            if let Some(v) = limit.filter(|&v| v < MIN_SIDE) {
                return Err(invalid(
                    field,
                    format!("{v} is below {MIN_SIDE}, the encoder's minimum"),
                ));
            }
        }
        let (x0, y0, w0, h0) = match g.roi {
            None => (0, 0, src_width, src_height),
            Some(r) => {
                if r.width == 0 || r.height == 0 {
                    return Err(invalid("roi", format!("{}x{} is empty", r.width, r.height)));
                }
                if u64::from(r.x) + u64::from(r.width) > u64::from(src_width)
                    || u64::from(r.y) + u64::from(r.height) > u64::from(src_height)
                {
                    return Err(invalid(
                        "roi",
                        format!(
                            "{}x{} at ({}, {}) does not fit in the {src_width}x{src_height} frame",
                            r.width, r.height, r.x, r.y
                        ),
                    ));
                }
                if r.width < MIN_SIDE || r.height < MIN_SIDE {
                    return Err(invalid(
                        "roi",
                        format!(
                            "{}x{} is below {MIN_SIDE}x{MIN_SIDE}, the encoder's minimum",
                            r.width, r.height
                        ),
                    ));
                }
                (r.x, r.y, r.width, r.height)
            }
        };
        let (w1, h1) = (w0 / b, h0 / b);
        if w1 < MIN_SIDE || h1 < MIN_SIDE {
            return Err(invalid(
                "binning",
                format!(
                    "{b} turns {w0}x{h0} into {w1}x{h1}, below the encoder's {MIN_SIDE}x{MIN_SIDE}"
                ),
            ));
        }
        // Smallest d with floor(n / d) <= limit is floor(n / (limit + 1)) + 1.
        let fit = |n: u32, limit: Option<u32>| limit.map_or(1, |m| n / (m + 1) + 1);
        let (dw, dh) = (fit(w1, g.max_width), fit(h1, g.max_height));
        let d = dw.max(dh);
        let (w2, h2) = (w1 / d, h1 / d);
        if w2 < MIN_SIDE || h2 < MIN_SIDE {
            let field = if dw >= dh { "max_width" } else { "max_height" };
            return Err(invalid(
                field,
                format!(
                    "fitting {w1}x{h1} into the limit gives {w2}x{h2}, below {MIN_SIDE}x{MIN_SIDE}"
                ),
            ));
        }
        let f = (w2 / (MAX_WIDTH + 1) + 1).max(h2 / (MAX_HEIGHT + 1) + 1);
        let (w3, h3) = ((w2 / f) & !1, (h2 / f) & !1);
        if w3 < MIN_SIDE || h3 < MIN_SIDE {
            return Err(FrameError::TooSmall {
                width: w2,
                height: h2,
            });
        }
        Ok(GeoPlan {
            x0,
            y0,
            factor: b * d * f,
            width: w3,
            height: h3,
        })
    }
}

/// Rejects frames whose public fields were made inconsistent after [`Frame::new`].
pub(crate) fn check_frame(frame: &Frame) -> Result<(), FrameError> {
    if let PixelFormat::Mono16 { bit_depth } = frame.format {
        if bit_depth == 0 || bit_depth > 16 {
            return Err(FrameError::BadBitDepth(bit_depth));
        }
    }
    let expected = frame.width as usize * frame.height as usize * frame.format.bytes_per_pixel();
    if frame.data.len() != expected {
        return Err(FrameError::BadLength {
            width: frame.width,
            height: frame.height,
            format: frame.format,
            expected,
            got: frame.data.len(),
        });
    }
    Ok(())
}

/// Applies a [`GeoPlan`]: a view into the frame when no averaging is needed (cropping
/// is just an offset and a stride), else a box-averaged copy in a reused buffer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Resampler {
    scratch: Vec<u8>,
    downscale: DownscaleScratch,
}

impl Resampler {
    /// The pixels to map. `keep_saturation` makes blocks holding a raw-max pixel
    /// raw-max themselves (for the saturation colour map).
    pub fn view<'a>(
        &'a mut self,
        frame: &'a Frame,
        plan: &GeoPlan,
        keep_saturation: bool,
    ) -> View<'a> {
        let format = frame.format;
        let bpp = format.bytes_per_pixel();
        let stride = frame.width as usize * bpp;
        let start = plan.y0 as usize * stride + plan.x0 as usize * bpp;
        let src = &frame.data[start..];
        let (width, height) = (plan.width as usize, plan.height as usize);
        if plan.factor == 1 {
            return View {
                data: src,
                stride,
                width,
                height,
                format,
            };
        }
        let saturate_at = keep_saturation.then(|| format.max_value() as u16);
        kernels::downscale(
            format,
            src,
            stride,
            plan.factor as usize,
            (width, height),
            saturate_at,
            &mut self.downscale,
            &mut self.scratch,
        );
        View {
            data: &self.scratch,
            stride: width * bpp,
            width,
            height,
            format,
        }
    }
}

/// Gamma and colour map, the part of the mapping that does not depend on the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Shade {
    pub gamma: f32,
    pub colormap: Colormap,
}

impl Shade {
    /// What [`crate::Converter`] does: linear grey.
    pub const LINEAR_GRAY: Shade = Shade {
        gamma: 1.0,
        colormap: Colormap::Gray,
    };

    fn is_linear(self) -> bool {
        self.gamma == 1.0
    }

    /// Display value `s = t^gamma` of a window position `t` in 0..=1.
    fn apply_gamma(self, t: f64) -> f64 {
        if self.is_linear() {
            t
        } else {
            t.clamp(0.0, 1.0).powf(f64::from(self.gamma))
        }
    }

    /// Packed YCbCr entry of the colour shown at window position `t`.
    fn packed(self, t: f64) -> u32 {
        let s = self.apply_gamma(t);
        let rgb = match self.colormap {
            Colormap::Viridis => viridis(s),
            Colormap::Inverted => [255.0 * (1.0 - s); 3],
            Colormap::Gray | Colormap::Saturation => [255.0 * s; 3],
        };
        let (y, cb2, cr2) = kernels::ycbcr2_full(rgb);
        kernels::pack(y, cb2, cr2)
    }
}

/// Viridis at `s` in 0..=1, interpolated linearly between the 256 table entries.
fn viridis(s: f64) -> [f64; 3] {
    let x = s.clamp(0.0, 1.0) * 255.0;
    let i = (x as usize).min(254);
    let f = x - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    std::array::from_fn(|c| f64::from(a[c]) + (f64::from(b[c]) - f64::from(a[c])) * f)
}

/// Tables over the 12-bit window index for Mono16 (independent of the window, so a
/// moving auto window does not rebuild them).
struct Tables {
    shade: Shade,
    /// Grey or inverted luma.
    luma: [u8; TABLE_LEN],
    /// Packed colour entries; slot [`SATURATED`] holds the warning colour.
    packed: [u32; TABLE_LEN],
}

impl Tables {
    fn build(&mut self, shade: Shade) {
        self.shade = shade;
        let invert = shade.colormap == Colormap::Inverted;
        for (i, (l, p)) in self.luma.iter_mut().zip(self.packed.iter_mut()).enumerate() {
            let t = f64::from((i as u16).min(INDEX_MAX)) / f64::from(INDEX_MAX);
            let y = (255.0 * shade.apply_gamma(t)).round() as u8;
            *l = if invert { 255 - y } else { y };
            *p = shade.packed(t);
        }
        if shade.colormap == Colormap::Saturation {
            self.packed[usize::from(SATURATED)] = kernels::saturated_entry();
        }
    }
}

/// Tables over raw 8-bit values for Mono8 and RGB8 (they include the window).
struct Tables8 {
    key: (DisplayWindow, Shade),
    /// Window and gamma only: RGB channels, and grey Mono8.
    grey: [u8; 256],
    /// `grey`, or its complement for the inverted map.
    luma: [u8; 256],
    /// Packed colour entries (Mono8 viridis / saturation).
    packed: [u32; 256],
}

impl Tables8 {
    fn build(&mut self, window: DisplayWindow, shade: Shade) {
        self.key = (window, shade);
        let invert = shade.colormap == Colormap::Inverted;
        for v in 0..=255u32 {
            let t = if v <= window.min {
                0.0
            } else if v >= window.max {
                1.0
            } else {
                f64::from(v - window.min) / f64::from(window.max - window.min)
            };
            // Linear stays on the exact integer map, so the default equals Converter's.
            let y = if shade.is_linear() {
                window.map(v)
            } else {
                (255.0 * shade.apply_gamma(t)).round() as u8
            };
            let i = v as usize;
            self.grey[i] = y;
            self.luma[i] = if invert { 255 - y } else { y };
            self.packed[i] = match shade.colormap {
                Colormap::Saturation if v >= 255 => kernels::saturated_entry(),
                Colormap::Saturation | Colormap::Gray => kernels::pack(y, 256, 256),
                _ => shade.packed(t),
            };
        }
    }
}

/// Owns the lookup tables and turns a [`View`] into I420.
#[derive(Default)]
pub(crate) struct Painter {
    tables: Option<Box<Tables>>,
    tables8: Option<Box<Tables8>>,
}

impl fmt::Debug for Painter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Painter")
            .field("tables", &self.tables.as_ref().map(|t| t.shade))
            .field("tables8", &self.tables8.as_ref().map(|t| t.key))
            .finish()
    }
}

impl Clone for Painter {
    /// Tables are caches: a clone rebuilds them when first used.
    fn clone(&self) -> Self {
        Painter::default()
    }
}

impl Painter {
    fn tables(&mut self, shade: Shade) -> &Tables {
        let t = self.tables.get_or_insert_with(|| {
            let mut t = Box::new(Tables {
                shade,
                luma: [0; TABLE_LEN],
                packed: [0; TABLE_LEN],
            });
            t.build(shade);
            t
        });
        if t.shade != shade {
            t.build(shade);
        }
        t
    }

    fn tables8(&mut self, window: DisplayWindow, shade: Shade) -> &Tables8 {
        let t = self.tables8.get_or_insert_with(|| {
            let mut t = Box::new(Tables8 {
                key: (window, shade),
                grey: [0; 256],
                luma: [0; 256],
                packed: [0; 256],
            });
            t.build(window, shade);
            t
        });
        if t.key != (window, shade) {
            t.build(window, shade);
        }
        t
    }

    /// Maps `view` into `out`, which must already have the view's size.
    pub fn paint(
        &mut self,
        view: &View<'_>,
        window: DisplayWindow,
        shade: Shade,
        out: &mut I420Frame,
    ) {
        let (w, h) = (view.width, view.height);
        debug_assert_eq!((out.width as usize, out.height as usize), (w, h));
        let I420Frame { y, u, v, .. } = out;
        let luma_rows = |y: &mut Vec<u8>, f: &mut dyn FnMut(&[u8], &mut [u8])| {
            for (row, dst) in y.chunks_exact_mut(w).enumerate() {
                f(view.row(row), dst);
            }
        };
        let pairs = |y: &mut Vec<u8>,
                     u: &mut Vec<u8>,
                     v: &mut Vec<u8>,
                     f: &mut dyn FnMut(&[u8], &[u8], kernels::RowPair<'_>)| {
            for cy in 0..h / 2 {
                f(
                    view.row(2 * cy),
                    view.row(2 * cy + 1),
                    kernels::row_pair(y, u, v, w, cy),
                );
            }
        };
        let neutral = |u: &mut Vec<u8>, v: &mut Vec<u8>| {
            u.fill(128);
            v.fill(128);
        };
        match view.format {
            PixelFormat::Mono8 => {
                let t = self.tables8(window, shade);
                match shade.colormap {
                    Colormap::Gray | Colormap::Inverted => {
                        luma_rows(y, &mut |s, d| kernels::mono8_luma_row(s, d, &t.luma));
                        neutral(u, v);
                    }
                    Colormap::Viridis | Colormap::Saturation => {
                        pairs(y, u, v, &mut |s0, s1, o| {
                            kernels::mono8_colour_pair(s0, s1, o, &t.packed)
                        });
                    }
                }
            }
            PixelFormat::Mono16 { .. } => {
                let lin = Linear16::new(window);
                let sat_at = view.format.max_value() as u16;
                match (shade.colormap, shade.is_linear()) {
                    (Colormap::Gray, true) => {
                        luma_rows(y, &mut |s, d| lin.apply(s, d));
                        neutral(u, v);
                    }
                    (Colormap::Inverted, true) => {
                        luma_rows(y, &mut |s, d| lin.apply_inverted(s, d));
                        neutral(u, v);
                    }
                    (Colormap::Saturation, true) => {
                        pairs(y, u, v, &mut |s0, s1, o| {
                            kernels::mono16_saturation_pair(lin, s0, s1, o, sat_at)
                        });
                    }
                    (Colormap::Gray | Colormap::Inverted, false) => {
                        let t = self.tables(shade);
                        luma_rows(y, &mut |s, d| kernels::mono16_luma_row(lin, s, d, &t.luma));
                        neutral(u, v);
                    }
                    (Colormap::Viridis, _) | (Colormap::Saturation, false) => {
                        let t = self.tables(shade);
                        let sat = (shade.colormap == Colormap::Saturation).then_some(sat_at);
                        pairs(y, u, v, &mut |s0, s1, o| {
                            kernels::mono16_colour_pair(lin, s0, s1, o, &t.packed, sat)
                        });
                    }
                }
            }
            PixelFormat::Rgb8 => {
                let t = self.tables8(window, shade);
                pairs(y, u, v, &mut |s0, s1, o| {
                    kernels::rgb_pair(s0, s1, o, &t.grey)
                });
            }
        }
    }
}

/// Identity of what the auto window measures: a change restarts the smoothing.
#[derive(Debug, Clone, Copy, PartialEq)]
struct AutoKey {
    low_percent: f64,
    high_percent: f64,
    format: PixelFormat,
    geometry: Geometry,
    size: (usize, usize),
}

#[derive(Debug, Clone, Copy)]
struct AutoState {
    key: AutoKey,
    lo: f64,
    hi: f64,
    at: Instant,
}

/// Percentile measurement and exponential smoothing for [`WindowMode::Auto`].
#[derive(Debug, Clone, Default)]
struct AutoWindow {
    state: Option<AutoState>,
    counts: Vec<u32>,
}

impl AutoWindow {
    fn update(&mut self, view: &View<'_>, key: AutoKey, at: Instant) -> DisplayWindow {
        let max_value = view.format.max_value();
        let bits = value_bits(view.format);
        // At most 4096 bins: for 16-bit data a bin is 16 raw units, and percentiles
        // interpolate inside bins, so the window stays smooth.
        self.counts.resize(1 << bits.min(12), 0);
        let step = (view.width * view.height / AUTO_SAMPLES).isqrt().max(1);
        let (samples, min, max) =
            kernels::sample_histogram(view, step, bits, max_value, &mut self.counts);
        let hist = HistogramRef {
            bins: &self.counts,
            max_value,
            samples,
            min,
            max,
        };
        let target = (
            f64::from(hist.percentile(key.low_percent)),
            f64::from(hist.percentile(key.high_percent)),
        );
        let (lo, hi) = match &mut self.state {
            Some(s) if s.key == key => {
                let dt = at.saturating_duration_since(s.at).as_secs_f64();
                let weight = (1.0 - (-dt / AUTO_SMOOTHING.as_secs_f64()).exp())
                    .clamp(*AUTO_WEIGHT.start(), *AUTO_WEIGHT.end());
                s.lo += weight * (target.0 - s.lo);
                s.hi += weight * (target.1 - s.hi);
                s.at = at;
                (s.lo, s.hi)
            }
            _ => {
                self.state = Some(AutoState {
                    key,
                    lo: target.0,
                    hi: target.1,
                    at,
                });
                target
            }
        };
        // Keep min < max inside the format's range, even for a flat frame.
        let min = (lo.round() as u32).min(max_value - 1);
        let max = (hi.round() as u32).clamp(min + 1, max_value);
        DisplayWindow { min, max }
    }
}

/// Significant bits of a format's values.
fn value_bits(format: PixelFormat) -> u32 {
    match format {
        PixelFormat::Mono16 { bit_depth } => u32::from(bit_depth),
        PixelFormat::Mono8 | PixelFormat::Rgb8 => 8,
    }
}

/// Maps detector frames to I420 for display: geometry, window (manual or auto), gamma
/// and colour map. One per stream; it keeps the lookup tables, scratch buffers and the
/// auto window's smoothing state between frames.
///
/// Settings are not checked when set (the source format may not be known yet): call
/// [`DisplaySettings::validate`] / [`Geometry::validate`] at the API edge; [`map`]
/// checks them again against each frame and fails with the same error.
///
/// [`map`]: DisplayMapper::map
#[derive(Debug, Clone)]
pub struct DisplayMapper {
    settings: DisplaySettings,
    geometry: Geometry,
    resampler: Resampler,
    painter: Painter,
    auto: AutoWindow,
    last_window: Option<(u32, u32)>,
}

impl Default for DisplayMapper {
    fn default() -> Self {
        DisplayMapper::new(DisplaySettings::default(), Geometry::default())
    }
}

impl DisplayMapper {
    pub fn new(settings: DisplaySettings, geometry: Geometry) -> Self {
        DisplayMapper {
            settings,
            geometry,
            resampler: Resampler::default(),
            painter: Painter::default(),
            auto: AutoWindow::default(),
            last_window: None,
        }
    }

    /// Changes window, gamma or colour map from the next frame on. The auto window keeps
    /// its smoothing unless its percentiles change.
    pub fn set_settings(&mut self, settings: DisplaySettings) {
        self.settings = settings;
    }

    /// Changes the geometry from the next frame on (the auto window starts afresh).
    pub fn set_geometry(&mut self, geometry: Geometry) {
        self.geometry = geometry;
    }

    pub fn settings(&self) -> &DisplaySettings {
        &self.settings
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Maps `frame` into `out`, reusing `out`'s buffers when the size is unchanged.
    ///
    /// Errors: [`FrameError::InvalidParam`] for settings or geometry that do not fit this
    /// frame, [`FrameError::TooSmall`] below 16x16, [`FrameError::BadLength`] /
    /// [`FrameError::BadBitDepth`] for frames whose public fields were made inconsistent.
    /// On error `out` is left untouched.
    pub fn map(&mut self, frame: &Frame, out: &mut I420Frame) -> Result<(), FrameError> {
        check_frame(frame)?;
        self.settings.validate(frame.format)?;
        let plan = GeoPlan::new(&self.geometry, frame.width, frame.height)?;
        let keep_saturation = self.settings.colormap == Colormap::Saturation;
        let view = self.resampler.view(frame, &plan, keep_saturation);
        let window = match self.settings.window {
            WindowMode::Full => DisplayWindow::full(frame.format),
            WindowMode::Manual { min, max } => DisplayWindow { min, max },
            WindowMode::Auto {
                low_percent,
                high_percent,
            } => {
                let key = AutoKey {
                    low_percent,
                    high_percent,
                    format: frame.format,
                    geometry: self.geometry,
                    size: (view.width, view.height),
                };
                self.auto.update(&view, key, frame.captured_mono)
            }
        };
        out.set_size(plan.width, plan.height);
        out.seq = frame.seq;
        out.captured_us = frame.captured_us();
        let shade = Shade {
            gamma: self.settings.gamma,
            colormap: self.settings.colormap,
        };
        self.painter.paint(&view, window, shade, out);
        self.last_window = Some((window.min, window.max));
        Ok(())
    }

    /// The window (raw min, raw max) used for the last mapped frame: the smoothed one in
    /// auto mode. `None` before the first successful [`DisplayMapper::map`].
    pub fn effective_window(&self) -> Option<(u32, u32)> {
        self.last_window
    }
}

/// Histogram of a frame's raw values, for the UI (contrast dialog) and auto windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Counts of equal-width bins covering `0..=max_value`.
    pub bins: Vec<u32>,
    /// Largest raw value of the format (the top of the last bin).
    pub max_value: u32,
    /// Number of pixels counted.
    pub samples: u64,
    /// Smallest counted value (0 when nothing was counted).
    pub min: u32,
    /// Largest counted value (0 when nothing was counted).
    pub max: u32,
}

impl Histogram {
    /// Raw values counted in bin `i` (empty for `i` beyond the last bin).
    pub fn bin_range(&self, i: usize) -> RangeInclusive<u32> {
        self.as_ref().bin_range(i)
    }

    /// The raw value below which `p_percent` % of the samples lie: the nearest-rank
    /// percentile, interpolated inside a bin that covers several raw values, and
    /// clamped to the observed `min..=max` (so 0 gives `min` and 100 gives `max`).
    /// `p_percent` outside 0..=100 is clamped; an empty histogram gives 0.
    pub fn percentile(&self, p_percent: f64) -> u32 {
        self.as_ref().percentile(p_percent)
    }

    fn as_ref(&self) -> HistogramRef<'_> {
        HistogramRef {
            bins: &self.bins,
            max_value: self.max_value,
            samples: self.samples,
            min: self.min,
            max: self.max,
        }
    }
}

/// [`Histogram`] over borrowed counts, so that the auto window reuses its buffer.
#[derive(Debug, Clone, Copy)]
struct HistogramRef<'a> {
    bins: &'a [u32],
    max_value: u32,
    samples: u64,
    min: u32,
    max: u32,
}

impl HistogramRef<'_> {
    /// First raw value of bin `i`: bins split `0..=max_value` at `ceil(i * (max + 1) / n)`.
    fn bin_start(&self, i: usize) -> u64 {
        let n = self.bins.len().max(1) as u64;
        (i as u64 * (u64::from(self.max_value) + 1)).div_ceil(n)
    }

    fn bin_range(&self, i: usize) -> RangeInclusive<u32> {
        if i >= self.bins.len() {
            #[allow(clippy::reversed_empty_ranges)]
            return 1..=0;
        }
        self.bin_start(i) as u32..=(self.bin_start(i + 1) - 1) as u32
    }

    fn percentile(&self, p_percent: f64) -> u32 {
        if self.samples == 0 {
            return 0;
        }
        let p = if p_percent.is_nan() {
            0.0
        } else {
            p_percent.clamp(0.0, 100.0)
        };
        // 1-based rank of the sample sought.
        let rank = ((p / 100.0 * self.samples as f64).ceil() as u64).clamp(1, self.samples);
        let mut below = 0u64;
        for (i, &count) in self.bins.iter().enumerate() {
            let count = u64::from(count);
            if below + count >= rank {
                // Spread the bin's samples evenly over its raw values.
                let (start, end) = (self.bin_start(i), self.bin_start(i + 1));
                let pos = ((rank - below) as f64 - 0.5) / count as f64;
                let v = start + ((end - start) as f64 * pos) as u64;
                return (v.min(end - 1) as u32).clamp(self.min, self.max);
            }
            below += count;
        }
        self.max
    }
}

/// Histogram of `frame`'s raw values in `bins` equal bins over `0..=max_value`, counting
/// every `step`-th pixel in x and y (`step` 0 counts as 1).
///
/// `bins` is clamped to `1..=max_value + 1` (more bins than raw values would only add
/// empty ones). RGB8 frames count the brightest channel of each pixel, which is what
/// clips first and what the window is applied to. Frames whose public fields were made
/// inconsistent give an empty histogram (`samples` 0).
pub fn histogram(frame: &Frame, bins: usize, step: usize) -> Histogram {
    if check_frame(frame).is_err() {
        return Histogram {
            bins: vec![0; bins.max(1)],
            max_value: 0,
            samples: 0,
            min: 0,
            max: 0,
        };
    }
    let max_value = frame.format.max_value();
    let mut counts = vec![0; bins.clamp(1, max_value as usize + 1)];
    let view = View {
        data: &frame.data,
        stride: frame.width as usize * frame.format.bytes_per_pixel(),
        width: frame.width as usize,
        height: frame.height as usize,
        format: frame.format,
    };
    let (samples, min, max) = kernels::sample_histogram(
        &view,
        step,
        value_bits(frame.format),
        max_value,
        &mut counts,
    );
    Histogram {
        bins: counts,
        max_value,
        samples,
        min,
        max,
    }
}

/// YCbCr -> RGB coefficients in 16.16 fixed point.
struct Inverse {
    y_offset: i32,
    y_scale: i32,
    cr_r: i32,
    cb_g: i32,
    cr_g: i32,
    cb_b: i32,
}

/// Full-range BT.601 (JPEG): R = Y + 1.402 Cr', G = Y - 0.344136 Cb' - 0.714136 Cr',
/// B = Y + 1.772 Cb'.
const FULL_RANGE: Inverse = Inverse {
    y_offset: 0,
    y_scale: 65536,
    cr_r: 91_881,
    cb_g: 22_554,
    cr_g: 46_802,
    cb_b: 116_130,
};

/// Limited-range BT.601: luma 16..=235 and chroma 16..=240 stretched to 0..=255.
const LIMITED_RANGE: Inverse = Inverse {
    y_offset: 16,
    y_scale: 76_309,
    cr_r: 104_597,
    cb_g: 25_675,
    cr_g: 53_279,
    cb_b: 132_201,
};

impl I420Frame {
    /// Packed RGB (3 bytes per pixel, rows of `width` pixels) of a full-range BT.601
    /// picture, as [`DisplayMapper`] and [`crate::Converter`] write for mono data, e.g.
    /// for a PNG snapshot of what viewers see. Chroma is repeated over each 2x2 block.
    pub fn to_rgb8(&self) -> Vec<u8> {
        self.rgb8(&FULL_RANGE)
    }

    /// Like [`I420Frame::to_rgb8`] for a limited-range picture (what RGB8 frames become).
    pub fn to_rgb8_limited(&self) -> Vec<u8> {
        self.rgb8(&LIMITED_RANGE)
    }

    fn rgb8(&self, k: &Inverse) -> Vec<u8> {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut rgb = vec![0u8; w * h * 3];
        if w == 0 || h == 0 {
            return rgb;
        }
        let cw = self.uv_stride();
        // Missing planes (a hand-built, inconsistent frame) read as neutral/black
        // rather than panicking.
        for (row, (out, luma)) in rgb
            .chunks_exact_mut(w * 3)
            .zip(self.y.chunks(w))
            .enumerate()
        {
            let c0 = row / 2 * cw;
            for (x, (px, &yv)) in out.chunks_exact_mut(3).zip(luma).enumerate() {
                let cb = i32::from(self.u.get(c0 + x / 2).copied().unwrap_or(128)) - 128;
                let cr = i32::from(self.v.get(c0 + x / 2).copied().unwrap_or(128)) - 128;
                let y = (i32::from(yv) - k.y_offset) * k.y_scale + 32768;
                let q = |v: i32| (v >> 16).clamp(0, 255) as u8;
                px[0] = q(y + k.cr_r * cr);
                px[1] = q(y - k.cb_g * cb - k.cr_g * cr);
                px[2] = q(y + k.cb_b * cb);
            }
        }
        rgb
    }
}
