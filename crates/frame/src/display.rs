//! Server-side display mapping: what a microscopist adjusts in a desktop viewer
//! (contrast window, gamma, colour map, region of interest, binning, size), applied to
//! each raw frame on its way to the H.264 encoder.
//!
//! The order is fixed: **geometry** first (crop to the [`Roi`], box-average
//! [`Geometry::binning`] x `binning` blocks, shrink by the smallest integer box factor
//! that fits both `max_width` / `max_height` and the encoder's 3840x2160, crop to even
//! sizes), all in raw units of the source format and done as one box average; then
//! the **mapping** of each raw value through the window (auto windows are measured on
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
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::convert::{DisplayWindow, I420Frame, MAX_HEIGHT, MAX_WIDTH, MIN_SIDE};
use crate::kernels::{
    self, ColourTable, DownscaleScratch, GammaCurve, Linear16, View, INDEX_MAX, SATURATED,
    TABLE_LEN,
};
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
/// window covers ~63% of the way to the new percentiles within this time and ~95%
/// within three times it, independently of the frame rate between about 6 and 78 fps
/// (outside that, [`AUTO_WEIGHT`]'s bounds apply). Time comes from each frame's
/// `captured_mono`; the mapper never reads the clock.
pub const AUTO_SMOOTHING: Duration = Duration::from_millis(250);
/// Bounds on the weight a single frame gets in the auto window's smoothing. The
/// weight is `1 - exp(-dt / AUTO_SMOOTHING)` for a frame `dt` after the previous one,
/// kept within these bounds: at most half the way per frame, so one odd frame cannot
/// make the picture jump even at 1 fps, and at least 5% so that the window still
/// converges when frames arrive in bursts with equal timestamps.
pub const AUTO_WEIGHT: RangeInclusive<f64> = 0.05..=0.5;
/// The auto window samples every n-th pixel in x and y, with n chosen to look at about
/// this many pixels (n = 8 for 2048x2048): plenty for the 0.1% tails. Counting them is
/// not free: 0.16-0.32 ms per frame on the busy development host (bench group
/// `histogram`), a fifth to a quarter of the default mapping of all 4 M pixels.
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
    /// picture, see [`AUTO_SAMPLES`]), smoothed over time so that the picture does not
    /// flicker; see [`AUTO_SMOOTHING`] and [`AUTO_WEIGHT`]. Every displayed pixel
    /// counts, including a synthetic source's timestamp stripe (0.3% of a 2048x2048
    /// frame at full scale, enough to pull a 99.9% percentile to the top).
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
    /// Raw range shown from black to white.
    pub window: WindowMode,
    /// Exponent applied to the windowed value `t` in 0..=1 (`t^gamma`): below 1 brightens
    /// dark values, above 1 darkens them; black and white stay fixed. See [`GAMMA_RANGE`].
    pub gamma: f32,
    /// Colours for mono data, applied after window and gamma.
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
    /// Left edge, in source pixels.
    pub x: u32,
    /// Top edge, in source pixels.
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
    /// Largest output width (>= 16). After binning, the picture shrinks by the smallest
    /// integer box factor that meets both limits and the encoder's 3840x2160, keeping
    /// its aspect ratio; integer factors keep every output pixel an average of whole
    /// source pixels (no resampling blur, one cheap pass) at the price of sometimes
    /// ending up well below the limit (e.g. 1024 px wide for a 2048 px frame and a
    /// limit of 1500).
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

    /// Where the output picture comes from in the source: output pixel `(ox, oy)` is the
    /// average of the `factor` x `factor` source pixels starting at
    /// `(x0 + ox * factor, y0 + oy * factor)`. Lets a viewer map a point on the picture
    /// back to source (detector) pixels.
    pub fn placement(&self, src_width: u32, src_height: u32) -> Result<Placement, FrameError> {
        GeoPlan::new(self, src_width, src_height).map(|p| Placement {
            x0: p.x0,
            y0: p.y0,
            factor: p.factor,
            width: p.width,
            height: p.height,
        })
    }
}

/// How the output picture sits in the source frame (see [`Geometry::placement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Source column of the output's left edge (the ROI's x, or 0).
    pub x0: u32,
    /// Source row of the output's top edge (the ROI's y, or 0).
    pub y0: u32,
    /// Source pixels per output pixel along each axis (binning times the fit factor).
    pub factor: u32,
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
}

/// Resolved geometry: crop origin, one total box factor, final even size.
///
/// Binning `b` and the fit factor `d` (the smallest that meets the user's size limits
/// and the encoder's 3840x2160 at once) combine into one `b * d` box average, which
/// equals averaging in two stages up to rounding, because
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
        // One box factor for the user's limits and the encoder's together: the smallest
        // d with floor(n / d) <= limit is floor(n / (limit + 1)) + 1, and the smallest
        // that meets several limits is the largest of those.
        let fit = |n: u32, limit: u32| n / (limit + 1) + 1;
        let user = |n: u32, limit: Option<u32>| limit.map_or(1, |m| fit(n, m));
        let (dw, dh) = (user(w1, g.max_width), user(h1, g.max_height));
        let encoder = fit(w1, MAX_WIDTH).max(fit(h1, MAX_HEIGHT));
        let d = dw.max(dh).max(encoder);
        let (w2, h2) = ((w1 / d) & !1, (h1 / d) & !1);
        if w2 < MIN_SIDE || h2 < MIN_SIDE {
            if dw.max(dh) < encoder {
                return Err(FrameError::TooSmall {
                    width: w1,
                    height: h1,
                });
            }
            let field = if dw >= dh { "max_width" } else { "max_height" };
            return Err(invalid(
                field,
                format!(
                    "shrinking {w1}x{h1} to fit gives {}x{}, below {MIN_SIDE}x{MIN_SIDE}",
                    w1 / d,
                    h1 / d
                ),
            ));
        }
        Ok(GeoPlan {
            x0,
            y0,
            factor: b * d,
            width: w2,
            height: h2,
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
    /// Colours for mono data, applied after window and gamma.
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

    /// Packed YCbCr entry of display level `level` (window and gamma applied, 0..=255):
    /// the colour maps have 256 colours, like matplotlib's.
    fn packed(self, level: u8, colours: &ColourTable) -> u32 {
        match self.colormap {
            Colormap::Viridis => colours.packed(level),
            Colormap::Inverted => kernels::pack(255 - level, 256, 256),
            Colormap::Gray | Colormap::Saturation => kernels::pack(level, 256, 256),
        }
    }
}

/// Viridis as luma and chroma, built on first use.
fn viridis_colours() -> &'static ColourTable {
    static COLOURS: OnceLock<ColourTable> = OnceLock::new();
    COLOURS.get_or_init(|| ColourTable::new(&VIRIDIS))
}

