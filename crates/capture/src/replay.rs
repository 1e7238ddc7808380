//! A replay detector: recorded frames from disk, played in a loop at a fixed rate.
//!
//! Accepted inputs (see [`ReplaySource::open`]):
//! - a TIFF file (`.tif` / `.tiff`, any case): every page, in file order;
//! - a folder: every `.png` file in it (any case; other files and subfolders are ignored),
//!   sorted by file name byte-wise, so names should be zero-padded (`frame_0009.png`
//!   before `frame_0010.png`);
//! - a single `.png` file: a one-frame loop.
//!
//! Pixel types: 8-bit grayscale gives Mono8, 16-bit grayscale gives Mono16 with
//! `bit_depth` 16 (values are kept exactly), 8-bit RGB gives Rgb8. An alpha channel is
//! dropped (RGBA, and gray+alpha in PNG). 16-bit RGB PNGs are reduced to 8 bits per
//! channel, since colour frames are 8-bit anyway. Anything else (palette, float, signed,
//! CMYK, ... ) is rejected with the page or file named.
//!
//! Invariants: everything is decoded at open, so a bad input fails there and not
//! mid-stream; every frame has the size and format of the first one; frames are at least
//! 16x16 (the encoder's minimum); the decoded pixels together take at most
//! [`REPLAY_MEMORY_LIMIT`] (1 GiB) unless [`ReplaySource::open_with_limit`] says
//! otherwise. Emitted frames get a fresh increasing `seq` (0, 1, 2, ... across loops) and
//! the emission time as capture time; pacing is on an absolute schedule, so it does not
//! drift.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use image::{ColorType, DynamicImage, ImageDecoder, ImageReader};
use lumacast_frame::{Frame, PixelFormat, MIN_SIDE};
use tiff::decoder::{Decoder as TiffDecoder, DecodingResult, Limits as TiffLimits};

use crate::pace::Pacer;
use crate::{CaptureError, FrameSource, SourceInfo};

/// Default cap on the decoded pixels a [`ReplaySource`] keeps in memory: 1 GiB.
pub const REPLAY_MEMORY_LIMIT: usize = 1 << 30;

/// Replays recorded frames in a loop; see the module docs.
pub struct ReplaySource {
    path: PathBuf,
    width: u32,
    height: u32,
    format: PixelFormat,
    fps: f64,
    /// Pixel data of every frame, in play order; never empty.
    frames: Vec<Vec<u8>>,
    /// Index into `frames` of the next frame to emit.
    next: usize,
    seq: u64,
    pacer: Pacer,
}

impl ReplaySource {
    /// Loads `path` (a TIFF file, a folder of PNGs or one PNG) to play at `fps`, with the
    /// default memory cap [`REPLAY_MEMORY_LIMIT`].
    ///
    /// Errors: [`CaptureError::InvalidConfig`] for an fps outside (0, 10000];
    /// [`CaptureError::Replay`] for a missing path, an empty folder, an unreadable or
    /// unsupported file, a page or image whose size or format differs from the first one,
    /// frames below 16x16, or more pixels than the memory cap.
    pub fn open(path: &Path, fps: f64) -> Result<Self, CaptureError> {
        Self::open_with_limit(path, fps, REPLAY_MEMORY_LIMIT)
    }

    /// [`open`](Self::open) with another cap, in bytes, on the decoded pixels.
    pub fn open_with_limit(path: &Path, fps: f64, max_bytes: usize) -> Result<Self, CaptureError> {
        if !fps.is_finite() || fps <= 0.0 || fps > 10_000.0 {
            return Err(CaptureError::InvalidConfig(format!(
                "replay fps {fps} must be in (0, 10000]"
            )));
        }
        let mut loader = Loader {
            path,
            max_bytes,
            total: 0,
            frames: Vec::new(),
            shape: None,
        };
        loader.load()?;
        let Some(shape) = loader.shape else {
            // `load` fails on empty inputs; kept as an error rather than a panic.
            return Err(loader.err("no frames found"));
        };
        let (width, height, format) = (shape.width, shape.height, shape.format);
        tracing::info!(
            path = %path.display(),
            frames = loader.frames.len(),
            width,
            height,
            format = format.name(),
            bytes = loader.total,
            "replay loaded"
        );
        Ok(ReplaySource {
            path: path.to_owned(),
            width,
            height,
            format,
            fps,
            frames: loader.frames,
            next: 0,
            seq: 0,
            pacer: Pacer::new(fps),
        })
    }

