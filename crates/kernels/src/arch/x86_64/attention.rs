//! AVX-512 F attention kernels: scores against packed key tiles, and the weighted sum of values.
use std::arch::x86_64::*;
use std::ops::Range;

use crate::layout::{KEY_TILE, QR};

/// Scores of `QR` query rows against key tiles `tiles`, three tiles at a time (24 accumulators).
///
/// # Safety
/// The CPU must have AVX-512 F; `q` holds `QR × d` values, `keys` `st × d` packed, `out` `QR × st`, and
/// `tiles.end ≤ st / 16`.
#[target_feature(enable = "avx512f")]
pub unsafe fn scores(q: &[f32], keys: &[f32], st: usize, d: usize, tiles: Range<usize>, out: &mut [f32]) {
    let (qp, kp, op) = (q.as_ptr(), keys.as_ptr(), out.as_mut_ptr());
    let mut t = tiles.start;
    while t + 3 <= tiles.end {
        score_tiles::<3>(qp, kp, st, d, t, op);
        t += 3;
    }
    match tiles.end - t {
        2 => score_tiles::<2>(qp, kp, st, d, t, op),
        1 => score_tiles::<1>(qp, kp, st, d, t, op),
        _ => {}
    }
}

/// Tiles `t..t+NT` for the `QR` rows.
///
/// # Safety
/// As `scores`, with `t + NT ≤ st / 16`.
#[inline(always)]
unsafe fn score_tiles<const NT: usize>(qp: *const f32, kp: *const f32, st: usize, d: usize, t: usize, op: *mut f32) {
    let mut acc = [[_mm512_setzero_ps(); NT]; QR];
    let k0 = kp.add(t * d * KEY_TILE);
    for c in 0..d {
        let mut kv = [_mm512_setzero_ps(); NT];
        for (j, x) in kv.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(k0.add((j * d + c) * KEY_TILE));
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let qv = _mm512_set1_ps(*qp.add(r * d + c));
            for (a, k) in row.iter_mut().zip(&kv) {
                *a = _mm512_fmadd_ps(qv, *k, *a);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, a) in row.iter().enumerate() {
            _mm512_storeu_ps(op.add(r * st + (t + j) * KEY_TILE), *a);
        }
    }
}

/// `out[r] += Σ_{j in keys} p[r][j] · v[j]` for `live` rows, 48 components at a time (24 accumulators), then 16.
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
    keys: Range<usize>,
    d: usize,
    op: *mut f32,
    out_stride: usize,
    live: usize,
) {
    let (pp, vp) = (p.as_ptr(), v.as_ptr());
    let mut c0 = 0;
    while c0 + 3 * KEY_TILE <= d {
        columns::<3>(pp, st, vp.add(c0), v_stride, keys.clone(), op.add(c0), out_stride, live);
        c0 += 3 * KEY_TILE;
    }
    while c0 < d {
        columns::<1>(pp, st, vp.add(c0), v_stride, keys.clone(), op.add(c0), out_stride, live);
        c0 += KEY_TILE;
    }
}

/// `L` vectors of components for `QR` rows: the accumulators stay in registers across the keys.
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
    keys: Range<usize>,
    op: *mut f32,
    out_stride: usize,
    live: usize,
) {
    // The running sums of the live rows (`weighted_sum` adds to them); rows past `live` are never stored.
    let mut acc = [[_mm512_setzero_ps(); L]; QR];
    for (r, a) in acc.iter_mut().enumerate().take(live) {
        for (l, x) in a.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(op.add(r * out_stride + l * KEY_TILE));
        }
    }
    for j in keys {
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
