//! AVX-512 F attention kernels: scores against packed key tiles, and the weighted sum of values.
use std::arch::x86_64::*;

use crate::layout::{KEY_TILE, QR};

/// Scores of `QR` query rows against all key tiles, two tiles at a time.
///
/// # Safety
/// The CPU must have AVX-512 F; `q` holds `QR × d` values, `keys` `st × d` packed, `out` `QR × st`.
#[target_feature(enable = "avx512f")]
pub unsafe fn scores(q: &[f32], keys: &[f32], st: usize, d: usize, out: &mut [f32]) {
    let (qp, kp, op) = (q.as_ptr(), keys.as_ptr(), out.as_mut_ptr());
    let tiles = st / KEY_TILE;
    let mut t = 0;
    while t < tiles {
        let two = t + 1 < tiles;
        let mut acc = [[_mm512_setzero_ps(); 2]; QR];
        let (k0, k1) = (kp.add(t * d * KEY_TILE), kp.add((t + 1).min(tiles - 1) * d * KEY_TILE));
        for c in 0..d {
            let a = _mm512_loadu_ps(k0.add(c * KEY_TILE));
            let b = if two { _mm512_loadu_ps(k1.add(c * KEY_TILE)) } else { _mm512_setzero_ps() };
            for (r, row) in acc.iter_mut().enumerate() {
                let qv = _mm512_set1_ps(*qp.add(r * d + c));
                row[0] = _mm512_fmadd_ps(qv, a, row[0]);
                row[1] = _mm512_fmadd_ps(qv, b, row[1]);
            }
        }
        for (r, row) in acc.iter().enumerate() {
            _mm512_storeu_ps(op.add(r * st + t * KEY_TILE), row[0]);
            if two {
                _mm512_storeu_ps(op.add(r * st + (t + 1) * KEY_TILE), row[1]);
            }
        }
        t += 2;
    }
}

/// `out[r] = Σ_j p[r][j] · v[j]` for `live` rows, 64 components at a time (16 accumulators), then 16.
///
/// # Safety
/// As `portable::weighted_sum`, and the CPU must have AVX-512 F; `d` is a multiple of 16.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub unsafe fn weighted_sum(
    p: &[f32],
    st: usize,
    v: &[f32],
    v_stride: usize,
    s: usize,
    d: usize,
    op: *mut f32,
    out_stride: usize,
    live: usize,
) {
    let (pp, vp) = (p.as_ptr(), v.as_ptr());
    let mut c0 = 0;
    while c0 + 4 * KEY_TILE <= d {
        columns::<4>(pp, st, vp.add(c0), v_stride, s, op.add(c0), out_stride, live);
        c0 += 4 * KEY_TILE;
    }
    while c0 < d {
        columns::<1>(pp, st, vp.add(c0), v_stride, s, op.add(c0), out_stride, live);
        c0 += KEY_TILE;
    }
}

/// `L` vectors of components for `QR` rows: the accumulators stay in registers across all keys.
///
/// # Safety
/// As `weighted_sum`, for components `0..16·L` from `vp` and `op`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn columns<const L: usize>(
    pp: *const f32,
    st: usize,
    vp: *const f32,
    v_stride: usize,
    s: usize,
    op: *mut f32,
    out_stride: usize,
    live: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); L]; QR];
    for j in 0..s {
        let row = vp.add(j * v_stride);
        let mut vv = [_mm512_setzero_ps(); L];
        for (l, x) in vv.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(row.add(l * KEY_TILE));
        }
        for (r, a) in acc.iter_mut().enumerate() {
            let w = _mm512_set1_ps(*pp.add(r * st + j));
            for (x, y) in a.iter_mut().zip(&vv) {
                *x = _mm512_fmadd_ps(w, *y, *x);
            }
        }
    }
    for (r, a) in acc.iter().enumerate().take(live) {
        for (l, x) in a.iter().enumerate() {
            _mm512_storeu_ps(op.add(r * out_stride + l * KEY_TILE), *x);
        }
    }
}
