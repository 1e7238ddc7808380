//! Pixel loops shared by [`crate::Converter`] and [`crate::DisplayMapper`]: geometry
//! (crop + box averaging), the linear fixed-point window, table lookups and the
//! RGB -> YCbCr conversions. Nothing here allocates except the reusable scratch buffers
//! handed in by the caller, and nothing here validates user input: callers resolve and
//! check settings first, so these loops only see consistent sizes.
//!
//! Speed notes (2048x2048 Mono16 must map in well under 2 ms on one x86-64 core): the
//! per-pixel work is written as plain iterator loops over 16-bit lanes that LLVM
//! vectorises with SSE2. Non-linear maps first compute a 12-bit table index with the
//! same vectorised arithmetic and only then do scalar lookups in tables of 4096
//! entries (4 KiB / 16 KiB, L1-resident); a 65536-entry table would live in L2 and
//! cost ~3x more per pixel. On CPUs with AVX2 the Mono16 kernels run in the `avx2`
//! module instead (same results byte for byte; the scalar loops are the fallback and
//! the reference), and with AVX-512 the colour maps ([`ColourTable`]) and gamma
//! ([`GammaCurve`]) are computed from registers without lookups (module `avx512`).

use crate::convert::DisplayWindow;
use crate::PixelFormat;

/// Table index for the top of the window (`255 * 16`): the index has 4 fractional bits
/// over the 8-bit output scale, enough for smooth gamma curves and colour gradients.
pub(crate) const INDEX_MAX: u16 = 4080;
/// Table index reserved for saturated raw pixels (outside `0..=INDEX_MAX`).
pub(crate) const SATURATED: u16 = 4095;
/// Length of the 12-bit index tables.
pub(crate) const TABLE_LEN: usize = 4096;
/// Pixels per chunk in the two-pass (index, then lookup) loops: the index buffers stay
/// on the stack and in L1.
const CHUNK: usize = 64;

/// A packed colour-table entry: `Y` in bits 0..10, `2 * Cb` in bits 10..21 and
/// `2 * Cr` in bits 21..32. Each field has headroom for the sum of a 2x2 block, so
/// chroma of a block is one `u32` addition of four entries plus two shifts.
pub(crate) fn pack(y: u8, cb2: u32, cr2: u32) -> u32 {
    debug_assert!(cb2 <= 510 && cr2 <= 510);
    u32::from(y) | (cb2 << 10) | (cr2 << 21)
}

/// (Cb, Cr) of a 2x2 block from the sum of its four packed entries, rounded.
#[inline(always)]
fn block_chroma(sum: u32) -> (u8, u8) {
    (
        ((((sum >> 10) & 0x7ff) + 4) >> 3) as u8,
        (((sum >> 21) + 4) >> 3) as u8,
    )
}

/// Full-range BT.601 (JPEG) luma and doubled chroma of an RGB colour (0..=255 floats),
/// as stored in packed entries.
pub(crate) fn ycbcr2_full(rgb: [f64; 3]) -> (u8, u32, u32) {
    let (y, cb, cr) = ycbcr_full(rgb);
    let q = |v: f64, max: f64| v.round().clamp(0.0, max);
    (
        q(y, 255.0) as u8,
        q(2.0 * cb, 510.0) as u32,
        q(2.0 * cr, 510.0) as u32,
    )
}

/// The warning colour of the saturation map: pure red, full-range BT.601.
pub(crate) fn saturated_entry() -> u32 {
    let (y, cb2, cr2) = ycbcr2_full([255.0, 0.0, 0.0]);
    pack(y, cb2, cr2)
}

/// Full-range BT.601 (JPEG) luma and chroma of an RGB colour (0..=255 floats), unrounded.
fn ycbcr_full(rgb: [f64; 3]) -> (f64, f64, f64) {
    let [r, g, b] = rgb;
    let y = if r == g && g == b {
        // Keep greys exact (the coefficients sum to 1 only up to rounding).
        r
    } else {
        0.299 * r + 0.587 * g + 0.114 * b
    };
    let cb = 128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b;
    let cr = 128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b;
    (y, cb, cr)
}

/// Full-range BT.601 luma and chroma of an 8-bit RGB colour, each rounded to 8 bits:
/// the colours of the 256-entry colour maps.
pub(crate) fn ycbcr8(rgb: [u8; 3]) -> (u8, u8, u8) {
    let (y, cb, cr) = ycbcr_full(rgb.map(f64::from));
    let q = |v: f64| v.round().clamp(0.0, 255.0) as u8;
    (q(y), q(cb), q(cr))
}

/// Levels per linear segment of a [`ColourTable`] channel.
const COLOUR_SEGMENT: usize = 8;

/// A 256-entry colour map by 8-bit display level, in a form SIMD code evaluates from
/// three registers: its luma, Cb and Cr are each linear over 32 segments of eight
/// levels. Segment `s` of a channel is one word, its start `a` in the low byte and its
/// end `b` (the line's value eight levels on) in the high byte, and level `8 s + f` is
/// `(a (8 - f) + b f) >> 3` (one `vpmaddubsw` of the word with `[8 - f, f]`, see
/// [`ColourTable::at`]).
///
/// Each segment is fitted to the exact full-range BT.601 colours (least maximum error,
/// then least total error); for viridis every channel is within one level of exact
/// (tested). The packed 12-bit tables hold the same colours (`pack(y, 2 cb, 2 cr)`), so
/// every path gives the same pictures.
pub(crate) struct ColourTable {
    pub y: [u16; 32],
    pub cb: [u16; 32],
    pub cr: [u16; 32],
}

impl ColourTable {
    pub fn new(colours: &[[u8; 3]; 256]) -> Self {
        let exact = colours.map(ycbcr8);
        ColourTable {
            y: fit_segments(&exact.map(|c| c.0)),
            cb: fit_segments(&exact.map(|c| c.1)),
            cr: fit_segments(&exact.map(|c| c.2)),
        }
    }

    /// Level `l` of the channel whose segments are `words`.
    #[inline]
    pub fn at(words: &[u16; 32], l: u8) -> u8 {
        let w = words[usize::from(l) / COLOUR_SEGMENT];
        segment_level(w & 0xff, w >> 8, u16::from(l) % COLOUR_SEGMENT as u16)
    }

    /// Luma, Cb and Cr of level `l`.
    pub fn ycbcr(&self, l: u8) -> (u8, u8, u8) {
        (
            Self::at(&self.y, l),
            Self::at(&self.cb, l),
            Self::at(&self.cr, l),
        )
    }

    /// The packed-table entry of level `l`.
    pub fn packed(&self, l: u8) -> u32 {
        let (y, cb, cr) = self.ycbcr(l);
        pack(y, 2 * u32::from(cb), 2 * u32::from(cr))
    }
}

/// Level `f` (0..8) of the [`ColourTable`] segment from `a` towards `b`.
#[inline]
fn segment_level(a: u16, b: u16, f: u16) -> u8 {
    ((a * (8 - f) + b * f) >> 3) as u8
}

/// The segment words of [`ColourTable`] closest to `exact`: per segment, the start
/// (within 3 of the first level) and end that keep the map's first and last colours
/// exact if they can, then have the least maximum, then least total, error, among
/// those that, where `exact` never decreases (viridis' luma), keep the channel
/// non-decreasing. (A line that ends on 255 rising by more than 7 per segment is one
/// short there: its end would be 256.)
fn fit_segments(exact: &[u8; 256]) -> [u16; 32] {
    let monotonic = exact.windows(2).all(|p| p[0] <= p[1]);
    let mut last = 0;
    std::array::from_fn(|s| {
        let want = &exact[s * COLOUR_SEGMENT..(s + 1) * COLOUR_SEGMENT];
        let first = u16::from(want[0]);
        let mut best = (u32::MAX, u32::MAX, u32::MAX, 0u16, 0);
        for a in first.saturating_sub(3)..=(first + 3).min(255) {
            for b in 0..=255u16 {
                let end = segment_level(a, b, COLOUR_SEGMENT as u16 - 1);
                if monotonic && (b < a || segment_level(a, b, 0) < last) {
                    continue;
                }
                let ends_missed = u32::from(s == 0 && segment_level(a, b, 0) != want[0])
                    + u32::from(s == 31 && end != want[COLOUR_SEGMENT - 1]);
                let (mut worst, mut total) = (0, 0);
                for (f, &w) in (0..).zip(want) {
                    let e = u32::from(segment_level(a, b, f).abs_diff(w));
                    worst = worst.max(e);
                    total += e;
                }
                if (ends_missed, worst, total) < (best.0, best.1, best.2) {
                    best = (ends_missed, worst, total, a | (b << 8), end);
                }
            }
        }
        last = best.4;
        best.3
    })
}

/// Indices below this take their gamma level from [`GammaCurve::head`].
const GAMMA_HEAD: u16 = 64;
/// Index where segment 0 of [`GammaCurve::knots`] starts. `56 + 8` is a multiple of
/// 16, so that the floor interpolation of a segment rising 4 levels reproduces the
/// linear map's rounding (`(i + 8) >> 4`) exactly.
const GAMMA_KNOT0: u16 = 56;
/// Indices per segment of [`GammaCurve::knots`] (a power of two).
const GAMMA_SEGMENT: u16 = 64;

/// The display level (0..=255) of each 12-bit window index for one gamma, in a form
/// that SIMD code can evaluate from registers instead of a per-pixel table lookup:
///
/// - indices below 64 take the exact level from `head` (where `t^gamma` bends most);
/// - above, the level is linear over 63 segments of 64 indices starting at
///   `56 + 64 s`, each one word, start `b` in the low byte and rise `d` in the high
///   byte: `level = (64 b + d f) >> 6` with `f` the offset into the segment. That is one
///   `vpmaddubsw` of the word with the bytes `[64, f]` (at most `255 * 127`, so it
///   never saturates) and one shift.
///
/// Exact levels are `round(255 * (i / 4080)^gamma)`. Each segment is fitted to them
/// (start within 2 of exact, rise within 3 of the exact rise; least maximum, then
/// least total, error; never below the previous segment's end), so the curve stays
/// within one level of exact, is monotonic and keeps 0 and 255 at the ends for every
/// accepted gamma (tested over 0.1..=10), and it reproduces the linear map exactly. The
/// 4096-entry tables are built from [`GammaCurve::level`], so the table and SIMD paths
/// agree byte for byte.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GammaCurve {
    /// Exact levels of indices `0..64`.
    pub head: [u16; 64],
    /// Segment `s`: start level in the low byte, rise over 64 indices in the high byte.
    pub knots: [u16; 64],
}

/// Level `f` (0..64) of the [`GammaCurve`] segment starting at `b` and rising `d`.
#[inline]
fn gamma_segment_level(b: i32, d: i32, f: i32) -> i32 {
    (64 * b + d * f) >> 6
}

impl GammaCurve {
    /// The curve closest to `exact`, which must be non-decreasing over `0..=INDEX_MAX`.
    pub fn new(exact: impl Fn(u16) -> u8) -> Self {
        let at = |i: u16| i32::from(exact(i.min(INDEX_MAX)));
        let mut last = at(GAMMA_HEAD - 1);
        GammaCurve {
            head: std::array::from_fn(|i| at(i as u16) as u16),
            knots: std::array::from_fn(|s| {
                let start = GAMMA_KNOT0 + GAMMA_SEGMENT * s as u16;
                // The indices this segment maps: past the head, up to INDEX_MAX (none
                // for the last segment, which starts past it).
                let first = start.max(GAMMA_HEAD);
                let end = (start + GAMMA_SEGMENT).min(INDEX_MAX + 1);
                if first >= end {
                    return last as u16;
                }
                let b0 = at(start);
                // Over 64 indices; the last segment stops short, at INDEX_MAX.
                let span = i32::from(end - 1 - start).max(1);
                let rise = if end - start == GAMMA_SEGMENT {
                    at(end) - b0
                } else {
                    ((at(end - 1) - b0) * 64 + span / 2) / span
                };
                let level =
                    |b: i32, d: i32, i: u16| gamma_segment_level(b, d, i32::from(i - start));
                // Ranked first by broken promises (a step down from the previous
                // segment, a level over 255, a last level that is not the exact one),
                // so that some word is always chosen.
                let mut best = (u32::MAX, u32::MAX, u32::MAX, 0u16, last);
                for b in (b0 - 2).max(0)..=(b0 + 2).min(255) {
                    for d in (rise - 3).max(0)..=(rise + 3).min(255) {
                        let top = level(b, d, end - 1);
                        let broken = u32::from(level(b, d, first) < last)
                            + u32::from(top > 255)
                            + u32::from(end > INDEX_MAX && top != at(INDEX_MAX));
                        let (mut worst, mut total) = (0, 0);
                        for i in first..end {
                            let e = level(b, d, i).abs_diff(at(i));
                            worst = worst.max(e);
                            total += e;
                        }
                        if (broken, worst, total) < (best.0, best.1, best.2) {
                            let word = b as u16 | ((d as u16) << 8);
                            best = (broken, worst, total, word, top.min(255));
                        }
                    }
                }
                last = best.4;
                best.3
            }),
        }
    }

