//! The portable kernels: plain loops, the slow reference of each vector kernel in `arch` and the path of CPUs
//! without its features. The int8 GEMM gives results bit-identical to the VNNI path.

use crate::layout::{
    code4_offset, code8_offset, f16_value, scale_offset, ActivationBits, Packed, QuantizedRows, BLOCK, KEY_TILE, QR,
    TILE,
};
use crate::scalar::{exp_fast, gelu_tanh, SOFTMAX_FLOOR};
use std::ops::Range;

/// One block's codes (`round(v · top / amax)`, ties to even, within ±`top`) and the block's scale.
fn block_codes(vals: &[f32], top: f32) -> (impl Iterator<Item = i32> + '_, f32) {
    let amax = vals.iter().fold(0f32, |a, v| a.max(v.abs()));
    let (s, inv) = if amax > 0.0 { (amax / top, top / amax) } else { (0.0, 0.0) };
    (vals.iter().map(move |v| (v * inv).round_ties_even().clamp(-top, top) as i32), s)
}

pub fn quantize_rows(x: &[f32], m: usize, k: usize, q: &mut [i8], scale: &mut [f32], corr: &mut [i32]) {
    quantize_into(x, m, k, ActivationBits::Int8, scale, corr, |i, c| q[i] = c as i8);
}

/// 16-bit codes per row and block (`ActivationBits::Int16`), with the same `-128 · Σq` term as 8-bit ones.
pub fn quantize_rows16(x: &[f32], m: usize, k: usize, q: &mut [i16], scale: &mut [f32], corr: &mut [i32]) {
    quantize_into(x, m, k, ActivationBits::Int16, scale, corr, |i, c| q[i] = c as i16);
}

fn quantize_into(
    x: &[f32],
    m: usize,
    k: usize,
    bits: ActivationBits,
    scale: &mut [f32],
    corr: &mut [i32],
    mut store: impl FnMut(usize, i32),
) {
    let nb = k / BLOCK;
    for r in 0..m {
        for b in 0..nb {
            let off = r * k + b * BLOCK;
            let (codes, s) = block_codes(&x[off..off + BLOCK], bits.max_code());
            let mut sum = 0;
            for (j, c) in codes.enumerate() {
                store(off + j, c);
                sum += c;
            }
            scale[r * nb + b] = s;
            corr[r * nb + b] = -128 * sum;
        }
    }
}

/// 8-bit output tiles `t0..t1` for rows `rows` of `qa`.
///
/// # Safety
/// `out` must be valid for writes of `qa.m × w.n` floats, and no other thread may write those rows of the columns
/// of tiles `t0..t1`.
pub unsafe fn gemm8_tiles<const B: u8>(
    qa: &QuantizedRows,
    w: Packed<'_, B>,
    out: *mut f32,
    rows: Range<usize>,
    t0: usize,
    t1: usize,
) {
    gemm8_codes(qa, &qa.q, w, out, rows, t0, t1)
}

/// 8-bit weights against 16-bit activation codes (`qa.q16`), output tiles `t0..t1` for rows `rows`. A block's sum
/// stays below 32 · 255 · 32767 < 2³¹.
///
/// # Safety
/// As `gemm8_tiles`.
pub unsafe fn gemm8a16_tiles<const B: u8>(
    qa: &QuantizedRows,
    w: Packed<'_, B>,
    out: *mut f32,
    rows: Range<usize>,
    t0: usize,
    t1: usize,
) {
    gemm8_codes(qa, &qa.q16, w, out, rows, t0, t1)
}

/// # Safety
/// As `gemm8_tiles`; `codes` are `qa`'s activation codes (8- or 16-bit).
unsafe fn gemm8_codes<const B: u8, T: Copy + Into<i32>>(
    qa: &QuantizedRows,
    codes: &[T],
    w: Packed<'_, B>,
    out: *mut f32,
    rows: Range<usize>,
    t0: usize,
    t1: usize,
) {
    let (k, n, nb) = (w.k, w.n, w.blocks());
    for t in t0..t1 {
        for c in 0..TILE {
            let col = t * TILE + c;
            for r in rows.clone() {
                let mut f = 0f32;
                for b in 0..nb {
                    let mut acc = qa.corr[r * nb + b];
                    for kk in b * BLOCK..(b + 1) * BLOCK {
                        acc += w.codes[code8_offset(t, k, kk, c)] as i32 * codes[r * k + kk].into();
                    }
                    let sc = f16_value(w.scales[scale_offset(t, nb, b, c)]) * qa.scale[r * nb + b];
                    f = (acc as f32).mul_add(sc, f);
                }
                *out.add(r * n + col) = f;
            }
        }
    }
}