    /// Number of frames in one loop.
    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    /// The file or folder being replayed.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::fmt::Debug for ReplaySource {
    // Manual: the derived impl would print every frame.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplaySource")
            .field("path", &self.path)
            .field("frames", &self.frames.len())
            .field("info", &self.describe())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl FrameSource for ReplaySource {
    fn describe(&self) -> SourceInfo {
        SourceInfo {
            kind: "replay",
            width: self.width,
            height: self.height,
            format: self.format,
            fps: self.fps,
        }
    }

    /// Copies the next frame first, then waits for its deadline, then stamps it.
    fn next_frame(&mut self) -> Result<Frame, CaptureError> {
        let data = self.frames[self.next].clone();
        self.pacer.wait_until_due();
        let mut frame = Frame::new(self.width, self.height, self.format, self.seq, data)?;
        frame.captured_at = SystemTime::now();
        frame.captured_mono = Instant::now();
        self.next = (self.next + 1) % self.frames.len();
        self.seq += 1;
        Ok(frame)
    }
}

/// Size and format every frame must share, and where they were first seen.
struct Shape {
    width: u32,
    height: u32,
    format: PixelFormat,
    first: String,
}

/// Decodes the input into `frames`, enforcing the shape and the memory cap.
struct Loader<'a> {
    path: &'a Path,
    max_bytes: usize,
    total: usize,
    frames: Vec<Vec<u8>>,
    shape: Option<Shape>,
}

