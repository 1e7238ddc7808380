//! AVX-512 (F + BW) kernels for the Mono16 maps that need more than the linear window:
//! colour maps (with or without gamma), and gamma for the grey, inverted and saturation
//! maps.
//!
//! The AVX2 code looks each pixel up in a 4096-entry table with a scalar load (gathers
//! are microcoded on the development host), about a cycle per pixel. Here nothing is
//! looked up in memory:
//!
//! - a colour map is [`ColourTable`] in three registers, 32 linear segments per channel:
//!   per channel and 32 pixels one `vpermw` picks the segments and one `vpmaddubsw`
//!   interpolates (it replaced two 256-word tables in sixteen registers, four
//!   `vpermi2w` and three blends per table and 32 pixels: viridis took 122-141 µs
//!   against 64-102 now for 2048x128, docs/benchmarks.md);
//! - gamma is [`GammaCurve`] in four registers: the exact head and the 63 segments
//!   are one `vpermi2w` each, then one `vpmaddubsw` of the segment's `[start, rise]`
//!   with `[64, f]` interpolates (until the fifth session 128 knots, two permutes and
//!   a blend; until the sixth a rounded multiply, three uops more);
//! - a colour map's chroma is packed two steps at a time and gathered with one dword
//!   permute, four shuffle-port uops per 64 blocks where `vpmovdb` took eight.
//!
//! Results equal the table code byte for byte, because the tables are built from the
//! same curve and colours (tests in `kernels::tests`).
//!
//! Tried and dropped: gamma as a binary search over the curve's 255 thresholds with
//! `vpermw`/`vpermi2w` (eight dependent compare steps per vector). It is exact, but on
//! Cascade Lake it ran at 2.7 cycles per pixel, against about one for the table
//! lookups, and interleaving vectors would still leave ~64 uops per 32 pixels.
//!
//! Every function that uses intrinsics enables `avx512f,avx512bw` and is only called
//! after [`available`] said so.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::{
    paint_saturated, saturated_entry, saturation_chroma, Ahead, ColourTable, GammaCurve, Linear16,
    RowPair, GAMMA_HEAD, GAMMA_KNOT0,
};

/// Pixels per step: one 512-bit load of 32 samples per row.
const STEP: usize = 32;

/// Whether this CPU has AVX-512 F and BW and the environment does not set
/// `LUMACAST_NO_AVX512` (for CPUs that clock down for 512-bit code, and for comparing).
/// Probed once.
#[inline]
pub(super) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && std::env::var_os("LUMACAST_NO_AVX512").is_none()
    })
}

/// [`Linear16::Fast`] broadcast to 32 lanes of 16 bits.
#[derive(Clone, Copy)]
struct Window {
    lo: __m512i,
    range: __m512i,
    /// `1 << sh`: the normalising shift as a multiply, which runs on port 0 where
    /// `vpsllw` by a register count also needs the shuffle port (port 5), the one
    /// the table permutes saturate.
    scale: __m512i,
    k: __m512i,
}

impl Window {
    /// `None` for [`Linear16::Wide`], which stays scalar.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn new(lin: Linear16) -> Option<Self> {
        let Linear16::Fast { lo, range, sh, k } = lin else {
            return None;
        };
        Some(Window {
            lo: _mm512_set1_epi16(lo as i16),
            range: _mm512_set1_epi16(range as i16),
            scale: _mm512_set1_epi16((1u16 << sh) as i16),
            k: _mm512_set1_epi16(k as i16),
        })
    }

    /// `y7` of [`Linear16`] for 32 raw samples: the output with 7 fractional bits, at
    /// most `255 << 7` (`k` rounds up by less than one unit of `range << sh`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn y7(&self, raw: __m512i) -> __m512i {
        let v = _mm512_min_epu16(_mm512_subs_epu16(raw, self.lo), self.range);
        let v = _mm512_mullo_epi16(v, self.scale);
        // A plain `self.k` lets LLVM widen the multiply to 32-bit lanes (two `vpmovzxwd`,
        // two multiplies and two packs instead of one `vpmulhuw`), as in the AVX2 code.
        // SAFETY: a read through a reference.
        _mm512_mulhi_epu16(v, unsafe { std::ptr::read_volatile(&self.k) })
    }

    /// `Linear16::index - GAMMA_KNOT0` of 32 raw samples as signed words, for
    /// [`Curve::level`]: `(y7 + 4 - 8 GAMMA_KNOT0) >> 3` with an arithmetic shift is the
    /// 12-bit index `(y7 + 4) >> 3` with the subtraction folded in (`y7 <= 255 << 7`,
    /// so nothing wraps).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn past_knot0(&self, raw: __m512i) -> __m512i {
        let offset = _mm512_set1_epi16(4 - 8 * GAMMA_KNOT0 as i16);
        _mm512_srai_epi16::<3>(_mm512_add_epi16(self.y7(raw), offset))
    }

    /// 8-bit display levels of 32 raw samples: `round(index / 16)` of the 12-bit index,
    /// as the colour tables are built. `((y7 + 4) >> 3 + 8) >> 4 = (y7 + 68) >> 7`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn level(&self, raw: __m512i) -> __m512i {
        _mm512_srli_epi16::<7>(_mm512_add_epi16(self.y7(raw), _mm512_set1_epi16(68)))
    }
}

