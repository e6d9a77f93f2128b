//! Scalar math shared by the portable and the vector kernels: constants of `e^x` and GELU, `exp_fast`,
//! `gelu_tanh`, `sum_squares`.

pub const LOG2E: f32 = std::f32::consts::LOG2_E;
/// Taylor coefficients of `2^f = e^(f·ln 2)`.
pub const EXP2_C: [f32; 8] =
    [1.0, std::f32::consts::LN_2, 0.240_226_5, 0.055_504_11, 0.009_618_129, 0.001_333_356, 1.540_353e-4, 1.525_273e-5];
/// √(2/π), GELU's tanh-approximation constant.
pub const GELU_K: f32 = 0.797_884_6;
/// Scores this far below a row's maximum get probability 0 (e^−69 ≈ 1e−30): smaller ones would reach the weighted
/// sum as subnormal floats, which cost the FPU a slow path on every multiply.
pub const SOFTMAX_FLOOR: f32 = -69.0;

/// `e^x` to ~1e-7 relative, in plain arithmetic that the compiler vectorizes (range-reduced to `2^n · 2^f`,
/// `|f| ≤ 0.5`, degree-7 Taylor polynomial of `2^f`). Saturates outside [-87, 88].
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    let t = x.clamp(-87.0, 88.0) * LOG2E;
    // Round to nearest with the 1.5·2^23 trick (vectorizes, unlike f32::round).
    let n = (t + 12_582_912.0) - 12_582_912.0;
    let f = t - n;
    // Plain multiply-adds: `mul_add` is a libm call where the build has no FMA.
    let c = EXP2_C;
    let p = ((((((c[7] * f + c[6]) * f + c[5]) * f + c[4]) * f + c[3]) * f + c[2]) * f + c[1]) * f + c[0];
    f32::from_bits(((n as i32 + 127) << 23) as u32) * p
}

/// GELU, tanh approximation (`0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`), written as `x / (1 + e^(−2u))`.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    let u = GELU_K * (0.044_715 * x * x * x + x);
    x / (1.0 + exp_fast(-2.0 * u))
}

/// `Σ x²`, summed in 16 lanes (the compiler vectorizes it; a single running sum is a serial dependency chain, slower
/// and less accurate).
pub fn sum_squares(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v * v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_tanh_matches_the_formula() {
        let mut worst = 0f64;
        for i in -20_000..=20_000 {
            let x = i as f32 * 0.001;
            let xd = x as f64;
            let want = 0.5 * xd * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3))).tanh());
            let err = (gelu_tanh(x) as f64 - want).abs() / want.abs().max(1e-3);
            worst = worst.max(err);
        }
        assert!(worst < 2e-6, "worst relative error {worst}");
        assert_eq!(gelu_tanh(0.0), 0.0);
        assert!(gelu_tanh(-200.0).abs() < 1e-30);
        assert_eq!(gelu_tanh(200.0), 200.0);
    }
}
