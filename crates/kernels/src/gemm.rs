//! Per-block int8 matrix multiply `y = x · Wᵀ` (weights 8- or 4-bit in `layout`'s packed form, activations
//! quantized per row and block of 32), the quantizer of its activations, and the task split over a pool.

#[cfg(target_arch = "x86_64")]
use crate::arch::x86_64::{avx2, gemm as simd};
use crate::cpu::{caps, l2_bytes, Path};
use crate::layout::{ActivationBits, Packed, Packed8, QuantizedRows, BLOCK, GEMM_ROWS, TILE};
use crate::par::{pool_threads, OutPtr, ParFor};
use crate::portable;
use std::ops::Range;

/// Output tiles per unit of parallel work.
const TILES_PER_TASK: usize = 2;

/// Rows per task of the activation quantizer.
const QUANTIZE_ROWS: usize = 64;

impl QuantizedRows {
    /// Quantizes `x` (`m × k`) to 8-bit codes, rows split over `par`.
    pub fn quantize(&mut self, x: &[f32], m: usize, k: usize, par: ParFor<'_>) {
        self.quantize_on(caps().int8_path(), ActivationBits::Int8, x, m, k, par)
    }

    fn quantize_on(&mut self, path: Path, bits: ActivationBits, x: &[f32], m: usize, k: usize, par: ParFor<'_>) {
        assert!(k.is_multiple_of(BLOCK) && x.len() == m * k && path.runs_here());
        let nb = k / BLOCK;
        self.m = m;
        self.k = k;
        let sixteen = bits == ActivationBits::Int16;
        let (codes8, codes16, ssums) = if sixteen { (0, m * k, 0) } else { (m * k, 0, m * nb) };
        self.q.resize(codes8, 0);
        self.q16.resize(codes16, 0);
        self.scale.resize(m * nb, 0.0);
        self.corr.resize(m * nb, 0);
        self.ssum.resize(ssums, 0.0);
        let (q, q16, scale, corr, ssum) = (
            OutPtr(self.q.as_mut_ptr()),
            OutPtr(self.q16.as_mut_ptr()),
            OutPtr(self.scale.as_mut_ptr()),
            OutPtr(self.corr.as_mut_ptr()),
            OutPtr(self.ssum.as_mut_ptr()),
        );
        par(m.div_ceil(QUANTIZE_ROWS), &|task| {
            let rows = task * QUANTIZE_ROWS..((task + 1) * QUANTIZE_ROWS).min(m);
            let (r0, len) = (rows.start, rows.len());
            let x = &x[r0 * k..rows.end * k];
            // SAFETY: the buffers were sized for `m` rows above (the ones `bits` uses) and outlive `par`; each task
            // takes only its own rows.
            unsafe {
                let scale = std::slice::from_raw_parts_mut(scale.get().add(r0 * nb), len * nb);
                let corr = std::slice::from_raw_parts_mut(corr.get().add(r0 * nb), len * nb);
                if sixteen {
                    let q16 = std::slice::from_raw_parts_mut(q16.get().add(r0 * k), len * k);
                    return quantize_rows16(path, x, len, k, q16, scale, corr);
                }
                let q = std::slice::from_raw_parts_mut(q.get().add(r0 * k), len * k);
                let ssum = std::slice::from_raw_parts_mut(ssum.get().add(r0 * nb), len * nb);
                quantize_rows(path, x, len, k, q, scale, corr);
                for ((ss, &s), &c) in ssum.iter_mut().zip(&*scale).zip(&*corr) {
                    *ss = s * (c / -128) as f32;
                }
            }
        });
    }
}

/// `path` must run on this CPU (`quantize_on` checks it once per call).
fn quantize_rows(path: Path, x: &[f32], m: usize, k: usize, q: &mut [i8], scale: &mut [f32], corr: &mut [i32]) {
    // SAFETY (each vector path): the caller checked the CPU has its features and sized the buffers for `m × k`.
    match path {
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => unsafe { simd::quantize_rows(x, m, k, q, scale, corr) },
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { avx2::quantize_rows(x, m, k, q, scale, corr) },
        _ => portable::quantize_rows(x, m, k, q, scale, corr),
    }
}

