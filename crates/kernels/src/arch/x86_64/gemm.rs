//! AVX-512 VNNI int8 GEMM: `vpdpbusd` (u8 weights × s8 activations) per block of 32, then one float multiply-add
//! per block with the product of both scales; and the activation quantizer it reads from.
//! Callers check `Caps::int8` (F + BW + VNNI) before calling anything here.
use std::arch::x86_64::*;
use std::ops::Range;

use super::{prefetch_share, Prefetch};
use crate::layout::{Packed, QuantizedRows, BLOCK, GEMM_ROWS, TILE};

/// 16 fp16 scales → fp32.
///
/// # Safety
/// `p` must be valid for reads of 16 `u16`; the CPU must have AVX-512 F.
#[inline(always)]
unsafe fn scales16(p: *const u16) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
}

/// Rows per micro-tile.
const MR: usize = GEMM_ROWS;

/// `portable::quantize_rows` with AVX-512 (identical codes and scales).
///
/// # Safety
/// The CPU must have AVX-512 F and BW; `x` holds `m × k` values, `q` `m × k`, `scale` and `corr` `m × k/32`.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn quantize_rows(x: &[f32], m: usize, k: usize, q: &mut [i8], scale: &mut [f32], corr: &mut [i32]) {
    let nb = k / BLOCK;
    let xp = x.as_ptr();
    let qp = q.as_mut_ptr();
    for r in 0..m {
        for b in 0..nb {
            let off = r * k + b * BLOCK;
            let v0 = _mm512_loadu_ps(xp.add(off));
            let v1 = _mm512_loadu_ps(xp.add(off + 16));
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
            let (s, inv) = if amax > 0.0 { (amax / 127.0, 127.0 / amax) } else { (0.0, 0.0) };
            let vinv = _mm512_set1_ps(inv);
            // Round to nearest even (the default MXCSR mode), as the portable path does.
            let i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, vinv));
            let i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, vinv));
            _mm_storeu_si128(qp.add(off) as *mut __m128i, _mm512_cvtsepi32_epi8(i0));
            _mm_storeu_si128(qp.add(off + 16) as *mut __m128i, _mm512_cvtsepi32_epi8(i1));
            scale[r * nb + b] = s;
            corr[r * nb + b] = -128 * _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
        }
    }
}

/// Output tiles `t0..t1` (16 columns each) for rows `rows`. While it works on a pair of tiles, it prefetches the next
/// pair's weights, spread over its row passes and blocks: few rows (one text) are otherwise bound by the latency of
/// weights streamed from memory.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI; `qa` must be quantized with `qa.k == w.k`; `out` must be valid for
/// writes of `qa.m × w.n` floats, `rows` must lie within `0..qa.m`, and no other thread may write those rows of the
/// columns of tiles `t0..t1`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn gemm_tiles<const BITS: u8>(
    qa: &QuantizedRows,
    w: Packed<'_, BITS>,
    out: *mut f32,
    rows: Range<usize>,
    t0: usize,
    t1: usize,
) {
    let tiles = w.n / TILE;
    let mut t = t0;
    while t < t1 {
        if t + 2 <= t1 {
            row_passes::<BITS, 2>(qa, w, out, rows.clone(), t, (t + 4 <= tiles).then_some(t + 2));
            t += 2;
        } else {
            row_passes::<BITS, 1>(qa, w, out, rows.clone(), t, None);
            t += 1;
        }
    }
}

/// Tiles `t..t+NT` for rows `rows`, prefetching tile `next`'s weights meanwhile.
///
/// # Safety
/// As `gemm_tiles`, and `t + NT` (and `next + NT`) ≤ the tile count.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn row_passes<const BITS: u8, const NT: usize>(
    qa: &QuantizedRows,
    w: Packed<'_, BITS>,
    out: *mut f32,
    rows: Range<usize>,
    t: usize,
    next: Option<usize>,
) {
    let tile_bytes = w.k * TILE * BITS as usize / 8;
    let (passes, lines) = (rows.len().div_ceil(MR), tile_bytes * NT / 64);
    let next = next.map(|n| w.codes.as_ptr().add(n * tile_bytes));
    let mut r = rows.start;
    while r < rows.end {
        let pf = Prefetch::part(next, lines, (r - rows.start) / MR, passes);
        match rows.end - r {
            1 => micro::<BITS, 1, NT>(qa, w, out, r, t, pf),
            2 => micro::<BITS, 2, NT>(qa, w, out, r, t, pf),
            3 => micro::<BITS, 3, NT>(qa, w, out, r, t, pf),
            4 => micro::<BITS, 4, NT>(qa, w, out, r, t, pf),
            5 => micro::<BITS, 5, NT>(qa, w, out, r, t, pf),
            _ => micro::<BITS, MR, NT>(qa, w, out, r, t, pf),
        }
        r += MR;
    }
}