    /// The level of index `i` (`0..=INDEX_MAX`).
    #[inline]
    pub fn level(&self, i: u16) -> u8 {
        if i < GAMMA_HEAD {
            return self.head[usize::from(i)] as u8;
        }
        let t = i - GAMMA_KNOT0;
        let w = self.knots[usize::from(t >> 6) % 64];
        gamma_segment_level(i32::from(w & 0xff), i32::from(w >> 8), i32::from(t & 63)) as u8
    }
}

/// A view of the pixels to map: either the frame itself (offset to the region of
/// interest) or the box-averaged scratch copy. Rows are `stride` bytes apart; only the
/// first `width` pixels of each row and the first `height` rows are used.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [u8],
    pub stride: usize,
    pub width: usize,
    pub height: usize,
    pub format: PixelFormat,
}

impl<'a> View<'a> {
    /// Row `y` (exactly `width` pixels).
    #[inline]
    pub fn row(&self, y: usize) -> &'a [u8] {
        let start = y * self.stride;
        &self.data[start..start + self.width * self.format.bytes_per_pixel()]
    }
}

/// Linear window for 16-bit samples in 16-bit fixed point, written with operations SSE2
/// has for 16-bit lanes (saturating subtract, shift, high multiply) so that it
/// vectorises on the baseline x86-64 target (~3x faster than a 65536-entry table):
///
/// - `v = min(sat_sub(raw, lo), range)`;
/// - `v <<= sh`, with `sh` normalising `range << sh` into `32768..=65535`;
/// - `y7 = (v * k) >> 16` with `k = ceil(255 * 2^7 * 2^16 / (range << sh))` (<= 65280):
///   the output with 7 fractional bits, within about 1/128 of the exact value;
/// - `y = (y7 + 64) >> 7`, rounded to nearest; or the 12-bit table index
///   `(y7 + 4) >> 3` (4 fractional bits).
///
/// Checked exhaustively for every range: never more than 1 off exact rounding (0.15% of
/// values, next to .5 ties), and exact at both ends. Windows reaching beyond 16 bits
/// (meaningless for Mono16 data, but accepted by [`crate::Converter`]) fall back to exact
/// scalar arithmetic.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Linear16 {
    Fast {
        lo: u16,
        range: u16,
        sh: u32,
        k: u16,
    },
    Wide(DisplayWindow),
}

/// Raw little-endian 16-bit samples of a byte row.
#[inline(always)]
fn samples(src: &[u8]) -> impl Iterator<Item = u16> + '_ {
    src.chunks_exact(2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
}

impl Linear16 {
    pub fn new(window: DisplayWindow) -> Self {
        if window.max > u32::from(u16::MAX) {
            return Linear16::Wide(window);
        }
        // min < max <= 65535, so range is 1..=65535.
        let range = (window.max - window.min) as u16;
        let sh = range.leading_zeros();
        let norm = u32::from(range) << sh;
        Linear16::Fast {
            lo: window.min as u16,
            range,
            sh,
            k: (255u32 << 23).div_ceil(norm) as u16,
        }
    }

    /// Maps little-endian samples `src` (2 bytes each) to `dst`, prefetching `ahead`.
    #[inline]
    pub fn apply(self, src: &[u8], dst: &mut [u8], ahead: Ahead<'_>) {
        #[cfg(target_arch = "x86_64")]
        if avx2::apply::<false>(self, src, dst, ahead) {
            return;
        }
        let _ = ahead;
        self.apply_impl::<false>(src, dst);
    }

    /// Like [`Linear16::apply`], but writes `255 - y` (the inverted grey map).
    #[inline]
    pub fn apply_inverted(self, src: &[u8], dst: &mut [u8], ahead: Ahead<'_>) {
        #[cfg(target_arch = "x86_64")]
        if avx2::apply::<true>(self, src, dst, ahead) {
            return;
        }
        let _ = ahead;
        self.apply_impl::<true>(src, dst);
    }

    #[inline(always)]
    fn apply_impl<const INVERT: bool>(self, src: &[u8], dst: &mut [u8]) {
        let flip = if INVERT { 255 } else { 0 };
        match self {
            Linear16::Fast { lo, range, sh, k } => {
                for (d, raw) in dst.iter_mut().zip(samples(src)) {
                    let v = raw.saturating_sub(lo);
                    let v = (v - v.saturating_sub(range)) << sh; // min(v, range) << sh
                    let y7 = ((u32::from(v) * u32::from(k)) >> 16) as u16;
                    *d = ((y7 + 64) >> 7).min(255) as u8 ^ flip;
                }
            }
            Linear16::Wide(window) => {
                for (d, raw) in dst.iter_mut().zip(samples(src)) {
                    *d = window.map(u32::from(raw)) ^ flip;
                }
            }
        }
    }

    /// 12-bit table indices (`0..=INDEX_MAX`) for `src`; with `SAT`, raw values at or
    /// above `sat_at` get [`SATURATED`] instead.
    #[inline(always)]
    fn index<const SAT: bool>(self, src: &[u8], dst: &mut [u16], sat_at: u16) {
        match self {
            Linear16::Fast { lo, range, sh, k } => {
                for (d, raw) in dst.iter_mut().zip(samples(src)) {
                    let v = raw.saturating_sub(lo);
                    let v = (v - v.saturating_sub(range)) << sh;
                    let y7 = ((u32::from(v) * u32::from(k)) >> 16) as u16;
                    let i = ((y7 + 4) >> 3).min(INDEX_MAX);
                    *d = if SAT && raw >= sat_at { SATURATED } else { i };
                }
            }
            Linear16::Wide(window) => {
                for (d, raw) in dst.iter_mut().zip(samples(src)) {
                    *d = if SAT && raw >= sat_at {
                        SATURATED
                    } else {
                        window.index(u32::from(raw))
                    };
                }
            }
        }
    }
}

/// `lut[idx]` for each index, eight at a time so that each group is one 8-byte store
/// instead of eight byte stores (the store port is the bottleneck of this loop).
#[inline(always)]
fn lookup_bytes<const N: usize>(idx: &[u16], lut: &[u8; N], dst: &mut [u8]) {
    let mut d8 = dst.chunks_exact_mut(8);
    let mut i8 = idx.chunks_exact(8);
    for (d, i) in (&mut d8).zip(&mut i8) {
        let b: [u8; 8] = std::array::from_fn(|k| lut[usize::from(i[k]) % N]);
        d.copy_from_slice(&b);
    }
    for (d, &i) in d8.into_remainder().iter_mut().zip(i8.remainder()) {
        *d = lut[usize::from(i) % N];
    }
}

/// One Mono16 row through a 4096-entry luma table, which holds the levels of `curve`
/// (or their complement with `invert`): AVX-512 evaluates the curve from registers,
/// AVX2 and the scalar code look the table up.
pub(crate) fn mono16_luma_row(
    lin: Linear16,
    src: &[u8],
    dst: &mut [u8],
    lut: &[u8; TABLE_LEN],
    curve: &GammaCurve,
    invert: bool,
    ahead: Ahead<'_>,
) {
    #[cfg(target_arch = "x86_64")]
    let done = avx512::mono16_luma_row(lin, src, dst, curve, invert, ahead);
    #[cfg(not(target_arch = "x86_64"))]
    let done = {
        let _ = (curve, invert);
        0
    };
    let (src, dst) = (&src[2 * done..], &mut dst[done..]);
    #[cfg(target_arch = "x86_64")]
    if avx2::mono16_luma_row(lin, src, dst, lut, ahead.skip(2 * done)) {
        return;
    }
    mono16_luma_row_scalar(lin, src, dst, lut);
}

/// [`mono16_luma_row`] without SIMD: the fallback, the tail of the SIMD rows and the
/// reference the SIMD kernels are tested against.
fn mono16_luma_row_scalar(lin: Linear16, src: &[u8], dst: &mut [u8], lut: &[u8; TABLE_LEN]) {
    let mut idx = [0u16; CHUNK];
    for (d, s) in dst.chunks_mut(CHUNK).zip(src.chunks(2 * CHUNK)) {
        let idx = &mut idx[..d.len()];
        lin.index::<false>(s, idx, 0);
        lookup_bytes(idx, lut, d);
    }
}

/// One Mono16 row pair through a 256-colour map: the 8-bit level (`round(index / 16)`
/// at gamma 1, else `gamma`'s level of the index), then the level's colour from
/// `colours`. `packed` holds the same colours over the 12-bit index, for CPUs without
/// AVX-512 and the rows' tails.
// The rows, the three forms of the map and the rows to prefetch: bundling them would
// only move the list into a struct built at the one call site.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mono16_colour_level_pair(
    lin: Linear16,
    src0: &[u8],
    src1: &[u8],
    out: RowPair<'_>,
    packed: &[u32; TABLE_LEN],
    colours: &ColourTable,
    gamma: Option<&GammaCurve>,
    ahead: Ahead<'_>,
) {
    #[allow(unused_mut)]
    let mut out = out;
    #[cfg(target_arch = "x86_64")]
    let done = avx512::mono16_colour_level_pair(lin, src0, src1, &mut out, colours, gamma, ahead);
    #[cfg(not(target_arch = "x86_64"))]
    let done = {
        let _ = (colours, gamma);
        0
    };
    mono16_colour_pair(
        lin,
        &src0[2 * done..],
        &src1[2 * done..],
        out.skip(done),
        packed,
        None,
        ahead.skip(2 * done),
    );
}

/// One Mono8 row through a 256-entry luma table.
pub(crate) fn mono8_luma_row(src: &[u8], dst: &mut [u8], lut: &[u8; 256]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = lut[usize::from(s)];
    }
}

/// The source rows the display code maps after the current ones, which the SIMD
/// kernels prefetch one cache line at a time while they map (a line of each row ahead
/// per 64 bytes of their own rows, at the same offset).
///
/// A 2048-pixel Mono16 row is one 4 KiB page, and the hardware prefetchers stop at page
/// boundaries, so without this every row starts with its first lines missing in every
/// cache level. Fetching one row (or row pair) ahead cut the time to map 2048x2048 to
/// 0.67 (defaults) to 0.83 (viridis with gamma) of the time without
/// (docs/benchmarks.md). Fetching the first lines of the next rows all at once, before
/// a row, did not help: the fetches must be spread over the row.
#[derive(Clone, Copy, Default)]
pub(crate) struct Ahead<'a> {
    rows: [&'a [u8]; 2],
}

impl<'a> Ahead<'a> {
    /// The next row of a row kernel (`second` empty), or the next pair of a pair kernel.
    pub fn new(first: &'a [u8], second: &'a [u8]) -> Self {
        Ahead {
            rows: [first, second],
        }
    }

    /// The rows ahead from byte `at` on, for a kernel that starts `at` bytes into its
    /// own rows.
    pub fn skip(self, at: usize) -> Self {
        Ahead {
            rows: self.rows.map(|r| r.get(at..).unwrap_or(&[])),
        }
    }

    /// Prefetches the line holding byte `at` of each row ahead (nothing past their ends).
    #[inline(always)]
    // `unsafe` for the workspace's `rust-version` (1.85), where intrinsics are unsafe.
    #[allow(unsafe_code, unused_unsafe)]
    pub fn fetch(&self, at: usize) {
        #[cfg(target_arch = "x86_64")]
        for r in self.rows {
            if at < r.len() {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                // SAFETY: a prefetch is a hint that never faults (and `at` is inside
                // `r` anyway); SSE is part of every x86-64 target.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(r.as_ptr().wrapping_add(at).cast()) };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = at;
    }
}

/// The two luma rows and the chroma row of one I420 row pair.
pub(crate) struct RowPair<'a> {
    pub y0: &'a mut [u8],
    pub y1: &'a mut [u8],
    pub u: &'a mut [u8],
    pub v: &'a mut [u8],
}

impl<'a> RowPair<'a> {
    /// The rest of the row pair after its first `done` pixels (`done` even).
    pub fn skip(self, done: usize) -> RowPair<'a> {
        let RowPair { y0, y1, u, v } = self;
        RowPair {
            y0: &mut y0[done..],
            y1: &mut y1[done..],
            u: &mut u[done / 2..],
            v: &mut v[done / 2..],
        }
    }
}

/// Splits plane rows `2 * cy` and `2 * cy + 1` (and chroma row `cy`) out of `out`.
pub(crate) fn row_pair<'a>(
    y: &'a mut [u8],
    u: &'a mut [u8],
    v: &'a mut [u8],
    width: usize,
    cy: usize,
) -> RowPair<'a> {
    let cw = width / 2;
    let (y0, y1) = y[2 * cy * width..(2 * cy + 2) * width].split_at_mut(width);
    RowPair {
        y0,
        y1,
        u: &mut u[cy * cw..(cy + 1) * cw],
        v: &mut v[cy * cw..(cy + 1) * cw],
    }
}