/// Stores the low bytes of two rows' 32 words (each at most 255) to `a` and `b`: one
/// pack and one qword permute, two shuffle-port uops where two `vpmovwb` take four.
///
/// # Safety
/// `a` and `b` must be valid for 32-byte writes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn store_rows(a: *mut u8, b: *mut u8, wa: __m512i, wb: __m512i) {
    // Per 128-bit lane: 8 bytes of `wa`, then 8 of `wb`.
    let p = _mm512_packus_epi16(wa, wb);
    let p = permq(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), p);
    // SAFETY: the caller guarantees 32 writable bytes at each.
    unsafe {
        _mm256_storeu_si256(a.cast(), _mm512_castsi512_si256(p));
        _mm256_storeu_si256(b.cast(), _mm512_extracti64x4_epi64::<1>(p));
    }
}

// An instruction in `asm!`: LLVM rewrites its intrinsic into sequences that are
// equivalent but load the shuffle port (port 5), the bottleneck of these loops.

/// `vpermq` of `v` by `idx`: LLVM splits `_mm512_permutexvar_epi64` feeding two 256-bit
/// stores into extracts, unpacks and two `vpermq ymm` (five port-5 uops, not one).
#[inline]
#[target_feature(enable = "avx512f")]
fn permq(idx: __m512i, v: __m512i) -> __m512i {
    let r: __m512i;
    // SAFETY: a register-only instruction of AVX-512 F, which this function enables.
    unsafe {
        std::arch::asm!(
            "vpermq {r}, {i}, {v}",
            r = lateout(zmm_reg) r,
            i = in(zmm_reg) idx,
            v = in(zmm_reg) v,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    r
}

/// [`GammaCurve`] in four registers.
struct Curve {
    /// The head rotated by [`GAMMA_KNOT0`]: word `j` holds the level of index
    /// `(j + GAMMA_KNOT0) % 64`, so that the permute can take `index - GAMMA_KNOT0`.
    head: [__m512i; 2],
    knots: [__m512i; 2],
}

impl Curve {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn new(c: &GammaCurve) -> Self {
        let head: [u16; 64] = std::array::from_fn(|j| c.head[(j + usize::from(GAMMA_KNOT0)) % 64]);
        Curve {
            head: registers(&head),
            knots: registers(&c.knots),
        }
    }

    /// [`GammaCurve::level`] of 32 indices given as `t = index - GAMMA_KNOT0` (from
    /// [`Window::past_knot0`]): the head and the segments are one word permute each,
    /// then one `vpmaddubsw` of the segment's word `[b, d]` with `[64, f]` and a shift
    /// interpolate, and the head's lanes keep the head's level.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn level(&self, t: __m512i) -> __m512i {
        // Both permutes read the low six bits: `t mod 64` for the rotated head, the
        // segment `t >> 6` (garbage in the head's lanes, where t < 0).
        let head = _mm512_permutex2var_epi16(self.head[0], t, self.head[1]);
        let s = _mm512_srli_epi16::<6>(t);
        let w = _mm512_permutex2var_epi16(self.knots[0], s, self.knots[1]);
        // [64, f] with f = t & 63: (t << 8 & 0x3f00) | 0x0040, one ternary-logic op.
        let weights = _mm512_ternarylogic_epi32::<0xea>(
            _mm512_slli_epi16::<8>(t),
            _mm512_set1_epi16(0x3f00),
            _mm512_set1_epi16(0x0040),
        );
        let m = _mm512_maddubs_epi16(w, weights);
        let in_segments =
            _mm512_cmpge_epi16_mask(t, _mm512_set1_epi16((GAMMA_HEAD - GAMMA_KNOT0) as i16));
        _mm512_mask_srli_epi16::<6>(head, in_segments, m)
    }
}

/// Loads 32 words (64 bytes) from `words`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn load_words(words: &[u16]) -> __m512i {
    assert!(words.len() >= 32);
    // SAFETY: `words` holds at least 32 words (64 bytes), checked above.
    unsafe { _mm512_loadu_si512(words.as_ptr().cast()) }
}

