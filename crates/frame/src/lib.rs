//! Frames as detectors produce them, and their mapping to I420 for the encoder.
//!
//! [`DisplayMapper`] (module `display`) applies what a user adjusts (region of interest,
//! binning, size limit, contrast window, gamma, colour map); [`Converter`] is the same
//! code reduced to a linear grey window. [`histogram`] and [`I420Frame::to_rgb8`] serve
//! the UI (contrast dialog, snapshots).
//!
//! Invariants:
//! - a [`Frame`]'s `data` length always equals `width * height * format.bytes_per_pixel()`
//!   (checked by [`Frame::new`], and again before every conversion because the fields
//!   are public);
//! - an [`I420Frame`] produced by [`to_i420`] / [`Converter`] / [`DisplayMapper`] always
//!   has even, encoder-acceptable dimensions: 16..=3840 wide and 16..=2160 high (the
//!   transposed 2160x3840 bound is *not* accepted; such frames are downscaled by an
//!   integer factor);
//! - mono frames become **full-range** BT.601 YCbCr, RGB8 frames **limited-range**
//!   BT.601: the encoder must signal the matching range;
//! - with default settings, [`DisplayMapper`] and [`Converter`] write identical bytes,
//!   in which full-scale white is Y 255 (or 235 for RGB) so the timestamp [`stripe`]
//!   stays readable;
//! - conversions allocate only when the output size or the settings change;
//! - this crate has no tokio and no webrtc: it is pure, synchronous pixel code; its only
//!   `unsafe` is the run-time-detected AVX2 code in `kernels::avx2` (tested byte for
//!   byte against the scalar code it replaces).

#![deny(unsafe_code)]

use std::time::SystemTime;

mod convert;
mod display;
mod kernels;
pub mod stripe;
mod viridis;

pub use convert::{
    i420_dimensions, to_i420, Converter, DisplayWindow, I420Frame, MAX_HEIGHT, MAX_WIDTH, MIN_SIDE,
};
pub use display::{
    histogram, Colormap, DisplayMapper, DisplaySettings, Geometry, Histogram, Placement, Roi,
    WindowMode, AUTO_SAMPLES, AUTO_SMOOTHING, AUTO_WEIGHT, DEFAULT_HIGH_PERCENT,
    DEFAULT_LOW_PERCENT, GAMMA_RANGE, MAX_BINNING,
};

/// Errors of frame construction and conversion.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame data is {got} bytes, expected {expected} for {width}x{height} {format:?}")]
    BadLength {
        width: u32,
        height: u32,
        format: PixelFormat,
        expected: usize,
        got: usize,
    },
    #[error("frame size {width}x{height} is too small: the encoder needs at least 16x16")]
    TooSmall { width: u32, height: u32 },
    #[error("Mono16 bit depth {0} is outside 1..=16")]
    BadBitDepth(u8),
    #[error("display window min {min} must be below max {max}")]
    BadWindow { min: u32, max: u32 },
    /// A display setting or geometry parameter the frame cannot be shown with; `field`
    /// is the name of the API field the user sent (e.g. "gamma", "roi", "window_max").
    #[error("invalid {field}: {message}")]
    InvalidParam {
        field: &'static str,
        message: String,
    },
}

/// Pixel layout of a detector frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// 8-bit monochrome, one byte per pixel.
    Mono8,
    /// 16-bit little-endian monochrome containers holding `bit_depth` significant bits
    /// (e.g. 12 for a 12-bit sCMOS).
    Mono16 { bit_depth: u8 },
    /// Packed 8-bit RGB, three bytes per pixel.
    Rgb8,
}

impl PixelFormat {
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Mono8 => 1,
            PixelFormat::Mono16 { .. } => 2,
            PixelFormat::Rgb8 => 3,
        }
    }

    /// Largest raw value a pixel can hold (full-scale white).
    pub fn max_value(self) -> u32 {
        match self {
            PixelFormat::Mono8 | PixelFormat::Rgb8 => 255,
            PixelFormat::Mono16 { bit_depth } => (1u32 << bit_depth) - 1,
        }
    }

    /// Short stable name used in the API ("mono8", "mono16", "rgb8").
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Mono8 => "mono8",
            PixelFormat::Mono16 { .. } => "mono16",
            PixelFormat::Rgb8 => "rgb8",
        }
    }
}

/// One frame as it left the detector.
#[derive(Debug, Clone)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    /// 0 for the first frame after the detector starts, +1 for every captured frame.
    pub seq: u64,
    /// Wall-clock capture time (what the timestamp stripe carries).
    pub captured_at: SystemTime,
    /// Monotonic capture instant, for latency measurement inside the process.
    pub captured_mono: std::time::Instant,
    /// Row-major pixels; Mono16 is little-endian.
    pub data: Vec<u8>,
}

impl Frame {
    /// Builds a frame, checking that `data` has the right length.
    pub fn new(
        width: u32,
        height: u32,
        format: PixelFormat,
        seq: u64,
        data: Vec<u8>,
    ) -> Result<Self, FrameError> {
        if let PixelFormat::Mono16 { bit_depth } = format {
            if bit_depth == 0 || bit_depth > 16 {
                return Err(FrameError::BadBitDepth(bit_depth));
            }
        }
        let expected = width as usize * height as usize * format.bytes_per_pixel();
        if data.len() != expected {
            return Err(FrameError::BadLength {
                width,
                height,
                format,
                expected,
                got: data.len(),
            });
        }
        Ok(Frame {
            width,
            height,
            format,
            seq,
            captured_at: SystemTime::now(),
            captured_mono: std::time::Instant::now(),
            data,
        })
    }

    /// Capture time in microseconds since the UNIX epoch.
    pub fn captured_us(&self) -> u64 {
        self.captured_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    }
}