/// 16-bit codes; as `quantize_rows`.
fn quantize_rows16(path: Path, x: &[f32], m: usize, k: usize, q: &mut [i16], scale: &mut [f32], corr: &mut [i32]) {
    match path {
        // SAFETY: as in `quantize_rows`.
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { avx2::quantize_rows16(x, m, k, q, scale, corr) },
        _ => portable::quantize_rows16(x, m, k, q, scale, corr),
    }
}

/// `out[m, n] = x[m, k] · Wᵀ` with `x` quantized to 8 bits per block into `scratch`.
///
/// Work is split into tasks of (rows, tiles): rows in blocks whose quantized activations fit in a quarter of this
/// CPU's L2 (one text is usually one block), tiles in small groups. Each output row is computed alone, the same way
/// whatever the split, so results do not depend on the batch or the thread count.
pub fn matmul<const BITS: u8>(
    x: &[f32],
    m: usize,
    w: Packed<'_, BITS>,
    out: &mut [f32],
    scratch: &mut QuantizedRows,
    par: ParFor<'_>,
) {
    matmul_on(caps().int8_path(), ActivationBits::Int8, x, m, w, out, scratch, par)
}

/// `matmul` with activations quantized to 16 bits per block (W8A16): 8-bit weights only. It runs the AVX2 kernel
/// wherever the CPU has AVX2 (AVX-512 CPUs included), else the portable loops.
pub fn matmul_a16(x: &[f32], m: usize, w: Packed8<'_>, out: &mut [f32], scratch: &mut QuantizedRows, par: ParFor<'_>) {
    matmul_on(caps().a16_path(), ActivationBits::Int16, x, m, w, out, scratch, par)
}

/// `matmul` on a given path and activation precision (the tests run every path this CPU has).
#[allow(clippy::too_many_arguments)]
fn matmul_on<const BITS: u8>(
    path: Path,
    bits: ActivationBits,
    x: &[f32],
    m: usize,
    w: Packed<'_, BITS>,
    out: &mut [f32],
    scratch: &mut QuantizedRows,
    par: ParFor<'_>,
) {
    assert!(x.len() == m * w.k && out.len() == m * w.n && path.runs_here());
    assert!(BITS == 8 || bits == ActivationBits::Int8, "16-bit activations need 8-bit weights");
    if m == 0 {
        return;
    }
    scratch.quantize_on(path, bits, x, m, w.k, par);
    let qa: &QuantizedRows = scratch;
    let tiles = w.n / TILE;
    // Few rows: tasks of up to 8 tiles (at least 4 per thread), so that the pair of tiles a task prefetches next is
    // mostly its own.
    let per_task = if m <= 64 { (tiles / (4 * pool_threads())).clamp(TILES_PER_TASK, 8) & !1 } else { TILES_PER_TASK };
    let groups = tiles.div_ceil(per_task);
    let code_bytes = if bits == ActivationBits::Int16 { 2 } else { 1 };
    let block_rows = row_block(w.k * code_bytes);
    let row_blocks = m.div_ceil(block_rows);
    let outp = OutPtr(out.as_mut_ptr());
    par(row_blocks * groups, &|task| {
        let (rb, g) = (task / groups, task % groups);
        let rows = rb * block_rows..((rb + 1) * block_rows).min(m);
        let t0 = g * per_task;
        let t1 = (t0 + per_task).min(tiles);
        // SAFETY: `out` holds `m × n` floats (asserted) and outlives `par`; each task writes only its own rows of the
        // columns of its own tiles `t0..t1`; a vector path runs only where the CPU has its features.
        unsafe { gemm_tiles(path, bits, qa, w, outp.get(), rows, t0, t1) }
    });
}