impl Loader<'_> {
    fn err(&self, message: impl Into<String>) -> CaptureError {
        CaptureError::Replay {
            path: self.path.display().to_string(),
            message: message.into(),
        }
    }

    fn load(&mut self) -> Result<(), CaptureError> {
        let meta =
            std::fs::metadata(self.path).map_err(|e| self.err(format!("cannot open: {e}")))?;
        if meta.is_dir() {
            return self.load_png_folder();
        }
        match extension(self.path).as_deref() {
            Some("tif" | "tiff") => self.load_tiff(),
            Some("png") => self.load_png(self.path, "the image"),
            _ => Err(self.err(
                "unsupported file type (expected a .tif/.tiff file, a .png file or a folder \
                 of .png images)",
            )),
        }
    }

    fn load_png_folder(&mut self) -> Result<(), CaptureError> {
        let entries = std::fs::read_dir(self.path)
            .map_err(|e| self.err(format!("cannot list the folder: {e}")))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.err(format!("cannot list the folder: {e}")))?;
            let path = entry.path();
            if extension(&path).as_deref() == Some("png") && path.is_file() {
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(self.err("the folder contains no .png images"));
        }
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        for file in &files {
            let name = file
                .file_name()
                .unwrap_or(file.as_os_str())
                .to_string_lossy()
                .into_owned();
            self.load_png(file, &name)?;
        }
        Ok(())
    }

    /// Decodes one PNG; `what` names it in errors ("b.png", or "the image").
    fn load_png(&mut self, file: &Path, what: &str) -> Result<(), CaptureError> {
        let unreadable = |e: &dyn std::fmt::Display| format!("{what} is not a readable image: {e}");
        let decoder = ImageReader::open(file)
            .map_err(|e| self.err(format!("cannot open {what}: {e}")))?
            .with_guessed_format()
            .map_err(|e| self.err(unreadable(&e)))?
            .into_decoder()
            .map_err(|e| self.err(unreadable(&e)))?;
        let (width, height) = decoder.dimensions();
        let color = decoder.color_type();
        let format = match color {
            ColorType::L8 | ColorType::La8 => PixelFormat::Mono8,
            ColorType::L16 | ColorType::La16 => PixelFormat::Mono16 { bit_depth: 16 },
            ColorType::Rgb8 | ColorType::Rgba8 | ColorType::Rgb16 | ColorType::Rgba16 => {
                PixelFormat::Rgb8
            }
            other => {
                return Err(self.err(format!(
                    "{what} has unsupported pixel type {other:?} (supported: 8- or 16-bit \
                     grayscale, 8-bit RGB or RGBA)"
                )))
            }
        };
        self.admit(what, width, height, format)?;
        let image = DynamicImage::from_decoder(decoder).map_err(|e| self.err(unreadable(&e)))?;
        let data = match format {
            PixelFormat::Mono8 => image.into_luma8().into_raw(),
            PixelFormat::Mono16 { .. } => le_bytes(&image.into_luma16().into_raw()),
            PixelFormat::Rgb8 => image.into_rgb8().into_raw(),
        };
        self.push(what, data)
    }

    fn load_tiff(&mut self) -> Result<(), CaptureError> {
        let file = File::open(self.path).map_err(|e| self.err(format!("cannot open: {e}")))?;
        let mut limits = TiffLimits::default();
        // One page may be as large as the whole budget; the tiff default is 256 MiB.
        limits.decoding_buffer_size = self.max_bytes.max(limits.decoding_buffer_size);
        let mut decoder = TiffDecoder::new(BufReader::new(file))
            .map_err(|e| self.err(format!("not a readable TIFF: {e}")))?
            .with_limits(limits);
        let mut page = 1usize;
        loop {
            self.load_tiff_page(&mut decoder, page)?;
            if !decoder.more_images() {
                return Ok(());
            }
            page += 1;
            decoder
                .next_image()
                .map_err(|e| self.err(format!("page {page} is not readable: {e}")))?;
        }
    }

    /// Decodes the decoder's current page, numbered from 1 in errors.
    fn load_tiff_page(
        &mut self,
        decoder: &mut TiffDecoder<BufReader<File>>,
        page: usize,
    ) -> Result<(), CaptureError> {
        let what = format!("page {page}");
        let unreadable = |e: tiff::TiffError| format!("{what} is not readable: {e}");
        let (width, height) = decoder.dimensions().map_err(|e| self.err(unreadable(e)))?;
        let color = decoder.colortype().map_err(|e| self.err(unreadable(e)))?;
        let (format, channels) = match color {
            tiff::ColorType::Gray(8) => (PixelFormat::Mono8, 1),
            tiff::ColorType::Gray(16) => (PixelFormat::Mono16 { bit_depth: 16 }, 1),
            tiff::ColorType::RGB(8) => (PixelFormat::Rgb8, 3),
            tiff::ColorType::RGBA(8) => (PixelFormat::Rgb8, 4),
            other => {
                return Err(self.err(format!(
                    "{what} has unsupported pixel type {other:?} (supported: 8- or 16-bit \
                     grayscale, 8-bit RGB or RGBA)"
                )))
            }
        };
        self.admit(&what, width, height, format)?;
        let decoded = decoder.read_image().map_err(|e| self.err(unreadable(e)))?;
        let samples = width as usize * height as usize * channels;
        let data = match decoded {
            DecodingResult::U8(v) if v.len() == samples && channels == 4 => v
                .chunks_exact(4)
                .flat_map(|px| [px[0], px[1], px[2]])
                .collect(),
            DecodingResult::U8(v) if v.len() == samples => v,
            DecodingResult::U16(v) if v.len() == samples => le_bytes(&v),
            DecodingResult::U8(v) => return Err(self.short(&what, v.len(), samples)),
            DecodingResult::U16(v) => return Err(self.short(&what, v.len(), samples)),
            _ => {
                return Err(self.err(format!(
                    "{what} has unsupported samples (signed or floating point; supported: \
                     unsigned 8 or 16 bits)"
                )))
            }
        };
        self.push(&what, data)
    }

    fn short(&self, what: &str, got: usize, expected: usize) -> CaptureError {
        self.err(format!(
            "{what} decoded to {got} samples instead of {expected} (planar or subsampled \
             layouts are not supported)"
        ))
    }

    /// Checks a frame's size and format against the first frame and the limits before
    /// it is decoded, so an oversized input fails without allocating.
    fn admit(
        &mut self,
        what: &str,
        width: u32,
        height: u32,
        format: PixelFormat,
    ) -> Result<(), CaptureError> {
        let describe = |w: u32, h: u32, f: PixelFormat| match f {
            PixelFormat::Mono16 { bit_depth } => format!("{w}x{h} mono16 ({bit_depth}-bit)"),
            f => format!("{w}x{h} {}", f.name()),
        };
        match &self.shape {
            Some(s) if (s.width, s.height, s.format) != (width, height, format) => {
                return Err(self.err(format!(
                    "{what} is {}, but {} is {}: all frames must have the same size and format",
                    describe(width, height, format),
                    s.first,
                    describe(s.width, s.height, s.format)
                )));
            }
            Some(_) => {}
            None => {
                if width < MIN_SIDE || height < MIN_SIDE {
                    return Err(self.err(format!(
                        "{what} is {width}x{height}, below the {MIN_SIDE}x{MIN_SIDE} minimum"
                    )));
                }
                self.shape = Some(Shape {
                    width,
                    height,
                    format,
                    first: what.to_owned(),
                });
            }
        }
        let bytes = width as usize * height as usize * format.bytes_per_pixel();
        if self.total.saturating_add(bytes) > self.max_bytes {
            return Err(self.err(format!(
                "the frames exceed the replay memory limit of {} bytes: {} frames ({} bytes) \
                 fit before {what}",
                self.max_bytes,
                self.frames.len(),
                self.total
            )));
        }
        Ok(())
    }

    fn push(&mut self, what: &str, data: Vec<u8>) -> Result<(), CaptureError> {
        let shape = self.shape.as_ref().expect("admit() sets the shape");
        let expected =
            shape.width as usize * shape.height as usize * shape.format.bytes_per_pixel();
        if data.len() != expected {
            return Err(self.err(format!(
                "{what} decoded to {} bytes instead of {expected}",
                data.len()
            )));
        }
        self.total += data.len();
        self.frames.push(data);
        Ok(())
    }
}

