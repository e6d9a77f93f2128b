//! AVX2 + FMA + F16C kernels, the path of x86-64 CPUs without AVX-512 (AMD Zen 2/3, older Intel). Callers check
//! `Caps::avx2`.
//!
//! The int8 GEMM has no `vpdpbusd` here: `vpmaddubsw` multiplies u8 × s8 pairs into i16, which would saturate on the
//! weights' u8 (+128) codes, so each product is taken as |w| · (a with w's sign) (at most 2 · 128 · 127 per pair,
//! exact), then `vpmaddwd` by ones widens to i32. Integer sums are exact and the float epilogue runs in the portable
//! path's order, so results are bit-identical to it. The fp32 exp and GeGLU repeat the scalar code's operations
//! (no fused multiply-adds), so they give its values too.
use std::arch::x86_64::*;
use std::ops::Range;

use super::{prefetch_share, Prefetch};
use crate::layout::{ActivationBits, Packed, QuantizedRows, BLOCK, KEY_TILE, QR, TILE};
use crate::scalar::{gelu_tanh, EXP2_C, GELU_K, LOG2E, SOFTMAX_FLOOR};

/// Rows per GEMM micro-tile. A micro-tile is `MR` rows × one half (8 columns) of a 16-column tile: its integer
/// accumulators, one weight vector and its magnitudes fit in the 16 registers with room to spare.
const MR: usize = 8;

/// Rows per micro-tile of the 16-bit-activation GEMM: two accumulators per row, 12 with two weight vectors and the
/// activations in 15 registers.
const MR16: usize = 6;

/// Query rows per register block of `weighted_sum` (4 rows × 2 vectors: 8 sums, with the values and one weight,
/// in 11 of the 16 registers).
const WS_ROWS: usize = 4;

/// 8 fp16 scales → fp32.
///
/// # Safety
/// `p` must be valid for reads of 8 `u16`; the CPU must have F16C.
#[inline(always)]
unsafe fn scales8(p: *const u16) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

/// Sum of the 8 lanes.
#[inline(always)]
unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
}

/// Maximum of the 8 lanes.
#[inline(always)]
unsafe fn hmax_ps(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<0b01>(m, m)))
}

/// One block of 32 values at `x`, as `portable::block_codes`: its codes as i32 (8 per vector, in order), their sum
/// (the caller's `corr` term) and the block's scale, for codes up to `top`.
///
/// # Safety
/// The CPU must have AVX2; `x` must be valid for reads of 32 floats.
#[inline(always)]
unsafe fn block_codes(x: *const f32, top: f32) -> ([__m256i; 4], __m256i, f32) {
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let v = [_mm256_loadu_ps(x), _mm256_loadu_ps(x.add(8)), _mm256_loadu_ps(x.add(16)), _mm256_loadu_ps(x.add(24))];
    let mut amax = _mm256_setzero_ps();
    for x in &v {
        amax = _mm256_max_ps(amax, _mm256_and_ps(*x, abs));
    }
    let amax = hmax_ps(amax);
    let (s, inv) = if amax > 0.0 { (amax / top, top / amax) } else { (0.0, 0.0) };
    let vinv = _mm256_set1_ps(inv);
    // Round to nearest even (the default MXCSR mode), as the portable path does; |x · inv| rounds to at most `top`.
    let i = v.map(|x| _mm256_cvtps_epi32(_mm256_mul_ps(x, vinv)));
    let sum = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
    (i, sum, s)
}

/// `portable::quantize_rows` with AVX2 (identical codes and scales).
///
/// # Safety
/// The CPU must have AVX2; `x` holds `m × k` values, `q` `m × k`, `scale` and `corr` `m × k/32`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_rows(x: &[f32], m: usize, k: usize, q: &mut [i8], scale: &mut [f32], corr: &mut [i32]) {
    let nb = k / BLOCK;
    let (xp, qp) = (x.as_ptr(), q.as_mut_ptr());
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for r in 0..m {
        for b in 0..nb {
            let off = r * k + b * BLOCK;
            let (i, sum, s) = block_codes(xp.add(off), ActivationBits::Int8.max_code());
            let packed = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
            _mm256_storeu_si256(qp.add(off) as *mut __m256i, _mm256_permutevar8x32_epi32(packed, order));
            scale[r * nb + b] = s;
            corr[r * nb + b] = -128 * hsum_epi32(sum);
        }
    }
}