/// Rows per row block for activation rows of `row_bytes` codes: they fill about a quarter of L2, in whole
/// micro-tiles.
fn row_block(row_bytes: usize) -> usize {
    ((l2_bytes() / 4 / row_bytes.max(1)) / GEMM_ROWS * GEMM_ROWS).max(16 * GEMM_ROWS)
}

/// # Safety
/// As `portable::gemm8_tiles`; `path` as `Caps::int8_path` (`Caps::a16_path` for 16-bit activations) chose it.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_tiles<const BITS: u8>(
    path: Path,
    bits: ActivationBits,
    qa: &QuantizedRows,
    w: Packed<'_, BITS>,
    out: *mut f32,
    rows: Range<usize>,
    t0: usize,
    t1: usize,
) {
    use ActivationBits::{Int16, Int8};
    match (path, bits) {
        #[cfg(target_arch = "x86_64")]
        (Path::Avx512, Int8) => simd::gemm_tiles(qa, w, out, rows, t0, t1),
        #[cfg(target_arch = "x86_64")]
        (Path::Avx2, Int8) => avx2::gemm_tiles::<BITS, false>(qa, w, out, rows, t0, t1),
        #[cfg(target_arch = "x86_64")]
        (Path::Avx2, Int16) => avx2::gemm_tiles::<BITS, true>(qa, w, out, rows, t0, t1),
        (_, Int16) => portable::gemm8a16_tiles(qa, w, out, rows, t0, t1),
        _ if BITS == 4 => portable::gemm4_tiles(qa, w, out, rows, t0, t1),
        _ => portable::gemm8_tiles(qa, w, out, rows, t0, t1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{pack, Packed8};
    use crate::par::sequential;

    pub fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }

    pub fn quantize_weights(w: &[f32], n: usize, k: usize) -> (Vec<u8>, Vec<f32>) {
        let nb = k / BLOCK;
        let mut codes = vec![0u8; n * k];
        let mut scales = vec![0f32; n * nb];
        for col in 0..n {
            for b in 0..nb {
                let v = &w[col * k + b * BLOCK..col * k + (b + 1) * BLOCK];
                let amax = v.iter().fold(0f32, |a, x| a.max(x.abs()));
                let s = amax / 127.0;
                scales[col * nb + b] = s;
                for (j, x) in v.iter().enumerate() {
                    codes[col * k + b * BLOCK + j] = ((x / s).round() as i32 + 128) as u8;
                }
            }
        }
        (codes, scales)
    }

    pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
        let (dot, na, nb) = a.iter().zip(b).fold((0f64, 0f64, 0f64), |(d, p, q), (&x, &y)| {
            (d + x as f64 * y as f64, p + (x as f64).powi(2), q + (y as f64).powi(2))
        });
        dot / (na.sqrt() * nb.sqrt())
    }

    pub fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                y[r * n + c] = (0..k).map(|i| x[r * k + i] as f64 * w[c * k + i] as f64).sum::<f64>() as f32;
            }
        }
        y
    }

    #[test]
    fn fast_and_portable_agree_and_track_fp32() {
        let mut seed = 7;
        for (m, n, k) in [(1, 16, 32), (3, 48, 64), (7, 96, 768), (16, 256, 1152), (9, 32, 96), (22, 32, 64)] {
            let mut x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
            x[0] = 0.0;
            if m > 1 {
                x[k..2 * k].iter_mut().for_each(|v| *v = 0.0); // an all-zero row
            }
            let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed) * 0.1).collect();
            let (codes, scales) = quantize_weights(&w, n, k);
            let (pc, ps) = pack(&codes, &scales, n, k);
            let packed = Packed8::new(n, k, &pc, &ps).unwrap();
            let mut yp = vec![0f32; m * n];
            let mut qp = QuantizedRows {
                m,
                k,
                q: vec![0; m * k],
                q16: vec![],
                scale: vec![0.0; m * k / BLOCK],
                corr: vec![0; m * k / BLOCK],
                ssum: vec![],
            };
            portable::quantize_rows(&x, m, k, &mut qp.q, &mut qp.scale, &mut qp.corr);
            unsafe { portable::gemm8_tiles(&qp, packed, yp.as_mut_ptr(), 0..m, 0, n / TILE) };
            for path in Path::int8_paths() {
                let mut y = vec![0f32; m * n];
                let mut scratch = QuantizedRows::default();
                matmul_on(path, ActivationBits::Int8, &x, m, packed, &mut y, &mut scratch, &sequential);
                assert_eq!(qp.q, scratch.q, "{path:?}: activation codes");
                assert_eq!(qp.corr, scratch.corr, "{path:?}: activation sums");
                assert_eq!(y, yp, "{path:?} == portable path (m={m} n={n} k={k})");
            }

            let cos = cosine(&reference(&x, &w, m, n, k), &yp);
            assert!(cos > 0.9998, "cosine to fp32 {cos} (m={m} n={n} k={k})");
        }
    }
}