/// A word table of `32 * N` entries in `N` registers, for the permutes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn registers<const N: usize>(table: &[u16]) -> [__m512i; N] {
    std::array::from_fn(|j| load_words(&table[32 * j..32 * j + 32]))
}

/// [`ColourTable`] in registers: one word per segment and channel.
struct Colours {
    y: __m512i,
    cb: __m512i,
    cr: __m512i,
    /// `[8 - f, f]` for `f = j % 8`, word `j`: the interpolation weights by level.
    weights: __m512i,
}

impl Colours {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn new(t: &ColourTable) -> Self {
        let weights: [u16; 32] = std::array::from_fn(|j| (8 - j as u16 % 8) | (j as u16 % 8) << 8);
        Colours {
            y: load_words(&t.y),
            cb: load_words(&t.cb),
            cr: load_words(&t.cr),
            weights: load_words(&weights),
        }
    }

    /// Luma, Cb and Cr words of 32 levels, as [`ColourTable::at`]: per channel one
    /// `vpermw` picks the segment's word `[a, b]` and one `vpmaddubsw` with the
    /// level's weights `[8 - f, f]` gives `a (8 - f) + b f`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn of(&self, level: __m512i) -> (__m512i, __m512i, __m512i) {
        let s = _mm512_srli_epi16::<3>(level);
        // `vpermw` reads the low five bits of `level`; `weights` repeats every 8.
        let w = _mm512_permutexvar_epi16(level, self.weights);
        let channel = |words: __m512i| {
            let m = _mm512_maddubs_epi16(_mm512_permutexvar_epi16(s, words), w);
            _mm512_srli_epi16::<3>(m)
        };
        (channel(self.y), channel(self.cb), channel(self.cr))
    }
}

/// Runs [`colour_pair`] if the CPU has AVX-512 and the window is [`Linear16::Fast`];
/// returns how many leading pixels of the row pair it mapped (a multiple of 32).
/// `gamma` is the curve from window index to level, `None` at gamma 1.
#[inline]
pub(super) fn mono16_colour_level_pair(
    lin: Linear16,
    src0: &[u8],
    src1: &[u8],
    out: &mut RowPair<'_>,
    colours: &ColourTable,
    gamma: Option<&GammaCurve>,
    ahead: Ahead<'_>,
) -> usize {
    if !available() || matches!(lin, Linear16::Wide(_)) {
        return 0;
    }
    // SAFETY: AVX-512 F and BW are available (checked just above).
    unsafe {
        match gamma {
            None => colour_pair::<false>(lin, src0, src1, out, colours, None, ahead),
            Some(c) => colour_pair::<true>(lin, src0, src1, out, colours, Some(c), ahead),
        }
    }
}

/// Runs [`luma_row`] if the CPU has AVX-512 and the window is [`Linear16::Fast`];
/// returns how many leading pixels it mapped (a multiple of 64).
#[inline]
pub(super) fn mono16_luma_row(
    lin: Linear16,
    src: &[u8],
    dst: &mut [u8],
    curve: &GammaCurve,
    invert: bool,
    ahead: Ahead<'_>,
) -> usize {
    if !available() || matches!(lin, Linear16::Wide(_)) {
        return 0;
    }
    // SAFETY: AVX-512 F and BW are available (checked just above).
    unsafe {
        if invert {
            luma_row::<true>(lin, src, dst, curve, ahead)
        } else {
            luma_row::<false>(lin, src, dst, curve, ahead)
        }
    }
}

/// Runs [`saturation_pair`] if the CPU has AVX-512 and the window is
/// [`Linear16::Fast`]; returns how many leading pixels of the row pair it mapped (a
/// multiple of 32).
#[inline]
pub(super) fn mono16_saturation_pair(
    lin: Linear16,
    src0: &[u8],
    src1: &[u8],
    out: &mut RowPair<'_>,
    curve: &GammaCurve,
    sat_at: u16,
    ahead: Ahead<'_>,
) -> usize {
    if !available() || matches!(lin, Linear16::Wide(_)) {
        return 0;
    }
    // SAFETY: AVX-512 F and BW are available (checked just above).
    unsafe { saturation_pair(lin, src0, src1, out, curve, sat_at, ahead) }
}

/// Pixels a row-pair kernel can map with whole steps.
fn pair_body(src0: &[u8], src1: &[u8], out: &RowPair<'_>) -> usize {
    let n = (out.y0.len().min(out.y1.len()))
        .min(src0.len().min(src1.len()) / 2)
        .min(2 * out.u.len().min(out.v.len()));
    n - n % STEP
}