/// `portable::quantize_rows16` with AVX2 (identical codes and scales).
///
/// # Safety
/// As `quantize_rows`, with `q` of i16.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_rows16(x: &[f32], m: usize, k: usize, q: &mut [i16], scale: &mut [f32], corr: &mut [i32]) {
    let nb = k / BLOCK;
    let (xp, qp) = (x.as_ptr(), q.as_mut_ptr());
    for r in 0..m {
        for b in 0..nb {
            let off = r * k + b * BLOCK;
            let (i, sum, s) = block_codes(xp.add(off), ActivationBits::Int16.max_code());
            for h in 0..2 {
                let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(i[2 * h], i[2 * h + 1]));
                _mm256_storeu_si256(qp.add(off + 16 * h) as *mut __m256i, packed);
            }
            scale[r * nb + b] = s;
            corr[r * nb + b] = -128 * hsum_epi32(sum);
        }
    }
}

/// Output tiles `t0..t1` (16 columns each) for rows `rows`: for each tile, passes of `MR` rows, each over both
/// halves of the tile (the pass's activations are reused from L1, the tile's weights from L1 or L2), while the next
/// tile's weights are prefetched (few rows are otherwise bound by memory latency).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `qa` must be quantized with `qa.k == w.k`; `out` must be valid for writes of
/// `qa.m × w.n` floats, `rows` must lie within `0..qa.m`, and no other thread may write those rows of the columns of
/// tiles `t0..t1`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm_tiles<const BITS: u8, const A16: bool>(
    qa: &QuantizedRows,
    w: Packed<'_, BITS>,
    out: *mut f32,
    rows: Range<usize>,
    t0: usize,
    t1: usize,
) {
    let mr = if A16 { MR16 } else { MR };
    let tile_bytes = w.k * TILE * BITS as usize / 8;
    let (calls, lines) = (2 * rows.len().div_ceil(mr), tile_bytes / 64);
    for t in t0..t1 {
        // The next tile's weights, spread over this tile's micro-kernel calls and blocks.
        let next = (t + 1 < w.n / TILE).then(|| w.codes.as_ptr().add((t + 1) * tile_bytes));
        let mut r = rows.start;
        while r < rows.end {
            for h in 0..2 {
                let pf = Prefetch::part(next, lines, 2 * ((r - rows.start) / mr) + h, calls);
                match (rows.end - r).min(mr) {
                    1 => micro::<BITS, A16, 1>(qa, w, out, r, t, h, pf),
                    2 => micro::<BITS, A16, 2>(qa, w, out, r, t, h, pf),
                    3 => micro::<BITS, A16, 3>(qa, w, out, r, t, h, pf),
                    4 => micro::<BITS, A16, 4>(qa, w, out, r, t, h, pf),
                    5 => micro::<BITS, A16, 5>(qa, w, out, r, t, h, pf),
                    6 => micro::<BITS, A16, 6>(qa, w, out, r, t, h, pf),
                    7 => micro::<BITS, A16, 7>(qa, w, out, r, t, h, pf),
                    _ => micro::<BITS, A16, MR>(qa, w, out, r, t, h, pf),
                }
            }
            r += mr;
        }
    }
}