#[cfg(test)]
mod sixteen_bit_activations {
    use super::tests::{cosine, reference};
    use super::*;
    use crate::layout::{pack, Packed8};
    use crate::par::sequential;

    /// Every path gives the portable loops' bits, and 16-bit activations leave only the weights' rounding: closer
    /// to fp32 than 8-bit ones, on inputs with an outlier channel as the model's activations have.
    #[test]
    fn paths_agree_and_beat_int8_activations() {
        let mut seed = 5u64;
        let mut rnd = || super::tests::lcg(&mut seed);
        for (m, n, k) in [(1, 16, 32), (5, 48, 96), (13, 64, 768), (7, 32, 1152), (22, 32, 64)] {
            let mut x: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            for r in 0..m {
                x[r * k + 3] *= 40.0;
            }
            if m > 1 {
                x[k..2 * k].iter_mut().for_each(|v| *v = 0.0);
            }
            let w: Vec<f32> = (0..n * k).map(|_| rnd() * 0.1).collect();
            let (codes, scales) = super::tests::quantize_weights(&w, n, k);
            let (pc, ps) = pack(&codes, &scales, n, k);
            let packed = Packed8::new(n, k, &pc, &ps).unwrap();
            let mut portable = QuantizedRows::default();
            let mut yp = vec![0f32; m * n];
            matmul_on(Path::Portable, ActivationBits::Int16, &x, m, packed, &mut yp, &mut portable, &sequential);
            for path in Path::int8_paths().into_iter().filter(|&p| p != Path::Avx512) {
                let mut scratch = QuantizedRows::default();
                let mut y = vec![0f32; m * n];
                matmul_on(path, ActivationBits::Int16, &x, m, packed, &mut y, &mut scratch, &sequential);
                assert_eq!(portable.q16, scratch.q16, "{path:?}: activation codes");
                assert_eq!(portable.scale, scratch.scale, "{path:?}: activation scales");
                assert_eq!(portable.corr, scratch.corr, "{path:?}: activation sums");
                assert_eq!(y, yp, "{path:?} == portable (m={m} n={n} k={k})");
            }
            let mut y = vec![0f32; m * n];
            matmul_a16(&x, m, packed, &mut y, &mut QuantizedRows::default(), &sequential);
            assert_eq!(y, yp, "matmul_a16 (m={m} n={n} k={k})");

            // Against x · dequantized W: 8-bit activations leave their rounding, 16-bit ones almost nothing.
            let w_deq: Vec<f32> = (0..n * k).map(|i| (codes[i] as f32 - 128.0) * scales[i / BLOCK]).collect();
            let exact = reference(&x, &w_deq, m, n, k);
            let mut y8 = vec![0f32; m * n];
            matmul(&x, m, packed, &mut y8, &mut QuantizedRows::default(), &sequential);
            let (e16, e8) = (1.0 - cosine(&exact, &yp), 1.0 - cosine(&exact, &y8));
            assert!(e16 < 1e-7 && e16 < e8 / 100.0, "1 − cosine: 16-bit {e16:e}, 8-bit {e8:e} (m={m} n={n} k={k})");
        }
    }
}

