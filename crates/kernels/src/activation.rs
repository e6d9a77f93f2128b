//! GeGLU (`gelu_tanh(gate) · up`), the epilogue of the gate/up projection.

#[cfg(target_arch = "x86_64")]
use crate::arch::x86_64::{activation as simd, avx2};
use crate::cpu::{caps, Path};
use crate::portable;

/// `out[r][j] = gelu_tanh(y[r][j]) · y[r][half + j]` for rows of `y` `[.., 2·half]`.
pub fn geglu_rows(y: &[f32], half: usize, out: &mut [f32]) {
    assert!(y.len() == 2 * out.len() && half > 0 && out.len().is_multiple_of(half));
    // SAFETY (each vector path): features checked; lengths asserted.
    match caps().f32_path() {
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => unsafe { simd::geglu_rows(y, half, out) },
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe { avx2::geglu_rows(y, half, out) },
        _ => portable::geglu_rows(y, half, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scalar::gelu_tanh;

    #[test]
    fn rows_apply_gelu_to_the_gate_times_up() {
        let mut out = [0f32; 2];
        geglu_rows(&[1.0, -1.0, 3.0, 5.0], 2, &mut out);
        assert_eq!(out, [gelu_tanh(1.0) * 3.0, gelu_tanh(-1.0) * 5.0]);
    }
}

#[cfg(test)]
mod paths {
    use super::*;

    #[test]
    fn fast_and_portable_geglu_agree() {
        let half = 1152 + 8; // a tail past the last full vector
        let mut y: Vec<f32> = (0..3 * 2 * half).map(|i| ((i * 7919) % 2001) as f32 / 200.0 - 5.0).collect();
        y[..6].copy_from_slice(&[200.0, -200.0, 60.0, -60.0, 0.0, -0.0]); // exp's clamps, and zeros

        let (mut a, mut b) = (vec![0f32; 3 * half], vec![0f32; 3 * half]);
        geglu_rows(&y, half, &mut a);
        portable::geglu_rows(&y, half, &mut b);
        #[cfg(target_arch = "x86_64")]
        if caps().avx2() {
            let mut c = vec![0f32; 3 * half];
            // SAFETY: the CPU has the features.
            unsafe { avx2::geglu_rows(&y, half, &mut c) };
            assert_eq!(c, b, "the AVX2 build of the portable loop gives the same values");
        }
        for (x, z) in a.iter().zip(&b) {
            assert!((x - z).abs() <= 2e-6 * z.abs().max(1e-3), "{x} vs {z}");
        }
    }
}