/// Rows `r0..r0+R`, columns of half `h` of tile `t`.
///
/// # Safety
/// As `gemm_tiles`, and `r0 + R ≤ qa.m`, `t` < the tile count, `h` < 2.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn micro<const BITS: u8, const A16: bool, const R: usize>(
    qa: &QuantizedRows,
    w: Packed<'_, BITS>,
    out: *mut f32,
    r0: usize,
    t: usize,
    h: usize,
    pf: Prefetch,
) {
    let f = if A16 {
        micro16::<BITS, R>(qa, w, r0, t, h, pf)
    } else if BITS == 4 {
        micro4::<BITS, R>(qa, w, r0, t, h, pf)
    } else {
        micro8::<BITS, R>(qa, w, r0, t, h, pf)
    };
    for (i, v) in f.iter().enumerate() {
        _mm256_storeu_ps(out.add((r0 + i) * w.n + t * TILE + h * 8), *v);
    }
}

/// The codes and scales of half `h` (8 columns) of 8-bit tile `t`.
///
/// # Safety
/// `t` < the tile count, `h` < 2.
#[inline(always)]
unsafe fn half_tile8<const B: u8>(w: Packed<'_, B>, t: usize, h: usize) -> (*const u8, *const u16) {
    (w.codes.as_ptr().add(t * w.k * TILE + h * 32), w.scales.as_ptr().add(t * w.blocks() * TILE + h * 8))
}

/// 16-bit activations (W8A16): the u8 codes widened to i16, `vpmaddwd` against a row's four activations of a quad
/// (the codes' +128 is cancelled by the activations' `corr`, as with 8-bit ones). Two accumulators per row hold
/// columns 0–3 and 4–7 as pairs of lanes (k 0–1, k 2–3); `vphaddd` sums the pairs at each block's end, which leaves
/// the columns in the order 0 1 4 5 2 3 6 7: the scales are put in that order, and the result is put back.
///
/// # Safety
/// As `micro`.
#[inline(always)]
unsafe fn micro16<const B: u8, const R: usize>(
    qa: &QuantizedRows,
    w: Packed<'_, B>,
    r0: usize,
    t: usize,
    h: usize,
    pf: Prefetch,
) -> [__m256; R] {
    let (k, nb) = (w.k, w.blocks());
    let (wp, sp) = half_tile8(w, t, h);
    let ap = qa.q16.as_ptr().add(r0 * k);
    let sa = qa.scale.as_ptr().add(r0 * nb);
    let ca = qa.corr.as_ptr().add(r0 * nb);
    let order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    // An opaque trip count, as in `micro8`.
    let quads = std::hint::black_box(BLOCK / 4);
    let mut f = [_mm256_setzero_ps(); R];
    for b in 0..nb {
        prefetch_share(pf, b, nb);
        let mut lo = [_mm256_setzero_si256(); R];
        let mut hi = [_mm256_setzero_si256(); R];
        for quad in b * quads..(b + 1) * quads {
            let w_lo = _mm256_cvtepu8_epi16(_mm_loadu_si128(wp.add(quad * 64) as *const _));
            let w_hi = _mm256_cvtepu8_epi16(_mm_loadu_si128(wp.add(quad * 64 + 16) as *const _));
            for i in 0..R {
                let av = _mm256_set1_epi64x((ap.add(i * k + quad * 4) as *const i64).read_unaligned());
                lo[i] = _mm256_add_epi32(lo[i], _mm256_madd_epi16(w_lo, av));
                hi[i] = _mm256_add_epi32(hi[i], _mm256_madd_epi16(w_hi, av));
            }
        }
        let sw = _mm256_permutevar8x32_ps(scales8(sp.add(b * TILE)), order);
        for (i, f) in f.iter_mut().enumerate() {
            let sc = _mm256_mul_ps(sw, _mm256_set1_ps(*sa.add(i * nb + b)));
            let acc = _mm256_add_epi32(_mm256_hadd_epi32(lo[i], hi[i]), _mm256_set1_epi32(*ca.add(i * nb + b)));
            *f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), sc, *f);
        }
    }
    f.map(|v| _mm256_permutevar8x32_ps(v, order))
}