#[cfg(test)]
mod four_bit {
    use super::*;
    use crate::layout::{f16_bits, f16_value, pack4, Packed4};
    use crate::par::sequential;

    #[test]
    fn fast_and_portable_agree_and_track_the_dequantized_weights() {
        let mut seed = 11u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        for (m, n, k) in [(1, 16, 32), (5, 48, 96), (13, 64, 768), (4, 32, 1152), (10, 16, 64), (15, 32, 64)] {
            let nb = k / BLOCK;
            let codes: Vec<u8> = (0..n * k).map(|_| (rnd() % 16) as u8).collect();
            let scales: Vec<f32> = (0..n * nb).map(|_| 0.001 + (rnd() % 100) as f32 * 1e-4).collect();
            let zps: Vec<u8> = (0..n * nb).map(|_| (rnd() % 16) as u8).collect();
            let x: Vec<f32> = (0..m * k).map(|_| (rnd() % 2001) as f32 / 1000.0 - 1.0).collect();
            let (pc, ps) = pack4(&codes, &scales, &zps, n, k);
            let w = Packed4::new(n, k, &pc, &ps).unwrap();
            let mut scratch = QuantizedRows::default();
            let mut yp = vec![0f32; m * n];
            scratch.quantize_on(Path::Portable, ActivationBits::Int8, &x, m, k, &sequential);
            unsafe { portable::gemm4_tiles(&scratch, w, yp.as_mut_ptr(), 0..m, 0, n / TILE) };
            for path in Path::int8_paths() {
                let mut y = vec![0f32; m * n];
                matmul_on(path, ActivationBits::Int8, &x, m, w, &mut y, &mut scratch, &sequential);
                assert_eq!(y, yp, "{path:?} == portable (m={m} n={n} k={k})");
            }
            // Against x · dequantized W: only activation rounding remains.
            let w_deq: Vec<f32> = (0..n * k)
                .map(|i| (codes[i] as f32 - zps[i / BLOCK] as f32) * f16_value(f16_bits(scales[i / BLOCK])))
                .collect();
            let cos = super::tests::cosine(&super::tests::reference(&x, &w_deq, m, n, k), &yp);
            assert!(cos > 0.9999, "cosine {cos} (m={m} n={n} k={k})");
        }
    }
}

#[cfg(test)]
mod invariance {
    use super::*;
    use crate::layout::{pack, Packed8};
    use crate::par::sequential;

    /// A row's result must not depend on the other rows (batch invariance), across row blocks too.
    #[test]
    fn rows_are_independent() {
        let (n, k) = (64, 768);
        let m = 2 * row_block(k) + 5;
        let w: Vec<u8> = (0..n * k).map(|i| ((i * 37) % 255) as u8).collect();
        let s: Vec<f32> = (0..n * k / BLOCK).map(|i| 0.001 + (i % 7) as f32 * 1e-4).collect();
        let (pc, ps) = pack(&w, &s, n, k);
        let p = Packed8::new(n, k, &pc, &ps).unwrap();
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1013) as f32 / 500.0 - 1.0).collect();
        let mut scratch = QuantizedRows::default();
        let mut small = vec![0f32; 4 * n];
        matmul(&x[..4 * k], 4, p, &mut small, &mut scratch, &sequential);
        let mut big = vec![0f32; m * n];
        matmul(&x, m, p, &mut big, &mut scratch, &sequential);
        assert_eq!(small[..], big[..4 * n]);
        for r in [row_block(k) - 1, row_block(k), m - 1] {
            let mut one = vec![0f32; n];
            matmul(&x[r * k..(r + 1) * k], 1, p, &mut one, &mut scratch, &sequential);
            assert_eq!(one[..], big[r * n..(r + 1) * n], "row {r}");
        }
    }
}