/// Writes luma and block chroma from the packed-table entries of two index rows.
#[inline(always)]
fn colour_blocks<const N: usize>(
    i0: &[u16],
    i1: &[u16],
    lut: &[u32; N],
    y0: &mut [u8],
    y1: &mut [u8],
    u: &mut [u8],
    v: &mut [u8],
) {
    let blocks = i0
        .chunks_exact(2)
        .zip(i1.chunks_exact(2))
        .zip(y0.chunks_exact_mut(2).zip(y1.chunks_exact_mut(2)))
        .zip(u.iter_mut().zip(v.iter_mut()));
    for (((a, b), (ya, yb)), (cu, cv)) in blocks {
        let e00 = lut[usize::from(a[0]) % N];
        let e01 = lut[usize::from(a[1]) % N];
        let e10 = lut[usize::from(b[0]) % N];
        let e11 = lut[usize::from(b[1]) % N];
        ya[0] = e00 as u8;
        ya[1] = e01 as u8;
        yb[0] = e10 as u8;
        yb[1] = e11 as u8;
        (*cu, *cv) = block_chroma(e00 + e01 + e10 + e11);
    }
}

/// One Mono16 row pair through the packed colour table; with `sat_at`, raw values at or
/// above it use the table's [`SATURATED`] slot.
pub(crate) fn mono16_colour_pair(
    lin: Linear16,
    src0: &[u8],
    src1: &[u8],
    out: RowPair<'_>,
    lut: &[u32; TABLE_LEN],
    sat_at: Option<u16>,
    ahead: Ahead<'_>,
) {
    #[cfg(target_arch = "x86_64")]
    let Some(out) = avx2::mono16_colour_pair(lin, src0, src1, out, lut, sat_at, ahead) else {
        return;
    };
    let _ = ahead;
    match sat_at {
        Some(at) => mono16_colour_pair_impl::<true>(lin, src0, src1, out, lut, at),
        None => mono16_colour_pair_impl::<false>(lin, src0, src1, out, lut, 0),
    }
}

#[inline(always)]
fn mono16_colour_pair_impl<const SAT: bool>(
    lin: Linear16,
    src0: &[u8],
    src1: &[u8],
    out: RowPair<'_>,
    lut: &[u32; TABLE_LEN],
    sat_at: u16,
) {
    let (mut i0, mut i1) = ([0u16; CHUNK], [0u16; CHUNK]);
    let chunks = src0
        .chunks(2 * CHUNK)
        .zip(src1.chunks(2 * CHUNK))
        .zip(out.y0.chunks_mut(CHUNK).zip(out.y1.chunks_mut(CHUNK)))
        .zip(out.u.chunks_mut(CHUNK / 2).zip(out.v.chunks_mut(CHUNK / 2)));
    for (((s0, s1), (y0, y1)), (u, v)) in chunks {
        let n = y0.len();
        lin.index::<SAT>(s0, &mut i0[..n], sat_at);
        lin.index::<SAT>(s1, &mut i1[..n], sat_at);
        colour_blocks(&i0[..n], &i1[..n], lut, y0, y1, u, v);
    }
}

/// One Mono16 row pair of the saturation map through a gamma curve: AVX-512 computes
/// grey levels from `curve` and paints the saturated pixels; elsewhere (and for the
/// rows' tails) the packed table, which holds the same levels and the warning colour.
// The rows, two forms of the map, the saturation level and the rows to prefetch:
// bundling them would only move the list into a struct built at the one call site.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mono16_saturation_gamma_pair(
    lin: Linear16,
    src0: &[u8],
    src1: &[u8],
    out: RowPair<'_>,
    packed: &[u32; TABLE_LEN],
    curve: &GammaCurve,
    sat_at: u16,
    ahead: Ahead<'_>,
) {
    #[allow(unused_mut)]
    let mut out = out;
    #[cfg(target_arch = "x86_64")]
    let done = avx512::mono16_saturation_pair(lin, src0, src1, &mut out, curve, sat_at, ahead);
    #[cfg(not(target_arch = "x86_64"))]
    let done = {
        let _ = curve;
        0
    };
    mono16_colour_pair(
        lin,
        &src0[2 * done..],
        &src1[2 * done..],
        out.skip(done),
        packed,
        Some(sat_at),
        ahead.skip(2 * done),
    );
}

/// One Mono8 row pair through a 256-entry packed colour table.
pub(crate) fn mono8_colour_pair(src0: &[u8], src1: &[u8], out: RowPair<'_>, lut: &[u32; 256]) {
    let (mut i0, mut i1) = ([0u16; CHUNK], [0u16; CHUNK]);
    let chunks = src0
        .chunks(CHUNK)
        .zip(src1.chunks(CHUNK))
        .zip(out.y0.chunks_mut(CHUNK).zip(out.y1.chunks_mut(CHUNK)))
        .zip(out.u.chunks_mut(CHUNK / 2).zip(out.v.chunks_mut(CHUNK / 2)));
    for (((s0, s1), (y0, y1)), (u, v)) in chunks {
        let n = y0.len();
        for (d, &s) in i0.iter_mut().zip(s0) {
            *d = u16::from(s);
        }
        for (d, &s) in i1.iter_mut().zip(s1) {
            *d = u16::from(s);
        }
        colour_blocks(&i0[..n], &i1[..n], lut, y0, y1, u, v);
    }
}

/// Chroma of a 2x2 block holding `n` saturated (red) pixels and `4 - n` grey ones,
/// indexed by `n`: grey contributes neutral chroma whatever its luma.
fn saturation_chroma() -> [(u8, u8); 5] {
    let grey = pack(0, 256, 256);
    let red = saturated_entry();
    std::array::from_fn(|n| block_chroma(red * n as u32 + grey * (4 - n as u32)))
}

/// Largest raw sample of a byte row (a vectorised reduction).
#[inline(always)]
fn max_sample(src: &[u8]) -> u16 {
    samples(src).fold(0, u16::max)
}

/// One Mono16 row pair of the saturation map with a linear (gamma 1) grey. Saturated
/// pixels (`raw >= sat_at`) are rare, so the rows are first mapped exactly like the grey
/// map, and only when a row pair's largest raw value reaches `sat_at` are its chunks
/// revisited to paint those pixels and their blocks' chroma. The common case costs one
/// extra max reduction per row; per-chunk work would cost as much as the mapping.
pub(crate) fn mono16_saturation_pair(
    lin: Linear16,
    src0: &[u8],
    src1: &[u8],
    out: RowPair<'_>,
    sat_at: u16,
    ahead: Ahead<'_>,
) {
    #[cfg(target_arch = "x86_64")]
    let Some(out) = avx2::mono16_saturation_pair(lin, src0, src1, out, sat_at, ahead) else {
        return;
    };
    let _ = ahead;
    mono16_saturation_pair_scalar(lin, src0, src1, out, sat_at);
}

/// [`mono16_saturation_pair`] without SIMD (fallback, SIMD tails and test reference).
fn mono16_saturation_pair_scalar(
    lin: Linear16,
    src0: &[u8],
    src1: &[u8],
    out: RowPair<'_>,
    sat_at: u16,
) {
    lin.apply_impl::<false>(src0, out.y0);
    lin.apply_impl::<false>(src1, out.y1);
    out.u.fill(128);
    out.v.fill(128);
    if max_sample(src0).max(max_sample(src1)) < sat_at {
        return;
    }
    let sat_y = saturated_entry() as u8;
    let chroma = saturation_chroma();
    let chunks = src0
        .chunks(2 * CHUNK)
        .zip(src1.chunks(2 * CHUNK))
        .zip(out.y0.chunks_mut(CHUNK).zip(out.y1.chunks_mut(CHUNK)))
        .zip(out.u.chunks_mut(CHUNK / 2).zip(out.v.chunks_mut(CHUNK / 2)));
    for (((s0, s1), (y0, y1)), (u, v)) in chunks {
        if max_sample(s0).max(max_sample(s1)) < sat_at {
            continue;
        }
        let out = RowPair { y0, y1, u, v };
        paint_saturated(s0, s1, out, sat_at, sat_y, &chroma);
    }
}

/// Paints the pixels of a (grey-mapped) row-pair chunk at or above `sat_at` with luma
/// `sat_y`, and the chroma of their blocks from `chroma` (by saturated-pixel count).
fn paint_saturated(
    s0: &[u8],
    s1: &[u8],
    out: RowPair<'_>,
    sat_at: u16,
    sat_y: u8,
    chroma: &[(u8, u8); 5],
) {
    let sat = |s: &[u8]| u16::from_le_bytes([s[0], s[1]]) >= sat_at;
    let RowPair { y0, y1, u, v } = out;
    for (src, y) in [(s0, y0), (s1, y1)] {
        for (px, y) in src.chunks_exact(2).zip(y.iter_mut()) {
            if sat(px) {
                *y = sat_y;
            }
        }
    }
    let blocks = s0
        .chunks_exact(4)
        .zip(s1.chunks_exact(4))
        .zip(u.iter_mut().zip(v.iter_mut()));
    for ((a, b), (cu, cv)) in blocks {
        let count = [&a[..2], &a[2..], &b[..2], &b[2..]]
            .into_iter()
            .filter(|px| sat(px))
            .count();
        (*cu, *cv) = chroma[count];
    }
}

/// BT.601 limited-range RGB -> I420 with integer coefficients (the classic
/// `(66, 129, 25)` set); chroma from the 2x2 average. `lut` applies the display window
/// (and gamma) to each channel first.
pub(crate) fn rgb_pair(src0: &[u8], src1: &[u8], out: RowPair<'_>, lut: &[u8; 256]) {
    let blocks = src0
        .chunks_exact(6)
        .zip(src1.chunks_exact(6))
        .zip(out.y0.chunks_exact_mut(2).zip(out.y1.chunks_exact_mut(2)))
        .zip(out.u.iter_mut().zip(out.v.iter_mut()));
    for (((top, bottom), (y_top, y_bottom)), (cu, cv)) in blocks {
        let (mut rs, mut gs, mut bs) = (0i32, 0i32, 0i32);
        for (row, y_row) in [(top, y_top), (bottom, y_bottom)] {
            for (p, y) in row.chunks_exact(3).zip(y_row.iter_mut()) {
                let r = i32::from(lut[usize::from(p[0])]);
                let g = i32::from(lut[usize::from(p[1])]);
                let b = i32::from(lut[usize::from(p[2])]);
                *y = (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8;
                rs += r;
                gs += g;
                bs += b;
            }
        }
        // Sums of 4 pixels: the extra >> 2 averages them.
        *cu = (((-38 * rs - 74 * gs + 112 * bs + 512) >> 10) + 128) as u8;
        *cv = (((112 * rs - 94 * gs - 18 * bs + 512) >> 10) + 128) as u8;
    }
}

/// Exact `(x + n / 2) / n` for the box average without a ~40-cycle 64-bit division:
/// a shift for powers of two (binning 2, 4, 8), else a multiply by
/// `m = ceil(2^47 / n)`. With `x < n * 2^16` (a block sum plus rounding),
/// `x * m < 2^64` and the error `x * (m - 2^47 / n) / 2^47 < n / 2^31` stays below the
/// `1 / n` that would change `floor(x / n)` as long as `n^2 < 2^31`. Bigger blocks
/// (factor > 215, i.e. frames above 3440 px on each side shrunk to 16 px) divide.
#[derive(Debug, Clone, Copy)]
enum RoundDiv {
    Shift(u32),
    Multiply { n: u64, m: u64 },
    Divide(u64),
}

impl RoundDiv {
    fn new(n: u64) -> Self {
        if n.is_power_of_two() {
            RoundDiv::Shift(n.trailing_zeros())
        } else if n * n < 1 << 31 {
            RoundDiv::Multiply {
                n,
                m: (1u64 << 47).div_ceil(n),
            }
        } else {
            RoundDiv::Divide(n)
        }
    }

    #[inline(always)]
    fn apply(self, sum: u64) -> u64 {
        match self {
            RoundDiv::Shift(s) => (sum + ((1 << s) >> 1)) >> s,
            RoundDiv::Multiply { n, m } => ((sum + n / 2) * m) >> 47,
            RoundDiv::Divide(n) => (sum + n / 2) / n,
        }
    }
}

/// Scratch buffers for [`downscale`], kept between frames.
#[derive(Debug, Clone, Default)]
pub(crate) struct DownscaleScratch {
    /// Per source column: sum over the rows of the current block.
    col_sum: Vec<u32>,
    /// Per source column: max over the rows of the current block (saturation only).
    col_max: Vec<u16>,
}

/// Box-averages `factor` x `factor` blocks of `src` (same pixel format) into `dst`,
/// which becomes a tightly packed `out_w` x `out_h` image of `format`. `src` starts at
/// the top-left source pixel and has rows `stride` bytes apart.
///
/// With `saturate_at`, a block holding any sample at or above it becomes `saturate_at`,
/// so that the saturation warning survives binning (mono formats only).
///
/// Two passes per output row: source rows are summed into 32-bit column sums
/// (vectorised; a column sum is at most `factor * 65535`, which fits because a frame's
/// side cannot exceed 2^16 times the 16-pixel minimum output), then each output sample
/// sums `factor` columns and divides with rounding. With AVX2 the same code is compiled
/// for 256-bit vectors, and Mono16 2x2 binning (the common case) is one pass over each
/// row pair instead (`avx2::bin2_mono16`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn downscale(
    format: PixelFormat,
    src: &[u8],
    stride: usize,
    factor: usize,
    size: (usize, usize),
    saturate_at: Option<u16>,
    scratch: &mut DownscaleScratch,
    dst: &mut Vec<u8>,
) {
    #[cfg(target_arch = "x86_64")]
    if avx2::downscale(format, src, stride, factor, size, saturate_at, scratch, dst) {
        return;
    }
    downscale_impl(format, src, stride, factor, size, saturate_at, scratch, dst);
}

