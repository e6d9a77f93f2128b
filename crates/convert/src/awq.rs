//! Activation-aware scaling of 4-bit linear layers (the idea of AWQ, Lin et al. 2023).
//!
//! A layer `y = x · Wᵀ` equals `(x / s) · (W · diag(s))ᵀ` for any positive per-input-channel `s`. Quantizing
//! `W · diag(s)` instead of `W` spends the 4-bit grid where the inputs are large. `1 / s` is folded upstream, exactly:
//! into the RMSNorm weight before the QKV and gate/up projections, into the up-projection rows before the down
//! projection. `s = E[x²]^(α/2)`, with α chosen per layer to minimise the expected output error
//! `Σ_ij E[x_j²] (Ŵ_ij − W_ij)²` (the diagonal of the inputs' second moment, measured on calibration texts).
use std::collections::HashMap;

/// Texts run through the fp32 graph to measure each layer's input statistics (several languages, lengths and
/// registers; the prompts of the model are added in front by the caller).
pub const CALIBRATION_TEXTS: &str = include_str!("calibration_texts.txt");

/// Graph outputs recording a linear layer's input: `CALIB_PREFIX` + layer name.
pub const CALIB_PREFIX: &str = "calib:";

/// Per-layer input statistics over calibration tokens, by linear layer name: `E[xᵀx]` `[k, k]` (row-major) and
/// its diagonal `E[x²]`.
#[derive(Debug, Default, PartialEq)]
pub struct Calibration {
    pub tokens: usize,
    pub mean_sq: HashMap<String, Vec<f32>>,
    pub second_moment: HashMap<String, Vec<f32>>,
}

/// What a graph build does with calibration.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum CalibMode {
    #[default]
    Off,
    /// Expose each layer's input as a graph output (fp32 calibration graph).
    Record,
    /// Scale 4-bit layers by these statistics.
    Apply(std::sync::Arc<Calibration>),
}

const ALPHAS: [f32; 9] = [0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0];

impl Calibration {
    /// From `E[xᵀx]` per layer (`[k, k]`).
    pub fn new(tokens: usize, second_moment: HashMap<String, Vec<f32>>) -> Self {
        let mean_sq = second_moment
            .iter()
            .map(|(name, h)| {
                let k = (h.len() as f64).sqrt() as usize;
                (name.clone(), (0..k).map(|i| h[i * k + i]).collect())
            })
            .collect();
        Calibration { tokens, mean_sq, second_moment }
    }

    /// Input-channel scales for layer `name` (weight `[n, k]`), or None when there are no statistics for it or
    /// scaling does not lower the expected error. `qdq` quantizes and dequantizes a `[n, k]` matrix.
    pub fn scales(
        &self,
        name: &str,
        w: &[f32],
        n: usize,
        k: usize,
        qdq: &(dyn Fn(&[f32]) -> Vec<f32> + Sync),
    ) -> Option<Vec<f32>> {
        self.mean_sq.get(name).filter(|m| m.len() == k).and_then(|m| {
            let (alpha, err, err0, s) = search(w, n, k, m, qdq);
            let signal: f64 =
                w.chunks(k).flat_map(|row| row.iter().zip(m).map(|(x, m)| *m as f64 * (*x as f64).powi(2))).sum();
            tracing::debug!(
                layer = name,
                alpha,
                relative_error = (err / signal).sqrt(),
                unscaled = (err0 / signal).sqrt(),
                "awq"
            );
            s
        })
    }
}

/// `s = m^(α/2)`, normalised so that its geometric mean is 1.
fn scales_for(m: &[f32], alpha: f32) -> Vec<f32> {
    let floor = m.iter().copied().fold(0f32, f32::max) * 1e-6 + 1e-12;
    let mut s: Vec<f32> = m.iter().map(|&v| v.max(floor).powf(alpha / 2.0)).collect();
    let log_mean = s.iter().map(|v| (*v as f64).ln()).sum::<f64>() / s.len() as f64;
    let norm = (-log_mean).exp() as f32;
    s.iter_mut().for_each(|v| *v *= norm);
    s
}

/// (best α, its expected error, the error unscaled, its scales unless α = 0).
fn search(
    w: &[f32],
    n: usize,
    k: usize,
    m: &[f32],
    qdq: &(dyn Fn(&[f32]) -> Vec<f32> + Sync),
) -> (f32, f64, f64, Option<Vec<f32>>) {
    let error = |alpha: f32| -> (f64, Vec<f32>) {
        let s = scales_for(m, alpha);
        let scaled: Vec<f32> = w.chunks(k).flat_map(|row| row.iter().zip(&s).map(|(x, s)| x * s)).collect();
        let deq = qdq(&scaled);
        let mut err = 0f64;
        for r in 0..n {
            for j in 0..k {
                let d = (deq[r * k + j] / s[j] - w[r * k + j]) as f64;
                err += m[j] as f64 * d * d;
            }
        }
        (err, s)
    };
    let results: Vec<(f64, Vec<f32>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = ALPHAS.iter().map(|&a| scope.spawn(move || error(a))).collect();
        handles.into_iter().map(|h| h.join().expect("awq search thread")).collect()
    });
    let best = results.iter().enumerate().min_by(|a, b| a.1 .0.total_cmp(&b.1 .0)).map(|(i, _)| i).unwrap_or(0);
    let (err, err0) = (results[best].0, results[0].0);
    (ALPHAS[best], err, err0, (best != 0).then(|| results.into_iter().nth(best).unwrap().1))
}