/// Grey (or inverted grey) levels of a Mono16 row through a gamma curve.
#[target_feature(enable = "avx512f,avx512bw")]
fn luma_row<const INVERT: bool>(
    lin: Linear16,
    src: &[u8],
    dst: &mut [u8],
    curve: &GammaCurve,
    ahead: Ahead<'_>,
) -> usize {
    let Some(w) = Window::new(lin) else {
        return 0;
    };
    let curve = Curve::new(curve);
    let n = dst.len().min(src.len() / 2);
    // Two steps at a time, so that their bytes are packed together (see `store_rows`).
    let body = n - n % (2 * STEP);
    let flip = _mm512_set1_epi16(if INVERT { 0xff } else { 0 });
    for x in (0..body).step_by(2 * STEP) {
        ahead.fetch(2 * x);
        ahead.fetch(2 * x + 64);
        // SAFETY: x + 64 <= body <= n, so src[2x..2x + 128] and dst[x..x + 64] are in
        // bounds.
        unsafe {
            let ra = _mm512_loadu_si512(src.as_ptr().add(2 * x).cast());
            let rb = _mm512_loadu_si512(src.as_ptr().add(2 * x + 64).cast());
            let la = _mm512_xor_si512(curve.level(w.past_knot0(ra)), flip);
            let lb = _mm512_xor_si512(curve.level(w.past_knot0(rb)), flip);
            let d = dst.as_mut_ptr().add(x);
            store_rows(d, d.add(STEP), la, lb);
        }
    }
    body
}

/// The saturation map of a Mono16 row pair through a gamma curve: grey levels and
/// neutral chroma, then the few steps holding raw values at or above `sat_at` are
/// painted by the scalar code (as the AVX2 kernel at gamma 1 does).
#[target_feature(enable = "avx512f,avx512bw")]
fn saturation_pair(
    lin: Linear16,
    src0: &[u8],
    src1: &[u8],
    out: &mut RowPair<'_>,
    curve: &GammaCurve,
    sat_at: u16,
    ahead: Ahead<'_>,
) -> usize {
    let Some(w) = Window::new(lin) else {
        return 0;
    };
    let curve = Curve::new(curve);
    let body = pair_body(src0, src1, out);
    let RowPair { y0, y1, u, v } = out;
    let sat = _mm512_set1_epi16(sat_at as i16);
    let sat_y = saturated_entry() as u8;
    let chroma = saturation_chroma();
    for x in (0..body).step_by(STEP) {
        ahead.fetch(2 * x);
        // SAFETY: x + 32 <= body, so src0/src1[2x..2x + 64], y0/y1[x..x + 32] and
        // u/v[x/2..x/2 + 16] are in bounds.
        let any = unsafe {
            let r0 = _mm512_loadu_si512(src0.as_ptr().add(2 * x).cast());
            let r1 = _mm512_loadu_si512(src1.as_ptr().add(2 * x).cast());
            let l0 = curve.level(w.past_knot0(r0));
            let l1 = curve.level(w.past_knot0(r1));
            store_rows(y0.as_mut_ptr().add(x), y1.as_mut_ptr().add(x), l0, l1);
            let neutral = _mm_set1_epi8(-128);
            _mm_storeu_si128(u.as_mut_ptr().add(x / 2).cast(), neutral);
            _mm_storeu_si128(v.as_mut_ptr().add(x / 2).cast(), neutral);
            (_mm512_cmpge_epu16_mask(r0, sat) | _mm512_cmpge_epu16_mask(r1, sat)) != 0
        };
        if any {
            let step = RowPair {
                y0: &mut y0[x..x + STEP],
                y1: &mut y1[x..x + STEP],
                u: &mut u[x / 2..x / 2 + STEP / 2],
                v: &mut v[x / 2..x / 2 + STEP / 2],
            };
            let (s0, s1) = (&src0[2 * x..2 * x + 64], &src1[2 * x..2 * x + 64]);
            paint_saturated(s0, s1, step, sat_at, sat_y, &chroma);
        }
    }
    body
}