/// Rows `r0..r0+R`, tiles `t..t+NT`.
///
/// # Safety
/// As `row_passes`, and `r0 + R ≤ qa.m`. `micro8` and `micro4` below have the same contract.
#[inline(always)]
unsafe fn micro<const BITS: u8, const R: usize, const NT: usize>(
    qa: &QuantizedRows,
    w: Packed<'_, BITS>,
    out: *mut f32,
    r0: usize,
    t: usize,
    pf: Prefetch,
) {
    if BITS == 4 {
        micro4::<BITS, R, NT>(qa, w, out, r0, t, pf)
    } else {
        micro8::<BITS, R, NT>(qa, w, out, r0, t, pf)
    }
}

/// # Safety
/// As `micro`.
#[inline(always)]
unsafe fn micro8<const B: u8, const R: usize, const NT: usize>(
    qa: &QuantizedRows,
    w: Packed<'_, B>,
    out: *mut f32,
    r0: usize,
    t: usize,
    pf: Prefetch,
) {
    let (k, n) = (w.k, w.n);
    let nb = k / BLOCK;
    let tile_bytes = k * TILE; // one tile: K/4 quads × 64 bytes
    let wp = w.codes.as_ptr().add(t * tile_bytes);
    let sp = w.scales.as_ptr().add(t * nb * TILE);
    let ap = qa.q.as_ptr().add(r0 * k);
    let sa = qa.scale.as_ptr().add(r0 * nb);
    let ca = qa.corr.as_ptr().add(r0 * nb);
    let mut f = [[_mm512_setzero_ps(); NT]; R];
    for b in 0..nb {
        prefetch_share(pf, b, nb);
        let mut acc = [[_mm512_setzero_si512(); NT]; R];
        for (i, row) in acc.iter_mut().enumerate() {
            let c = _mm512_set1_epi32(*ca.add(i * nb + b));
            for a in row.iter_mut() {
                *a = c;
            }
        }
        for quad in b * 8..b * 8 + 8 {
            let mut wv = [_mm512_setzero_si512(); NT];
            for (j, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(wp.add(j * tile_bytes + quad * 64) as *const _);
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_epi32((ap.add(i * k + quad * 4) as *const i32).read_unaligned());
                for (a, v) in row.iter_mut().zip(&wv) {
                    *a = _mm512_dpbusd_epi32(*a, *v, av);
                }
            }
        }
        for j in 0..NT {
            let sw = scales16(sp.add(j * nb * TILE + b * TILE));
            for i in 0..R {
                let sc = _mm512_mul_ps(sw, _mm512_set1_ps(*sa.add(i * nb + b)));
                f[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][j]), sc, f[i][j]);
            }
        }
    }
    for (i, row) in f.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            _mm512_storeu_ps(out.add((r0 + i) * n + (t + j) * TILE), *v);
        }
    }
}

/// # Safety
/// As `micro`.
#[inline(always)]
unsafe fn micro4<const B: u8, const R: usize, const NT: usize>(
    qa: &QuantizedRows,
    w: Packed<'_, B>,
    out: *mut f32,
    r0: usize,
    t: usize,
    pf: Prefetch,
) {
    let (k, n) = (w.k, w.n);
    let nb = k / BLOCK;
    let tile_bytes = k * TILE / 2;
    let wp = w.codes.as_ptr().add(t * tile_bytes);
    let sp = w.scales.as_ptr().add(t * nb * 2 * TILE);
    let ap = qa.q.as_ptr().add(r0 * k);
    let sa = qa.scale.as_ptr().add(r0 * nb);
    let ss = qa.ssum.as_ptr().add(r0 * nb);
    let low = _mm512_set1_epi8(0x0F);
    let mut f = [[_mm512_setzero_ps(); NT]; R];
    for b in 0..nb {
        prefetch_share(pf, b, nb);
        let mut acc = [[_mm512_setzero_si512(); NT]; R];
        for j in 0..4 {
            let mut lo = [_mm512_setzero_si512(); NT];
            let mut hi = [_mm512_setzero_si512(); NT];
            for jt in 0..NT {
                let v = _mm512_loadu_si512(wp.add(jt * tile_bytes + (b * 4 + j) * 64) as *const _);
                lo[jt] = _mm512_and_si512(v, low);
                hi[jt] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let a = ap.add(i * k + b * BLOCK + j * 4);
                let alo = _mm512_set1_epi32((a as *const i32).read_unaligned());
                let ahi = _mm512_set1_epi32((a.add(16) as *const i32).read_unaligned());
                for jt in 0..NT {
                    row[jt] = _mm512_dpbusd_epi32(row[jt], lo[jt], alo);
                    row[jt] = _mm512_dpbusd_epi32(row[jt], hi[jt], ahi);
                }
            }
        }
        for jt in 0..NT {
            let base = sp.add(jt * nb * 2 * TILE + b * 2 * TILE);
            let sw = scales16(base);
            let zs = scales16(base.add(TILE));
            for i in 0..R {
                let sc = _mm512_mul_ps(sw, _mm512_set1_ps(*sa.add(i * nb + b)));
                let v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][jt]), sc, f[i][jt]);
                f[i][jt] = _mm512_fnmadd_ps(zs, _mm512_set1_ps(*ss.add(i * nb + b)), v);
            }
        }
    }
    for (i, row) in f.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            _mm512_storeu_ps(out.add((r0 + i) * n + (t + j) * TILE), *v);
        }
    }
}
