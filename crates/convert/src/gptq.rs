//! GPTQ (Frantar et al. 2022): quantize the input columns one at a time and spread each column's rounding error
//! over the columns not yet quantized, weighted by the inverse of the layer's input second moment `H = E[xᵀx]`
//! (measured on calibration texts). Two grids: 4-bit asymmetric blocks (output format as
//! `blocks::quantize_blocks_asym4`) and 8-bit symmetric blocks (as `blocks::quantize_blocks(.., 8)`: scale
//! `amax / 127` per block, codes `q + 128`); only the rounding decisions differ from round-to-nearest.

/// Relative diagonal damping of H (GPTQ's default).
const DAMP: f64 = 0.01;
/// Rows updated together (one pass over the factor's row feeds all of them).
const ROWS: usize = 8;

/// Upper-triangular `U` (row-major `[k, k]`) with `Uᵀ U = (H + damp)⁻¹`. With `P` the reversal permutation and
/// `R` the lower Cholesky factor of `P H P`, `U = P R⁻¹ P`. None when H is not positive definite.
fn inverse_factor(h: &[f32], k: usize, damp: f64) -> Option<Vec<f32>> {
    let mean_diag = (0..k).map(|i| h[i * k + i] as f64).sum::<f64>() / k as f64;
    let eps = damp * mean_diag.max(1e-12);
    // Reversed H, with dead inputs (zero variance) given a unit diagonal.
    let mut a = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..k {
            a[(k - 1 - i) * k + (k - 1 - j)] = h[i * k + j] as f64;
        }
    }
    for i in 0..k {
        let d = &mut a[i * k + i];
        if *d <= 0.0 {
            *d = 1.0;
        }
        *d += eps;
    }
    // Cholesky, lower, in place.
    for j in 0..k {
        let mut d = a[j * k + j];
        for m in 0..j {
            d -= a[j * k + m] * a[j * k + m];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        a[j * k + j] = d;
        for i in j + 1..k {
            let (ri, rj) = (i * k, j * k);
            let mut s = a[ri + j];
            for m in 0..j {
                s -= a[ri + m] * a[rj + m];
            }
            a[ri + j] = s / d;
        }
    }
    // R⁻¹ (lower), one column at a time.
    let mut inv = vec![0f64; k * k];
    let mut x = vec![0f64; k];
    for c in 0..k {
        x[c] = 1.0 / a[c * k + c];
        for i in c + 1..k {
            let mut s = 0.0;
            for m in c..i {
                s += a[i * k + m] * x[m];
            }
            x[i] = -s / a[i * k + i];
        }
        for i in c..k {
            inv[i * k + c] = x[i];
        }
    }
    let mut u = vec![0f32; k * k];
    for i in 0..k {
        for j in i..k {
            u[i * k + j] = inv[(k - 1 - i) * k + (k - 1 - j)] as f32;
        }
    }
    Some(u)
}

/// A per-block rounding grid: its parameters from a block's values (as updated so far), and each value's code and
/// dequantized value.
#[derive(Clone, Copy)]
enum Grid {
    /// Asymmetric 4-bit codes 0..15 with the scale search of `blocks::asym4_block_params`.
    Asym4,
    /// Symmetric 8-bit codes `q + 128`, scale `amax / 127` as `blocks::quantize_blocks(.., 8)` computes it; values
    /// are rounded onto the grid the kernels read (the scale in fp16).
    Sym8,
}

impl Grid {
    /// (scale, zero point) of a block.
    fn params(self, vals: &[f32]) -> (f32, u8) {
        match self {
            Grid::Asym4 => crate::blocks::asym4_block_params(vals),
            Grid::Sym8 => (crate::blocks::sym_block_scale(vals, 8), 128),
        }
    }