/// [`downscale`], inlined into each instruction set's version.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn downscale_impl(
    format: PixelFormat,
    src: &[u8],
    stride: usize,
    factor: usize,
    (out_w, out_h): (usize, usize),
    saturate_at: Option<u16>,
    scratch: &mut DownscaleScratch,
    dst: &mut Vec<u8>,
) {
    let (channels, wide) = match format {
        PixelFormat::Mono8 => (1, false),
        PixelFormat::Mono16 { .. } => (1, true),
        PixelFormat::Rgb8 => (3, false),
    };
    let bytes = if wide { 2 } else { 1 };
    let used = out_w * factor * channels; // source samples per row that are averaged
    let div = RoundDiv::new((factor * factor) as u64);
    let saturate_at = saturate_at.filter(|_| channels == 1);
    dst.resize(out_w * out_h * channels * bytes, 0);
    let col_sum = &mut scratch.col_sum;
    let col_max = &mut scratch.col_max;
    col_sum.resize(used, 0);
    col_max.resize(if saturate_at.is_some() { used } else { 0 }, 0);
    let out_row_bytes = out_w * channels * bytes;
    for (oy, dst_row) in dst.chunks_exact_mut(out_row_bytes).enumerate() {
        col_sum.fill(0);
        col_max.fill(0);
        for sy in oy * factor..(oy + 1) * factor {
            let row = &src[sy * stride..sy * stride + used * bytes];
            if wide {
                for (a, s) in col_sum.iter_mut().zip(samples(row)) {
                    *a += u32::from(s);
                }
                if saturate_at.is_some() {
                    for (m, s) in col_max.iter_mut().zip(samples(row)) {
                        *m = (*m).max(s);
                    }
                }
            } else {
                for (a, &s) in col_sum.iter_mut().zip(row) {
                    *a += u32::from(s);
                }
                if saturate_at.is_some() {
                    for (m, &s) in col_max.iter_mut().zip(row) {
                        *m = (*m).max(u16::from(s));
                    }
                }
            }
        }
        let put = |dst_row: &mut [u8], i: usize, avg: u64| {
            if wide {
                dst_row[2 * i..2 * i + 2].copy_from_slice(&(avg as u16).to_le_bytes());
            } else {
                dst_row[i] = avg as u8;
            }
        };
        match (channels, factor, saturate_at) {
            (1, 2, None) => block_means::<2>(col_sum, dst_row, wide),
            (1, 3, None) => block_means::<3>(col_sum, dst_row, wide),
            (1, 4, None) => block_means::<4>(col_sum, dst_row, wide),
            (1, 5, None) => block_means::<5>(col_sum, dst_row, wide),
            (1, 6, None) => block_means::<6>(col_sum, dst_row, wide),
            (1, 7, None) => block_means::<7>(col_sum, dst_row, wide),
            (1, 8, None) => block_means::<8>(col_sum, dst_row, wide),
            (1, _, _) => {
                for (o, block) in col_sum.chunks_exact(factor).enumerate() {
                    let sum: u64 = block.iter().map(|&s| u64::from(s)).sum();
                    let mut avg = div.apply(sum);
                    if let Some(at) = saturate_at {
                        let block_max = col_max[o * factor..(o + 1) * factor]
                            .iter()
                            .fold(0, |a, &b| a.max(b));
                        if block_max >= at {
                            avg = u64::from(at);
                        }
                    }
                    put(dst_row, o, avg);
                }
            }
            _ => {
                for (o, block) in col_sum.chunks_exact(factor * channels).enumerate() {
                    let mut sum = [0u64; 3];
                    for px in block.chunks_exact(3) {
                        for (s, &v) in sum.iter_mut().zip(px) {
                            *s += u64::from(v);
                        }
                    }
                    for (c, s) in sum.into_iter().enumerate() {
                        put(dst_row, o * 3 + c, div.apply(s));
                    }
                }
            }
        }
    }
}

/// Mono output row from column sums of `F`-row blocks: `F` is a constant so that the
/// block sum unrolls and the division by `F * F` becomes a multiply (factors up to 8
/// cover binning and most size limits; larger ones take the generic loop).
#[inline(always)]
fn block_means<const F: usize>(col_sum: &[u32], dst_row: &mut [u8], wide: bool) {
    // F * F * 65535 fits in u32 for F <= 8.
    let n = (F * F) as u32;
    let mean = |c: &[u32]| (c.iter().sum::<u32>() + n / 2) / n;
    if wide {
        for (d, c) in dst_row.chunks_exact_mut(2).zip(col_sum.chunks_exact(F)) {
            d.copy_from_slice(&(mean(c) as u16).to_le_bytes());
        }
    } else {
        for (d, c) in dst_row.iter_mut().zip(col_sum.chunks_exact(F)) {
            *d = mean(c) as u8;
        }
    }
}

/// Counts the samples of `view`, every `step`-th pixel in x and y, into `counts`
/// (`counts.len()` equal bins over `0..2^bits`, values above `max` clamped to it). RGB
/// counts the brightest channel of each pixel. Returns (samples, min, max) of the
/// sampled values; `(0, 0, 0)` when nothing was sampled.
pub(crate) fn sample_histogram(
    view: &View<'_>,
    step: usize,
    bits: u32,
    max: u32,
    counts: &mut [u32],
) -> (u64, u32, u32) {
    let step = step.max(1);
    let bins = counts.len();
    match view.format {
        PixelFormat::Mono8 => count_samples(view, step, bits, max, counts, |p| p[0].into()),
        PixelFormat::Mono16 { .. } if bins.is_power_of_two() && bins <= 1 << bits => {
            let max = max.min(u32::from(u16::MAX)) as u16;
            count_mono16(view, step, max, bits - bins.trailing_zeros(), counts)
        }
        PixelFormat::Mono16 { .. } => count_samples(view, step, bits, max, counts, |p| {
            u16::from_le_bytes([p[0], p[1]]).into()
        }),
        PixelFormat::Rgb8 => count_samples(view, step, bits, max, counts, |p| {
            p[0].max(p[1]).max(p[2]).into()
        }),
    }
}

/// [`sample_histogram`] of Mono16 into power-of-two bins (`v >> shift`), the auto
/// window's case (65536 samples per frame): a plain strided loop, and when each bin is
/// one raw value (`shift` 0, data of up to 12 bits) min and max come from the first and
/// last non-empty bins instead of two compare chains per sample. On the development
/// host the 2048x2048 auto-window histogram took 260-310 µs against 450-510 with
/// [`count_samples`] (bench group `histogram`, busy host).
fn count_mono16(
    view: &View<'_>,
    step: usize,
    max: u16,
    shift: u32,
    counts: &mut [u32],
) -> (u64, u32, u32) {
    counts.fill(0);
    let last = counts.len() - 1;
    let (mut lo, mut hi, mut n) = (u16::MAX, 0u16, 0u64);
    for y in (0..view.height).step_by(step) {
        let row = view.row(y);
        // The first pixel of each `step`-pixel chunk, as in `count_samples`.
        let mut i = 0;
        if shift == 0 {
            while i + 2 <= row.len() {
                let v = u16::from_le_bytes([row[i], row[i + 1]]).min(max);
                // v <= max < 2^bits = bins, so `min` only spares the bounds check.
                counts[usize::from(v).min(last)] += 1;
                n += 1;
                i += 2 * step;
            }
        } else {
            while i + 2 <= row.len() {
                let v = u16::from_le_bytes([row[i], row[i + 1]]).min(max);
                lo = lo.min(v);
                hi = hi.max(v);
                // In u32: `shift` is 16 for one bin over 16-bit data.
                counts[((u32::from(v) >> shift) as usize).min(last)] += 1;
                n += 1;
                i += 2 * step;
            }
        }
    }
    if n == 0 {
        return (0, 0, 0);
    }
    if shift == 0 {
        let first = counts.iter().position(|&c| c > 0).unwrap_or(0);
        let end = counts.iter().rposition(|&c| c > 0).unwrap_or(0);
        (lo, hi) = (first as u16, end as u16);
    }
    (n, u32::from(lo), u32::from(hi))
}

/// [`sample_histogram`] for one pixel format (`value` reads a pixel), so that the inner
/// loop has no format dispatch and keeps min/max in registers.
#[inline(always)]
fn count_samples(
    view: &View<'_>,
    step: usize,
    bits: u32,
    max: u32,
    counts: &mut [u32],
    value: impl Fn(&[u8]) -> u32,
) -> (u64, u32, u32) {
    counts.fill(0);
    let bins = counts.len();
    if bins == 0 {
        return (0, 0, 0);
    }
    // v * bins / 2^bits; a shift when bins is a power of two (the auto window's case).
    let shift = (bins.is_power_of_two() && bins <= 1 << bits).then(|| bits - bins.trailing_zeros());
    let bpp = view.format.bytes_per_pixel();
    let (mut lo, mut hi, mut n) = (u32::MAX, 0u32, 0u64);
    for y in (0..view.height).step_by(step) {
        // The first pixel of each `step`-pixel chunk: a sequential walk.
        for px in view.row(y).chunks(bpp * step) {
            let v = value(px).min(max);
            lo = lo.min(v);
            hi = hi.max(v);
            let bin = match shift {
                Some(s) => (v >> s) as usize,
                None => ((u64::from(v) * bins as u64) >> bits) as usize,
            };
            // v < 2^bits, so bin < bins.
            counts[bin.min(bins - 1)] += 1;
            n += 1;
        }
    }
    if n == 0 {
        (0, 0, 0)
    } else {
        (n, lo, hi)
    }
}

