//! AVX-512 F fp32 kernels: `e^x` by `vscalefps`, softmax numerators, GeGLU. Callers check `Caps::f32x16`.
use std::arch::x86_64::*;

use crate::scalar::{gelu_tanh, EXP2_C, GELU_K, LOG2E, SOFTMAX_FLOOR};

/// `e^x` per lane as `2^n · p(f)` with `vscalefps` (x clamped to [lo, hi]; `c` = `EXP2_C`).
///
/// # Safety
/// The CPU must have AVX-512 F (inlined into callers that enable it).
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
///
/// # Safety
/// The CPU must have AVX-512 F; `row.len()` is a multiple of 16 (the tail is not touched otherwise).
#[target_feature(enable = "avx512f")]
pub unsafe fn exp_shifted(row: &mut [f32], max: f32) -> f32 {
    let c: [__m512; 8] = EXP2_C.map(|v| _mm512_set1_ps(v));
    let (lo, hi, log2e) = (_mm512_set1_ps(-87.0), _mm512_set1_ps(88.0), _mm512_set1_ps(LOG2E));
    let (vmax, floor) = (_mm512_set1_ps(max), _mm512_set1_ps(SOFTMAX_FLOOR));
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
///
/// # Safety
/// The CPU must have AVX-512 F; `y.len() == 2 · out.len()` and `out.len()` is a multiple of `half`.
#[target_feature(enable = "avx512f")]
pub unsafe fn geglu_rows(y: &[f32], half: usize, out: &mut [f32]) {
    let full = half / 16 * 16;
    let c: [__m512; 8] = EXP2_C.map(|v| _mm512_set1_ps(v));
    let (k, a3, one) = (_mm512_set1_ps(GELU_K), _mm512_set1_ps(0.044_715), _mm512_set1_ps(1.0));
    let (lo, hi, log2e, m2) =
        (_mm512_set1_ps(-87.0), _mm512_set1_ps(88.0), _mm512_set1_ps(LOG2E), _mm512_set1_ps(-2.0));
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
            *op.add(j) = gelu_tanh(*gp.add(j)) * *up.add(j);
        }
    }
}
