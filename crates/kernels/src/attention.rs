//! Scaled dot-product attention for one (text, head): `softmax(q·kᵀ + mask) · v`, with padding keys and keys out
//! of a sliding window left out. A query's result depends only on its own text's valid keys, in a fixed order, so
//! it is bit-identical whatever the padding or the other texts of the batch.
//!
//! Keys are packed in tiles of 16 (`[S/16][D][16]`, see `pack_key`) so that scores come out 16 keys per vector;
//! queries are taken `QR` rows at a time.

pub use crate::layout::{packed_key_index, packed_keys_len, packed_value_stride, KEY_TILE, QR};
pub use crate::scalar::SOFTMAX_FLOOR;

#[cfg(target_arch = "x86_64")]
use crate::arch::x86_64::{activation as simd_exp, attention as simd, avx2};
use crate::cpu::{caps, Path};
use crate::portable;

/// Which keys query `i` sees: `keep[j]` (not padding) and, with a window, `|i − j| < reach`.
#[derive(Clone, Copy)]
pub struct KeyMask<'a> {
    pub keep: &'a [bool],
    /// 0: no window.
    pub reach: usize,
}

impl KeyMask<'_> {
    /// The keys (`0..s`) that any of the queries `queries` may see, as one range.
    fn reach_of(&self, queries: std::ops::Range<usize>, s: usize) -> std::ops::Range<usize> {
        if self.reach == 0 {
            return 0..s;
        }
        queries.start.saturating_sub(self.reach - 1).min(s)..(queries.end - 1 + self.reach).min(s)
    }

    /// Whether query `i` sees key `j` (the tests' reference; the kernels work on ranges, `reach_of`).
    #[cfg(test)]
    fn sees(&self, i: usize, j: usize) -> bool {
        self.keep[j] && (self.reach == 0 || i.abs_diff(j) < self.reach)
    }
}

/// Key tiles scored for every query group before the next ones (they stay in L1 or L2; 3 is the AVX-512
/// micro-kernel's width).
const SCORE_TILES: usize = 3;
/// Keys whose values are summed into every query group before the next keys' (their values stay in L1).
const VALUE_CHUNK: usize = 32;

