//! AVX-512 (F + BW) kernel for the colour maps at gamma 1.
//!
//! The AVX2 colour kernel looks each pixel's packed colour up with a scalar load and a
//! `vpinsrd` (gathers are microcoded on the development host), about a cycle per pixel
//! on the shuffle port. Here the 8-bit level's luma and chroma come from two 256-entry
//! word tables held in sixteen registers: four `vpermi2w` and three blends per table
//! and 32 pixels, no memory lookups. Results equal the scalar table code byte for byte
//! (tests in `kernels::tests`).
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

use super::{ColourTable, Linear16, RowPair, INDEX_MAX};

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
    sh: __m128i,
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
            sh: _mm_cvtsi32_si128(sh as i32),
            k: _mm512_set1_epi16(k as i16),
        })
    }

    /// 12-bit table indices (`0..=INDEX_MAX`) of 32 raw samples, as `Linear16::index`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn index(&self, raw: __m512i) -> __m512i {
        let v = _mm512_subs_epu16(raw, self.lo);
        let v = _mm512_sll_epi16(_mm512_min_epu16(v, self.range), self.sh);
        // A plain `self.k` lets LLVM widen the multiply to 32-bit lanes (two `vpmovzxwd`,
        // two multiplies and two packs instead of one `vpmulhuw`), as in the AVX2 code.
        // SAFETY: a read through a reference.
        let y7 = _mm512_mulhi_epu16(v, unsafe { std::ptr::read_volatile(&self.k) });
        let i = _mm512_srli_epi16::<3>(_mm512_add_epi16(y7, _mm512_set1_epi16(4)));
        _mm512_min_epu16(i, _mm512_set1_epi16(INDEX_MAX as i16))
    }
}

impl Window {
    /// 8-bit display levels of 32 raw samples: `round(index / 16)` of the 12-bit index,
    /// as the colour tables are built.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn level(&self, raw: __m512i) -> __m512i {
        let idx = self.index(raw);
        _mm512_srli_epi16::<4>(_mm512_add_epi16(idx, _mm512_set1_epi16(8)))
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

/// [`ColourTable`] in registers.
struct Colours {
    y: [__m512i; 8],
    c: [__m512i; 8],
}

impl Colours {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn new(t: &ColourTable) -> Self {
        Colours {
            y: std::array::from_fn(|j| load_words(&t.y[32 * j..32 * j + 32])),
            c: std::array::from_fn(|j| load_words(&t.cbcr[32 * j..32 * j + 32])),
        }
    }

    /// Entry `level` of a 256-word table held in eight registers.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn lookup(table: &[__m512i; 8], level: __m512i, b6: __mmask32, b7: __mmask32) -> __m512i {
        let a = _mm512_permutex2var_epi16(table[0], level, table[1]);
        let b = _mm512_permutex2var_epi16(table[2], level, table[3]);
        let c = _mm512_permutex2var_epi16(table[4], level, table[5]);
        let d = _mm512_permutex2var_epi16(table[6], level, table[7]);
        let lo = _mm512_mask_blend_epi16(b6, a, b);
        let hi = _mm512_mask_blend_epi16(b6, c, d);
        _mm512_mask_blend_epi16(b7, lo, hi)
    }

    /// Luma (low bytes) and `Cb | Cr << 8` words of 32 levels.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn of(&self, level: __m512i) -> (__m512i, __m512i) {
        let b6 = _mm512_test_epi16_mask(level, _mm512_set1_epi16(64));
        let b7 = _mm512_test_epi16_mask(level, _mm512_set1_epi16(128));
        (
            Self::lookup(&self.y, level, b6, b7),
            Self::lookup(&self.c, level, b6, b7),
        )
    }
}

/// Runs [`colour_pair`] if the CPU has AVX-512 and the window is [`Linear16::Fast`];
/// returns how many leading pixels of the row pair it mapped (a multiple of 32).
#[inline]
pub(super) fn mono16_colour_level_pair(
    lin: Linear16,
    src0: &[u8],
    src1: &[u8],
    out: &mut RowPair<'_>,
    colours: &ColourTable,
) -> usize {
    if !available() || matches!(lin, Linear16::Wide(_)) {
        return 0;
    }
    // SAFETY: AVX-512 F and BW are available (checked just above).
    unsafe { colour_pair(lin, src0, src1, out, colours) }
}

/// Colour-mapped I420 of a Mono16 row pair (gamma 1): level, then luma and block chroma.
#[target_feature(enable = "avx512f,avx512bw")]
fn colour_pair(
    lin: Linear16,
    src0: &[u8],
    src1: &[u8],
    out: &mut RowPair<'_>,
    colours: &ColourTable,
) -> usize {
    let Some(w) = Window::new(lin) else {
        return 0;
    };
    let colours = Colours::new(colours);
    let RowPair { y0, y1, u, v } = out;
    let n = (y0.len().min(y1.len()))
        .min(src0.len().min(src1.len()) / 2)
        .min(2 * u.len().min(v.len()));
    let body = n - n % STEP;
    let low = _mm512_set1_epi16(0xff);
    let ones = _mm512_set1_epi16(1);
    let two = _mm512_set1_epi32(2);
    for x in (0..body).step_by(STEP) {
        // SAFETY: x + 32 <= body <= n, so src0/src1[2x..2x + 64], y0/y1[x..x + 32] and
        // u/v[x/2..x/2 + 16] are in bounds.
        unsafe {
            let r0 = _mm512_loadu_si512(src0.as_ptr().add(2 * x).cast());
            let r1 = _mm512_loadu_si512(src1.as_ptr().add(2 * x).cast());
            let (l0, c0) = colours.of(w.level(r0));
            let (l1, c1) = colours.of(w.level(r1));
            _mm256_storeu_si256(y0.as_mut_ptr().add(x).cast(), _mm512_cvtepi16_epi8(l0));
            _mm256_storeu_si256(y1.as_mut_ptr().add(x).cast(), _mm512_cvtepi16_epi8(l1));
            // Column sums of Cb and Cr, then the two columns of each block (vpmaddwd
            // adds neighbouring words into 32-bit lanes), rounded: (sum + 2) / 4.
            let cb = _mm512_add_epi16(_mm512_and_si512(c0, low), _mm512_and_si512(c1, low));
            let cr = _mm512_add_epi16(_mm512_srli_epi16::<8>(c0), _mm512_srli_epi16::<8>(c1));
            let cb = _mm512_srli_epi32::<2>(_mm512_add_epi32(_mm512_madd_epi16(cb, ones), two));
            let cr = _mm512_srli_epi32::<2>(_mm512_add_epi32(_mm512_madd_epi16(cr, ones), two));
            _mm_storeu_si128(u.as_mut_ptr().add(x / 2).cast(), _mm512_cvtepi32_epi8(cb));
            _mm_storeu_si128(v.as_mut_ptr().add(x / 2).cast(), _mm512_cvtepi32_epi8(cr));
        }
    }
    body
}