/// # Safety
/// As `micro`.
#[inline(always)]
unsafe fn micro8<const B: u8, const R: usize>(
    qa: &QuantizedRows,
    w: Packed<'_, B>,
    r0: usize,
    t: usize,
    h: usize,
    pf: Prefetch,
) -> [__m256; R] {
    let (k, nb) = (w.k, w.blocks());
    let (wp, sp) = half_tile8(w, t, h);
    let ap = qa.q.as_ptr().add(r0 * k);
    let sa = qa.scale.as_ptr().add(r0 * nb);
    let (flip, ones) = (_mm256_set1_epi8(-128), _mm256_set1_epi16(1));
    // An opaque trip count keeps LLVM from unrolling the 8 quads of a block and then spilling their weights.
    let quads = std::hint::black_box(BLOCK / 4);
    let mut f = [_mm256_setzero_ps(); R];
    for b in 0..nb {
        prefetch_share(pf, b, nb);
        let mut acc = [_mm256_setzero_si256(); R];
        for quad in b * quads..(b + 1) * quads {
            // Codes as s8 (u8 − 128), and their magnitudes as u8.
            let wv = _mm256_xor_si256(_mm256_loadu_si256(wp.add(quad * 64) as *const _), flip);
            let wabs = _mm256_abs_epi8(wv);
            for (i, acc) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_epi32((ap.add(i * k + quad * 4) as *const i32).read_unaligned());
                let pairs = _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(av, wv));
                *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(pairs, ones));
            }
        }
        let sw = scales8(sp.add(b * TILE));
        for (i, f) in f.iter_mut().enumerate() {
            let sc = _mm256_mul_ps(sw, _mm256_set1_ps(*sa.add(i * nb + b)));
            *f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i]), sc, *f);
        }
    }
    f
}

/// 4-bit codes are 0..15: eight u8 × s8 pair sums of a block (≤ 8 · 2 · 15 · 127) fit in i16 before widening.
///
/// # Safety
/// As `micro`.
#[inline(always)]
unsafe fn micro4<const B: u8, const R: usize>(
    qa: &QuantizedRows,
    w: Packed<'_, B>,
    r0: usize,
    t: usize,
    h: usize,
    pf: Prefetch,
) -> [__m256; R] {
    let k = w.k;
    let nb = k / BLOCK;
    let wp = w.codes.as_ptr().add(t * k * TILE / 2 + h * 32);
    let sp = w.scales.as_ptr().add(t * nb * 2 * TILE + h * 8);
    let ap = qa.q.as_ptr().add(r0 * k);
    let sa = qa.scale.as_ptr().add(r0 * nb);
    let ss = qa.ssum.as_ptr().add(r0 * nb);
    let (low, ones) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi16(1));
    // An opaque trip count, as in `micro8`: unrolled, the four steps' sums were reassociated and spilled.
    let steps = std::hint::black_box(4);
    let mut f = [_mm256_setzero_ps(); R];
    for b in 0..nb {
        prefetch_share(pf, b, nb);
        let mut acc = [_mm256_setzero_si256(); R];
        for j in 0..steps {
            let v = _mm256_loadu_si256(wp.add((b * 4 + j) * 64) as *const _);
            let lo = _mm256_and_si256(v, low);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
            for (i, acc) in acc.iter_mut().enumerate() {
                let a = ap.add(i * k + b * BLOCK + j * 4);
                let alo = _mm256_set1_epi32((a as *const i32).read_unaligned());
                let ahi = _mm256_set1_epi32((a.add(16) as *const i32).read_unaligned());
                *acc = _mm256_add_epi16(*acc, _mm256_maddubs_epi16(lo, alo));
                *acc = _mm256_add_epi16(*acc, _mm256_maddubs_epi16(hi, ahi));
            }
        }
        let (sw, zs) = (scales8(sp.add(b * 2 * TILE)), scales8(sp.add(b * 2 * TILE + TILE)));
        for (i, f) in f.iter_mut().enumerate() {
            let sc = _mm256_mul_ps(sw, _mm256_set1_ps(*sa.add(i * nb + b)));
            let acc32 = _mm256_cvtepi32_ps(_mm256_madd_epi16(acc[i], ones));
            let v = _mm256_fmadd_ps(acc32, sc, *f);
            *f = _mm256_fnmadd_ps(zs, _mm256_set1_ps(*ss.add(i * nb + b)), v);
        }
    }
    f
}

