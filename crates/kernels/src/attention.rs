//! Scaled dot-product attention for one (text, head): `softmax(q·kᵀ + mask) · v`, with padding keys and keys out
//! of a sliding window left out. A query's result depends only on its own text's valid keys, in a fixed order, so
//! it is bit-identical whatever the padding or the other texts of the batch.
//!
//! Keys are packed in tiles of 16 (`[S/16][D][16]`, see `pack_key`) so that scores come out 16 keys per vector;
//! queries are taken `QR` rows at a time.

/// Keys per packed tile (one AVX-512 vector of scores).
pub const KEY_TILE: usize = 16;
/// Query rows per micro-block.
pub const QR: usize = 4;
/// Scores this far below a row's maximum get probability 0 (e^−69 ≈ 1e−30): smaller ones would reach the weighted
/// sum as subnormal floats, which cost the FPU a slow path on every multiply (long batches ran 40 % slower).
pub const SOFTMAX_FLOOR: f32 = -69.0;

/// Index of key `j`, component `c` in a packed key block of head dimension `d`.
#[inline(always)]
pub fn packed_key_index(j: usize, c: usize, d: usize) -> usize {
    ((j / KEY_TILE) * d + c) * KEY_TILE + j % KEY_TILE
}

/// Floats a packed key block of `s` keys needs.
pub fn packed_keys_len(s: usize, d: usize) -> usize {
    s.div_ceil(KEY_TILE) * KEY_TILE * d
}

/// Which keys query `i` sees: `keep[j]` (not padding) and, with a window, `|i − j| < reach`.
#[derive(Clone, Copy)]
pub struct KeyMask<'a> {
    pub keep: &'a [bool],
    /// 0: no window.
    pub reach: usize,
}

impl KeyMask<'_> {
    #[inline(always)]
    fn sees(&self, i: usize, j: usize) -> bool {
        self.keep[j] && (self.reach == 0 || i.abs_diff(j) < self.reach)
    }
}

/// One head of one text, query rows `rows`. `q`: those rows `[rows.len()][D]` (already scaled; rows ≥ S are padding,
/// `rows` starts at a multiple of `QR` and has a multiple of `QR` rows); `keys`: packed `[S/16][D][16]`;
/// `v`: row `j` at `v[j·v_stride..][..D]`; output row `i` (`i` in `rows`, `i < S`) at `out + i·out_stride`, `D`
/// values. `scores` is scratch.
///
/// # Safety
/// `out` must be valid for writes at those rows, and no other thread may access them meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn attend(q: &[f32], keys: &[f32], v: &[f32], v_stride: usize, s: usize, d: usize, mask: KeyMask<'_>, rows: std::ops::Range<usize>, out: *mut f32, out_stride: usize, scores: &mut Vec<f32>) {
    assert!(d.is_multiple_of(KEY_TILE) && rows.start.is_multiple_of(QR) && rows.len().is_multiple_of(QR) && rows.end <= s.div_ceil(QR) * QR);
    assert!(q.len() >= rows.len() * d && keys.len() >= packed_keys_len(s, d) && mask.keep.len() >= s);
    assert!(s == 0 || v.len() >= (s - 1) * v_stride + d);
    let st = s.div_ceil(KEY_TILE) * KEY_TILE;
    scores.resize(QR * st, 0.0);
    let mut r0 = rows.start;
    while r0 < rows.end {
        scores_rows(&q[(r0 - rows.start) * d..(r0 - rows.start + QR) * d], keys, st, d, scores);
        for (r, row) in scores.chunks_exact_mut(st).enumerate() {
            let i = r0 + r;
            softmax_masked(row, s, |j| i < s && mask.sees(i, j));
        }
        let live = (rows.end.min(s) - r0).min(QR);
        // SAFETY: the caller guarantees the `live` output rows from r0.
        weighted_sum(scores, st, v, v_stride, s, d, out.add(r0 * out_stride), out_stride, live);
        r0 += QR;
    }
}

/// `row[j] ← e^(row[j] − max) / Σ` over the keys `sees(j)`, 0 elsewhere (all 0 when none is seen). Sums run in
/// 16 lanes by key position, so keys that are not seen change nothing.
fn softmax_masked(row: &mut [f32], s: usize, sees: impl Fn(usize) -> bool) {
    let mut max = f32::NEG_INFINITY;
    for (j, x) in row.iter_mut().enumerate() {
        if j < s && sees(j) {
            max = max.max(*x);
        } else {
            *x = f32::NEG_INFINITY;
        }
    }
    if max == f32::NEG_INFINITY {
        row.iter_mut().for_each(|x| *x = 0.0);
        return;
    }
    let inv = 1.0 / exp_shifted(row, max);
    row.iter_mut().for_each(|x| *x *= inv);
}