/// SmoothQuant's input scales (Xiao et al. 2022) for a weight `[n, k]` whose inputs have mean squares `m`:
/// `s_j = rms_j^α / max_i |W_ij|^(1−α)`, normalised so that their geometric mean is 1. The layer then sees `x / s`
/// (outlier channels shrunk before the activations are rounded) and stores `W · diag(s)`.
pub fn smooth_scales(w: &[f32], n: usize, k: usize, m: &[f32], alpha: f32) -> Vec<f32> {
    let mut wmax = vec![0f32; k];
    for row in w.chunks(k).take(n) {
        wmax.iter_mut().zip(row).for_each(|(a, x)| *a = a.max(x.abs()));
    }
    let (m_floor, w_floor) = (m.iter().copied().fold(0f32, f32::max) * 1e-6 + 1e-12, 1e-6f32);
    let mut s: Vec<f32> = m
        .iter()
        .zip(&wmax)
        .map(|(&m, &a)| m.max(m_floor).sqrt().powf(alpha) / a.max(w_floor).powf(1.0 - alpha))
        .collect();
    let log_mean = s.iter().map(|v| (*v as f64).ln()).sum::<f64>() / s.len() as f64;
    let norm = (-log_mean).exp() as f32;
    s.iter_mut().for_each(|v| *v *= norm);
    s
}

/// `1 + w'` = `(1 + w) / s`: a Gemma RMSNorm weight (applied as `1 + w`) that also divides by `s`.
pub fn fold_into_gemma_norm(w: &[f32], s: &[f32]) -> Vec<f32> {
    w.iter().zip(s).map(|(w, s)| (1.0 + w) / s - 1.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qdq_rows(x: &[f32], k: usize) -> Vec<f32> {
        let (codes, scales, zps) = crate::blocks::quantize_blocks_asym4(x, x.len() / k, k, 32);
        crate::blocks::dequantize_blocks4(&codes, &scales, &zps, x.len() / k, k, 32)
    }

    #[test]
    fn scaling_lowers_the_error_on_channels_with_large_inputs() {
        let (n, k) = (32, 64);
        let mut rng = deposium_test_support::Rng::new(5);
        let mut rnd = || rng.centered();
        let w: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
        // Four channels carry inputs 30× larger than the rest.
        let m: Vec<f32> = (0..k).map(|j| if j % 16 == 3 { 900.0 } else { 1.0 }).collect();
        let h: Vec<f32> = (0..k * k).map(|i| if i / k == i % k { m[i % k] } else { 0.0 }).collect();
        let cal = Calibration::new(1, HashMap::from([("l".to_string(), h)]));
        let qdq = |x: &[f32]| qdq_rows(x, k);
        let s = cal.scales("l", &w, n, k, &qdq).expect("scaling helps here");
        assert!(s[3] > s[0]);
        let weighted = |deq: &[f32], s: &[f32]| -> f64 {
            (0..n * k).map(|i| m[i % k] as f64 * ((deq[i] / s[i % k] - w[i]) as f64).powi(2)).sum()
        };
        let plain = weighted(&qdq(&w), &vec![1.0; k]);
        let scaled_w: Vec<f32> = (0..n * k).map(|i| w[i] * s[i % k]).collect();
        let with = weighted(&qdq(&scaled_w), &s);
        assert!(with < 0.8 * plain, "{with} vs {plain}");
        // No statistics means no scaling.
        assert_eq!(cal.scales("other", &w, n, k, &qdq), None);
        // The norm fold divides exactly.
        let folded = fold_into_gemma_norm(&[0.5, -0.25], &[2.0, 0.5]);
        assert_eq!(folded, vec![(1.5 / 2.0) - 1.0, (0.75 / 0.5) - 1.0]);
    }

    #[test]
    fn smoothing_shrinks_large_input_channels_and_is_exact() {
        let (n, k) = (8, 4);
        let w: Vec<f32> = (0..n * k).map(|i| if i % k == 1 { 0.5 } else { 1.0 }).collect();
        // Channel 2's inputs are 100× larger (mean square 10⁴).
        let m = [1.0, 1.0, 1e4, 1.0];
        let s = smooth_scales(&w, n, k, &m, 0.5);
        assert!(s[2] > 5.0 * s[0] && s[1] > s[0], "{s:?}");
        let log_mean: f32 = s.iter().map(|v| v.ln()).sum::<f32>() / k as f32;
        assert!(log_mean.abs() < 1e-5);
        // (x / s) · (W · diag(s))ᵀ = x · Wᵀ; α = 0 only equalises the weights' column maxima.
        let x = [0.3f32, -1.0, 80.0, 2.0];
        let ws = crate::blocks::scale_columns(&w, k, &s);
        let y: f32 = (0..k).map(|j| x[j] / s[j] * ws[j]).sum();
        assert!((y - (0..k).map(|j| x[j] * w[j]).sum::<f32>()).abs() < 1e-4);
        let s0 = smooth_scales(&w, n, k, &m, 0.0);
        assert!((s0[1] / s0[0] - 2.0).abs() < 1e-5 && (s0[2] - s0[0]).abs() < 1e-6);
    }
}
