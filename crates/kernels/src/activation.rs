//! GeGLU (`gelu_tanh(gate) · up`), the epilogue of the gate/up projection.

#[cfg(target_arch = "x86_64")]
use crate::arch::x86_64::activation as simd;
use crate::cpu::caps;
use crate::portable;

/// `out[r][j] = gelu_tanh(y[r][j]) · y[r][half + j]` for rows of `y` `[.., 2·half]`.
pub fn geglu_rows(y: &[f32], half: usize, out: &mut [f32]) {
    assert!(y.len() == 2 * out.len() && half > 0 && out.len().is_multiple_of(half));
    #[cfg(target_arch = "x86_64")]
    if caps().f32x16() {
        // SAFETY: features checked; lengths asserted.
        return unsafe { simd::geglu_rows(y, half, out) };
    }
    portable::geglu_rows(y, half, out)
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
        let y: Vec<f32> = (0..3 * 2 * half).map(|i| ((i * 7919) % 2001) as f32 / 200.0 - 5.0).collect();
        let (mut a, mut b) = (vec![0f32; 3 * half], vec![0f32; 3 * half]);
        geglu_rows(&y, half, &mut a);
        portable::geglu_rows(&y, half, &mut b);
        for (x, z) in a.iter().zip(&b) {
            assert!((x - z).abs() <= 2e-6 * z.abs().max(1e-3), "{x} vs {z}");
        }
    }
}