/// Colour-mapped I420 of a Mono16 row pair: level (through the gamma curve if
/// `GAMMA`), then luma and block chroma.
#[target_feature(enable = "avx512f,avx512bw")]
fn colour_pair<const GAMMA: bool>(
    lin: Linear16,
    src0: &[u8],
    src1: &[u8],
    out: &mut RowPair<'_>,
    colours: &ColourTable,
    gamma: Option<&GammaCurve>,
    ahead: Ahead<'_>,
) -> usize {
    let Some(w) = Window::new(lin) else {
        return 0;
    };
    let curve = gamma.map(|c| Curve::new(c));
    let level = |raw: __m512i| match (GAMMA, &curve) {
        (true, Some(c)) => c.level(w.past_knot0(raw)),
        _ => w.level(raw),
    };
    let colours = Colours::new(colours);
    let body = pair_body(src0, src1, out);
    let RowPair { y0, y1, u, v } = out;
    let ones = _mm512_set1_epi16(1);
    // A step's 16 block sums of one chroma channel in 32-bit lanes: the two rows'
    // words add, `vpmaddwd` adds neighbouring words.
    let sum = |a: __m512i, b: __m512i| _mm512_madd_epi16(_mm512_add_epi16(a, b), ones);
    // (sum + 2) / 4 of 32 sums at most 1020, as words.
    let round = |s: __m512i| _mm512_srli_epi16::<2>(_mm512_add_epi16(s, _mm512_set1_epi16(2)));
    // Two steps at a time, so that their chroma packs together: per 128-bit lane `l`
    // the packs leave the dwords `[cb_a, cr_a, cb_b, cr_b]` of blocks `4l..4l + 4`,
    // and one dword permute gathers the 32 Cb and the 32 Cr bytes (four shuffle-port
    // uops per 64 blocks, where a `vpmovdb` per 16 takes eight).
    let gather = _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 1, 5, 9, 13, 3, 7, 11, 15);
    let pairs = body - body % (2 * STEP);
    for x in (0..pairs).step_by(2 * STEP) {
        ahead.fetch(2 * x);
        ahead.fetch(2 * x + 64);
        // SAFETY: x + 64 <= body, so src0/src1[2x..2x + 128], y0/y1[x..x + 64] and
        // u/v[x/2..x/2 + 32] are in bounds.
        unsafe {
            let load = |src: &[u8], at: usize| _mm512_loadu_si512(src.as_ptr().add(at).cast());
            let (ya0, cba0, cra0) = colours.of(level(load(src0, 2 * x)));
            let (ya1, cba1, cra1) = colours.of(level(load(src1, 2 * x)));
            store_rows(y0.as_mut_ptr().add(x), y1.as_mut_ptr().add(x), ya0, ya1);
            let (yb0, cbb0, crb0) = colours.of(level(load(src0, 2 * x + 64)));
            let (yb1, cbb1, crb1) = colours.of(level(load(src1, 2 * x + 64)));
            store_rows(
                y0.as_mut_ptr().add(x + STEP),
                y1.as_mut_ptr().add(x + STEP),
                yb0,
                yb1,
            );
            let a = round(_mm512_packus_epi32(sum(cba0, cba1), sum(cra0, cra1)));
            let b = round(_mm512_packus_epi32(sum(cbb0, cbb1), sum(crb0, crb1)));
            let uv = _mm512_permutexvar_epi32(gather, _mm512_packus_epi16(a, b));
            _mm256_storeu_si256(u.as_mut_ptr().add(x / 2).cast(), _mm512_castsi512_si256(uv));
            _mm256_storeu_si256(
                v.as_mut_ptr().add(x / 2).cast(),
                _mm512_extracti64x4_epi64::<1>(uv),
            );
        }
    }
    if pairs < body {
        let x = pairs;
        // SAFETY: x + 32 = body, so src0/src1[2x..2x + 64], y0/y1[x..x + 32] and
        // u/v[x/2..x/2 + 16] are in bounds.
        unsafe {
            let r0 = _mm512_loadu_si512(src0.as_ptr().add(2 * x).cast());
            let r1 = _mm512_loadu_si512(src1.as_ptr().add(2 * x).cast());
            let (l0, cb0, cr0) = colours.of(level(r0));
            let (l1, cb1, cr1) = colours.of(level(r1));
            store_rows(y0.as_mut_ptr().add(x), y1.as_mut_ptr().add(x), l0, l1);
            // Dwords [cb, cr] of blocks 4l..4l + 4 per lane `l`, as above.
            let c = round(_mm512_packus_epi32(sum(cb0, cb1), sum(cr0, cr1)));
            let c = _mm512_permutexvar_epi32(gather, _mm512_packus_epi16(c, c));
            _mm_storeu_si128(u.as_mut_ptr().add(x / 2).cast(), _mm512_castsi512_si128(c));
            _mm_storeu_si128(
                v.as_mut_ptr().add(x / 2).cast(),
                _mm512_extracti32x4_epi32::<2>(c),
            );
        }
    }
    body
}