/// Tables over the 12-bit window index for Mono16 (independent of the window, so a
/// moving auto window does not rebuild them).
struct Tables {
    shade: Shade,
    /// Grey or inverted luma.
    luma: [u8; TABLE_LEN],
    /// Packed colour entries; slot [`SATURATED`] holds the warning colour.
    packed: [u32; TABLE_LEN],
    /// The display level of each index, as the SIMD kernels evaluate it.
    curve: GammaCurve,
}

impl Tables {
    fn build(&mut self, shade: Shade, colours: &ColourTable) {
        self.shade = shade;
        self.curve = GammaCurve::new(|i| {
            if shade.is_linear() {
                // round(255 * i / INDEX_MAX), exactly.
                ((i + 8) >> 4) as u8
            } else {
                let t = f64::from(i) / f64::from(INDEX_MAX);
                (255.0 * shade.apply_gamma(t)).round() as u8
            }
        });
        let invert = shade.colormap == Colormap::Inverted;
        for (i, (l, p)) in self.luma.iter_mut().zip(self.packed.iter_mut()).enumerate() {
            let level = self.curve.level((i as u16).min(INDEX_MAX));
            *l = if invert { 255 - level } else { level };
            *p = shade.packed(level, colours);
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
    fn build(&mut self, window: DisplayWindow, shade: Shade, colours: &ColourTable) {
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
                _ => shade.packed(y, colours),
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
                curve: GammaCurve::new(|_| 0),
            });
            t.build(shade, viridis_colours());
            t
        });
        if t.shade != shade {
            t.build(shade, viridis_colours());
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
            t.build(window, shade, viridis_colours());
            t
        });
        if t.key != (window, shade) {
            t.build(window, shade, viridis_colours());
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
        debug_assert_eq!(
            (out.width as usize, out.height as usize),
            (view.width, view.height)
        );
        let I420Frame { y, u, v, .. } = out;
        let neutral = |u: &mut Vec<u8>, v: &mut Vec<u8>| {
            u.fill(128);
            v.fill(128);
        };
        match view.format {
            PixelFormat::Mono8 => {
                let t = self.tables8(window, shade);
                match shade.colormap {
                    Colormap::Gray | Colormap::Inverted => {
                        each_row(view, y, |s, d, _| kernels::mono8_luma_row(s, d, &t.luma));
                        neutral(u, v);
                    }
                    Colormap::Viridis | Colormap::Saturation => {
                        each_pair(view, y, u, v, |s0, s1, o, _| {
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
                        each_row(view, y, |s, d, ahead| lin.apply(s, d, ahead));
                        neutral(u, v);
                    }
                    (Colormap::Inverted, true) => {
                        each_row(view, y, |s, d, ahead| lin.apply_inverted(s, d, ahead));
                        neutral(u, v);
                    }
                    (Colormap::Saturation, true) => {
                        each_pair(view, y, u, v, |s0, s1, o, ahead| {
                            kernels::mono16_saturation_pair(lin, s0, s1, o, sat_at, ahead)
                        });
                    }
                    (Colormap::Gray | Colormap::Inverted, false) => {
                        let t = self.tables(shade);
                        let invert = shade.colormap == Colormap::Inverted;
                        each_row(view, y, |s, d, ahead| {
                            kernels::mono16_luma_row(lin, s, d, &t.luma, &t.curve, invert, ahead)
                        });
                        neutral(u, v);
                    }
                    (Colormap::Viridis, linear) => {
                        let t = self.tables(shade);
                        let colours = viridis_colours();
                        let gamma = (!linear).then_some(&t.curve);
                        each_pair(view, y, u, v, |s0, s1, o, ahead| {
                            kernels::mono16_colour_level_pair(
                                lin, s0, s1, o, &t.packed, colours, gamma, ahead,
                            )
                        });
                    }
                    (Colormap::Saturation, false) => {
                        let t = self.tables(shade);
                        each_pair(view, y, u, v, |s0, s1, o, ahead| {
                            kernels::mono16_saturation_gamma_pair(
                                lin, s0, s1, o, &t.packed, &t.curve, sat_at, ahead,
                            )
                        });
                    }
                }
            }
            PixelFormat::Rgb8 => {
                let t = self.tables8(window, shade);
                each_pair(view, y, u, v, |s0, s1, o, _| {
                    kernels::rgb_pair(s0, s1, o, &t.grey)
                });
            }
        }
    }
}

/// Calls `f` with each source row of `view`, the matching luma row and the next source
/// row for the kernel to prefetch.
fn each_row(
    view: &View<'_>,
    y: &mut [u8],
    mut f: impl FnMut(&[u8], &mut [u8], kernels::Ahead<'_>),
) {
    for (row, dst) in y.chunks_exact_mut(view.width).enumerate() {
        let ahead = if row + 1 < view.height {
            kernels::Ahead::new(view.row(row + 1), &[])
        } else {
            kernels::Ahead::default()
        };
        f(view.row(row), dst, ahead);
    }
}

/// Calls `f` with each pair of source rows of `view` and the matching I420 rows, so
/// that chroma is computed while the 2x2 blocks are in L1.
fn each_pair(
    view: &View<'_>,
    y: &mut [u8],
    u: &mut [u8],
    v: &mut [u8],
    mut f: impl FnMut(&[u8], &[u8], kernels::RowPair<'_>, kernels::Ahead<'_>),
) {
    for cy in 0..view.height / 2 {
        let out = kernels::row_pair(y, u, v, view.width, cy);
        let ahead = if 2 * cy + 3 < view.height {
            kernels::Ahead::new(view.row(2 * cy + 2), view.row(2 * cy + 3))
        } else {
            kernels::Ahead::default()
        };
        f(view.row(2 * cy), view.row(2 * cy + 1), out, ahead);
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
            return RangeInclusive::new(1, 0); // empty
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::tests::noise;
    use crate::{stripe, to_i420, Converter};

    const M12: PixelFormat = PixelFormat::Mono16 { bit_depth: 12 };

    fn mono16(w: u32, h: u32, format: PixelFormat, f: impl Fn(u32, u32) -> u16) -> Frame {
        let data = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .flat_map(|(x, y)| f(x, y).to_le_bytes())
            .collect();
        Frame::new(w, h, format, 3, data).unwrap()
    }

    fn mono8(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Frame {
        let data = (0..h).flat_map(|y| (0..w).map(move |x| (x, y)));
        let data = data.map(|(x, y)| f(x, y)).collect();
        Frame::new(w, h, PixelFormat::Mono8, 3, data).unwrap()
    }

    fn settings(window: WindowMode, gamma: f32, colormap: Colormap) -> DisplaySettings {
        DisplaySettings {
            window,
            gamma,
            colormap,
        }
    }

    fn manual(min: u32, max: u32) -> WindowMode {
        WindowMode::Manual { min, max }
    }

    fn map(s: DisplaySettings, g: Geometry, frame: &Frame) -> I420Frame {
        let mut out = I420Frame::default();
        DisplayMapper::new(s, g).map(frame, &mut out).unwrap();
        out
    }

    fn field(err: FrameError) -> &'static str {
        match err {
            FrameError::InvalidParam { field, .. } => field,
            other => panic!("expected InvalidParam, got {other:?}"),
        }
    }

    fn rgb_at(out: &I420Frame, x: usize, y: usize) -> [u8; 3] {
        let i = (y * out.width as usize + x) * 3;
        out.to_rgb8()[i..i + 3].try_into().unwrap()
    }

    fn assert_close(got: [u8; 3], want: [u8; 3], tol: u8) {
        let ok = got.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= tol);
        assert!(ok, "got {got:?}, want {want:?} +-{tol}");
    }

    #[test]
    fn defaults_write_exactly_what_converter_writes() {
        let m16 = PixelFormat::Mono16 { bit_depth: 16 };
        let frames = [
            noise(64, 48, M12, 1),
            noise(33, 17, m16, 2),
            noise(35, 19, PixelFormat::Mono8, 3),
            noise(34, 20, PixelFormat::Rgb8, 4),
            noise(3850, 40, M12, 5),
            noise(3845, 36, PixelFormat::Rgb8, 6),
            noise(7690, 50, PixelFormat::Mono8, 7),
        ];
        let mut mapper = DisplayMapper::default();
        let (mut a, mut b) = (I420Frame::default(), I420Frame::default());
        for frame in &frames {
            mapper.map(frame, &mut a).unwrap();
            to_i420(frame, None, &mut b).unwrap();
            assert_eq!(a, b, "{:?} {}x{}", frame.format, frame.width, frame.height);
            // A manual grey window is Converter's window.
            let top = frame.format.max_value();
            let (min, max) = (top / 10, top / 2);
            mapper.set_settings(settings(manual(min, max), 1.0, Colormap::Gray));
            mapper.map(frame, &mut a).unwrap();
            to_i420(frame, Some(DisplayWindow { min, max }), &mut b).unwrap();
            assert_eq!(a, b, "{:?} window", frame.format);
            mapper.set_settings(DisplaySettings::default());
        }
    }

    #[test]
    fn stripe_survives_default_mapping() {
        let t = 1_763_700_000_123_456;
        for format in [M12, PixelFormat::Mono16 { bit_depth: 16 }] {
            let half = (format.max_value() / 2) as u16;
            let mut frame = mono16(640, 480, format, |_, _| half);
            let mut mapper = DisplayMapper::default();
            let mut out = I420Frame::default();
            for seq in [0, 42, u32::MAX] {
                stripe::write(&mut frame, t + u64::from(seq), seq);
                mapper.map(&frame, &mut out).unwrap();
                let reading = stripe::read_i420(&out).unwrap();
                let want = stripe::StripeReading {
                    t_us: t + u64::from(seq),
                    seq,
                };
                assert_eq!(reading, want, "{format:?}");
            }
        }
    }

    #[test]
    fn settings_errors_name_the_api_field() {
        let cases = [
            (manual(10, 10), 1.0, M12, "window_min"),
            (manual(11, 10), 1.0, M12, "window_min"),
            (manual(0, 4096), 1.0, M12, "window_max"),
            (manual(0, 256), 1.0, PixelFormat::Mono8, "window_max"),
            (manual(0, 256), 1.0, PixelFormat::Rgb8, "window_max"),
            (
                WindowMode::Auto {
                    low_percent: -1.0,
                    high_percent: 50.0,
                },
                1.0,
                M12,
                "low_percent",
            ),
            (
                WindowMode::Auto {
                    low_percent: 1.0,
                    high_percent: 100.5,
                },
                1.0,
                M12,
                "high_percent",
            ),
            (
                WindowMode::Auto {
                    low_percent: f64::NAN,
                    high_percent: 50.0,
                },
                1.0,
                M12,
                "low_percent",
            ),
            (
                WindowMode::Auto {
                    low_percent: 60.0,
                    high_percent: 50.0,
                },
                1.0,
                M12,
                "low_percent",
            ),
            (WindowMode::Full, 0.0, M12, "gamma"),
            (WindowMode::Full, 0.09, M12, "gamma"),
            (WindowMode::Full, 10.5, M12, "gamma"),
            (WindowMode::Full, f32::NAN, M12, "gamma"),
            (WindowMode::Full, f32::INFINITY, M12, "gamma"),
        ];
        let frame = noise(32, 32, M12, 9);
        for (window, gamma, format, want) in cases {
            let s = settings(window, gamma, Colormap::Gray);
            assert_eq!(field(s.validate(format).unwrap_err()), want, "{s:?}");
            if format == M12 {
                // map() checks too, and leaves the output alone.
                let mut out = I420Frame::default();
                let err = DisplayMapper::new(s, Geometry::default()).map(&frame, &mut out);
                assert_eq!(field(err.unwrap_err()), want);
                assert_eq!(out, I420Frame::default());
            }
        }
        let ok = [
            (manual(0, 4095), 0.1),
            (manual(4094, 4095), 10.0),
            (WindowMode::auto(), 1.0),
            (
                WindowMode::Auto {
                    low_percent: 0.0,
                    high_percent: 100.0,
                },
                2.2,
            ),
        ];
        for (window, gamma) in ok {
            settings(window, gamma, Colormap::Viridis)
                .validate(M12)
                .unwrap();
        }
        let err = settings(manual(3, 2), 1.0, Colormap::Gray).validate(M12);
        assert_eq!(
            err.unwrap_err().to_string(),
            "invalid window_min: 3 must be below window_max 2"
        );
    }

    #[test]
    fn geometry_errors_name_the_api_field() {
        let roi = |x, y, width, height| Geometry {
            roi: Some(Roi {
                x,
                y,
                width,
                height,
            }),
            ..Geometry::default()
        };
        let with = |binning, max_width, max_height| Geometry {
            roi: None,
            binning,
            max_width,
            max_height,
        };
        let cases = [
            (roi(0, 0, 0, 20), "roi"),
            (roi(0, 0, 20, 0), "roi"),
            (roi(90, 0, 20, 20), "roi"),
            (roi(0, 50, 20, 20), "roi"),
            (roi(u32::MAX, 0, 20, 20), "roi"),
            (roi(0, 0, 15, 20), "roi"),
            (with(0, None, None), "binning"),
            (with(9, None, None), "binning"),
            (with(4, None, None), "binning"), // 100x60 / 4 = 25x15
            (with(1, Some(15), None), "max_width"),
            (with(1, None, Some(0)), "max_height"),
            (with(1, Some(16), None), "max_width"), // 100x60 -> 16x9
        ];
        for (g, want) in &cases {
            assert_eq!(field(g.validate(100, 60).unwrap_err()), *want, "{g:?}");
            assert_eq!(field(g.output_size(100, 60).unwrap_err()), *want, "{g:?}");
        }
        // A height limit that squeezes a tall picture below 16 px wide.
        let g = with(1, None, Some(16));
        assert_eq!(field(g.validate(100, 300).unwrap_err()), "max_height");
        assert_eq!(field(g.validate(100, 60).unwrap_err()), "max_height"); // 25x15
        assert_eq!(with(1, None, Some(20)).output_size(100, 60), Ok((32, 20)));
        // Beyond the encoder's limit with nothing asked for: the encoder's error.
        assert_eq!(
            Geometry::default().validate(4000, 30),
            Err(FrameError::TooSmall {
                width: 4000,
                height: 30
            })
        );
        // The source itself too small: the encoder's error, as for Converter.
        assert_eq!(
            Geometry::default().validate(15, 100),
            Err(FrameError::TooSmall {
                width: 15,
                height: 100
            })
        );
        Geometry::default().validate(16, 16).unwrap();
        roi(84, 44, 16, 16).validate(100, 60).unwrap();
    }

    #[test]
    fn colormap_names_parse_case_insensitively() {
        for &c in Colormap::all() {
            assert_eq!(c.name().parse::<Colormap>(), Ok(c));
            assert_eq!(c.name().to_uppercase().parse::<Colormap>(), Ok(c));
            assert_eq!(c.to_string(), c.name());
        }
        assert_eq!("Grey".parse::<Colormap>(), Ok(Colormap::Gray));
        assert_eq!(" viridis ".parse::<Colormap>(), Ok(Colormap::Viridis));
        assert_eq!(field("jet".parse::<Colormap>().unwrap_err()), "colormap");
        assert_eq!(Colormap::all().len(), 4);
        assert_eq!(Colormap::default(), Colormap::Gray);
    }

    #[test]
    fn viridis_endpoints_convert_back_to_the_table() {
        let s = settings(WindowMode::Full, 1.0, Colormap::Viridis);
        // Left half black, right half full scale, a mid-grey band at the bottom.
        let f16 = mono16(32, 32, M12, |x, y| match (x, y) {
            (_, 16..) => 2048,
            (0..16, _) => 0,
            _ => 4095,
        });
        let f8 = mono8(32, 32, |x, y| match (x, y) {
            (_, 16..) => 128,
            (0..16, _) => 0,
            _ => 255,
        });
        for frame in [f16, f8] {
            let out = map(s, Geometry::default(), &frame);
            assert_close(rgb_at(&out, 3, 3), VIRIDIS[0], 3);
            assert_close(rgb_at(&out, 20, 3), VIRIDIS[255], 3);
            assert_close(rgb_at(&out, 20, 20), VIRIDIS[128], 3);
            // Colour, not grey: chroma moved off neutral.
            assert!(out.v[0] > 128 && out.u[15] < 128, "{:?}", frame.format);
        }
    }

    #[test]
    fn saturation_paints_only_raw_max_pixels() {
        // A window ending far below the top: 4094 is white, but only 4095 is red.
        let f16 = mono16(32, 16, M12, |x, y| match (x, y) {
            (0, 0) => 4095,
            (1, 0) => 4094,
            (4..=5, 0..=1) => 4095, // one whole 2x2 block
            _ => 1000,
        });
        let f8 = mono8(32, 16, |x, y| match (x, y) {
            (0, 0) => 255,
            (1, 0) => 254,
            (4..=5, 0..=1) => 255,
            _ => 62,
        });
        for (frame, window) in [(f16, manual(0, 2000)), (f8, manual(0, 124))] {
            for gamma in [1.0, 0.7] {
                let s = settings(window, gamma, Colormap::Saturation);
                let out = map(s, Geometry::default(), &frame);
                let what = format!("{:?} gamma {gamma}", frame.format);
                let red = kernels::saturated_entry() as u8;
                assert_eq!(out.y[0], red, "{what}");
                assert_eq!(out.y[1], 255, "{what}");
                assert_eq!(&out.y[4..6], &[red, red], "{what}");
                // Everything else is the grey map: same value everywhere.
                let grey = out.y[2];
                assert!(grey > 0 && grey < 255, "{what}");
                let saturated = |i: usize| [0, 4, 5, 36, 37].contains(&i);
                for (i, &y) in out.y.iter().enumerate() {
                    if !saturated(i) && i != 1 {
                        assert_eq!(y, grey, "{what} pixel {i}");
                    }
                }
                // Chroma: block 0 has one red pixel, block 2 is all red, the rest neutral.
                for (i, (&u, &v)) in out.u.iter().zip(&out.v).enumerate() {
                    match i {
                        0 => assert!(u < 128 && v > 128, "{what}"),
                        2 => assert_eq!((u, v), (85, 255), "{what}"),
                        _ => assert_eq!((u, v), (128, 128), "{what} block {i}"),
                    }
                }
                assert_close(rgb_at(&out, 4, 0), [255, 0, 0], 3);
            }
        }
    }

    #[test]
    fn saturation_survives_binning() {
        let frame = mono16(
            64,
            64,
            M12,
            |x, y| if (x, y) == (33, 17) { 4095 } else { 100 },
        );
        let g = Geometry {
            binning: 4,
            ..Geometry::default()
        };
        let out = map(
            settings(WindowMode::Full, 1.0, Colormap::Saturation),
            g,
            &frame,
        );
        assert_eq!((out.width, out.height), (16, 16));
        let red = kernels::saturated_entry() as u8;
        assert_eq!(out.y[4 * 16 + 8], red);
        assert_eq!(out.y.iter().filter(|&&y| y == red).count(), 1);
        // The grey map averages the saturated pixel away instead.
        let out = map(DisplaySettings::default(), g, &frame);
        assert_eq!(
            out.y[4 * 16 + 8],
            DisplayWindow::full(M12).map((15 * 100 + 4095 + 8) / 16)
        );
    }

    #[test]
    fn inverted_swaps_black_and_white() {
        let f16 = mono16(32, 16, M12, |x, _| [0, 4095, 1000, 3000][x as usize % 4]);
        let f8 = mono8(32, 16, |x, _| [0, 255, 60, 190][x as usize % 4]);
        for frame in [f16, f8] {
            let grey = map(DisplaySettings::default(), Geometry::default(), &frame);
            for gamma in [1.0, 0.5, 3.0] {
                let s = settings(WindowMode::Full, gamma, Colormap::Inverted);
                let inv = map(s, Geometry::default(), &frame);
                assert_eq!(&inv.y[..2], &[255, 0], "{:?} {gamma}", frame.format);
                assert!(inv.u.iter().chain(&inv.v).all(|&c| c == 128));
                if gamma == 1.0 {
                    let flipped: Vec<u8> = grey.y.iter().map(|y| 255 - y).collect();
                    assert_eq!(inv.y, flipped);
                }
            }
        }
    }

    #[test]
    fn gamma_is_monotonic_and_keeps_black_and_white() {
        // A ramp over the whole 12-bit range, 16 raw units per column.
        let f16 = mono16(256, 16, M12, |x, _| (x * 16 + x / 16).min(4095) as u16);
        let f8 = mono8(256, 16, |x, _| x as u8);
        let rgb = Frame::new(
            256,
            16,
            PixelFormat::Rgb8,
            0,
            (0..16)
                .flat_map(|_| (0..=255u8).flat_map(|v| [v; 3]))
                .collect(),
        )
        .unwrap();
        for frame in [f16, f8, rgb] {
            let mut mid = Vec::new();
            for gamma in [0.1, 0.5, 1.0, 2.0, 10.0] {
                for colormap in [Colormap::Gray, Colormap::Viridis] {
                    let s = settings(WindowMode::Full, gamma, colormap);
                    let out = map(s, Geometry::default(), &frame);
                    let row = &out.y[..256];
                    let what = format!("{:?} {colormap} gamma {gamma}", frame.format);
                    assert!(row.windows(2).all(|p| p[0] <= p[1]), "{what}: {row:?}");
                    if colormap == Colormap::Gray {
                        let (black, white) = if frame.format == PixelFormat::Rgb8 {
                            (16, 235)
                        } else {
                            (0, 255)
                        };
                        assert_eq!((row[0], row[255]), (black, white), "{what}");
                        mid.push(row[128]);
                    }
                }
            }
            // Lower gamma brightens mid-tones, higher darkens them.
            assert!(mid.windows(2).all(|p| p[0] > p[1]), "{mid:?}");
        }
    }

    /// Every Mono16 table path against a per-pixel computation in floating point.
    #[test]
    fn table_paths_match_direct_computation() {
        let frame = noise(64, 32, M12, 11);
        let raw = |x: usize, y: usize| {
            let i = 2 * (y * 64 + x);
            u32::from(u16::from_le_bytes([frame.data[i], frame.data[i + 1]]))
        };
        let (min, max) = (300, 3500);
        for (gamma, colormap) in [
            (0.5, Colormap::Gray),
            (2.0, Colormap::Inverted),
            (1.0, Colormap::Viridis),
            (0.3, Colormap::Viridis),
            (0.7, Colormap::Saturation),
        ] {
            let shade = Shade { gamma, colormap };
            let out = map(
                settings(manual(min, max), gamma, colormap),
                Geometry::default(),
                &frame,
            );
            let expect = |x: usize, y: usize| {
                let v = raw(x, y);
                if colormap == Colormap::Saturation && v >= 4095 {
                    return kernels::saturated_entry();
                }
                let t = (f64::from(v.clamp(min, max) - min)) / f64::from(max - min);
                let level = (255.0 * shade.apply_gamma(t)).round() as u8;
                shade.packed(level, viridis_colours())
            };
            for y in 0..32 {
                for x in 0..64 {
                    let want = expect(x, y) as u8;
                    let got = out.y[y * 64 + x];
                    assert!(
                        got.abs_diff(want) <= 2,
                        "{colormap} {gamma}: ({x}, {y}) {got} vs {want}"
                    );
                }
            }
            for cy in 0..16 {
                for cx in 0..32 {
                    let sum: u32 = [(0, 0), (1, 0), (0, 1), (1, 1)]
                        .iter()
                        .map(|(dx, dy)| expect(2 * cx + dx, 2 * cy + dy))
                        .sum();
                    let want = ((((sum >> 10) & 0x7ff) + 4) >> 3, ((sum >> 21) + 4) >> 3);
                    let got = (out.u[cy * 32 + cx], out.v[cy * 32 + cx]);
                    assert!(
                        u32::from(got.0).abs_diff(want.0) <= 2
                            && u32::from(got.1).abs_diff(want.1) <= 2,
                        "{colormap} {gamma}: block ({cx}, {cy}) {got:?} vs {want:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn roi_crops_in_source_pixels() {
        let frame = mono8(100, 60, |x, y| (x + 3 * y) as u8);
        let g = Geometry {
            roi: Some(Roi {
                x: 10,
                y: 20,
                width: 33,
                height: 17,
            }),
            ..Geometry::default()
        };
        assert_eq!(g.output_size(100, 60), Ok((32, 16)));
        let out = map(DisplaySettings::default(), g, &frame);
        assert_eq!((out.width, out.height), (32, 16));
        for r in 0..16 {
            for c in 0..32 {
                assert_eq!(
                    out.y[r * 32 + c] as u32,
                    (10 + c as u32) + 3 * (20 + r as u32)
                );
            }
        }
    }

    #[test]
    fn binning_averages_blocks_in_raw_units() {
        // 2x2 blocks holding a, a+1, a+2, a+3: the mean a + 1.5 rounds up.
        let frame = mono8(100, 60, |x, y| {
            (4 * (x / 2 + 50 * (y / 2)) % 200 + x % 2 + 2 * (y % 2)) as u8
        });
        let g = Geometry {
            binning: 2,
            ..Geometry::default()
        };
        assert_eq!(g.output_size(100, 60), Ok((50, 30)));
        let out = map(DisplaySettings::default(), g, &frame);
        for r in 0..30 {
            for c in 0..50 {
                let a = 4 * (c + 50 * r) % 200;
                assert_eq!(usize::from(out.y[r * 50 + c]), a + 2, "({c}, {r})");
            }
        }
        // Windows keep their raw meaning: a Mono16 block of 0 and 1000 averages to 500,
        // which the window 0..1000 shows as mid-grey.
        let frame = mono16(64, 64, M12, |x, _| if x % 2 == 0 { 0 } else { 1000 });
        let s = settings(manual(0, 1000), 1.0, Colormap::Gray);
        let out = map(s, g, &frame);
        assert_eq!((out.width, out.height), (32, 32));
        assert!(out.y.iter().all(|&y| y == 128), "{:?}", &out.y[..4]);
        // Odd binned sizes are cropped to even: 100x60 / 3 = 33x20.
        let g3 = Geometry { binning: 3, ..g };
        assert_eq!(g3.output_size(100, 60), Ok((32, 20)));
    }

    #[test]
    fn max_size_keeps_aspect_ratio_with_integer_factors() {
        let limit = |max_width, max_height, binning| Geometry {
            roi: None,
            binning,
            max_width,
            max_height,
        };
        let cases = [
            ((2048, 2048), limit(Some(1000), None, 1), (682, 682)),
            ((2048, 2048), limit(Some(1024), None, 1), (1024, 1024)),
            ((2048, 1024), limit(None, Some(300), 1), (512, 256)),
            ((2048, 1024), limit(Some(1500), Some(300), 1), (512, 256)),
            ((2048, 1024), limit(Some(500), Some(500), 2), (340, 170)),
            ((1000, 100), limit(Some(5000), Some(5000), 1), (1000, 100)),
            // One factor for both limits: 3, not the 2 for the user times 2 for the
            // encoder (8000 / 2 = 4000 > 3840).
            ((8000, 100), limit(Some(4000), None, 1), (2666, 32)),
            // Binned 4000x50 is still too wide for the encoder: 2 more, 25 -> 24 rows.
            ((8000, 100), limit(None, None, 2), (2000, 24)),
        ];
        for ((w, h), g, want) in cases {
            assert_eq!(g.output_size(w, h), Ok(want), "{w}x{h} {g:?}");
        }
        let frame = mono16(300, 200, M12, |_, _| 1234);
        let g = limit(Some(100), None, 1);
        let out = map(DisplaySettings::default(), g, &frame);
        assert_eq!((out.width, out.height), g.output_size(300, 200).unwrap());
        assert_eq!((out.width, out.height), (100, 66));
        let want = DisplayWindow::full(M12).map(1234);
        assert!(out.y.iter().all(|&y| y == want));
    }

    /// The placement names the ROI origin and the one box factor (binning times the
    /// fit factor) that the mapping uses, and the output size.
    #[test]
    fn placement_maps_output_pixels_back_to_source_pixels() {
        let g = Geometry {
            roi: Some(Roi {
                x: 100,
                y: 40,
                width: 800,
                height: 400,
            }),
            binning: 2,
            max_width: Some(200),
            max_height: None,
        };
        let p = g.placement(1280, 720).unwrap();
        assert_eq!(
            (p.x0, p.y0, p.factor, p.width, p.height),
            (100, 40, 4, 200, 100)
        );
        assert_eq!(Ok((p.width, p.height)), g.output_size(1280, 720));
        // Output pixel (ox, 0) shows the block of source columns x0 + ox * factor ..,
        // here the values of those columns (the frame's value is its column).
        let frame = mono16(1280, 720, M12, |x, _| x as u16);
        let out = map(DisplaySettings::default(), g, &frame);
        let window = DisplayWindow::full(M12);
        for ox in [0, 10, 199] {
            let src = p.x0 + ox * p.factor;
            let (lo, hi) = (window.map(src), window.map(src + p.factor - 1));
            let y = out.y[ox as usize];
            assert!(lo <= y && y <= hi, "ox {ox}: {y} not in {lo}..={hi}");
        }
        assert!(Geometry::default().placement(8, 8).is_err());
    }

    /// Frames of values spread evenly over `lo..=hi`, captured `dt_ms` apart.
    struct Feed {
        t0: Instant,
        n: u32,
        dt_ms: u64,
    }

    impl Feed {
        fn frame(&mut self, lo: u16, hi: u16) -> Frame {
            let span = u32::from(hi - lo) + 1;
            let mut f = mono16(64, 64, M12, |x, y| lo + ((x + 64 * y) * 7919 % span) as u16);
            f.captured_mono = self.t0 + Duration::from_millis(self.dt_ms * u64::from(self.n));
            self.n += 1;
            f
        }
    }

    #[test]
    fn auto_window_follows_percentiles_smoothly() {
        let s = settings(WindowMode::auto(), 1.0, Colormap::Gray);
        let mut mapper = DisplayMapper::new(s, Geometry::default());
        let mut out = I420Frame::default();
        let mut feed = Feed {
            t0: Instant::now(),
            n: 0,
            dt_ms: 33,
        };
        assert_eq!(mapper.effective_window(), None);
        // The first frame sets the window directly.
        mapper.map(&feed.frame(1000, 2000), &mut out).unwrap();
        let (lo, hi) = mapper.effective_window().unwrap();
        assert!(
            lo.abs_diff(1001) <= 2 && hi.abs_diff(1999) <= 2,
            "{lo} {hi}"
        );
        // A new scene: one frame later the window has moved a little, not all the way.
        mapper.map(&feed.frame(3000, 3500), &mut out).unwrap();
        let (lo1, hi1) = mapper.effective_window().unwrap();
        let weight = 1.0 - (-33.0f64 / 250.0).exp(); // 12%
        assert!(
            (f64::from(lo1) - (1001.0 + weight * 2000.0)).abs() < 5.0,
            "{lo1}"
        );
        assert!(
            (f64::from(hi1) - (1999.0 + weight * 1500.0)).abs() < 5.0,
            "{hi1}"
        );
        // ... and within 2 s it has converged.
        for _ in 0..60 {
            mapper.map(&feed.frame(3000, 3500), &mut out).unwrap();
        }
        let (lo, hi) = mapper.effective_window().unwrap();
        assert!(
            lo.abs_diff(3000) <= 2 && hi.abs_diff(3500) <= 2,
            "{lo} {hi}"
        );
        // The picture uses the window: 3250 is mid-grey.
        let mid = out.y.iter().map(|&y| u32::from(y)).sum::<u32>() / out.y.len() as u32;
        assert!(mid.abs_diff(128) < 8, "{mid}");
    }

    #[test]
    fn auto_window_does_not_jump_on_one_outlier_frame() {
        for dt_ms in [10, 33, 1000, 0] {
            let s = settings(WindowMode::auto(), 1.0, Colormap::Gray);
            let mut mapper = DisplayMapper::new(s, Geometry::default());
            let mut out = I420Frame::default();
            let mut feed = Feed {
                t0: Instant::now(),
                n: 0,
                dt_ms,
            };
            for _ in 0..5 {
                mapper.map(&feed.frame(1000, 2000), &mut out).unwrap();
            }
            let before = mapper.effective_window().unwrap();
            mapper.map(&feed.frame(0, 4095), &mut out).unwrap();
            let (lo, hi) = mapper.effective_window().unwrap();
            // At most half way (the weight's upper bound), however long the gap.
            assert!(
                lo >= 500 && hi <= 3050,
                "{dt_ms} ms: {before:?} -> {lo} {hi}"
            );
            assert!(lo < before.0 && hi > before.1, "{dt_ms} ms: moved at all");
            for _ in 0..100 {
                mapper.map(&feed.frame(1000, 2000), &mut out).unwrap();
            }
            let (lo, hi) = mapper.effective_window().unwrap();
            assert!(
                lo.abs_diff(1001) <= 3 && hi.abs_diff(1999) <= 3,
                "{dt_ms} ms: {lo} {hi}"
            );
        }
    }

    #[test]
    fn auto_window_restarts_when_what_it_measures_changes() {
        let s = settings(WindowMode::auto(), 1.0, Colormap::Gray);
        let mut mapper = DisplayMapper::new(s, Geometry::default());
        let mut out = I420Frame::default();
        // Left half dark, right half bright.
        let frame = mono16(64, 64, M12, |x, y| {
            if x < 32 {
                100 + (y % 8) as u16
            } else {
                3000 + (y % 8) as u16
            }
        });
        mapper.map(&frame, &mut out).unwrap();
        assert_eq!(mapper.effective_window(), Some((100, 3007)));
        // Cropping to the dark half measures it alone, at once.
        mapper.set_geometry(Geometry {
            roi: Some(Roi {
                x: 0,
                y: 0,
                width: 32,
                height: 64,
            }),
            ..Geometry::default()
        });
        mapper.map(&frame, &mut out).unwrap();
        assert_eq!(mapper.effective_window(), Some((100, 107)));
        // A flat frame still gets a valid window.
        let flat = mono16(32, 32, M12, |_, _| 4095);
        mapper.set_geometry(Geometry::default());
        mapper.map(&flat, &mut out).unwrap();
        assert_eq!(mapper.effective_window(), Some((4094, 4095)));
    }

    #[test]
    fn effective_window_reports_the_window_used() {
        let frame = noise(32, 32, M12, 5);
        let mut mapper = DisplayMapper::default();
        let mut out = I420Frame::default();
        mapper.map(&frame, &mut out).unwrap();
        assert_eq!(mapper.effective_window(), Some((0, 4095)));
        mapper.set_settings(settings(manual(10, 20), 1.0, Colormap::Gray));
        assert_eq!(mapper.settings().window, manual(10, 20));
        mapper.map(&frame, &mut out).unwrap();
        assert_eq!(mapper.effective_window(), Some((10, 20)));
        assert_eq!(mapper.geometry(), &Geometry::default());
    }

    #[test]
    fn mapper_reuses_its_output_buffers() {
        let frame = noise(256, 128, M12, 6);
        let mut mapper = DisplayMapper::default();
        let mut out = I420Frame::default();
        mapper.map(&frame, &mut out).unwrap();
        let planes = (out.y.as_ptr(), out.u.as_ptr(), out.v.as_ptr());
        for &colormap in Colormap::all() {
            for gamma in [1.0, 0.5] {
                mapper.set_settings(settings(WindowMode::auto(), gamma, colormap));
                mapper.map(&frame, &mut out).unwrap();
                assert_eq!((out.y.as_ptr(), out.u.as_ptr(), out.v.as_ptr()), planes);
            }
        }
    }

    #[test]
    fn rgb_keeps_limited_range_and_applies_window_per_channel() {
        let frame = Frame::new(16, 16, PixelFormat::Rgb8, 0, [200, 100, 50].repeat(256)).unwrap();
        // The colour map is ignored for RGB.
        let plain = map(DisplaySettings::default(), Geometry::default(), &frame);
        let viridis = map(
            settings(WindowMode::Full, 1.0, Colormap::Viridis),
            Geometry::default(),
            &frame,
        );
        assert_eq!(plain, viridis);
        assert_close(
            plain.to_rgb8_limited()[..3].try_into().unwrap(),
            [200, 100, 50],
            2,
        );
        // Window 50..200 stretches each channel: 200 -> 255, 100 -> 85, 50 -> 0.
        let out = map(
            settings(manual(50, 200), 1.0, Colormap::Gray),
            Geometry::default(),
            &frame,
        );
        assert_close(
            out.to_rgb8_limited()[..3].try_into().unwrap(),
            [255, 85, 0],
            2,
        );
    }

    #[test]
    fn histogram_counts_and_percentiles() {
        // Every 12-bit value exactly once.
        let frame = mono16(64, 64, M12, |x, y| (x + 64 * y) as u16);
        let h = histogram(&frame, 4096, 1);
        assert_eq!(
            (h.samples, h.min, h.max, h.max_value),
            (4096, 0, 4095, 4095)
        );
        assert!(h.bins.iter().all(|&c| c == 1));
        assert_eq!(h.percentile(0.0), 0);
        assert_eq!(h.percentile(50.0), 2047);
        assert_eq!(h.percentile(99.9), 4091);
        assert_eq!(h.percentile(100.0), 4095);
        assert_eq!(h.percentile(250.0), 4095);
        assert_eq!(h.percentile(f64::NAN), 0);
        // Coarser bins interpolate inside each bin.
        let h = histogram(&frame, 256, 1);
        assert_eq!(h.bins.len(), 256);
        assert!(h.bins.iter().all(|&c| c == 16));
        assert_eq!(h.bin_range(1), 16..=31);
        assert!(h.bin_range(256).is_empty());
        assert_eq!(h.percentile(50.0), 2047);
        assert_eq!(h.percentile(25.0), 1023);
        // Subsampling: every 2nd pixel of every 2nd row.
        let h = histogram(&frame, 16, 2);
        assert_eq!((h.samples, h.min, h.max), (1024, 0, 4094 - 64));
        // Bins are clamped to the number of raw values; RGB counts the brightest channel.
        let rgb = Frame::new(16, 16, PixelFormat::Rgb8, 0, [10, 200, 30].repeat(256)).unwrap();
        let h = histogram(&rgb, 1000, 1);
        assert_eq!((h.bins.len(), h.min, h.max), (256, 200, 200));
        assert_eq!(h.bins[200], 256);
        // Values above the bit depth count as full scale; broken frames are empty.
        let mut frame = mono16(16, 16, M12, |_, _| 5000);
        assert_eq!(histogram(&frame, 64, 1).max, 4095);
        frame.data.pop();
        let h = histogram(&frame, 64, 0);
        assert_eq!((h.samples, h.percentile(50.0)), (0, 0));
    }

    #[test]
    fn to_rgb8_inverts_bt601() {
        let mut out = I420Frame::default();
        out.set_size(2, 2);
        out.y.copy_from_slice(&[0, 255, 100, 128]);
        assert_eq!(
            out.to_rgb8(),
            [0, 0, 0, 255, 255, 255, 100, 100, 100, 128, 128, 128]
        );
        // Full-range red, as the saturation map writes it.
        let (y, cb2, cr2) = kernels::ycbcr2_full([255.0, 0.0, 0.0]);
        out.y.fill(y);
        out.u[0] = cb2.div_ceil(2) as u8;
        out.v[0] = cr2.div_ceil(2) as u8;
        assert_close(out.to_rgb8()[..3].try_into().unwrap(), [255, 0, 0], 2);
        // Limited range: 16 is black, 235 white.
        out.y.copy_from_slice(&[16, 235, 16, 235]);
        out.u[0] = 128;
        out.v[0] = 128;
        assert_eq!(&out.to_rgb8_limited()[..6], &[0, 0, 0, 255, 255, 255]);
        // Inconsistent frames do not panic.
        let broken = I420Frame {
            width: 4,
            height: 4,
            y: vec![50; 3],
            ..I420Frame::default()
        };
        assert_eq!(broken.to_rgb8().len(), 48);
        assert!(I420Frame::default().to_rgb8().is_empty());
    }

    #[test]
    fn converter_and_mapper_agree_on_sizes() {
        for (w, h) in [
            (16, 16),
            (33, 17),
            (2048, 2048),
            (3841, 2160),
            (7680, 4320),
            (2160, 3840),
        ] {
            assert_eq!(
                Geometry::default().output_size(w, h),
                crate::i420_dimensions(w, h)
            );
        }
        let mut c = Converter::default();
        let mut out = I420Frame::default();
        c.convert(&noise(40, 20, PixelFormat::Rgb8, 1), &mut out)
            .unwrap();
        assert_eq!((out.width, out.height), (40, 20));
    }
}