/// 4-bit output tiles `t0..t1` for rows `rows` of `qa`.
///
/// # Safety
/// As `gemm8_tiles`.
pub unsafe fn gemm4_tiles<const B: u8>(
    qa: &QuantizedRows,
    w: Packed<'_, B>,
    out: *mut f32,
    rows: Range<usize>,
    t0: usize,
    t1: usize,
) {
    let (k, n, nb) = (w.k, w.n, w.k / BLOCK);
    for t in t0..t1 {
        for c in 0..TILE {
            let col = t * TILE + c;
            for r in rows.clone() {
                let mut f = 0f32;
                for b in 0..nb {
                    let mut acc = 0i32;
                    for j in 0..4 {
                        for i in 0..4 {
                            let byte = w.codes[code4_offset(t, nb, b, j, c, i)] as i32;
                            acc += (byte & 0xF) * qa.q[r * k + b * BLOCK + j * 4 + i] as i32;
                            acc += (byte >> 4) * qa.q[r * k + b * BLOCK + 16 + j * 4 + i] as i32;
                        }
                    }
                    let base = (t * nb + b) * 2 * TILE;
                    let sc = f16_value(w.scales[base + c]) * qa.scale[r * nb + b];
                    f = (acc as f32).mul_add(sc, f);
                    f = (-f16_value(w.scales[base + TILE + c])).mul_add(qa.ssum[r * nb + b], f);
                }
                *out.add(r * n + col) = f;
            }
        }
    }
}

pub fn geglu_rows(y: &[f32], half: usize, out: &mut [f32]) {
    for (row, o) in y.chunks_exact(2 * half).zip(out.chunks_exact_mut(half)) {
        let (g, u) = row.split_at(half);
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = gelu_tanh(g) * u;
        }
    }
}

/// Softmax numerators in place (0 below `SOFTMAX_FLOOR`) and their sum, in 16 lanes by key position.
pub fn exp_shifted(row: &mut [f32], max: f32) -> f32 {
    let mut lanes = [0f32; KEY_TILE];
    for chunk in row.chunks_exact_mut(KEY_TILE) {
        for (l, x) in lanes.iter_mut().zip(chunk.iter_mut()) {
            *x = if *x - max >= SOFTMAX_FLOOR { exp_fast(*x - max) } else { 0.0 };
            *l += *x;
        }
    }
    lanes.iter().sum()
}

/// Scores of `QR` query rows against key tiles `tiles` of the packed keys (`st` keys, padded to whole tiles).
pub fn scores(q: &[f32], keys: &[f32], st: usize, d: usize, tiles: Range<usize>, scores: &mut [f32]) {
    for r in 0..QR {
        for t in tiles.clone() {
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

/// `out[r] += Σ_{j in keys} p[r][j] · v[j]` for the first `live` of `QR` rows, key by key in order (so summing a
/// range in consecutive pieces gives the same bits as summing it at once).
///
/// # Safety
/// `out` must be valid for reads and writes of `d` floats at each of the `live` rows `out + r·out_stride`, which no
/// other thread may access meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn weighted_sum(
    p: &[f32],
    st: usize,
    v: &[f32],
    v_stride: usize,
    keys: Range<usize>,
    d: usize,
    out: *mut f32,
    out_stride: usize,
    live: usize,
) {
    for r in 0..live {
        let o = std::slice::from_raw_parts_mut(out.add(r * out_stride), d);
        for j in keys.clone() {
            let w = p[r * st + j];
            for (x, vv) in o.iter_mut().zip(&v[j * v_stride..][..d]) {
                *x += w * vv;
            }
        }
    }
}