/// AVX2 versions of the Mono16 kernels, picked at run time (`is_x86_feature_detected`).
/// Each handles whole 32-pixel steps and hands the rest of the row to the scalar code,
/// which is also the fallback and the reference the tests compare them with byte for
/// byte. This module holds all of the crate's `unsafe` code.
///
/// - The window arithmetic and the 2x2 chroma sums, packing and saturation test run on
///   16 lanes of 16 bits / 8 lanes of 32 bits.
/// - Table lookups stay scalar loads: on the Cascade Lake development host a gathered
///   entry costs 1.1 ns with `vpgatherdd ymm` and 0.7 ns with AVX-512 `zmm`, against
///   0.33 ns for a scalar load (gathers are microcoded there, as with the Gather Data
///   Sampling mitigation). So each block of pixels is done
///   in passes: the vector code stores 12-bit indices to a small stack buffer, then
///   each entry is one index load plus one `vpinsrd` from the table (packed entries)
///   or one byte load and store (luma), then vector code packs luma and sums chroma.
///   Entries are gathered as (even, odd) pixel vectors, so the four entries of each
///   2x2 block line up lane for lane and chroma needs no horizontal shuffles.
///
/// Value-only intrinsics are safe inside `#[target_feature]` functions since Rust 1.87,
/// but the workspace's `rust-version` (1.85) still requires `unsafe` around them, hence
/// `unused_unsafe` is allowed here.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code, unused_unsafe)]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{
        downscale_impl, mono16_colour_pair_impl, mono16_luma_row_scalar,
        mono16_saturation_pair_scalar, paint_saturated, saturated_entry, saturation_chroma, Ahead,
        DownscaleScratch, Linear16, PixelFormat, RowPair, INDEX_MAX, SATURATED, TABLE_LEN,
    };

    /// Pixels per step: two 256-bit loads of 16 samples per row.
    const STEP: usize = 32;
    /// Pixels per index pass of the lookup loops (a multiple of `STEP`): the lookups
    /// read indices stored a whole pass earlier, not forwarded from a store in flight.
    /// 128 measured best (64: +5%, 256: +10%, 512: +20%).
    const BLOCK: usize = 128;

    /// Whether this CPU has AVX2 (std caches the CPUID probe: one atomic load).
    #[inline]
    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx2")
    }

    /// Runs [`luma_row`] if the CPU has AVX2 and the window is [`Linear16::Fast`];
    /// `false` if the caller must do the work.
    #[inline]
    pub(super) fn mono16_luma_row(
        lin: Linear16,
        src: &[u8],
        dst: &mut [u8],
        lut: &[u8; TABLE_LEN],
        ahead: Ahead<'_>,
    ) -> bool {
        if !available() || matches!(lin, Linear16::Wide(_)) {
            return false;
        }
        // SAFETY: AVX2 is available (checked just above).
        unsafe { luma_row(lin, src, dst, lut, ahead) };
        true
    }

    /// Runs [`apply_row`] if the CPU has AVX2 and the window is [`Linear16::Fast`];
    /// `false` if the caller must do the work.
    #[inline]
    pub(super) fn apply<const INVERT: bool>(
        lin: Linear16,
        src: &[u8],
        dst: &mut [u8],
        ahead: Ahead<'_>,
    ) -> bool {
        if !available() || matches!(lin, Linear16::Wide(_)) {
            return false;
        }
        // SAFETY: AVX2 is available (checked just above).
        unsafe { apply_row::<INVERT>(lin, src, dst, ahead) };
        true
    }

    /// Runs [`super::downscale`] with AVX2 if the CPU has it: [`bin2_mono16`] for
    /// Mono16 2x2 binning without the saturation warning, otherwise the generic code
    /// compiled for AVX2. `false` if the caller must do the work.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(super) fn downscale(
        format: PixelFormat,
        src: &[u8],
        stride: usize,
        factor: usize,
        size: (usize, usize),
        saturate_at: Option<u16>,
        scratch: &mut DownscaleScratch,
        dst: &mut Vec<u8>,
    ) -> bool {
        if !available() {
            return false;
        }
        let mono16 = matches!(format, PixelFormat::Mono16 { .. });
        // SAFETY (both): AVX2 is available (checked just above).
        if mono16 && factor == 2 && saturate_at.is_none() {
            unsafe { bin2_mono16(src, stride, size, dst) };
        } else {
            unsafe {
                downscale_generic(format, src, stride, factor, size, saturate_at, scratch, dst)
            };
        }
        true
    }

    /// The generic [`super::downscale`] with AVX2 enabled, so that its column sums and
    /// means vectorise over 256 bits.
    ///
    /// # Safety
    /// AVX2 must be available.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2")]
    unsafe fn downscale_generic(
        format: PixelFormat,
        src: &[u8],
        stride: usize,
        factor: usize,
        size: (usize, usize),
        saturate_at: Option<u16>,
        scratch: &mut DownscaleScratch,
        dst: &mut Vec<u8>,
    ) {
        downscale_impl(format, src, stride, factor, size, saturate_at, scratch, dst);
    }

    /// Mono16 2x2 binning in one pass per row pair: per output sample
    /// `(a + b + c + d + 2) / 4` of the block, as the generic code rounds. Each 32-bit
    /// lane adds its two 16-bit samples (horizontal neighbours), the rows add, and
    /// `vpackusdw` packs the means back to 16 bits. The next row pair is prefetched as
    /// in the mapping kernels ([`Ahead`]).
    ///
    /// # Safety
    /// AVX2 must be available.
    #[target_feature(enable = "avx2")]
    unsafe fn bin2_mono16(
        src: &[u8],
        stride: usize,
        (out_w, out_h): (usize, usize),
        dst: &mut Vec<u8>,
    ) {
        dst.resize(out_w * out_h * 2, 0);
        let row = |y: usize| &src[y * stride..y * stride + 4 * out_w];
        let ahead = |y: usize| src.get(y * stride..y * stride + 4 * out_w).unwrap_or(&[]);
        // Output samples per step: 16, from 32 samples (64 bytes) of each source row.
        let body = out_w - out_w % 16;
        for (oy, d) in dst.chunks_exact_mut(2 * out_w).enumerate() {
            let (r0, r1) = (row(2 * oy), row(2 * oy + 1));
            let next = Ahead::new(ahead(2 * oy + 2), ahead(2 * oy + 3));
            for x in (0..body).step_by(16) {
                next.fetch(4 * x);
                // SAFETY: x + 16 <= out_w, so r0/r1[4x..4x + 64] and d[2x..2x + 32] are in
                // bounds (each source row holds 4 * out_w bytes); the intrinsics need
                // AVX2, which this function enables.
                unsafe {
                    let pairs = |v: __m256i| {
                        let lo = _mm256_and_si256(v, _mm256_set1_epi32(0xffff));
                        _mm256_add_epi32(lo, _mm256_srli_epi32::<16>(v))
                    };
                    let mean = |at: usize| {
                        let sum = _mm256_add_epi32(pairs(load(r0, at)), pairs(load(r1, at)));
                        _mm256_srli_epi32::<2>(_mm256_add_epi32(sum, _mm256_set1_epi32(2)))
                    };
                    // Per 128-bit lane: 4 means of the first half, then 4 of the second.
                    let m = _mm256_packus_epi32(mean(4 * x), mean(4 * x + 32));
                    store(d, 2 * x, _mm256_permute4x64_epi64::<0b11_01_10_00>(m));
                }
            }
            let at = |r: &[u8], i: usize| u32::from(u16::from_le_bytes([r[2 * i], r[2 * i + 1]]));
            for x in body..out_w {
                let sum = at(r0, 2 * x) + at(r0, 2 * x + 1) + at(r1, 2 * x) + at(r1, 2 * x + 1);
                d[2 * x..2 * x + 2].copy_from_slice(&(((sum + 2) / 4) as u16).to_le_bytes());
            }
        }
    }

    /// Whether a row pair has the lengths of two full I420 rows (so an even width): the
    /// scalar code's handling of anything else (an odd last pixel) is left to it.
    fn whole_pair(src0: &[u8], src1: &[u8], out: &RowPair<'_>) -> bool {
        let n = out.y0.len();
        out.y1.len() == n
            && 2 * out.u.len() == n
            && 2 * out.v.len() == n
            && src0.len() == 2 * n
            && src1.len() == 2 * n
    }

    /// Runs [`colour_pair`] if the CPU has AVX2, the window is [`Linear16::Fast`] and
    /// the rows are whole I420 rows; otherwise hands `out` back to the caller.
    #[inline]
    pub(super) fn mono16_colour_pair<'a>(
        lin: Linear16,
        src0: &[u8],
        src1: &[u8],
        out: RowPair<'a>,
        lut: &[u32; TABLE_LEN],
        sat_at: Option<u16>,
        ahead: Ahead<'_>,
    ) -> Option<RowPair<'a>> {
        if !available() || matches!(lin, Linear16::Wide(_)) || !whole_pair(src0, src1, &out) {
            return Some(out);
        }
        // SAFETY: AVX2 is available (checked just above).
        unsafe {
            match sat_at {
                Some(at) => colour_pair::<true>(lin, src0, src1, out, lut, at, ahead),
                None => colour_pair::<false>(lin, src0, src1, out, lut, 0, ahead),
            }
        }
        None
    }

    /// Runs [`saturation_pair`] if the CPU has AVX2, the window is [`Linear16::Fast`]
    /// and the rows are whole I420 rows; otherwise hands `out` back to the caller.
    #[inline]
    pub(super) fn mono16_saturation_pair<'a>(
        lin: Linear16,
        src0: &[u8],
        src1: &[u8],
        out: RowPair<'a>,
        sat_at: u16,
        ahead: Ahead<'_>,
    ) -> Option<RowPair<'a>> {
        if !available() || matches!(lin, Linear16::Wide(_)) || !whole_pair(src0, src1, &out) {
            return Some(out);
        }
        // SAFETY: AVX2 is available (checked just above).
        unsafe { saturation_pair(lin, src0, src1, out, sat_at, ahead) };
        None
    }

    /// [`Linear16::Fast`] broadcast to 16-bit lanes.
    #[derive(Clone, Copy)]
    struct Window {
        lo: __m256i,
        range: __m256i,
        sh: __m128i,
        k: __m256i,
        sat_at: __m256i,
    }

    impl Window {
        /// `None` for [`Linear16::Wide`], which stays scalar.
        ///
        /// # Safety
        /// AVX2 must be available.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn new(lin: Linear16, sat_at: u16) -> Option<Self> {
            let Linear16::Fast { lo, range, sh, k } = lin else {
                return None;
            };
            // SAFETY: value-only intrinsics, and this function enables AVX2.
            unsafe {
                Some(Window {
                    lo: _mm256_set1_epi16(lo as i16),
                    range: _mm256_set1_epi16(range as i16),
                    sh: _mm_cvtsi32_si128(sh as i32),
                    k: _mm256_set1_epi16(k as i16),
                    sat_at: _mm256_set1_epi16(sat_at as i16),
                })
            }
        }

        /// `y7` of [`Linear16`] for 16 raw samples: the output with 7 fractional bits.
        ///
        /// # Safety
        /// AVX2 must be available.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn y7(&self, raw: __m256i) -> __m256i {
            // SAFETY: value-only intrinsics (AVX2 is enabled here), and a read through a
            // reference.
            unsafe {
                let v = _mm256_subs_epu16(raw, self.lo);
                let v = _mm256_sll_epi16(_mm256_min_epu16(v, self.range), self.sh);
                // A plain `self.k` lets LLVM hoist the widening of its generic mulhi out
                // of the caller's loop, after which it no longer forms one `vpmulhuw`
                // but widens, multiplies twice and packs (6 more shuffle-port uops).
                _mm256_mulhi_epu16(v, std::ptr::read_volatile(&self.k))
            }
        }

        /// Linear 8-bit output of 16 raw samples, in 16-bit lanes (as
        /// [`Linear16::apply`]).
        ///
        /// # Safety
        /// AVX2 must be available.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn luma(&self, raw: __m256i) -> __m256i {
            // SAFETY: value-only intrinsics, and this function enables AVX2.
            unsafe {
                let y =
                    _mm256_srli_epi16::<7>(_mm256_add_epi16(self.y7(raw), _mm256_set1_epi16(64)));
                _mm256_min_epu16(y, _mm256_set1_epi16(255))
            }
        }

        /// Whether each raw sample is at or above `sat_at` (all ones / zero lanes).
        ///
        /// # Safety
        /// AVX2 must be available.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn saturated(&self, raw: __m256i) -> __m256i {
            // SAFETY: value-only intrinsics, and this function enables AVX2.
            unsafe { _mm256_cmpeq_epi16(_mm256_max_epu16(raw, self.sat_at), raw) }
        }

        /// 12-bit table indices of 16 raw samples (as `Linear16::index`). Every lane is
        /// at most [`INDEX_MAX`], or [`SATURATED`] with `SAT`: the unchecked table
        /// lookups rely on it.
        ///
        /// # Safety
        /// AVX2 must be available.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn index<const SAT: bool>(&self, raw: __m256i) -> __m256i {
            // SAFETY: value-only intrinsics, and this function enables AVX2.
            unsafe {
                let i =
                    _mm256_srli_epi16::<3>(_mm256_add_epi16(self.y7(raw), _mm256_set1_epi16(4)));
                let i = _mm256_min_epu16(i, _mm256_set1_epi16(INDEX_MAX as i16));
                if SAT {
                    let sat = _mm256_set1_epi16(SATURATED as i16);
                    _mm256_blendv_epi8(i, sat, self.saturated(raw))
                } else {
                    i
                }
            }
        }
    }

    /// Sixteen little-endian samples from `src[at..at + 32]`.
    ///
    /// # Safety
    /// AVX2 must be available and `at + 32 <= src.len()`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load(src: &[u8], at: usize) -> __m256i {
        debug_assert!(at + 32 <= src.len());
        // SAFETY: the caller guarantees that the 32 bytes from `at` are in `src`.
        unsafe { _mm256_loadu_si256(src.as_ptr().add(at).cast()) }
    }

    /// Stores 32 bytes at `dst[at..at + 32]`.
    ///
    /// # Safety
    /// AVX2 must be available and `at + 32 <= dst.len()`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn store(dst: &mut [u8], at: usize, v: __m256i) {
        debug_assert!(at + 32 <= dst.len());
        // SAFETY: the caller guarantees that the 32 bytes from `at` are in `dst`.
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr().add(at).cast(), v) }
    }

    /// Stores 16 bytes at `dst[at..at + 16]`.
    ///
    /// # Safety
    /// AVX2 must be available and `at + 16 <= dst.len()`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn store16(dst: &mut [u8], at: usize, v: __m128i) {
        debug_assert!(at + 16 <= dst.len());
        // SAFETY: the caller guarantees that the 16 bytes from `at` are in `dst`.
        unsafe { _mm_storeu_si128(dst.as_mut_ptr().add(at).cast(), v) }
    }

    /// Low bytes of `even` and `odd` interleaved into the low 16 bits of each lane.
    ///
    /// # Safety
    /// AVX2 must be available.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn pairs(even: __m256i, odd: __m256i) -> __m256i {
        // SAFETY: value-only intrinsics, and this function enables AVX2.
        unsafe {
            let e = _mm256_and_si256(even, _mm256_set1_epi32(0xff));
            let o = _mm256_and_si256(_mm256_slli_epi32::<8>(odd), _mm256_set1_epi32(0xff00));
            _mm256_or_si256(e, o)
        }
    }

    /// 32 bytes in pixel order from two vectors of byte pairs in 32-bit lanes.
    ///
    /// # Safety
    /// AVX2 must be available.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn pack_pairs(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: value-only intrinsics, and this function enables AVX2.
        unsafe { _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(a, b)) }
    }

    /// 32 bytes in pixel order from two vectors of 16-bit values (at most 255).
    ///
    /// # Safety
    /// AVX2 must be available.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn pack_words(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: value-only intrinsics, and this function enables AVX2.
        unsafe { _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi16(a, b)) }
    }

    /// (Cb, Cr) of 16 blocks from two vectors of 8 packed block sums each, as 16 bytes
    /// of Cb in the low half and 16 bytes of Cr in the high half (as `block_chroma`).
    ///
    /// # Safety
    /// AVX2 must be available.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn block_chroma(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: value-only intrinsics, and this function enables AVX2.
        unsafe {
            // Lanes: cb a0-3, cb b0-3, cr a0-3, cr b0-3 | cb a4-7, cb b4-7, cr a4-7, cr b4-7.
            let bytes = _mm256_packus_epi16(
                _mm256_packus_epi32(cb(a), cb(b)),
                _mm256_packus_epi32(cr(a), cr(b)),
            );
            _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
        }
    }

    /// Rounded Cb of 8 packed block sums (bits 10..21), in 32-bit lanes.
    ///
    /// # Safety
    /// AVX2 must be available.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn cb(sum: __m256i) -> __m256i {
        // SAFETY: value-only intrinsics, and this function enables AVX2.
        unsafe {
            let c = _mm256_and_si256(_mm256_srli_epi32::<10>(sum), _mm256_set1_epi32(0x7ff));
            _mm256_srli_epi32::<3>(_mm256_add_epi32(c, _mm256_set1_epi32(4)))
        }
    }

    /// Rounded Cr of 8 packed block sums (bits 21..32), in 32-bit lanes.
    ///
    /// # Safety
    /// AVX2 must be available.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn cr(sum: __m256i) -> __m256i {
        // SAFETY: value-only intrinsics, and this function enables AVX2.
        unsafe {
            let c = _mm256_srli_epi32::<21>(sum);
            _mm256_srli_epi32::<3>(_mm256_add_epi32(c, _mm256_set1_epi32(4)))
        }
    }

    /// Sum of four vectors of packed entries.
    ///
    /// # Safety
    /// AVX2 must be available.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn sum4(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> __m256i {
        // SAFETY: value-only intrinsics, and this function enables AVX2.
        unsafe { _mm256_add_epi32(_mm256_add_epi32(a, b), _mm256_add_epi32(c, d)) }
    }

    /// Packed-table entries of the even and the odd pixels of 16 indices.
    ///
    /// # Safety
    /// AVX2 must be available, `i` must hold at least 16 indices, and the first 16
    /// must be below `TABLE_LEN`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn lookup16(i: &[u16], lut: &[u32; TABLE_LEN]) -> (__m256i, __m256i) {
        debug_assert!(i.len() >= 16);
        // SAFETY: the caller guarantees 16 indices, all inside the table.
        unsafe {
            let at = |k: usize| *lut.get_unchecked(usize::from(*i.get_unchecked(k))) as i32;
            (
                _mm256_setr_epi32(at(0), at(2), at(4), at(6), at(8), at(10), at(12), at(14)),
                _mm256_setr_epi32(at(1), at(3), at(5), at(7), at(9), at(11), at(13), at(15)),
            )
        }
    }

    /// [`Linear16::apply`] (or `apply_inverted`) with 256-bit vectors.
    ///
    /// # Safety
    /// AVX2 must be available.
    #[target_feature(enable = "avx2")]
    unsafe fn apply_row<const INVERT: bool>(
        lin: Linear16,
        src: &[u8],
        dst: &mut [u8],
        ahead: Ahead<'_>,
    ) {
        // SAFETY (all calls below): this function enables AVX2.
        let Some(w) = (unsafe { Window::new(lin, 0) }) else {
            return lin.apply_impl::<INVERT>(src, dst);
        };
        let n = dst.len().min(src.len() / 2);
        let body = n - n % STEP;
        for x in (0..body).step_by(STEP) {
            ahead.fetch(2 * x);
            // SAFETY: x + 32 <= n, so src[2x..2x + 64] and dst[x..x + 32] are in bounds.
            unsafe {
                let y = pack_words(w.luma(load(src, 2 * x)), w.luma(load(src, 2 * x + 32)));
                let y = if INVERT {
                    _mm256_xor_si256(y, _mm256_set1_epi8(-1))
                } else {
                    y
                };
                store(dst, x, y);
            }
        }
        lin.apply_impl::<INVERT>(&src[2 * body..], &mut dst[body..]);
    }

    /// [`super::mono16_luma_row`]: vector indices, then scalar byte lookups.
    ///
    /// # Safety
    /// AVX2 must be available.
    #[target_feature(enable = "avx2")]
    unsafe fn luma_row(
        lin: Linear16,
        src: &[u8],
        dst: &mut [u8],
        lut: &[u8; TABLE_LEN],
        ahead: Ahead<'_>,
    ) {
        // SAFETY (all calls below): this function enables AVX2.
        let Some(w) = (unsafe { Window::new(lin, 0) }) else {
            return mono16_luma_row_scalar(lin, src, dst, lut);
        };
        let n = dst.len().min(src.len() / 2);
        let body = n - n % STEP;
        let mut idx = [0u16; BLOCK];
        for (x0, d) in (0..body).step_by(BLOCK).zip(dst[..body].chunks_mut(BLOCK)) {
            let m = d.len();
            for (x, i) in (x0..x0 + m).step_by(STEP).zip(idx.chunks_exact_mut(STEP)) {
                ahead.fetch(2 * x);
                // SAFETY: x + 32 <= body <= n, so src[2x..2x + 64] is in bounds, and
                // `i` is 64 bytes.
                unsafe {
                    let p = i.as_mut_ptr().cast::<__m256i>();
                    _mm256_storeu_si256(p, w.index::<false>(load(src, 2 * x)));
                    _mm256_storeu_si256(p.add(1), w.index::<false>(load(src, 2 * x + 32)));
                }
            }
            // Keeps the indices in memory (see `colour_pair`).
            std::hint::black_box(&mut idx);
            for (d, &i) in d.iter_mut().zip(&idx[..m]) {
                // SAFETY: `Window::index` keeps every index at most INDEX_MAX, inside
                // the table.
                *d = unsafe { *lut.get_unchecked(usize::from(i)) };
            }
        }
        mono16_luma_row_scalar(lin, &src[2 * body..], &mut dst[body..], lut);
    }

    /// [`super::mono16_colour_pair`]: vector indices, scalar-load lookups, vector luma
    /// packing and chroma sums.
    ///
    /// # Safety
    /// AVX2 must be available.
    #[target_feature(enable = "avx2")]
    unsafe fn colour_pair<const SAT: bool>(
        lin: Linear16,
        src0: &[u8],
        src1: &[u8],
        out: RowPair<'_>,
        lut: &[u32; TABLE_LEN],
        sat_at: u16,
        ahead: Ahead<'_>,
    ) {
        // SAFETY (all calls below): this function enables AVX2.
        let Some(w) = (unsafe { Window::new(lin, sat_at) }) else {
            return mono16_colour_pair_impl::<SAT>(lin, src0, src1, out, lut, sat_at);
        };
        let RowPair { y0, y1, u, v } = out;
        let n = (y0.len().min(y1.len()))
            .min(src0.len().min(src1.len()) / 2)
            .min(2 * u.len().min(v.len()));
        let body = n - n % STEP;
        // Two passes per block: indices (vector) into `idx`, then lookups with luma and
        // chroma. Reading indices stored a pass earlier avoids failed store forwarding
        // (32-byte stores to 2-byte loads), worth ~30%.
        let mut idx = [[0u16; BLOCK]; 2];
        for x0 in (0..body).step_by(BLOCK) {
            let m = BLOCK.min(body - x0);
            let [idx0, idx1] = &mut idx;
            for (src, idx) in [(src0, idx0), (src1, idx1)] {
                for (x, i) in (x0..x0 + m).step_by(16).zip(idx.chunks_exact_mut(16)) {
                    // SAFETY: x + 16 <= body <= n, so src[2x..2x + 32] is in bounds, and
                    // `i` is 32 bytes.
                    unsafe {
                        let v = w.index::<SAT>(load(src, 2 * x));
                        _mm256_storeu_si256(i.as_mut_ptr().cast(), v);
                    }
                }
            }
            // Keeps the indices in memory: otherwise LLVM may forward the stores and
            // extract each index with `vpextrw` (two uops, one on the shuffle port).
            std::hint::black_box(&mut idx);
            let [idx0, idx1] = &idx;
            for x in (x0..x0 + m).step_by(STEP) {
                ahead.fetch(2 * x);
                let k = x - x0;
                // SAFETY: x + 32 <= body <= n, so y0/y1[x..x + 32] and
                // u/v[x/2..x/2 + 16] are in bounds; each `lookup16` gets 16 indices
                // from `Window::index` (k + 32 <= m <= BLOCK), all inside the table.
                unsafe {
                    let (e0a, o0a) = lookup16(&idx0[k..k + 16], lut);
                    let (e0b, o0b) = lookup16(&idx0[k + 16..k + 32], lut);
                    let (e1a, o1a) = lookup16(&idx1[k..k + 16], lut);
                    let (e1b, o1b) = lookup16(&idx1[k + 16..k + 32], lut);
                    store(y0, x, pack_pairs(pairs(e0a, o0a), pairs(e0b, o0b)));
                    store(y1, x, pack_pairs(pairs(e1a, o1a), pairs(e1b, o1b)));
                    let chroma = block_chroma(sum4(e0a, o0a, e1a, o1a), sum4(e0b, o0b, e1b, o1b));
                    store16(u, x / 2, _mm256_castsi256_si128(chroma));
                    store16(v, x / 2, _mm256_extracti128_si256::<1>(chroma));
                }
            }
        }
        let tail = RowPair { y0, y1, u, v }.skip(body);
        mono16_colour_pair_impl::<SAT>(
            lin,
            &src0[2 * body..],
            &src1[2 * body..],
            tail,
            lut,
            sat_at,
        );
    }

    /// [`super::mono16_saturation_pair`] in one pass: grey luma, neutral chroma and a
    /// saturation test per 32-pixel step; steps holding saturated pixels are then
    /// painted by the scalar code.
    ///
    /// # Safety
    /// AVX2 must be available.
    #[target_feature(enable = "avx2")]
    unsafe fn saturation_pair(
        lin: Linear16,
        src0: &[u8],
        src1: &[u8],
        out: RowPair<'_>,
        sat_at: u16,
        ahead: Ahead<'_>,
    ) {
        // SAFETY (all calls below): this function enables AVX2.
        let Some(w) = (unsafe { Window::new(lin, sat_at) }) else {
            return mono16_saturation_pair_scalar(lin, src0, src1, out, sat_at);
        };
        let RowPair { y0, y1, u, v } = out;
        let n = (y0.len().min(y1.len()))
            .min(src0.len().min(src1.len()) / 2)
            .min(2 * u.len().min(v.len()));
        let body = n - n % STEP;
        let sat_y = saturated_entry() as u8;
        let chroma = saturation_chroma();
        for x in (0..body).step_by(STEP) {
            ahead.fetch(2 * x);
            // SAFETY: x + 32 <= n, so src0/src1[2x..2x + 64], y0/y1[x..x + 32] and
            // u/v[x/2..x/2 + 16] are in bounds.
            let any = unsafe {
                let r0a = load(src0, 2 * x);
                let r0b = load(src0, 2 * x + 32);
                let r1a = load(src1, 2 * x);
                let r1b = load(src1, 2 * x + 32);
                store(y0, x, pack_words(w.luma(r0a), w.luma(r0b)));
                store(y1, x, pack_words(w.luma(r1a), w.luma(r1b)));
                let neutral = _mm_set1_epi8(-128);
                store16(u, x / 2, neutral);
                store16(v, x / 2, neutral);
                let sat = _mm256_or_si256(
                    _mm256_or_si256(w.saturated(r0a), w.saturated(r0b)),
                    _mm256_or_si256(w.saturated(r1a), w.saturated(r1b)),
                );
                _mm256_testz_si256(sat, sat) == 0
            };
            if any {
                let (s0, s1) = (&src0[2 * x..2 * x + 64], &src1[2 * x..2 * x + 64]);
                let step = RowPair {
                    y0: &mut y0[x..x + STEP],
                    y1: &mut y1[x..x + STEP],
                    u: &mut u[x / 2..x / 2 + STEP / 2],
                    v: &mut v[x / 2..x / 2 + STEP / 2],
                };
                paint_saturated(s0, s1, step, sat_at, sat_y, &chroma);
            }
        }
        let tail = RowPair { y0, y1, u, v }.skip(body);
        mono16_saturation_pair_scalar(lin, &src0[2 * body..], &src1[2 * body..], tail, sat_at);
    }
}

