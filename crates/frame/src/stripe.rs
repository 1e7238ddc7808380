//! Timestamp stripe v1 (see `specs/timestamp-stripe.md`).
//!
//! The synthetic detector burns its capture time and sequence number into the top-left
//! 512x48 pixels of every frame, so that any client can measure capture-to-display
//! latency and spot dropped frames from the decoded picture alone, without any side
//! channel from the server.
//!
//! Layout: 3 rows x 32 cells of 16x16 pixels. Row 0 holds bits 63..32 of the capture
//! time `T` (microseconds since the UNIX epoch), row 1 bits 31..0, row 2 bits 31..0 of
//! the sequence number; column `c` holds bit `31 - c` (most significant bit on the left).
//! A 1 is full-scale white, a 0 is black.

use crate::{Frame, I420Frame, PixelFormat};

/// Side of one square cell, in pixels.
pub const CELL: u32 = 16;
/// Cells per stripe row (one 32-bit word).
pub const COLUMNS: u32 = 32;
/// Stripe rows: `T` high word, `T` low word, sequence number.
pub const ROWS: u32 = 3;
/// Width covered by the stripe; narrower frames carry no stripe.
pub const WIDTH: u32 = CELL * COLUMNS;
/// Height covered by the stripe; shorter frames carry no stripe.
pub const HEIGHT: u32 = CELL * ROWS;

/// What a stripe decodes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StripeReading {
    /// Capture time in microseconds since the UNIX epoch (system wall clock).
    pub t_us: u64,
    /// Low 32 bits of the frame sequence number.
    pub seq: u32,
}

/// The three 32-bit words the stripe rows carry, top row first.
///
/// Exposed so that tests and other writers (e.g. a client-side simulator) agree on the
/// exact bit layout.
pub fn words(t_us: u64, seq: u32) -> [u32; 3] {
    [(t_us >> 32) as u32, t_us as u32, seq]
}

/// Writes the stripe for capture time `t_us` and sequence number `seq` into `frame`.
///
/// 1 bits become full-scale white for the format (255, `2^bit_depth - 1`, or
/// (255, 255, 255)), 0 bits black. Does nothing for frames smaller than 512x48 (the spec
/// says they carry no stripe) or frames whose data/bit depth are inconsistent, because
/// a capture thread must never panic over a cosmetic overlay.
pub fn write(frame: &mut Frame, t_us: u64, seq: u32) {
    if frame.width < WIDTH || frame.height < HEIGHT {
        return;
    }
    let bpp = frame.format.bytes_per_pixel();
    let mut white = [0u8; 3];
    match frame.format {
        PixelFormat::Mono8 => white[0] = 255,
        PixelFormat::Mono16 { bit_depth } => {
            if bit_depth == 0 || bit_depth > 16 {
                return;
            }
            let max = frame.format.max_value() as u16;
            white[..2].copy_from_slice(&max.to_le_bytes());
        }
        PixelFormat::Rgb8 => white = [255; 3],
    }
    let white = &white[..bpp];
    let row_bytes = frame.width as usize * bpp;
    if frame.data.len() < row_bytes * frame.height as usize {
        return;
    }

    let cell_bytes = CELL as usize * bpp;
    let mut line = [0u8; WIDTH as usize * 3];
    let line = &mut line[..WIDTH as usize * bpp];
    for (r, word) in words(t_us, seq).into_iter().enumerate() {
        // Build one pixel row of this stripe row, then copy it into the cell's 16 lines.
        for (c, cell) in line.chunks_exact_mut(cell_bytes).enumerate() {
            let bit = (word >> (COLUMNS as usize - 1 - c)) & 1;
            if bit == 1 {
                for px in cell.chunks_exact_mut(bpp) {
                    px.copy_from_slice(white);
                }
            } else {
                cell.fill(0);
            }
        }
        for py in 0..CELL as usize {
            let y = r * CELL as usize + py;
            let start = y * row_bytes;
            frame.data[start..start + line.len()].copy_from_slice(line);
        }
    }
}