/// Scores of `QR` query rows against key tiles `tiles`, four rows × one tile (two vectors) at a time.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `q` holds `QR × d` values, `keys` `st × d` packed, `out` `QR × st`, and
/// `tiles.end ≤ st / 16`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn scores(q: &[f32], keys: &[f32], st: usize, d: usize, tiles: Range<usize>, out: &mut [f32]) {
    let (qp, kp, op) = (q.as_ptr(), keys.as_ptr(), out.as_mut_ptr());
    for r0 in (0..QR).step_by(4) {
        for t in tiles.clone() {
            let mut acc = [[_mm256_setzero_ps(); 2]; 4];
            let k0 = kp.add(t * d * KEY_TILE);
            for c in 0..d {
                let kv = [_mm256_loadu_ps(k0.add(c * KEY_TILE)), _mm256_loadu_ps(k0.add(c * KEY_TILE + 8))];
                for (r, row) in acc.iter_mut().enumerate() {
                    let qv = _mm256_set1_ps(*qp.add((r0 + r) * d + c));
                    for (a, k) in row.iter_mut().zip(&kv) {
                        *a = _mm256_fmadd_ps(qv, *k, *a);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (h, a) in row.iter().enumerate() {
                    _mm256_storeu_ps(op.add((r0 + r) * st + t * KEY_TILE + h * 8), *a);
                }
            }
        }
    }
}

/// `out[r] += Σ_{j in keys} p[r][j] · v[j]` for `live` rows, key by key in order: blocks of `WS_ROWS` rows ×
/// `V` vectors whose sums stay in registers across the keys (each value vector loaded feeds `WS_ROWS` rows, each
/// weight broadcast `V` vectors).
///
/// # Safety
/// As `portable::weighted_sum`, and the CPU must have AVX2 and FMA; `d` is a multiple of 8.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn weighted_sum(
    p: &[f32],
    st: usize,
    v: &[f32],
    v_stride: usize,
    keys: Range<usize>,
    d: usize,
    op: *mut f32,
    out_stride: usize,
    live: usize,
) {
    assert!(live <= QR && QR.is_multiple_of(WS_ROWS) && p.len() >= QR * st);
    // Row blocks inner: a value line, once loaded, serves all of them.
    for c0 in (0..d).step_by(16) {
        for r0 in (0..live).step_by(WS_ROWS) {
            let rows = (live - r0).min(WS_ROWS);
            if d - c0 >= 16 {
                weighted_block::<2>(p, st, v, v_stride, keys.clone(), op, out_stride, r0, rows, c0);
            } else {
                weighted_block::<1>(p, st, v, v_stride, keys.clone(), op, out_stride, r0, rows, c0);
            }
        }
    }
}

/// Rows `r0..r0+rows` (of a block of `WS_ROWS`; rows past `rows` are computed from `p`'s other rows and dropped),
/// components `c0..c0+8V`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn weighted_block<const V: usize>(
    p: &[f32],
    st: usize,
    v: &[f32],
    v_stride: usize,
    keys: Range<usize>,
    op: *mut f32,
    out_stride: usize,
    r0: usize,
    rows: usize,
    c0: usize,
) {
    let (pp, vp) = (p.as_ptr().add(r0 * st), v.as_ptr().add(c0));
    let o = op.add(r0 * out_stride + c0);
    let mut acc = [[_mm256_setzero_ps(); V]; WS_ROWS];
    for (r, a) in acc.iter_mut().enumerate().take(rows) {
        for (x, a) in a.iter_mut().enumerate() {
            *a = _mm256_loadu_ps(o.add(r * out_stride + 8 * x));
        }
    }
    for j in keys {
        let vv: [__m256; V] = std::array::from_fn(|x| _mm256_loadu_ps(vp.add(j * v_stride + 8 * x)));
        for (r, a) in acc.iter_mut().enumerate() {
            let w = _mm256_set1_ps(*pp.add(r * st + j));
            for (a, vv) in a.iter_mut().zip(&vv) {
                *a = _mm256_fmadd_ps(w, *vv, *a);
            }
        }
    }
    for (r, a) in acc.iter().enumerate().take(rows) {
        for (x, a) in a.iter().enumerate() {
            _mm256_storeu_ps(o.add(r * out_stride + 8 * x), *a);
        }
    }
}