/// One head of one text, query rows `rows`. `q`: those rows `[rows.len()][D]` (already scaled; rows ≥ S are padding,
/// `rows` starts at a multiple of `QR` and has a multiple of `QR` rows); `keys`: packed `[S/16][D][16]`;
/// `v`: row `j` at `v[j·v_stride..][..D]`; output row `i` (`i` in `rows`, `i < S`) at `out + i·out_stride`, `D`
/// values. `scores` is scratch.
///
/// Queries go in groups of `QR`. Scores are computed `SCORE_TILES` key tiles at a time for all groups (the tiles
/// stay in cache while every group that sees them is scored), and values are summed `VALUE_CHUNK` keys at a time
/// into every group's output: on long texts the keys and values are read from memory once per call instead of once
/// per group. Each output value still sums its keys in order from zero, so the result does not depend on how rows
/// are split into calls. With a window, each group only scores the key tiles its window reaches and sums only those
/// values: the keys left out would add exact zeros, so the result is the same, bit for bit.
///
/// # Safety
/// `out` must be valid for writes at those rows, and no other thread may access them meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn attend(
    q: &[f32],
    keys: &[f32],
    v: &[f32],
    v_stride: usize,
    s: usize,
    d: usize,
    mask: KeyMask<'_>,
    rows: std::ops::Range<usize>,
    out: *mut f32,
    out_stride: usize,
    scores: &mut Vec<f32>,
) {
    assert!(
        d.is_multiple_of(KEY_TILE)
            && rows.start.is_multiple_of(QR)
            && rows.len().is_multiple_of(QR)
            && rows.end <= s.div_ceil(QR) * QR
    );
    assert!(q.len() >= rows.len() * d && keys.len() >= packed_keys_len(s, d) && mask.keep.len() >= s);
    assert!(s == 0 || v.len() >= (s - 1) * v_stride + d);
    let st = s.div_ceil(KEY_TILE) * KEY_TILE;
    // Query groups with a row inside the text: (first row, rows inside the text, keys seen, key tiles scored).
    let groups: Vec<_> = rows
        .clone()
        .step_by(QR)
        .map(|r0| (r0, (rows.end.min(s).saturating_sub(r0)).min(QR)))
        .take_while(|&(_, live)| live > 0)
        .map(|(r0, live)| {
            let seen = mask.reach_of(r0..r0 + live, s);
            let tiles = seen.start / KEY_TILE..seen.end.div_ceil(KEY_TILE);
            (r0, live, seen, tiles)
        })
        .collect();
    let (Some(first), Some(last)) = (groups.first(), groups.last()) else { return };
    // Windows move forward with the rows, so the first and last groups bound the keys of all.
    let (all_tiles, all_seen) = (first.3.start..last.3.end, first.2.start..last.2.end);
    // Group g's QR score rows.
    let group = |g: usize| g * QR * st..(g + 1) * QR * st;
    let overlap = |a: &std::ops::Range<usize>, b: &std::ops::Range<usize>| a.start.max(b.start)..a.end.min(b.end);
    scores.resize(groups.len() * QR * st, 0.0);
    for t0 in all_tiles.clone().step_by(SCORE_TILES) {
        let chunk = t0..t0 + SCORE_TILES;
        for (g, (r0, _, _, tiles)) in groups.iter().enumerate() {
            let t = overlap(&chunk, tiles);
            if !t.is_empty() {
                let qg = &q[(r0 - rows.start) * d..(r0 - rows.start + QR) * d];
                scores_rows(qg, keys, st, d, t, &mut scores[group(g)]);
            }
        }
    }
    for (g, (r0, live, _, tiles)) in groups.iter().enumerate() {
        let span = tiles.start * KEY_TILE..tiles.end * KEY_TILE;
        for (r, row) in scores[group(g)].chunks_exact_mut(st).enumerate().take(*live) {
            softmax_masked(&mut row[span.clone()], span.start, s, r0 + r, mask);
            // SAFETY: the caller guarantees the output rows inside the text.
            std::slice::from_raw_parts_mut(out.add((r0 + r) * out_stride), d).fill(0.0);
        }
    }
    for c0 in (all_seen.start / VALUE_CHUNK * VALUE_CHUNK..all_seen.end).step_by(VALUE_CHUNK) {
        let chunk = c0..c0 + VALUE_CHUNK;
        for (g, (r0, live, seen, _)) in groups.iter().enumerate() {
            let keys = overlap(&chunk, seen);
            if !keys.is_empty() {
                // SAFETY: as above.
                weighted_sum(&scores[group(g)], st, v, v_stride, keys, d, out.add(r0 * out_stride), out_stride, *live);
            }
        }
    }
}

/// `row[j] ← e^(row[j] − max) / Σ` over the keys query `i` sees (`row` holds keys `from..`), 0 elsewhere (all 0
/// when none is seen). Sums run in 16 lanes by key position, so keys that are not seen change nothing.
fn softmax_masked(row: &mut [f32], from: usize, s: usize, i: usize, mask: KeyMask<'_>) {
    // The window, then padding: keys outside `lo..hi` or not kept get −∞ (straight loops the compiler vectorizes).
    let seen = mask.reach_of(i..i + 1, s);
    let (lo, hi) = (seen.start.max(from) - from, seen.end.max(from) - from);
    let (lo, hi) = (lo.min(row.len()), hi.min(row.len()));
    row[..lo].fill(f32::NEG_INFINITY);
    row[hi..].fill(f32::NEG_INFINITY);
    for (x, &keep) in row[lo..hi].iter_mut().zip(&mask.keep[from + lo..from + hi]) {
        *x = if keep { *x } else { f32::NEG_INFINITY };
    }
    let max = row[lo..hi].iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    let inv = 1.0 / exp_shifted(row, max);
    row.iter_mut().for_each(|x| *x *= inv);
}

/// Softmax numerators in place (0 below `SOFTMAX_FLOOR`) and their sum, in 16 lanes by key position.
fn exp_shifted(row: &mut [f32], max: f32) -> f32 {
    // SAFETY (each vector path): the CPU has its features; the row is a whole number of key tiles.
    match caps().f32_path() {
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => unsafe { simd_exp::exp_shifted(row, max) },
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { avx2::exp_shifted(row, max) },
        _ => portable::exp_shifted(row, max),
    }
}

/// Scores of `QR` query rows against key tiles `tiles` of the packed keys (`st` keys, padded to whole tiles).
fn scores_rows(q: &[f32], keys: &[f32], st: usize, d: usize, tiles: std::ops::Range<usize>, scores: &mut [f32]) {
    // SAFETY (each vector path): the CPU has its features; `attend` checked the bounds.
    match caps().f32_path() {
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => unsafe { simd::scores(q, keys, st, d, tiles, scores) },
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { avx2::scores(q, keys, st, d, tiles, scores) },
        _ => portable::scores(q, keys, st, d, tiles, scores),
    }
}