/// Reads the stripe from an 8-bit luma plane (`y`, row stride `stride` bytes).
///
/// Samples the centre pixel of every cell, at `(16c + 8, 16row + 8)`, and reads it as 1
/// when it is at least 128, exactly as the spec tells clients to. Returns `None` when
/// the picture is too small to carry a stripe (or `y` is shorter than claimed). It cannot
/// tell whether a stripe is really there: any big enough picture decodes to something.
pub fn read_luma(y: &[u8], stride: usize, width: u32, height: u32) -> Option<StripeReading> {
    if width < WIDTH || height < HEIGHT || stride < WIDTH as usize {
        return None;
    }
    let half = CELL as usize / 2;
    let last = (2 * CELL as usize + half) * stride + (COLUMNS as usize - 1) * CELL as usize + half;
    if y.len() <= last {
        return None;
    }
    let mut w = [0u32; 3];
    for (r, word) in w.iter_mut().enumerate() {
        let row = (r * CELL as usize + half) * stride;
        for c in 0..COLUMNS as usize {
            let bit = u32::from(y[row + c * CELL as usize + half] >= 128);
            *word = (*word << 1) | bit;
        }
    }
    Some(StripeReading {
        t_us: (u64::from(w[0]) << 32) | u64::from(w[1]),
        seq: w[2],
    })
}

/// Reads the stripe from a converted frame's luma plane; see [`read_luma`].
pub fn read_i420(frame: &I420Frame) -> Option<StripeReading> {
    read_luma(&frame.y, frame.width as usize, frame.width, frame.height)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_763_700_000_123_456;
    const ROW0: &str = "00000000000001100100010000010011";
    const ROW1: &str = "01100111111111110110101001000000";
    const ROW2: &str = "00000000000000000000000000101010";

    fn mono8(width: u32, height: u32) -> Frame {
        // Mid-grey background so that a missing write is visible in both directions.
        let data = vec![100u8; (width * height) as usize];
        Frame::new(width, height, PixelFormat::Mono8, 0, data).unwrap()
    }

    /// Reads the cell bits of stripe row `r` as a '0'/'1' string from a Mono8 frame,
    /// checking that every pixel of each cell has the same value.
    fn row_string(frame: &Frame, r: u32) -> String {
        let w = frame.width as usize;
        (0..COLUMNS)
            .map(|c| {
                let x0 = (c * CELL) as usize;
                let y0 = (r * CELL) as usize;
                let v = frame.data[y0 * w + x0];
                for dy in 0..CELL as usize {
                    for dx in 0..CELL as usize {
                        assert_eq!(frame.data[(y0 + dy) * w + x0 + dx], v, "cell {r},{c}");
                    }
                }
                match v {
                    255 => '1',
                    0 => '0',
                    other => panic!("cell {r},{c} has value {other}"),
                }
            })
            .collect()
    }

    #[test]
    fn worked_example_from_spec() {
        assert_eq!(T, 0x0006_4413_67FF_6A40);
        let mut f = mono8(640, 64);
        write(&mut f, T, 42);
        assert_eq!(row_string(&f, 0), ROW0);
        assert_eq!(row_string(&f, 1), ROW1);
        assert_eq!(row_string(&f, 2), ROW2);
        // Nothing outside the stripe is touched.
        assert_eq!(f.data[512], 100);
        assert_eq!(f.data[48 * 640], 100);
        let r = read_luma(&f.data, 640, 640, 64).unwrap();
        assert_eq!(r, StripeReading { t_us: T, seq: 42 });
    }

    #[test]
    fn mono16_and_rgb_use_full_scale_white() {
        let fmt = PixelFormat::Mono16 { bit_depth: 12 };
        let mut f = Frame::new(512, 48, fmt, 0, vec![0; 512 * 48 * 2]).unwrap();
        write(&mut f, u64::MAX, u32::MAX);
        assert!(f
            .data
            .chunks_exact(2)
            .all(|p| u16::from_le_bytes([p[0], p[1]]) == 4095));

        let mut f = Frame::new(512, 48, PixelFormat::Rgb8, 0, vec![7; 512 * 48 * 3]).unwrap();
        write(&mut f, 1, 0);
        // Only the last cell of row 1 is white.
        let px = |x: usize, y: usize| &f.data[(y * 512 + x) * 3..(y * 512 + x) * 3 + 3];
        assert_eq!(px(31 * 16 + 3, 16 + 5), &[255, 255, 255]);
        assert_eq!(px(30 * 16 + 3, 16 + 5), &[0, 0, 0]);
        assert_eq!(px(31 * 16 + 3, 5), &[0, 0, 0]);
    }

    #[test]
    fn small_frames_carry_no_stripe() {
        let mut f = mono8(511, 48);
        write(&mut f, T, 42);
        assert!(f.data.iter().all(|&v| v == 100));
        let mut f = mono8(512, 47);
        write(&mut f, T, 42);
        assert!(f.data.iter().all(|&v| v == 100));
        assert_eq!(read_luma(&f.data, 512, 512, 47), None);
        assert_eq!(read_luma(&[0; 10], 512, 512, 48), None);
    }
}
