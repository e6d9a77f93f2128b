//! What sentence-transformers puts after the encoder: pooling (mean, CLS) and the Dense heads, loaded, folded where
//! the product is smaller, and emitted.
use anyhow::{bail, Result};

use crate::builder::Builder;
use crate::emit;
use crate::proto::attr_i;
use crate::scheme::QuantConfig;
use crate::st_config::StConfig;
use crate::weights::Weights;

/// A sentence-transformers Dense layer after pooling.
pub struct DenseHead {
    pub w: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub in_features: usize,
    pub out_features: usize,
    pub name: String,
}

pub fn load_dense(cfg: &StConfig) -> Result<Vec<DenseHead>> {
    let mut out = Vec::new();
    for (i, d) in cfg.dense.iter().enumerate() {
        if !(d.activation.is_empty() || d.activation.ends_with("Identity")) {
            bail!("{}: Dense activation '{}' is not supported (only Identity)", d.dir.display(), d.activation);
        }
        let w = Weights::open(&d.dir.join("model.safetensors"))?;
        let wm = w.matrix("linear.weight", d.out_features, d.in_features)?;
        let bias = if d.bias { Some(w.vector("linear.bias", d.out_features)?) } else { None };
        out.push(DenseHead {
            w: wm.data,
            bias,
            in_features: d.in_features,
            out_features: d.out_features,
            name: format!("dense{}", i + 1),
        });
    }
    Ok(fold_dense(out))
}

/// Identity Dense heads compose: `W2 (W1 x + b1) + b2 = (W2 W1) x + (W2 b1 + b2)`. Consecutive heads are merged
/// into one wherever the product is no larger than the pair (EmbeddingGemma: 768→3072→768 becomes one 768×768).
pub fn fold_dense(heads: Vec<DenseHead>) -> Vec<DenseHead> {
    let mut out: Vec<DenseHead> = Vec::new();
    for d in heads {
        let Some(prev) = out.last() else {
            out.push(d);
            continue;
        };
        let (m, mid, k) = (d.out_features, d.in_features, prev.in_features);
        if mid != prev.out_features || m * k > m * mid + mid * k {
            out.push(d);
            continue;
        }
        let prev = out.pop().unwrap();
        let mut w = vec![0f32; m * k];
        let mut acc = vec![0f64; k];
        for (r, row) in w.chunks_mut(k).enumerate() {
            acc.iter_mut().for_each(|a| *a = 0.0);
            for (j, &a) in d.w[r * mid..(r + 1) * mid].iter().enumerate() {
                for (s, &b) in acc.iter_mut().zip(&prev.w[j * k..(j + 1) * k]) {
                    *s += a as f64 * b as f64;
                }
            }
            row.iter_mut().zip(&acc).for_each(|(o, &a)| *o = a as f32);
        }
        let bias = match (&prev.bias, &d.bias) {
            (None, None) => None,
            (b1, b2) => Some(
                (0..m)
                    .map(|r| {
                        let via: f64 = b1.as_ref().map_or(0.0, |b1| {
                            d.w[r * mid..(r + 1) * mid].iter().zip(b1).map(|(&a, &b)| a as f64 * b as f64).sum()
                        });
                        (via + b2.as_ref().map_or(0.0, |b2| b2[r] as f64)) as f32
                    })
                    .collect(),
            ),
        };
        out.push(DenseHead { w, bias, in_features: k, out_features: m, name: prev.name });
    }
    out
}

/// Masked mean over the sequence: `x` `[B,S,H]`, `mask_f` `[B,S]` float → `[B,H]`.
pub fn mean_pool(b: &mut Builder, x: &str, mask_f: &str) -> String {
    let m3 = b.unsqueeze(mask_f, &[1]); // [B,1,S]
    let summed = b.op("MatMul", &[&m3, x], vec![]); // [B,1,H]
    let axes = b.const_i64(&[1]);
    let count = b.op("ReduceSum", &[mask_f, &axes], vec![attr_i("keepdims", 1)]); // [B,1]
    let tiny = b.scalar_f32(1e-9);
    let count = b.op("Max", &[&count, &tiny], vec![]);
    let count = b.unsqueeze(&count, &[2]); // [B,1,1]
    let mean = b.op("Div", &[&summed, &count], vec![]);
    let sq = b.const_i64(&[1]);
    b.op("Squeeze", &[&mean, &sq], vec![])
}

/// First token (`[CLS]`) of `x` `[B,S,H]` → `[B,H]`.
pub fn cls_pool(b: &mut Builder, x: &str) -> String {
    let zero = b.scalar_i64(0);
    b.op("Gather", &[x, &zero], vec![attr_i("axis", 1)])
}

pub fn dense_heads(b: &mut Builder, x: &str, heads: &[DenseHead], q: &QuantConfig) -> Result<String> {
    let mut y = x.to_string();
    // Our QMatMul8 kernel has accuracy_level 4 numerics (int8 activations): heads with another level use MatMulNBits.
    let level = q.heads_accuracy_level.unwrap_or(q.accuracy_level);
    let q = &QuantConfig { accuracy_level: level, custom_kernel: q.custom_kernel && level == 4, ..q.clone() };
    for d in heads {
        let l =
            emit::Linear { bias: d.bias.as_deref(), ..emit::Linear::new(&d.name, &d.w, d.out_features, d.in_features) };
        y = if q.heads_f16 && q.linear_bits_for(&d.name).is_none() {
            emit::float_linear(b, &y, &l, true)
        } else {
            emit::linear(b, &y, &l, q)
        };
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(out: usize, inp: usize, seed: u64, bias: bool, name: &str) -> DenseHead {
        let mut rng = deposium_test_support::Rng::new(seed);
        let mut next = move || rng.centered();
        let w = (0..out * inp).map(|_| next()).collect();
        let bias = bias.then(|| (0..out).map(|_| next()).collect());
        DenseHead { w, bias, in_features: inp, out_features: out, name: name.into() }
    }

    fn apply(d: &DenseHead, x: &[f32]) -> Vec<f32> {
        (0..d.out_features)
            .map(|r| {
                let dot: f32 = d.w[r * d.in_features..(r + 1) * d.in_features].iter().zip(x).map(|(a, b)| a * b).sum();
                dot + d.bias.as_ref().map_or(0.0, |b| b[r])
            })
            .collect()
    }

    #[test]
    fn dense_heads_fold_when_the_product_is_smaller() {
        let x: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
        for (b1, b2) in [(false, false), (true, false), (false, true), (true, true)] {
            let (h1, h2) = (head(40, 12, 1, b1, "dense1"), head(12, 40, 2, b2, "dense2"));
            let want = apply(&h2, &apply(&h1, &x));
            let folded = fold_dense(vec![h1, h2]);
            assert_eq!(folded.len(), 1);
            assert_eq!((folded[0].in_features, folded[0].out_features, folded[0].name.as_str()), (12, 12, "dense1"));
            assert_eq!(folded[0].bias.is_some(), b1 || b2);
            let got = apply(&folded[0], &x);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4 * w.abs().max(1.0), "{g} vs {w}");
            }
        }
        // A bottleneck (12→2→12) would grow when multiplied out: kept as two heads.
        assert_eq!(fold_dense(vec![head(2, 12, 3, false, "dense1"), head(12, 2, 4, false, "dense2")]).len(), 2);
    }
}