/// Softmax numerators in place (0 below `SOFTMAX_FLOOR`) and their sum, in 16 lanes by key position.
fn exp_shifted(row: &mut [f32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::accelerated() {
        // SAFETY: the CPU has AVX-512; the row is a whole number of key tiles.
        return unsafe { crate::avx512::exp_shifted(row, max) };
    }
    exp_shifted_portable(row, max)
}

fn exp_shifted_portable(row: &mut [f32], max: f32) -> f32 {
    let mut lanes = [0f32; KEY_TILE];
    for chunk in row.chunks_exact_mut(KEY_TILE) {
        for (l, x) in lanes.iter_mut().zip(chunk.iter_mut()) {
            *x = if *x - max >= SOFTMAX_FLOOR { crate::exp_fast(*x - max) } else { 0.0 };
            *l += *x;
        }
    }
    lanes.iter().sum()
}

/// Scores of `QR` query rows against the packed keys (`st` keys, padded to whole tiles).
fn scores_rows(q: &[f32], keys: &[f32], st: usize, d: usize, scores: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::accelerated() {
        // SAFETY: the CPU has AVX-512; `attend` checked the bounds.
        return unsafe { avx512::scores(q, keys, st, d, scores) };
    }
    scores_portable(q, keys, st, d, scores)
}

fn scores_portable(q: &[f32], keys: &[f32], st: usize, d: usize, scores: &mut [f32]) {
    for r in 0..QR {
        for t in 0..st / KEY_TILE {
            let mut acc = [0f32; KEY_TILE];
            for c in 0..d {
                let qv = q[r * d + c];
                let kv = &keys[(t * d + c) * KEY_TILE..][..KEY_TILE];
                for (a, k) in acc.iter_mut().zip(kv) {
                    *a += qv * k;
                }
            }
            scores[r * st + t * KEY_TILE..][..KEY_TILE].copy_from_slice(&acc);
        }
    }
}

/// `out[r] = Σ_j p[r][j] · v[j]` for the first `live` of `QR` rows.
#[allow(clippy::too_many_arguments)]
unsafe fn weighted_sum(p: &[f32], st: usize, v: &[f32], v_stride: usize, s: usize, d: usize, out: *mut f32, out_stride: usize, live: usize) {
    #[cfg(target_arch = "x86_64")]
    if crate::accelerated() {
        return avx512::weighted_sum(p, st, v, v_stride, s, d, out, out_stride, live);
    }
    weighted_sum_portable(p, st, v, v_stride, s, d, out, out_stride, live)
}

#[allow(clippy::too_many_arguments)]
unsafe fn weighted_sum_portable(p: &[f32], st: usize, v: &[f32], v_stride: usize, s: usize, d: usize, out: *mut f32, out_stride: usize, live: usize) {
    for r in 0..live {
        let o = std::slice::from_raw_parts_mut(out.add(r * out_stride), d);
        o.iter_mut().for_each(|x| *x = 0.0);
        for j in 0..s {
            let w = p[r * st + j];
            for (x, vv) in o.iter_mut().zip(&v[j * v_stride..][..d]) {
                *x += w * vv;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{KEY_TILE, QR};
    use std::arch::x86_64::*;

    /// Scores of `QR` query rows against all key tiles, two tiles at a time.
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
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn weighted_sum(p: &[f32], st: usize, v: &[f32], v_stride: usize, s: usize, d: usize, op: *mut f32, out_stride: usize, live: usize) {
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
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn columns<const L: usize>(pp: *const f32, st: usize, vp: *const f32, v_stride: usize, s: usize, op: *mut f32, out_stride: usize, live: usize) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(q: &[f32], k: &[f32], v: &[f32], s: usize, d: usize, mask: KeyMask<'_>) -> Vec<f32> {
        let mut out = vec![0f32; s * d];
        for i in 0..s {
            let seen: Vec<usize> = (0..s).filter(|&j| mask.sees(i, j)).collect();
            let sc: Vec<f64> = seen.iter().map(|&j| (0..d).map(|c| (q[i * d + c] * k[j * d + c]) as f64).sum()).collect();
            let max = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = sc.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (w, &j) in e.iter().zip(&seen) {
                for c in 0..d {
                    out[i * d + c] += (w / sum * v[j * d + c] as f64) as f32;
                }
            }
        }
        out
    }

    fn run(q: &[f32], k: &[f32], v: &[f32], s: usize, d: usize, mask: KeyMask<'_>) -> Vec<f32> {
        let mut qp = q.to_vec();
        qp.resize(s.div_ceil(QR) * QR * d, 0.0);
        let mut kp = vec![0f32; packed_keys_len(s, d)];
        for j in 0..s {
            for c in 0..d {
                kp[packed_key_index(j, c, d)] = k[j * d + c];
            }
        }
        let mut out = vec![0f32; s * d];
        // Two calls, as the op splits rows into tasks.
        let (all, half) = (s.div_ceil(QR) * QR, s.div_ceil(2 * QR) * QR);
        for rows in [0..half, half..all] {
            let qr = &qp[rows.start * d..rows.end * d];
            unsafe { attend(qr, &kp, v, d, s, d, mask, rows, out.as_mut_ptr(), d, &mut Vec::new()) };
        }
        out
    }

    #[test]
    fn matches_the_formula_with_padding_and_window_and_ignores_padding_keys() {
        let mut seed = 5u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as u32 % 2001) as f32 / 1000.0 - 1.0
        };
        for (s, d, pad, reach) in [(1, 16, 0, 0), (5, 32, 2, 0), (19, 48, 3, 0), (37, 64, 5, 4), (70, 256, 9, 0)] {
            let (q, k, v): (Vec<f32>, Vec<f32>, Vec<f32>) =
                ((0..s * d).map(|_| rnd()).collect(), (0..s * d).map(|_| rnd()).collect(), (0..s * d).map(|_| rnd()).collect());
            let keep: Vec<bool> = (0..s).map(|j| j < s - pad).collect();
            let mask = KeyMask { keep: &keep, reach };
            let got = run(&q, &k, &v, s, d, mask);
            let want = reference(&q, &k, &v, s, d, mask);
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-5, "s={s} d={d}: max error {err}");
            // The valid part alone, without padding, gives bit-identical rows.
            let sv = s - pad;
            if sv > 0 {
                let alone = run(&q[..sv * d], &k[..sv * d], &v[..sv * d], sv, d, KeyMask { keep: &keep[..sv], reach });
                assert_eq!(alone[..], got[..sv * d], "s={s}: padding changed the valid rows");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn fast_and_portable_paths_agree() {
        if !crate::accelerated() {
            return;
        }
        let (s, d) = (37usize, 80usize);
        let st = s.div_ceil(KEY_TILE) * KEY_TILE;
        let val = |i: usize| ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
        let q: Vec<f32> = (0..QR * d).map(val).collect();
        let keys: Vec<f32> = (0..packed_keys_len(s, d)).map(|i| val(i + 11)).collect();
        let v: Vec<f32> = (0..s * d).map(|i| val(i + 29)).collect();
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()));
        let (mut fast, mut slow) = (vec![0f32; QR * st], vec![0f32; QR * st]);
        unsafe { avx512::scores(&q, &keys, st, d, &mut fast) };
        scores_portable(&q, &keys, st, d, &mut slow);
        assert!(close(&fast, &slow), "scores");
        let mut row: Vec<f32> = (0..st).map(|i| if i % 5 == 3 { f32::NEG_INFINITY } else { val(i) * 4.0 }).collect();
        let mut row2 = row.clone();
        let (a, b) = (unsafe { crate::avx512::exp_shifted(&mut row, 4.0) }, exp_shifted_portable(&mut row2, 4.0));
        assert!(close(&row, &row2) && close(&[a], &[b]), "exp");
        let p: Vec<f32> = (0..QR * st).map(|i| val(i + 3).abs()).collect();
        let (mut fast, mut slow) = (vec![0f32; QR * d], vec![0f32; QR * d]);
        unsafe { avx512::weighted_sum(&p, st, &v, d, s, d, fast.as_mut_ptr(), d, QR) };
        unsafe { weighted_sum_portable(&p, st, &v, d, s, d, slow.as_mut_ptr(), d, QR) };
        assert!(close(&fast, &slow), "weighted sum");
    }
}