    /// (code, dequantized value) of `x` in a block of `scale` and `zp`.
    fn round(self, x: f32, scale: f32, zp: u8) -> (u8, f32) {
        let zp = zp as f32;
        match self {
            Grid::Asym4 => {
                if scale == 0.0 {
                    (zp as u8, 0.0)
                } else {
                    let c = ((x / scale).round() + zp).clamp(0.0, 15.0);
                    (c as u8, (c - zp) * scale)
                }
            }
            Grid::Sym8 => {
                let stored = half::f16::from_f32(scale).to_f32();
                if stored == 0.0 {
                    (128, 0.0)
                } else {
                    let q = (x / stored).round().clamp(-128.0, 127.0);
                    ((q + zp) as u8, q * stored)
                }
            }
        }
    }
}

/// GPTQ for `w` `[n, k]` with input second moment `h` `[k, k]`, asymmetric 4-bit blocks (codes, scales, zero
/// points); None when H cannot be factored.
pub fn gptq_asym4(w: &[f32], n: usize, k: usize, block: usize, h: &[f32]) -> Option<(Vec<u8>, Vec<f32>, Vec<u8>)> {
    gptq(w, n, k, block, h, Grid::Asym4)
}

/// GPTQ for `w` `[n, k]` with input second moment `h` `[k, k]`, symmetric 8-bit blocks: codes `q + 128` and scales
/// in the layout of `blocks::quantize_blocks(w, n, k, block, 8)`; None when H cannot be factored.
pub fn gptq_sym8(w: &[f32], n: usize, k: usize, block: usize, h: &[f32]) -> Option<(Vec<u8>, Vec<f32>)> {
    gptq(w, n, k, block, h, Grid::Sym8).map(|(codes, scales, _)| (codes, scales))
}

fn gptq(w: &[f32], n: usize, k: usize, block: usize, h: &[f32], grid: Grid) -> Option<(Vec<u8>, Vec<f32>, Vec<u8>)> {
    if h.len() != k * k {
        return None;
    }
    let u = [DAMP, 0.1, 1.0].iter().find_map(|&d| inverse_factor(h, k, d))?;
    let kb = k.div_ceil(block);
    let mut codes = vec![0u8; n * kb * block];
    let mut scales = vec![0f32; n * kb];
    let mut zps = vec![8u8; n * kb];
    let threads = std::thread::available_parallelism().map(|p| p.get()).unwrap_or(1).clamp(1, 8);
    let per = n.div_ceil(threads).div_ceil(ROWS) * ROWS;
    std::thread::scope(|scope| {
        let jobs = codes
            .chunks_mut(per * kb * block)
            .zip(scales.chunks_mut(per * kb))
            .zip(zps.chunks_mut(per * kb))
            .enumerate();
        for (t, ((c, s), z)) in jobs {
            let (u, w) = (&u, &w);
            scope.spawn(move || {
                let r0 = t * per;
                let r1 = (r0 + per).min(n);
                for g in (r0..r1).step_by(ROWS) {
                    let g1 = (g + ROWS).min(r1);
                    let out = (&mut c[(g - r0) * kb * block..], &mut s[(g - r0) * kb..], &mut z[(g - r0) * kb..]);
                    rows(w, k, block, u, g, g1, grid, out);
                }
            });
        }
    });
    Some((codes, scales, zps))
}

