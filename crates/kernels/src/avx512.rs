//! AVX-512 VNNI kernels: `vpdpbusd` (u8 weights × s8 activations) per block of 32, then one float multiply-add
//! per block with the product of both scales.
use std::arch::x86_64::*;
use std::sync::OnceLock;

use crate::{Packed, QuantizedRows, BLOCK, EXP2_C, GELU_K, LOG2E, TILE};

pub fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vnni")
    })
}

/// 16 fp16 scales → fp32.
#[inline(always)]
unsafe fn scales16(p: *const u16) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
}

/// Rows per micro-tile.
const MR: usize = 4;

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

/// Output tiles `t0..t1` (16 columns each) for all rows. While it works on a pair of tiles, it prefetches the next
/// pair's weights, spread over its row passes and blocks: few rows (one text) are otherwise bound by the latency of
/// weights streamed from memory (one text, int8: 6.6 → 5.0 ms per text, `deposium-embed bench`).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn gemm_tiles<const BITS: u8>(qa: &QuantizedRows, w: Packed<'_, BITS>, out: *mut f32, t0: usize, t1: usize) {
    let tiles = w.n / TILE;
    let mut t = t0;
    while t < t1 {
        if t + 2 <= t1 {
            rows::<BITS, 2>(qa, w, out, t, (t + 4 <= tiles).then_some(t + 2));
            t += 2;
        } else {
            rows::<BITS, 1>(qa, w, out, t, None);
            t += 1;
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn rows<const BITS: u8, const NT: usize>(qa: &QuantizedRows, w: Packed<'_, BITS>, out: *mut f32, t: usize, next: Option<usize>) {
    let tile_bytes = w.k * TILE * BITS as usize / 8;
    let (passes, lines) = (qa.m.div_ceil(MR), tile_bytes * NT / 64);
    let base = w.codes.as_ptr().add(next.unwrap_or(0) * tile_bytes);
    let mut r = 0;
    while r < qa.m {
        let p = r / MR;
        let pf = match next {
            Some(_) => Prefetch { base, from: p * lines / passes, to: (p + 1) * lines / passes },
            None => Prefetch { base, from: 0, to: 0 },
        };
        match qa.m - r {
            1 => micro::<BITS, 1, NT>(qa, w, out, r, t, pf),
            2 => micro::<BITS, 2, NT>(qa, w, out, r, t, pf),
            3 => micro::<BITS, 3, NT>(qa, w, out, r, t, pf),
            _ => micro::<BITS, MR, NT>(qa, w, out, r, t, pf),
        }
        r += MR;
    }
}

/// Cache lines `from..to` of `base` to prefetch during one micro-kernel call.
#[derive(Clone, Copy)]
struct Prefetch {
    base: *const u8,
    from: usize,
    to: usize,
}

/// Block `b` of `nb`'s share of the lines.
#[inline(always)]
unsafe fn prefetch_share(pf: Prefetch, b: usize, nb: usize) {
    let n = pf.to - pf.from;
    for l in pf.from + b * n / nb..pf.from + (b + 1) * n / nb {
        _mm_prefetch::<_MM_HINT_T0>(pf.base.add(l * 64) as *const i8);
    }
}

/// Rows `r0..r0+R`, tiles `t..t+NT`.
#[inline(always)]
unsafe fn micro<const BITS: u8, const R: usize, const NT: usize>(qa: &QuantizedRows, w: Packed<'_, BITS>, out: *mut f32, r0: usize, t: usize, pf: Prefetch) {
    if BITS == 4 {
        micro4::<BITS, R, NT>(qa, w, out, r0, t, pf)
    } else {
        micro8::<BITS, R, NT>(qa, w, out, r0, t, pf)
    }
}

#[inline(always)]
unsafe fn micro8<const B: u8, const R: usize, const NT: usize>(qa: &QuantizedRows, w: Packed<'_, B>, out: *mut f32, r0: usize, t: usize, pf: Prefetch) {
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

#[inline(always)]
unsafe fn micro4<const B: u8, const R: usize, const NT: usize>(qa: &QuantizedRows, w: Packed<'_, B>, out: *mut f32, r0: usize, t: usize, pf: Prefetch) {
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

/// `e^x` per lane as `2^n · p(f)` with `vscalefps` (x clamped to [lo, hi]; `c` = `EXP2_C`).
#[inline(always)]
pub unsafe fn exp_ps(x: __m512, c: &[__m512; 8], lo: __m512, hi: __m512, log2e: __m512) -> __m512 {
    let t = _mm512_mul_ps(_mm512_min_ps(_mm512_max_ps(x, lo), hi), log2e);
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
    let f = _mm512_sub_ps(t, n);
    let mut p = c[7];
    for ci in c[..7].iter().rev() {
        p = _mm512_fmadd_ps(p, f, *ci);
    }
    _mm512_scalef_ps(p, n)
}

/// Softmax numerators in place: `e^(x − max)` per value, 0 where `x − max < SOFTMAX_FLOOR` (−∞ included);
/// returns the sum, added in 16 lanes by position (then lane 0..15).
#[target_feature(enable = "avx512f")]
pub unsafe fn exp_shifted(row: &mut [f32], max: f32) -> f32 {
    let c: [__m512; 8] = EXP2_C.map(|v| _mm512_set1_ps(v));
    let (lo, hi, log2e) = (_mm512_set1_ps(-87.0), _mm512_set1_ps(88.0), _mm512_set1_ps(LOG2E));
    let (vmax, floor) = (_mm512_set1_ps(max), _mm512_set1_ps(crate::attention::SOFTMAX_FLOOR));
    let mut sum = _mm512_setzero_ps();
    for chunk in row.chunks_exact_mut(16) {
        let t = _mm512_sub_ps(_mm512_loadu_ps(chunk.as_ptr()), vmax);
        let live = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(t, floor);
        let e = _mm512_maskz_mov_ps(live, exp_ps(t, &c, lo, hi, log2e));
        _mm512_storeu_ps(chunk.as_mut_ptr(), e);
        sum = _mm512_add_ps(sum, e);
    }
    let mut lanes = [0f32; 16];
    _mm512_storeu_ps(lanes.as_mut_ptr(), sum);
    lanes.iter().sum()
}

/// `geglu_rows` 16 columns at a time: `e^x` as `2^n · p(f)` with `vscalefps`.
#[target_feature(enable = "avx512f")]
pub unsafe fn geglu_rows(y: &[f32], half: usize, out: &mut [f32]) {
    let full = half / 16 * 16;
    let c: [__m512; 8] = EXP2_C.map(|v| _mm512_set1_ps(v));
    let (k, a3, one) = (_mm512_set1_ps(GELU_K), _mm512_set1_ps(0.044_715), _mm512_set1_ps(1.0));
    let (lo, hi, log2e, m2) = (_mm512_set1_ps(-87.0), _mm512_set1_ps(88.0), _mm512_set1_ps(LOG2E), _mm512_set1_ps(-2.0));
    for (row, o) in y.chunks_exact(2 * half).zip(out.chunks_exact_mut(half)) {
        let (gp, up, op) = (row.as_ptr(), row.as_ptr().add(half), o.as_mut_ptr());
        let mut j = 0;
        while j < full {
            let g = _mm512_loadu_ps(gp.add(j));
            let u = _mm512_mul_ps(k, _mm512_fmadd_ps(_mm512_mul_ps(a3, _mm512_mul_ps(g, g)), g, g));
            let e = exp_ps(_mm512_mul_ps(m2, u), &c, lo, hi, log2e);
            let gelu = _mm512_div_ps(g, _mm512_add_ps(one, e));
            _mm512_storeu_ps(op.add(j), _mm512_mul_ps(gelu, _mm512_loadu_ps(up.add(j))));
            j += 16;
        }
        for j in full..half {
            *op.add(j) = crate::gelu_tanh(*gp.add(j)) * *up.add(j);
        }
    }
}