/// `out[r] += Σ_{j in keys} p[r][j] · v[j]` for the first `live` of `QR` rows, key by key in order.
///
/// # Safety
/// As `portable::weighted_sum`.
#[allow(clippy::too_many_arguments)]
unsafe fn weighted_sum(
    p: &[f32],
    st: usize,
    v: &[f32],
    v_stride: usize,
    keys: std::ops::Range<usize>,
    d: usize,
    out: *mut f32,
    out_stride: usize,
    live: usize,
) {
    match caps().f32_path() {
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => simd::weighted_sum(p, st, v, v_stride, keys, d, out, out_stride, live),
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => avx2::weighted_sum(p, st, v, v_stride, keys, d, out, out_stride, live),
        _ => portable::weighted_sum(p, st, v, v_stride, keys, d, out, out_stride, live),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(q: &[f32], k: &[f32], v: &[f32], s: usize, d: usize, mask: KeyMask<'_>) -> Vec<f32> {
        let mut out = vec![0f32; s * d];
        for i in 0..s {
            let seen: Vec<usize> = (0..s).filter(|&j| mask.sees(i, j)).collect();
            let sc: Vec<f64> =
                seen.iter().map(|&j| (0..d).map(|c| (q[i * d + c] * k[j * d + c]) as f64).sum()).collect();
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
            let (q, k, v): (Vec<f32>, Vec<f32>, Vec<f32>) = (
                (0..s * d).map(|_| rnd()).collect(),
                (0..s * d).map(|_| rnd()).collect(),
                (0..s * d).map(|_| rnd()).collect(),
            );
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
        let (s, d) = (37usize, 80usize);
        let st = s.div_ceil(KEY_TILE) * KEY_TILE;
        let val = |i: usize| ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
        let q: Vec<f32> = (0..QR * d).map(val).collect();
        let keys: Vec<f32> = (0..packed_keys_len(s, d)).map(|i| val(i + 11)).collect();
        let v: Vec<f32> = (0..s * d).map(|i| val(i + 29)).collect();
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()));
        let row0: Vec<f32> = (0..st).map(|i| if i % 5 == 3 { f32::NEG_INFINITY } else { val(i) * 4.0 }).collect();
        let p: Vec<f32> = (0..QR * st).map(|i| val(i + 3).abs()).collect();
        let mut slow_scores = vec![0f32; QR * st];
        portable::scores(&q, &keys, st, d, 0..st / KEY_TILE, &mut slow_scores);
        let mut slow_row = row0.clone();
        let slow_sum = portable::exp_shifted(&mut slow_row, 4.0);
        let mut slow_out = vec![0f32; QR * d];
        unsafe { portable::weighted_sum(&p, st, &v, d, 0..s, d, slow_out.as_mut_ptr(), d, QR) };
        let mut checked = 0;
        for path in [Path::Avx512, Path::Avx2] {
            let (mut sc, mut row, mut out) = (vec![0f32; QR * st], row0.clone(), vec![0f32; QR * d]);
            // SAFETY: each path runs only where the CPU has its features.
            let sum = unsafe {
                match path {
                    Path::Avx512 if caps().f32x16() => {
                        simd::scores(&q, &keys, st, d, 0..st / KEY_TILE, &mut sc);
                        simd::weighted_sum(&p, st, &v, d, 0..s, d, out.as_mut_ptr(), d, QR);
                        simd_exp::exp_shifted(&mut row, 4.0)
                    }
                    Path::Avx2 if caps().avx2() => {
                        avx2::scores(&q, &keys, st, d, 0..st / KEY_TILE, &mut sc);
                        avx2::weighted_sum(&p, st, &v, d, 0..s, d, out.as_mut_ptr(), d, QR);
                        avx2::exp_shifted(&mut row, 4.0)
                    }
                    _ => continue,
                }
            };
            assert!(close(&sc, &slow_scores), "{path:?}: scores");
            assert!(close(&row, &slow_row) && close(&[sum], &[slow_sum]), "{path:?}: exp");
            if path == Path::Avx2 {
                assert!(row == slow_row && sum == slow_sum, "the AVX2 exp repeats the scalar operations");
            }
            assert!(close(&out, &slow_out), "{path:?}: weighted sum");
            checked += 1;
        }
        assert!(checked > 0 || !caps().avx2(), "no vector path ran");
    }
}
