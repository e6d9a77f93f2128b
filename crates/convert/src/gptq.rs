//! GPTQ (Frantar et al. 2022) for 4-bit asymmetric blocks: quantize the input columns one at a time and spread
//! each column's rounding error over the columns not yet quantized, weighted by the inverse of the layer's input
//! second moment `H = E[xᵀx]` (measured on calibration texts). Output format as `blocks::quantize_blocks_asym4`.

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

/// GPTQ for `w` `[n, k]` with input second moment `h` `[k, k]`; None when H cannot be factored.
pub fn gptq_asym4(w: &[f32], n: usize, k: usize, block: usize, h: &[f32]) -> Option<(Vec<u8>, Vec<f32>, Vec<u8>)> {
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
                    rows(
                        w,
                        k,
                        block,
                        u,
                        g,
                        g1,
                        &mut c[(g - r0) * kb * block..],
                        &mut s[(g - r0) * kb..],
                        &mut z[(g - r0) * kb..],
                    );
                }
            });
        }
    });
    Some((codes, scales, zps))
}

/// Rows `g0..g1` of `w`, written at the start of `codes`, `scales` and `zps`.
#[allow(clippy::too_many_arguments)]
fn rows(
    w: &[f32],
    k: usize,
    block: usize,
    u: &[f32],
    g0: usize,
    g1: usize,
    codes: &mut [u8],
    scales: &mut [f32],
    zps: &mut [u8],
) {
    let kb = k.div_ceil(block);
    let mut work: Vec<Vec<f32>> = (g0..g1).map(|r| w[r * k..(r + 1) * k].to_vec()).collect();
    let mut params = vec![(0f32, 8f32); work.len()];
    let mut err = vec![0f32; work.len()];
    for j in 0..k {
        let b = j / block;
        if j % block == 0 {
            let end = ((b + 1) * block).min(k);
            for (i, row) in work.iter().enumerate() {
                let (scale, zp) = crate::blocks::asym4_block_params(&row[j..end]);
                params[i] = (scale, zp as f32);
                scales[i * kb + b] = scale;
                zps[i * kb + b] = zp;
            }
        }
        let d = u[j * k + j];
        for (i, row) in work.iter().enumerate() {
            let (scale, zp) = params[i];
            let (code, deq) = if scale == 0.0 {
                (zp, 0.0)
            } else {
                let c = ((row[j] / scale).round() + zp).clamp(0.0, 15.0);
                (c, (c - zp) * scale)
            };
            codes[i * kb * block + j] = code as u8;
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

    #[test]
    fn gptq_lowers_the_output_error_of_correlated_inputs() {
        let (n, k, tokens) = (16, 64, 400);
        let mut rng = deposium_test_support::Rng::new(9);
        let mut rnd = || rng.centered();
        // Correlated inputs: a few shared factors plus noise, some channels much larger.
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
        let out_err = |codes: &[u8], scales: &[f32], zps: &[u8]| -> f64 {
            let deq = crate::blocks::dequantize_blocks4(codes, scales, zps, n, k, 32);
            (0..tokens)
                .map(|t| {
                    (0..n)
                        .map(|r| {
                            (0..k).map(|j| ((deq[r * k + j] - w[r * k + j]) * x[t * k + j]) as f64).sum::<f64>().powi(2)
                        })
                        .sum::<f64>()
                })
                .sum()
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
}