/// Rows `g0..g1` of `w`, written at the start of `out`'s codes, scales and zero points.
#[allow(clippy::too_many_arguments)]
fn rows(
    w: &[f32],
    k: usize,
    block: usize,
    u: &[f32],
    g0: usize,
    g1: usize,
    grid: Grid,
    (codes, scales, zps): (&mut [u8], &mut [f32], &mut [u8]),
) {
    let kb = k.div_ceil(block);
    let mut work: Vec<Vec<f32>> = (g0..g1).map(|r| w[r * k..(r + 1) * k].to_vec()).collect();
    let mut params = vec![(0f32, 8u8); work.len()];
    let mut err = vec![0f32; work.len()];
    for j in 0..k {
        let b = j / block;
        if j % block == 0 {
            let end = ((b + 1) * block).min(k);
            for (i, row) in work.iter().enumerate() {
                let (scale, zp) = grid.params(&row[j..end]);
                params[i] = (scale, zp);
                scales[i * kb + b] = scale;
                zps[i * kb + b] = zp;
            }
        }
        let d = u[j * k + j];
        for (i, row) in work.iter().enumerate() {
            let (scale, zp) = params[i];
            let (code, deq) = grid.round(row[j], scale, zp);
            codes[i * kb * block + j] = code;
            err[i] = (row[j] - deq) / d;
        }
        let tail = &u[j * k + j + 1..(j + 1) * k];
        for (row, &e) in work.iter_mut().zip(&err) {
            if e != 0.0 {
                row[j + 1..].iter_mut().zip(tail).for_each(|(x, &t)| *x -= e * t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Correlated inputs `[tokens, k]` (a few shared factors plus noise, some channels much larger), their second
    /// moment `[k, k]`, and a random weight `[n, k]`.
    fn layer(n: usize, k: usize, tokens: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut rng = deposium_test_support::Rng::new(seed);
        let mut rnd = || rng.centered();
        let factors: Vec<Vec<f32>> = (0..tokens).map(|_| (0..4).map(|_| rnd()).collect()).collect();
        let mix: Vec<f32> = (0..4 * k).map(|_| rnd()).collect();
        let x: Vec<f32> = (0..tokens * k)
            .map(|i| {
                let (t, j) = (i / k, i % k);
                let v: f32 = (0..4).map(|f| factors[t][f] * mix[f * k + j]).sum::<f32>() + 0.1 * rnd();
                if j % 9 == 0 {
                    v * 6.0
                } else {
                    v
                }
            })
            .collect();
        let mut h = vec![0f32; k * k];
        for t in 0..tokens {
            for a in 0..k {
                for b in 0..k {
                    h[a * k + b] += x[t * k + a] * x[t * k + b] / tokens as f32;
                }
            }
        }
        let w: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
        (x, h, w)
    }

    /// `Σ_t ‖(Ŵ − W) x_t‖²` for a dequantized `Ŵ`.
    fn output_error(deq: &[f32], w: &[f32], x: &[f32], n: usize, k: usize) -> f64 {
        x.chunks(k)
            .map(|xt| {
                (0..n)
                    .map(|r| (0..k).map(|j| ((deq[r * k + j] - w[r * k + j]) * xt[j]) as f64).sum::<f64>().powi(2))
                    .sum::<f64>()
            })
            .sum()
    }

    #[test]
    fn gptq_lowers_the_output_error_of_correlated_inputs() {
        let (n, k, tokens) = (16, 64, 400);
        let (x, h, w) = layer(n, k, tokens, 9);
        let out_err = |codes: &[u8], scales: &[f32], zps: &[u8]| -> f64 {
            output_error(&crate::blocks::dequantize_blocks4(codes, scales, zps, n, k, 32), &w, &x, n, k)
        };
        let (c0, s0, z0) = crate::blocks::quantize_blocks_asym4(&w, n, k, 32);
        let (c1, s1, z1) = gptq_asym4(&w, n, k, 32, &h).expect("factorable");
        let (rtn, gptq) = (out_err(&c0, &s0, &z0), out_err(&c1, &s1, &z1));
        assert!(gptq < 0.7 * rtn, "gptq {gptq} vs round-to-nearest {rtn}");
        // Identity H (uncorrelated unit inputs): no error to spread, the codes stay close to round-to-nearest.
        let eye: Vec<f32> = (0..k * k).map(|i| if i / k == i % k { 1.0 } else { 0.0 }).collect();
        let (c2, ..) = gptq_asym4(&w, n, k, 32, &eye).unwrap();
        let same = c2.iter().zip(&c0).filter(|(a, b)| a == b).count();
        assert!(same as f64 > 0.9 * c0.len() as f64, "{same} of {}", c0.len());
    }

    /// 8-bit GPTQ writes the format of `quantize_blocks(.., 8)`, which our QMatMul8 kernel reads, and lowers the
    /// calibrated output error, both of the weights alone and through the kernel (int8 activations included).
    #[test]
    fn gptq_sym8_codes_run_on_the_int8_kernel_with_a_lower_error() {
        let (n, k, tokens) = (32, 128, 400);
        let (x, h, w) = layer(n, k, tokens, 11);
        let kb = k / 32;
        let (c0, s0) = crate::blocks::quantize_blocks(&w, n, k, 32, 8);
        let (c1, s1) = gptq_sym8(&w, n, k, 32, &h).expect("factorable");
        assert_eq!((c1.len(), s1.len()), (c0.len(), s0.len()));
        // The weights as the kernel reads them: (code − 128) · fp16(scale).
        let deq = |codes: &[u8], scales: &[f32]| -> Vec<f32> {
            let s16: Vec<f32> = scales.iter().map(|&s| half::f16::from_f32(s).to_f32()).collect();
            crate::blocks::dequantize_blocks4(codes, &s16, &vec![128u8; n * kb], n, k, 32)
        };
        let (rtn, gptq) = (output_error(&deq(&c0, &s0), &w, &x, n, k), output_error(&deq(&c1, &s1), &w, &x, n, k));
        assert!(gptq < 0.7 * rtn, "weights: gptq {gptq} vs round-to-nearest {rtn}");
        // Every block's scale is `amax / 127` of the values it rounds: the first block of each row is exactly
        // round-to-nearest's.
        for r in 0..n {
            assert_eq!(s1[r * kb], s0[r * kb]);
        }
        // Through the kernel: x · Ŵᵀ against the fp32 product.
        let product = |w: &[f32]| -> Vec<f32> {
            x.chunks(k)
                .flat_map(|xt| w.chunks(k).map(move |row| row.iter().zip(xt).map(|(a, b)| a * b).sum::<f32>()))
                .collect()
        };
        let exact = product(&w);
        let kernel_err = |codes: &[u8], scales: &[f32]| -> f64 {
            let (packed, packed_scales) = deposium_kernels::pack(codes, scales, n, k);
            let weights = deposium_kernels::Packed8::new(n, k, &packed, &packed_scales).unwrap();
            let mut out = vec![0f32; tokens * n];
            let mut scratch = deposium_kernels::QuantizedRows::default();
            deposium_kernels::matmul(&x, tokens, weights, &mut out, &mut scratch, &deposium_kernels::sequential);
            // The kernel computes with the dequantized weights, up to the activations' int8 rounding.
            let with_deq = product(&deq(codes, scales));
            let (diff, norm) = out
                .iter()
                .zip(&with_deq)
                .fold((0f64, 0f64), |(e, s), (a, b)| (e + ((a - b) as f64).powi(2), s + (*b as f64).powi(2)));
            assert!(diff < 1e-4 * norm, "kernel vs dequantized weights: {diff} of {norm}");
            let err: f64 = out.iter().zip(&exact).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
            err
        };
        let (rtn_k, gptq_k) = (kernel_err(&c0, &s0), kernel_err(&c1, &s1));
        assert!(gptq_k < rtn_k, "kernel: gptq {gptq_k} vs round-to-nearest {rtn_k}");
        // Identity H: nothing to spread, the codes are round-to-nearest's (up to the fp16 scale's rounding).
        let eye: Vec<f32> = (0..k * k).map(|i| if i / k == i % k { 1.0 } else { 0.0 }).collect();
        let (c2, s2) = gptq_sym8(&w, n, k, 32, &eye).unwrap();
        assert_eq!(s2, s0);
        let same = c2.iter().zip(&c0).filter(|(a, b)| a == b).count();
        assert!(same as f64 > 0.98 * c0.len() as f64, "{same} of {}", c0.len());
    }
}