/// AVX-512 kernels for the colour maps and gamma (see the module).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear16_is_within_one_of_exact_rounding() {
        let mut windows = vec![
            (0, 4095),
            (0, 65535),
            (100, 355),
            (3, 17),
            (1000, 1001),
            (0, 1 << 20),
            (70000, 80000),
            (65534, 65535),
        ];
        windows.extend((1..65535).step_by(997).map(|r| (r / 3, r / 3 + r)));
        let src: Vec<u8> = (0..=65535u16).flat_map(u16::to_le_bytes).collect();
        let mut dst = vec![0u8; 65536];
        let mut inv = vec![0u8; 65536];
        let mut idx = vec![0u16; 65536];
        for (min, max) in windows {
            let w = DisplayWindow::new(min, max).unwrap();
            let map = Linear16::new(w);
            map.apply(&src, &mut dst, Ahead::default());
            map.apply_inverted(&src, &mut inv, Ahead::default());
            map.index::<false>(&src, &mut idx, 0);
            for (v, &got) in dst.iter().enumerate() {
                let exact = w.map(v as u32);
                assert!(
                    got.abs_diff(exact) <= 1,
                    "{min}..{max}: {v} -> {got}, exact {exact}"
                );
                assert_eq!(inv[v], 255 - got);
                // The 12-bit index is within 1/8 of an output step of exact.
                let exact_idx = w.index(v as u32);
                assert!(idx[v].abs_diff(exact_idx) <= 2, "{min}..{max}: {v}");
                if v as u32 <= min || v as u32 >= max {
                    assert_eq!(got, exact, "{min}..{max}: {v}");
                    assert_eq!(idx[v], exact_idx, "{min}..{max}: {v}");
                }
            }
        }
    }

    #[test]
    fn saturation_marks_only_at_or_above_threshold() {
        let map = Linear16::new(DisplayWindow::new(0, 4095).unwrap());
        // Left 2x2 block: one saturated pixel; right block: four (5000 counts too).
        let raw = [0u16, 4094, 4095, 5000, 4095, 7, 4095, 4095];
        let src: Vec<u8> = raw.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(max_sample(&src), 5000);
        let (mut y0, mut y1, mut u, mut v) = ([0u8; 4], [0u8; 4], [0u8; 2], [0u8; 2]);
        let out = RowPair {
            y0: &mut y0,
            y1: &mut y1,
            u: &mut u,
            v: &mut v,
        };
        mono16_saturation_pair(map, &src[..8], &src[8..], out, 4095, Ahead::default());
        assert_eq!((y0, y1), ([0, 255, 76, 76], [76, 0, 76, 76]));
        let [_, one, _, _, four] = saturation_chroma();
        assert_eq!((u, v), ([one.0, four.0], [one.1, four.1]));
        let raw = [0u16, 4094, 4095, 5000, 2048];
        let src: Vec<u8> = raw.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut idx = [0u16; 5];
        map.index::<true>(&src, &mut idx, 4095);
        // 4094 / 4095 * 4080 = 4079.0; 2048 / 4095 * 4080 = 2040.5.
        assert_eq!(idx, [0, 4079, SATURATED, SATURATED, 2041]);
    }

    /// xorshift64 bytes, the same sequence for every call with the same seed.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    /// Rows of raw Mono16 samples that exercise the window edges: random 16-bit,
    /// random 12-bit, all zero, all full scale, and values around `lo`/`hi`/`sat_at`.
    fn sample_rows(seed: u64, n: usize, (lo, hi): (u16, u16), sat_at: u16) -> Vec<Vec<u8>> {
        let rnd = noise(seed, 2 * n);
        let words = |f: &dyn Fn(usize, u16) -> u16| -> Vec<u8> {
            rnd.chunks_exact(2)
                .enumerate()
                .flat_map(|(i, b)| f(i, u16::from_le_bytes([b[0], b[1]])).to_le_bytes())
                .collect()
        };
        let near = [lo, hi, sat_at];
        vec![
            rnd.clone(),
            words(&|_, r| r & 0x0fff),
            vec![0; 2 * n],
            vec![0xff; 2 * n],
            words(&|i, r| near[i % 3].wrapping_add(r % 5).wrapping_sub(2)),
        ]
    }

    /// Window bounds covering the fast path's range of shifts and multipliers.
    const EDGE_WINDOWS: [(u32, u32); 10] = [
        (0, 1 << 20),
        (0, 4095),
        (100, 3000),
        (0, 65535),
        (65534, 65535),
        (3, 17),
        (1000, 1001),
        (4000, 4095),
        (0, 1),
        (12345, 54321),
    ];

    /// Row lengths around the SIMD step (32), block (256) and chunk (64) sizes.
    const LENGTHS: [usize; 17] = [
        0, 1, 2, 14, 30, 32, 33, 34, 62, 64, 96, 254, 255, 256, 258, 610, 2048,
    ];

    /// Whether the AVX2 kernels can be compared with the scalar ones on this machine.
    fn simd_available() -> bool {
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            return true;
        }
        eprintln!("no AVX2: SIMD kernels not tested");
        false
    }

    #[test]
    fn simd_luma_rows_equal_scalar() {
        if !simd_available() {
            return;
        }
        let lut: [u8; TABLE_LEN] = noise(7, TABLE_LEN).try_into().unwrap();
        for (w, &(min, max)) in EDGE_WINDOWS.iter().enumerate() {
            let lin = Linear16::new(DisplayWindow::new(min, max).unwrap());
            for (l, &n) in LENGTHS.iter().enumerate() {
                let seed = (w * 100 + l) as u64;
                for src in sample_rows(seed, n, (min as u16, max as u16), 4095) {
                    // Same garbage in both outputs: untouched bytes must match too.
                    let mut want = noise(seed + 1, n);
                    let mut got = want.clone();
                    mono16_luma_row_scalar(lin, &src, &mut want, &lut);
                    // The AVX2 lookups themselves (with AVX-512, `mono16_luma_row`
                    // evaluates the gamma curve instead of this random table).
                    #[cfg(target_arch = "x86_64")]
                    if !avx2::mono16_luma_row(lin, &src, &mut got, &lut, Ahead::new(&src, &[])) {
                        mono16_luma_row_scalar(lin, &src, &mut got, &lut);
                    }
                    assert_eq!(got, want, "{min}..{max}, {n} px");
                }
            }
        }
    }

    #[test]
    fn simd_linear_rows_equal_scalar() {
        if !simd_available() {
            return;
        }
        for (w, &(min, max)) in EDGE_WINDOWS.iter().enumerate() {
            let lin = Linear16::new(DisplayWindow::new(min, max).unwrap());
            for (l, &n) in LENGTHS.iter().enumerate() {
                let seed = (w * 100 + l) as u64;
                for src in sample_rows(seed, n, (min as u16, max as u16), 4095) {
                    let mut want = noise(seed + 1, n);
                    let mut got = want.clone();
                    lin.apply_impl::<false>(&src, &mut want);
                    lin.apply(&src, &mut got, Ahead::new(&src, &[]));
                    assert_eq!(got, want, "{min}..{max}, {n} px");
                    lin.apply_impl::<true>(&src, &mut want);
                    lin.apply_inverted(&src, &mut got, Ahead::default());
                    assert_eq!(got, want, "{min}..{max}, {n} px, inverted");
                }
            }
        }
    }

    /// Output buffers of one row pair, filled with the same noise for both kernels.
    fn pair_buffers(seed: u64, n: usize) -> [Vec<u8>; 4] {
        [
            noise(seed, n),
            noise(seed + 1, n),
            noise(seed + 2, n / 2),
            noise(seed + 3, n / 2),
        ]
    }

    fn as_pair(b: &mut [Vec<u8>; 4]) -> RowPair<'_> {
        let [y0, y1, u, v] = b;
        RowPair { y0, y1, u, v }
    }

    #[test]
    fn simd_colour_pairs_equal_scalar() {
        if !simd_available() {
            return;
        }
        // Random entries with the field ranges `pack` allows.
        let lut: [u32; TABLE_LEN] = std::array::from_fn(|i| {
            let r = noise(i as u64 + 99, 6);
            let field = |a: u8, b: u8| (u32::from(a) << 8 | u32::from(b)) % 511;
            pack(r[0], field(r[1], r[2]), field(r[3], r[4]))
        });
        for (w, &(min, max)) in EDGE_WINDOWS.iter().enumerate() {
            let lin = Linear16::new(DisplayWindow::new(min, max).unwrap());
            for (l, &n) in LENGTHS.iter().enumerate() {
                let seed = (w * 100 + l) as u64;
                for sat_at in [None, Some(4095), Some(255), Some(65535), Some(0)] {
                    let hl = (min as u16, max as u16);
                    let rows0 = sample_rows(seed, n, hl, sat_at.unwrap_or(4095));
                    let rows1 = sample_rows(seed + 50, n, hl, sat_at.unwrap_or(4095));
                    for (s0, s1) in rows0.iter().zip(&rows1) {
                        let mut want = pair_buffers(seed, n);
                        let mut got = want.clone();
                        let scalar = as_pair(&mut want);
                        match sat_at {
                            Some(at) => {
                                mono16_colour_pair_impl::<true>(lin, s0, s1, scalar, &lut, at)
                            }
                            None => mono16_colour_pair_impl::<false>(lin, s0, s1, scalar, &lut, 0),
                        }
                        mono16_colour_pair(
                            lin,
                            s0,
                            s1,
                            as_pair(&mut got),
                            &lut,
                            sat_at,
                            Ahead::new(s1, s0),
                        );
                        assert_eq!(got, want, "{min}..{max}, {n} px, sat {sat_at:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn simd_saturation_pairs_equal_scalar() {
        if !simd_available() {
            return;
        }
        for (w, &(min, max)) in EDGE_WINDOWS.iter().enumerate() {
            let lin = Linear16::new(DisplayWindow::new(min, max).unwrap());
            for (l, &n) in LENGTHS.iter().enumerate() {
                let seed = (w * 100 + l) as u64;
                for sat_at in [4095, 255, 65535, 1] {
                    let hl = (min as u16, max as u16);
                    let rows0 = sample_rows(seed, n, hl, sat_at);
                    let rows1 = sample_rows(seed + 50, n, hl, sat_at);
                    // Also a row pair where only one pixel saturates.
                    let mut lone = vec![0u8; 2 * n];
                    if n > 0 {
                        let at = 2 * (seed as usize % n);
                        lone[at..at + 2].copy_from_slice(&sat_at.to_le_bytes());
                    }
                    let pairs = rows0.iter().zip(&rows1).chain([(&lone, &rows1[2])]);
                    for (s0, s1) in pairs {
                        let mut want = pair_buffers(seed, n);
                        let mut got = want.clone();
                        mono16_saturation_pair_scalar(lin, s0, s1, as_pair(&mut want), sat_at);
                        mono16_saturation_pair(
                            lin,
                            s0,
                            s1,
                            as_pair(&mut got),
                            sat_at,
                            Ahead::new(s1, s0),
                        );
                        assert_eq!(got, want, "{min}..{max}, {n} px, sat {sat_at}");
                    }
                }
            }
        }
    }

    /// Whether the AVX-512 kernels can be compared with the scalar ones here.
    fn avx512_available() -> bool {
        #[cfg(target_arch = "x86_64")]
        if avx512::available() {
            return true;
        }
        eprintln!("no AVX-512 F/BW: AVX-512 kernels not tested");
        false
    }

    #[test]
    fn mono16_histogram_path_equals_the_generic_one() {
        for (width, height, stride_px) in [(37, 9, 40), (512, 64, 512), (1, 3, 1), (300, 1, 301)] {
            // Values over the whole 16-bit range, so that 12-bit data is clamped too.
            let data: Vec<u8> = noise(width as u64, 2 * stride_px * height);
            for bits in [12, 16, 10] {
                let format = PixelFormat::Mono16 {
                    bit_depth: bits as u8,
                };
                let view = View {
                    data: &data,
                    stride: 2 * stride_px,
                    width,
                    height,
                    format,
                };
                let max = format.max_value();
                let bins_all = 1 << bits;
                for (bins, step) in [(4096, 1), (4096, 3), (1024, 8), (bins_all, 2), (1, 5)] {
                    let mut want = vec![7; bins];
                    let generic = count_samples(&view, step, bits, max, &mut want, |p| {
                        u16::from_le_bytes([p[0], p[1]]).into()
                    });
                    let mut got = vec![9; bins];
                    let fast = sample_histogram(&view, step, bits, max, &mut got);
                    let what = format!("{width}x{height}, {bits} bits, {bins} bins, step {step}");
                    assert_eq!(fast, generic, "{what}");
                    assert!(got == want, "{what}: counts differ");
                }
            }
        }
    }

    #[test]
    fn colour_table_is_within_one_level_of_exact_viridis() {
        let t = ColourTable::new(&crate::viridis::VIRIDIS);
        for (l, &rgb) in crate::viridis::VIRIDIS.iter().enumerate() {
            let (want, got) = (ycbcr8(rgb), t.ycbcr(l as u8));
            for (w, g) in [(want.0, got.0), (want.1, got.1), (want.2, got.2)] {
                assert!(w.abs_diff(g) <= 1, "level {l}: {got:?} vs exact {want:?}");
            }
        }
        // The ends are exact. A grey ramp is exact but for its top segment (within one
        // level there), where the line would have to end on 256.
        assert_eq!(t.ycbcr(0), ycbcr8(crate::viridis::VIRIDIS[0]));
        assert_eq!(t.ycbcr(255), ycbcr8(crate::viridis::VIRIDIS[255]));
        let grey = ColourTable::new(&std::array::from_fn(|l| [l as u8; 3]));
        for l in 0..=255u8 {
            let (y, cb, cr) = grey.ycbcr(l);
            assert_eq!((cb, cr), (128, 128), "grey level {l}");
            assert!(
                y == l || (l >= 248 && y.abs_diff(l) == 1),
                "grey level {l}: {y}"
            );
        }
    }

    #[test]
    fn avx512_colour_level_pairs_equal_scalar() {
        if !avx512_available() {
            return;
        }
        let colours = ColourTable::new(&crate::viridis::VIRIDIS);
        // Random colours to catch lane mix-ups.
        let rgb = noise(5, 3 * 256);
        let random = ColourTable::new(&std::array::from_fn(|l| {
            [rgb[3 * l], rgb[3 * l + 1], rgb[3 * l + 2]]
        }));
        let linear = GammaCurve::new(|i| ((i + 8) >> 4) as u8);
        let curves = [0.1, 0.5, 2.2, 10.0].map(|g| GammaCurve::new(exact_gamma(g)));
        // Gamma 1 (the display tables' levels are the linear curve's), then gammas.
        let gammas = [None].into_iter().chain(curves.iter().map(Some));
        for (colours, gamma) in [&colours, &random]
            .into_iter()
            .flat_map(|c| gammas.clone().map(move |g| (c, g)))
        {
            let curve = gamma.unwrap_or(&linear);
            let packed: [u32; TABLE_LEN] =
                std::array::from_fn(|i| colours.packed(curve.level((i as u16).min(INDEX_MAX))));
            for (w, &(min, max)) in EDGE_WINDOWS.iter().enumerate() {
                let lin = Linear16::new(DisplayWindow::new(min, max).unwrap());
                for (l, &n) in LENGTHS.iter().enumerate() {
                    let seed = (w * 100 + l) as u64;
                    let hl = (min as u16, max as u16);
                    let rows0 = sample_rows(seed, n, hl, 4095);
                    let rows1 = sample_rows(seed + 50, n, hl, 4095);
                    for (s0, s1) in rows0.iter().zip(&rows1) {
                        let mut want = pair_buffers(seed, n);
                        let mut got = want.clone();
                        let scalar = as_pair(&mut want);
                        mono16_colour_pair_impl::<false>(lin, s0, s1, scalar, &packed, 0);
                        let pair = as_pair(&mut got);
                        mono16_colour_level_pair(
                            lin,
                            s0,
                            s1,
                            pair,
                            &packed,
                            colours,
                            gamma,
                            Ahead::new(s1, s0),
                        );
                        let g = gamma.map(|c| c.level(INDEX_MAX / 2));
                        assert_eq!(got, want, "{min}..{max}, {n} px, mid level {g:?}");
                    }
                }
            }
        }
    }

    /// `round(255 * (i / 4080)^gamma)`, as the display tables define gamma.
    fn exact_gamma(gamma: f64) -> impl Fn(u16) -> u8 {
        move |i| (255.0 * (f64::from(i) / f64::from(INDEX_MAX)).powf(gamma)).round() as u8
    }

    #[test]
    fn gamma_curve_is_within_one_level_monotonic_and_keeps_the_ends() {
        let linear = GammaCurve::new(|i| ((i + 8) >> 4) as u8);
        for i in 0..=INDEX_MAX {
            assert_eq!(linear.level(i), ((i + 8) >> 4) as u8, "linear at {i}");
        }
        // Every accepted gamma (0.1..=10) in steps of 0.05, the ends, and some between.
        let between = [0.123, 0.377, 0.71, 1.7321, 3.3, 7.77];
        for g in (2..=200)
            .map(|k| f64::from(k) * 0.05)
            .chain([0.1, 10.0])
            .chain(between)
        {
            let exact = exact_gamma(g);
            let curve = GammaCurve::new(&exact);
            let mut prev = 0;
            for i in 0..=INDEX_MAX {
                let got = curve.level(i);
                assert!(
                    got.abs_diff(exact(i)) <= 1,
                    "gamma {g} at {i}: {got} vs {}",
                    exact(i)
                );
                assert!(got >= prev, "gamma {g} decreases at {i}");
                prev = got;
            }
            assert_eq!(
                (curve.level(0), curve.level(INDEX_MAX)),
                (0, 255),
                "gamma {g}"
            );
        }
        // A curve that segment 0 cannot follow (white from index 60, inside the head,
        // but black at the segment's start, 56) still gets its best line there, not
        // a segment of zero words that would paint black.
        let step = GammaCurve::new(|i| if i < 60 { 0 } else { 255 });
        assert!(step.level(100) > 128, "{}", step.level(100));
        assert_eq!(
            (step.level(0), step.level(63), step.level(4080)),
            (0, 255, 255)
        );
    }

    #[test]
    fn avx512_gamma_kernels_equal_table_paths() {
        if !avx512_available() {
            return;
        }
        for gamma in [0.1, 0.45, 0.5, 2.2, 10.0] {
            let curve = GammaCurve::new(exact_gamma(gamma));
            let levels: [u8; TABLE_LEN] =
                std::array::from_fn(|i| curve.level((i as u16).min(INDEX_MAX)));
            let inverted = levels.map(|l| 255 - l);
            let mut grey = levels.map(|l| pack(l, 256, 256));
            grey[usize::from(SATURATED)] = saturated_entry();
            for (w, &(min, max)) in EDGE_WINDOWS.iter().enumerate() {
                let lin = Linear16::new(DisplayWindow::new(min, max).unwrap());
                for (l, &n) in LENGTHS.iter().enumerate() {
                    let seed = (w * 100 + l) as u64;
                    let hl = (min as u16, max as u16);
                    let what = format!("gamma {gamma}, {min}..{max}, {n} px");
                    for sat_at in [4095, 1000] {
                        let rows0 = sample_rows(seed, n, hl, sat_at);
                        let rows1 = sample_rows(seed + 50, n, hl, sat_at);
                        for (s0, s1) in rows0.iter().zip(&rows1) {
                            for (lut, invert) in [(&levels, false), (&inverted, true)] {
                                let mut want = noise(seed, n);
                                let mut got = want.clone();
                                mono16_luma_row_scalar(lin, s0, &mut want, lut);
                                mono16_luma_row(
                                    lin,
                                    s0,
                                    &mut got,
                                    lut,
                                    &curve,
                                    invert,
                                    Ahead::new(s1, &[]),
                                );
                                assert_eq!(got, want, "luma, invert {invert}, {what}");
                            }
                            let mut want = pair_buffers(seed, n);
                            let mut got = want.clone();
                            let scalar = as_pair(&mut want);
                            mono16_colour_pair_impl::<true>(lin, s0, s1, scalar, &grey, sat_at);
                            let pair = as_pair(&mut got);
                            mono16_saturation_gamma_pair(
                                lin,
                                s0,
                                s1,
                                pair,
                                &grey,
                                &curve,
                                sat_at,
                                Ahead::new(s1, s0),
                            );
                            assert_eq!(got, want, "saturation at {sat_at}, {what}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn block_chroma_rounds_the_average_of_four() {
        let e = |cb2, cr2| pack(0, cb2, cr2);
        assert_eq!(block_chroma(e(256, 256) * 4), (128, 128));
        assert_eq!(block_chroma(e(510, 0) * 4), (255, 0));
        // (170 + 3 * 256) / 8 = 117.25
        assert_eq!(block_chroma(e(170, 256) + e(256, 256) * 3), (117, 128));
        assert_eq!(saturation_chroma()[0], (128, 128));
        assert_eq!(saturation_chroma()[4], (85, 255));
    }

    /// Straightforward reference: per output sample, sum the block and divide.
    fn naive_downscale(
        format: PixelFormat,
        src: &[u8],
        stride: usize,
        f: usize,
        (w, h): (usize, usize),
    ) -> Vec<u8> {
        let (ch, bytes) = match format {
            PixelFormat::Mono8 => (1, 1),
            PixelFormat::Mono16 { .. } => (1, 2),
            PixelFormat::Rgb8 => (3, 1),
        };
        let mut out = Vec::new();
        for oy in 0..h {
            for ox in 0..w {
                for c in 0..ch {
                    let mut sum = 0u64;
                    for sy in oy * f..(oy + 1) * f {
                        for sx in ox * f..(ox + 1) * f {
                            let at = sy * stride + (sx * ch + c) * bytes;
                            sum += if bytes == 2 {
                                u64::from(u16::from_le_bytes([src[at], src[at + 1]]))
                            } else {
                                u64::from(src[at])
                            };
                        }
                    }
                    let n = (f * f) as u64;
                    let avg = (sum + n / 2) / n;
                    if bytes == 2 {
                        out.extend_from_slice(&(avg as u16).to_le_bytes());
                    } else {
                        out.push(avg as u8);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn downscale_matches_naive_average() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..200 * 90 * 3)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut scratch = DownscaleScratch::default();
        let mut dst = Vec::new();
        for format in [
            PixelFormat::Mono8,
            PixelFormat::Mono16 { bit_depth: 16 },
            PixelFormat::Rgb8,
        ] {
            let bpp = format.bytes_per_pixel();
            let stride = 200 / bpp * bpp; // whole pixels per row
                                          // 2..=8 take the constant-factor loops, 9 and 13 the generic one.
            for f in [2, 3, 4, 5, 6, 7, 8, 9, 13] {
                let size = (stride / bpp / f - 1, 90 / f);
                // Start one pixel in, as a region of interest would.
                let src = &data[bpp..];
                downscale(format, src, stride, f, size, None, &mut scratch, &mut dst);
                assert_eq!(dst, naive_downscale(format, src, stride, f, size), "{f}");
            }
        }
        // The multiply path is exact for every block sum of the largest block it takes.
        let n = 215 * 215;
        assert!(matches!(RoundDiv::new(n), RoundDiv::Multiply { .. }));
        let div = RoundDiv::new(n);
        for sum in (0..=n * 65535)
            .step_by(997)
            .chain([n * 65535, n / 2, n / 2 - 1])
        {
            assert_eq!(div.apply(sum), (sum + n / 2) / n, "{sum}/{n}");
        }
        for (n, sum) in [
            (4u64, 6u64),
            (9, 13),
            (9, 9 * 65535),
            (25, 12),
            (217 * 217, 1 << 31),
        ] {
            assert_eq!(RoundDiv::new(n).apply(sum), (sum + n / 2) / n, "{sum}/{n}");
        }
        for f in 3..=215u64 {
            let (n, div) = (f * f, RoundDiv::new(f * f));
            for sum in [
                0,
                n / 2 - 1,
                n / 2,
                n * 65535,
                n * 65535 - n / 2 - 1,
                n * 40000 + n / 2,
            ] {
                assert_eq!(div.apply(sum), (sum + n / 2) / n, "{sum}/{n}");
            }
        }
    }

    #[test]
    fn downscale_keeps_saturation_when_asked() {
        // Any factor: a block with one saturated sample becomes saturated.
        let fmt8 = PixelFormat::Mono8;
        let mut scratch = DownscaleScratch::default();
        let mut dst = Vec::new();
        for f in [2usize, 3, 9] {
            let mut src = vec![10u8; f * f * 2];
            src[f * 2 * (f - 1) + 1] = 255; // bottom row of the left block
            downscale(
                fmt8,
                &src,
                2 * f,
                f,
                (2, 1),
                Some(255),
                &mut scratch,
                &mut dst,
            );
            assert_eq!(dst, [255, 10], "{f}");
        }
        // 4x2 Mono16: one saturated pixel in the left 2x2 block.
        let raw: [u16; 8] = [4095, 0, 10, 10, 0, 0, 10, 10];
        let src: Vec<u8> = raw.iter().flat_map(|v| v.to_le_bytes()).collect();
        let fmt = PixelFormat::Mono16 { bit_depth: 12 };
        let mut scratch = DownscaleScratch::default();
        let mut dst = Vec::new();
        downscale(fmt, &src, 8, 2, (2, 1), None, &mut scratch, &mut dst);
        assert_eq!(dst, [0x00, 0x04, 10, 0]); // 1024 = 4095 / 4 rounded, and 10
        downscale(fmt, &src, 8, 2, (2, 1), Some(4095), &mut scratch, &mut dst);
        assert_eq!(dst, [0xff, 0x0f, 10, 0]);
    }
}