/// Lower-cased extension of `path`, if it has one.
fn extension(path: &Path) -> Option<String> {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
}

fn le_bytes(values: &[u16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgb, Rgba};
    use std::time::Duration;
    use tiff::encoder::{colortype, TiffEncoder};

    /// A 16-bit page/image whose pixels encode `tag` and the position, with extreme
    /// values included, so any reordering or rounding shows.
    fn gray16(width: u32, height: u32, tag: u16) -> Vec<u16> {
        (0..width * height)
            .map(|i| match i {
                0 => 0,
                1 => u16::MAX,
                2 => tag,
                _ => (i as u16).wrapping_mul(257).wrapping_add(tag),
            })
            .collect()
    }

    fn write_png16(path: &Path, width: u32, height: u32, pixels: Vec<u16>) {
        ImageBuffer::<Luma<u16>, Vec<u16>>::from_raw(width, height, pixels)
            .unwrap()
            .save(path)
            .unwrap();
    }

    fn write_tiff16(path: &Path, pages: &[(u32, u32, Vec<u16>)]) {
        let mut enc = TiffEncoder::new(File::create(path).unwrap()).unwrap();
        for (w, h, data) in pages {
            enc.write_image::<colortype::Gray16>(*w, *h, data).unwrap();
        }
    }

    fn replay_error(path: &Path) -> String {
        match ReplaySource::open(path, 100.0) {
            Err(e @ CaptureError::Replay { .. }) => e.to_string(),
            other => panic!("expected a replay error, got {other:?}"),
        }
    }

    #[test]
    fn tiff_pages_play_in_order_and_loop_with_exact_16_bit_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stack.tif");
        let pages: Vec<_> = (0..3).map(|p| (20, 16, gray16(20, 16, 1000 + p))).collect();
        write_tiff16(&path, &pages);

        let mut src = ReplaySource::open(&path, 1000.0).unwrap();
        assert_eq!(src.frame_count(), 3);
        assert_eq!(src.path(), path);
        let info = src.describe();
        assert_eq!(info.kind, "replay");
        assert_eq!((info.width, info.height), (20, 16));
        assert_eq!(info.format, PixelFormat::Mono16 { bit_depth: 16 });
        assert_eq!(info.fps, 1000.0);
        for n in 0..7u64 {
            let f = src.next_frame().unwrap();
            assert_eq!(f.seq, n);
            assert_eq!(f.format, info.format);
            assert_eq!(f.data, le_bytes(&pages[n as usize % 3].2), "frame {n}");
        }
    }

    #[test]
    fn tiff_gray8_rgb8_and_rgba8_pages() {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (16u32, 16u32);
        let n = (w * h) as usize;

        let gray = dir.path().join("gray.tiff");
        let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
        let mut enc = TiffEncoder::new(File::create(&gray).unwrap()).unwrap();
        enc.write_image::<colortype::Gray8>(w, h, &data).unwrap();
        drop(enc);
        let mut src = ReplaySource::open(&gray, 100.0).unwrap();
        assert_eq!(src.describe().format, PixelFormat::Mono8);
        assert_eq!(src.next_frame().unwrap().data, data);

        let rgb = dir.path().join("rgb.TIF");
        let data: Vec<u8> = (0..n * 3).map(|i| (i * 5) as u8).collect();
        let mut enc = TiffEncoder::new(File::create(&rgb).unwrap()).unwrap();
        enc.write_image::<colortype::RGB8>(w, h, &data).unwrap();
        drop(enc);
        let mut src = ReplaySource::open(&rgb, 100.0).unwrap();
        assert_eq!(src.describe().format, PixelFormat::Rgb8);
        assert_eq!(src.next_frame().unwrap().data, data);

        let rgba = dir.path().join("rgba.tif");
        let data: Vec<u8> = (0..n * 4).map(|i| (i * 3) as u8).collect();
        let mut enc = TiffEncoder::new(File::create(&rgba).unwrap()).unwrap();
        enc.write_image::<colortype::RGBA8>(w, h, &data).unwrap();
        drop(enc);
        let mut src = ReplaySource::open(&rgba, 100.0).unwrap();
        assert_eq!(src.describe().format, PixelFormat::Rgb8);
        let expected: Vec<u8> = data
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        assert_eq!(src.next_frame().unwrap().data, expected);
    }

    #[test]
    fn png_folder_plays_sorted_by_name_with_exact_16_bit_values() {
        let dir = tempfile::tempdir().unwrap();
        // Written out of order; other files and subfolders are ignored.
        let names = ["frame_002.png", "frame_000.PNG", "frame_001.png"];
        for (i, name) in names.iter().enumerate() {
            write_png16(&dir.path().join(name), 16, 24, gray16(16, 24, i as u16));
        }
        std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
        std::fs::create_dir(dir.path().join("sub.png")).unwrap();

        let mut src = ReplaySource::open(dir.path(), 1000.0).unwrap();
        assert_eq!(src.frame_count(), 3);
        assert_eq!(src.describe().format, PixelFormat::Mono16 { bit_depth: 16 });
        // Sorted: frame_000 (tag 1), frame_001 (tag 2), frame_002 (tag 0), then again.
        for (n, tag) in [1u16, 2, 0, 1].into_iter().enumerate() {
            let f = src.next_frame().unwrap();
            assert_eq!(f.seq, n as u64);
            assert_eq!((f.width, f.height), (16, 24));
            assert_eq!(f.data, le_bytes(&gray16(16, 24, tag)), "frame {n}");
        }
    }

    #[test]
    fn png_8_bit_gray_rgb_and_rgba() {
        let dir = tempfile::tempdir().unwrap();
        let n = 16 * 16;

        let gray: Vec<u8> = (0..n).map(|i| i as u8).collect();
        let p = dir.path().join("gray.png");
        ImageBuffer::<Luma<u8>, _>::from_raw(16, 16, gray.clone())
            .unwrap()
            .save(&p)
            .unwrap();
        let mut src = ReplaySource::open(&p, 100.0).unwrap();
        assert_eq!(src.describe().format, PixelFormat::Mono8);
        assert_eq!(src.next_frame().unwrap().data, gray);

        let rgb: Vec<u8> = (0..n * 3).map(|i| (i * 7) as u8).collect();
        let p = dir.path().join("rgb.png");
        ImageBuffer::<Rgb<u8>, _>::from_raw(16, 16, rgb.clone())
            .unwrap()
            .save(&p)
            .unwrap();
        let mut src = ReplaySource::open(&p, 100.0).unwrap();
        assert_eq!(src.describe().format, PixelFormat::Rgb8);
        assert_eq!(src.next_frame().unwrap().data, rgb);

        let rgba: Vec<u8> = (0..n * 4).map(|i| (i * 11) as u8).collect();
        let p = dir.path().join("rgba.png");
        ImageBuffer::<Rgba<u8>, _>::from_raw(16, 16, rgba.clone())
            .unwrap()
            .save(&p)
            .unwrap();
        let mut src = ReplaySource::open(&p, 100.0).unwrap();
        assert_eq!(src.describe().format, PixelFormat::Rgb8);
        let expected: Vec<u8> = rgba
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        assert_eq!(src.next_frame().unwrap().data, expected);
    }

    #[test]
    fn paced_at_fps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.tif");
        write_tiff16(&path, &[(16, 16, gray16(16, 16, 0))]);
        let mut src = ReplaySource::open(&path, 100.0).unwrap();
        let t0 = Instant::now();
        for _ in 0..10 {
            src.next_frame().unwrap();
        }
        // First frame is immediate, then 9 periods of 10 ms.
        let elapsed = t0.elapsed();
        assert!(elapsed > Duration::from_millis(80), "{elapsed:?}");
    }

    #[test]
    fn error_missing_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.tif");
        let msg = replay_error(&path);
        assert!(
            msg.starts_with(&format!("cannot replay {}: cannot open: ", path.display())),
            "{msg}"
        );
    }

    #[test]
    fn error_empty_folder() {
        let dir = tempfile::tempdir().unwrap();
        let expected = format!(
            "cannot replay {}: the folder contains no .png images",
            dir.path().display()
        );
        assert_eq!(replay_error(dir.path()), expected);
        std::fs::write(dir.path().join("readme.txt"), "x").unwrap();
        assert_eq!(replay_error(dir.path()), expected);
    }

    #[test]
    fn error_mixed_sizes_in_folder_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_png16(&dir.path().join("a.png"), 16, 16, gray16(16, 16, 0));
        write_png16(&dir.path().join("b.png"), 32, 16, gray16(32, 16, 0));
        let msg = replay_error(dir.path());
        assert!(
            msg.ends_with(
                "b.png is 32x16 mono16 (16-bit), but a.png is 16x16 mono16 (16-bit): \
                 all frames must have the same size and format"
            ),
            "{msg}"
        );
    }

    #[test]
    fn error_mixed_formats_in_folder_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_png16(&dir.path().join("a.png"), 16, 16, gray16(16, 16, 0));
        ImageBuffer::<Luma<u8>, _>::from_raw(16, 16, vec![0u8; 256])
            .unwrap()
            .save(dir.path().join("b.png"))
            .unwrap();
        let msg = replay_error(dir.path());
        assert!(
            msg.contains("b.png is 16x16 mono8, but a.png is 16x16 mono16 (16-bit)"),
            "{msg}"
        );
    }

    #[test]
    fn error_mixed_sizes_in_tiff_names_the_page() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mixed.tif");
        write_tiff16(
            &path,
            &[
                (16, 16, gray16(16, 16, 0)),
                (16, 16, gray16(16, 16, 1)),
                (16, 20, gray16(16, 20, 2)),
            ],
        );
        let msg = replay_error(&path);
        assert!(
            msg.ends_with(
                "page 3 is 16x20 mono16 (16-bit), but page 1 is 16x16 mono16 (16-bit): \
                 all frames must have the same size and format"
            ),
            "{msg}"
        );
    }

    #[test]
    fn error_garbage_files() {
        let dir = tempfile::tempdir().unwrap();
        let tif = dir.path().join("garbage.tif");
        std::fs::write(&tif, b"this is not a tiff at all").unwrap();
        let msg = replay_error(&tif);
        assert!(msg.contains(": not a readable TIFF: "), "{msg}");

        let folder = dir.path().join("pngs");
        std::fs::create_dir(&folder).unwrap();
        write_png16(&folder.join("a.png"), 16, 16, gray16(16, 16, 0));
        std::fs::write(folder.join("b.png"), b"\x89PNG but truncated").unwrap();
        let msg = replay_error(&folder);
        assert!(msg.contains(": b.png is not a readable image: "), "{msg}");
    }

    #[test]
    fn error_unsupported_file_type() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("movie.avi");
        std::fs::write(&path, b"RIFF").unwrap();
        assert_eq!(
            replay_error(&path),
            format!(
                "cannot replay {}: unsupported file type (expected a .tif/.tiff file, a .png \
                 file or a folder of .png images)",
                path.display()
            )
        );
    }

    #[test]
    fn error_frames_below_encoder_minimum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.tif");
        write_tiff16(&path, &[(8, 8, gray16(8, 8, 0))]);
        assert!(replay_error(&path).ends_with("page 1 is 8x8, below the 16x16 minimum"));
    }

    #[test]
    fn error_past_the_memory_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stack.tif");
        let pages: Vec<_> = (0..4).map(|p| (16, 16, gray16(16, 16, p))).collect();
        write_tiff16(&path, &pages);
        // Each page is 512 bytes: 3 fit in 1600, the 4th does not.
        let err = ReplaySource::open_with_limit(&path, 10.0, 1600).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.ends_with(
                "the frames exceed the replay memory limit of 1600 bytes: 3 frames \
                 (1536 bytes) fit before page 4"
            ),
            "{msg}"
        );
        assert_eq!(
            ReplaySource::open_with_limit(&path, 10.0, 2048)
                .unwrap()
                .frame_count(),
            4
        );
    }

    #[test]
    fn invalid_fps_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.tif");
        write_tiff16(&path, &[(16, 16, gray16(16, 16, 0))]);
        for fps in [0.0, -1.0, f64::NAN, f64::INFINITY, 20_000.0] {
            assert!(
                matches!(
                    ReplaySource::open(&path, fps),
                    Err(CaptureError::InvalidConfig(_))
                ),
                "{fps}"
            );
        }
    }
}