/// `scalar::exp_fast` on 8 lanes, operation for operation (separate multiplies and adds, as the scalar code
/// rounds), so the values are the same bits.
#[inline(always)]
unsafe fn exp8(x: __m256) -> __m256 {
    let t = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0)), _mm256_set1_ps(88.0));
    let t = _mm256_mul_ps(t, _mm256_set1_ps(LOG2E));
    let magic = _mm256_set1_ps(12_582_912.0);
    let n = _mm256_sub_ps(_mm256_add_ps(t, magic), magic);
    let f = _mm256_sub_ps(t, n);
    let mut p = _mm256_set1_ps(EXP2_C[7]);
    for c in EXP2_C[..7].iter().rev() {
        p = _mm256_add_ps(_mm256_mul_ps(p, f), _mm256_set1_ps(*c));
    }
    let scale = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)));
    _mm256_mul_ps(_mm256_castsi256_ps(scale), p)
}

/// `portable::exp_shifted` (the same values and sum): 16 lanes by key position in two vectors.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `row.len()` is a multiple of 16.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn exp_shifted(row: &mut [f32], max: f32) -> f32 {
    let (vmax, floor) = (_mm256_set1_ps(max), _mm256_set1_ps(SOFTMAX_FLOOR));
    let mut sum = [_mm256_setzero_ps(); 2];
    for chunk in row.chunks_exact_mut(KEY_TILE) {
        for (h, sum) in sum.iter_mut().enumerate() {
            let p = chunk.as_mut_ptr().add(h * 8);
            let t = _mm256_sub_ps(_mm256_loadu_ps(p), vmax);
            let e = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(t, floor), exp8(t));
            _mm256_storeu_ps(p, e);
            *sum = _mm256_add_ps(*sum, e);
        }
    }
    let mut lanes = [0f32; KEY_TILE];
    _mm256_storeu_ps(lanes.as_mut_ptr(), sum[0]);
    _mm256_storeu_ps(lanes.as_mut_ptr().add(8), sum[1]);
    lanes.iter().sum()
}

/// `portable::geglu_rows` 8 columns at a time (the same values: `scalar::gelu_tanh` operation for operation).
///
/// # Safety
/// The CPU must have AVX2 and FMA; `y.len() == 2 · out.len()` and `out.len()` is a multiple of `half`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn geglu_rows(y: &[f32], half: usize, out: &mut [f32]) {
    let full = half / 8 * 8;
    let (k, a3, one, m2) =
        (_mm256_set1_ps(GELU_K), _mm256_set1_ps(0.044_715), _mm256_set1_ps(1.0), _mm256_set1_ps(-2.0));
    for (row, o) in y.chunks_exact(2 * half).zip(out.chunks_exact_mut(half)) {
        let (gp, up, op) = (row.as_ptr(), row.as_ptr().add(half), o.as_mut_ptr());
        for j in (0..full).step_by(8) {
            let g = _mm256_loadu_ps(gp.add(j));
            let cube = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(a3, g), g), g);
            let u = _mm256_mul_ps(k, _mm256_add_ps(cube, g));
            let gelu = _mm256_div_ps(g, _mm256_add_ps(one, exp8(_mm256_mul_ps(m2, u))));
            _mm256_storeu_ps(op.add(j), _mm256_mul_ps(gelu, _mm256_loadu_ps(up.add(j))));
        }
        for j in full..half {
            *op.add(j) = gelu_tanh(*gp.add(j)) * *up.add(j);
        }
    }
}
