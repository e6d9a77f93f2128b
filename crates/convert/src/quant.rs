//! Linear layers and embedding tables, in fp32 or block-quantized (MatMulNBits / GatherBlockQuantized).
use serde::{Deserialize, Serialize};

use crate::builder::Builder;
use crate::proto::{attr_i, DType};

/// How to store weights.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QuantConfig {
    /// Scheme name (`fp32`, `int8`, `int4`).
    pub scheme: String,
    /// Bits for linear layers (None = fp32).
    pub linear_bits: Option<u8>,
    /// Quantization block along K for linear layers.
    pub block: usize,
    /// MatMulNBits accuracy_level (4 = int8 activations per block).
    pub accuracy_level: i64,
    /// Bits for the token embedding table (None = fp32).
    pub embed_bits: Option<u8>,
    pub embed_block: usize,
    /// Weight names (substring match) kept in fp32.
    pub keep_fp32: Vec<String>,
    /// Weight names (substring match) stored at 8 bits in a 4-bit scheme.
    #[serde(default)]
    pub keep_int8: Vec<String>,
    /// 4-bit linear weights with per-block zero points and an error-minimising scale search.
    #[serde(default)]
    pub asymmetric: bool,
    /// Emit fused ONNX Runtime contrib ops (QKV and gate/up MatMuls, RotaryEmbedding, MultiHeadAttention,
    /// SkipSimplifiedLayerNormalization); false gives the plain-op reference graph.
    #[serde(default = "yes")]
    pub fused_ops: bool,
    /// Quantized linear layers run by our own per-block kernels (`ai.deposium:QMatMul8` / `QMatMul4`: int8
    /// activations per block of 32, the numerics of MatMulNBits accuracy_level 4, faster); false keeps stock ONNX
    /// Runtime ops only (a portable graph).
    #[serde(default)]
    pub custom_kernel: bool,
}

fn yes() -> bool {
    true
}

impl QuantConfig {
    pub fn from_scheme(scheme: &str) -> anyhow::Result<Self> {
        let base = QuantConfig {
            scheme: scheme.into(),
            linear_bits: None,
            block: 32,
            accuracy_level: 4,
            embed_bits: None,
            embed_block: 32,
            keep_fp32: vec![],
            keep_int8: vec![],
            asymmetric: false,
            fused_ops: true,
            custom_kernel: true,
        };
        Ok(match scheme {
            "fp32" => base,
            // Dense heads stay fp32: they see one pooled row per text and cost little (19 MB).
            "int8" => QuantConfig {
                linear_bits: Some(8),
                embed_bits: Some(8),
                embed_block: 128,
                keep_fp32: vec!["dense".into()],
                ..base
            },
            // Gate/up projections and the table at 4 bits; attention and down projections, the most sensitive,
            // stay at 8 bits (all-4-bit layers measured 0.979 / 0.867 cosine to fp32).
            "int4" => QuantConfig {
                linear_bits: Some(4),
                embed_bits: Some(4),
                asymmetric: true,
                keep_fp32: vec!["dense".into()],
                keep_int8: vec!["self_attn".into(), "down_proj".into()],
                ..base
            },
            s => anyhow::bail!("unknown scheme '{s}' (fp32, int8, int4)"),
        })
    }

    fn keeps(&self, name: &str) -> bool {
        self.keep_fp32.iter().any(|p| name.contains(p.as_str()))
    }
}

/// Symmetric per-block quantization of a row-major `[rows, k]` matrix along k.
/// Returns (codes offset by 2^(bits-1) as u8, one per value; scales `[rows, k_blocks]`).
pub fn quantize_blocks(w: &[f32], rows: usize, k: usize, block: usize, bits: u8) -> (Vec<u8>, Vec<f32>) {
    let kb = k.div_ceil(block);
    let qmax = ((1i32 << (bits - 1)) - 1) as f32; // 127 or 7
    let qmin = -(1i32 << (bits - 1)) as f32; // -128 or -8
    let off = 1i32 << (bits - 1);
    let mut codes = vec![off as u8; rows * kb * block];
    let mut scales = vec![0f32; rows * kb];
    for r in 0..rows {
        for b in 0..kb {
            let s0 = b * block;
            let s1 = (s0 + block).min(k);
            let vals = &w[r * k + s0..r * k + s1];
            // Signed absmax mapped to qmin (Q4_0-style) uses the full code range at 4 bits; at 8 bits plain absmax.
            let (amax_abs, amax) = vals.iter().fold((0f32, 0f32), |(a, v), &x| if x.abs() > a { (x.abs(), x) } else { (a, v) });
            let scale = if amax_abs == 0.0 {
                0.0
            } else if bits == 4 {
                amax / qmin
            } else {
                amax_abs / qmax
            };
            scales[r * kb + b] = scale;
            let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
            for (j, &x) in vals.iter().enumerate() {
                let q = (x * inv).round().clamp(qmin, qmax) as i32;
                codes[(r * kb + b) * block + j] = (q + off) as u8;
            }
        }
    }
    (codes, scales)
}

/// Asymmetric 4-bit per-block quantization of `[rows, k]` along k, searching the scale that minimises the squared
/// error. Returns (codes 0..15, one per value; scales `[rows, kb]`; zero points `[rows, kb]`).
pub fn quantize_blocks_asym4(w: &[f32], rows: usize, k: usize, block: usize) -> (Vec<u8>, Vec<f32>, Vec<u8>) {
    let kb = k.div_ceil(block);
    let mut codes = vec![0u8; rows * kb * block];
    let mut scales = vec![0f32; rows * kb];
    let mut zps = vec![8u8; rows * kb];
    let mut best_q = vec![0u8; block];
    let mut q = vec![0u8; block];
    for r in 0..rows {
        for b in 0..kb {
            let s0 = b * block;
            let vals = &w[r * k + s0..r * k + (s0 + block).min(k)];
            let (mn, mx) = vals.iter().fold((0f32, 0f32), |(a, c), &x| (a.min(x), c.max(x)));
            if mx - mn == 0.0 {
                scales[r * kb + b] = 0.0;
                continue;
            }
            let mut best = (f32::INFINITY, 0f32, 8u8);
            // Shrink the range step by step (clipping outliers) and keep the lowest-error choice.
            for step in 0..16 {
                let shrink = 1.0 - 0.02 * step as f32;
                let (lo, hi) = (mn * shrink, mx * shrink);
                let scale = (hi - lo) / 15.0;
                let zp = (-lo / scale).round().clamp(0.0, 15.0);
                let inv = 1.0 / scale;
                let mut err = 0f32;
                for (j, &x) in vals.iter().enumerate() {
                    let c = ((x * inv).round() + zp).clamp(0.0, 15.0);
                    q[j] = c as u8;
                    let d = (c - zp) * scale - x;
                    err += d * d;
                }
                if err < best.0 {
                    best = (err, scale, zp as u8);
                    best_q[..vals.len()].copy_from_slice(&q[..vals.len()]);
                }
            }
            scales[r * kb + b] = best.1;
            zps[r * kb + b] = best.2;
            codes[(r * kb + b) * block..(r * kb + b) * block + vals.len()].copy_from_slice(&best_q[..vals.len()]);
        }
    }
    (codes, scales, zps)
}

/// Pack 4-bit codes two per byte, low nibble first.
pub fn pack4(codes: &[u8]) -> Vec<u8> {
    codes.chunks(2).map(|c| (c[0] & 0xF) | ((c.get(1).copied().unwrap_or(0) & 0xF) << 4)).collect()
}

/// `x @ W^T (+ bias)` for a PyTorch-layout weight `w` `[n_out, k_in]`.
pub fn linear(b: &mut Builder, x: &str, name: &str, w: &[f32], n: usize, k: usize, bias: Option<&[f32]>, q: &QuantConfig) -> String {
    let bits = if q.keeps(name) {
        None
    } else if q.linear_bits == Some(4) && q.keep_int8.iter().any(|p| name.contains(p.as_str())) {
        Some(8)
    } else {
        q.linear_bits
    };
    match bits {
        None => {
            let wt = crate::weights::transpose(w, n, k);
            let wn = b.init_f32(name, &[k as i64, n as i64], &wt);
            let y = b.op("MatMul", &[x, &wn], vec![]);
            match bias {
                Some(bv) => {
                    let bn = b.init_f32(&format!("{name}.bias"), &[n as i64], bv);
                    b.op("Add", &[&y, &bn], vec![])
                }
                None => y,
            }
        }
        Some(8) if q.custom_kernel && q.block == deposium_kernels::BLOCK && deposium_kernels::supports(n, k) && bias.is_none() => {
            let (codes, scales) = quantize_blocks(w, n, k, q.block, 8);
            let (packed, packed_scales) = deposium_kernels::pack(&codes, &scales, n, k);
            let tiles = (n / deposium_kernels::TILE) as i64;
            let wn = b.init(&format!("{name}.q8"), DType::U8, &[tiles, (k / 4) as i64, 64], packed);
            let sn = b.init_f32(&format!("{name}.q8scales"), &[tiles, (k / deposium_kernels::BLOCK) as i64, 16], &packed_scales);
            b.node(crate::builder::CUSTOM_DOMAIN, crate::builder::QMATMUL8, &[x, &wn, &sn], 1, vec![]).remove(0)
        }
        Some(4) if q.custom_kernel && q.block == deposium_kernels::BLOCK && deposium_kernels::supports(n, k) && bias.is_none() => {
            let (codes, scales, zps) = if q.asymmetric {
                quantize_blocks_asym4(w, n, k, q.block)
            } else {
                let (c, s) = quantize_blocks(w, n, k, q.block, 4);
                let kb = k / q.block;
                (c, s, vec![8u8; n * kb])
            };
            let (packed, packed_scales) = deposium_kernels::pack4(&codes, &scales, &zps, n, k);
            let tiles = (n / deposium_kernels::TILE) as i64;
            let kb = (k / deposium_kernels::BLOCK) as i64;
            let wn = b.init(&format!("{name}.q4"), DType::U8, &[tiles, kb, 4, 64], packed);
            let sn = b.init_f32(&format!("{name}.q4scales"), &[tiles, kb, 32], &packed_scales);
            b.node(crate::builder::CUSTOM_DOMAIN, crate::builder::QMATMUL4, &[x, &wn, &sn], 1, vec![]).remove(0)
        }
        Some(bits) => {
            let block = q.block;
            let kb = k.div_ceil(block);
            let asym = bits == 4 && q.asymmetric;
            let (codes, scales, zps) = if asym {
                let (c, s, z) = quantize_blocks_asym4(w, n, k, block);
                (c, s, Some(z))
            } else {
                let (c, s) = quantize_blocks(w, n, k, block, bits);
                (c, s, None)
            };
            let (raw, blob) = if bits == 4 { (pack4(&codes), block / 2) } else { (codes, block) };
            let wn = b.init(&format!("{name}.q"), DType::U8, &[n as i64, kb as i64, blob as i64], raw);
            let sn = b.init_f32(&format!("{name}.scales"), &[(n * kb) as i64], &scales);
            let mut inputs: Vec<String> = vec![x.into(), wn, sn];
            let zn = zps.map(|z| {
                // Two zero points per byte along each row, low nibble first.
                let packed: Vec<u8> = z.chunks(kb).flat_map(pack4).collect();
                let len = packed.len() as i64;
                b.init(&format!("{name}.zp"), DType::U8, &[len], packed)
            });
            inputs.push(zn.unwrap_or_default());
            if let Some(bv) = bias {
                let bn = b.init_f32(&format!("{name}.bias"), &[n as i64], bv);
                inputs.extend(["".into(), bn]);
            }
            while inputs.last().is_some_and(|s| s.is_empty()) {
                inputs.pop();
            }
            let refs: Vec<&str> = inputs.iter().map(|s| s.as_str()).collect();
            b.ms(
                "MatMulNBits",
                &refs,
                vec![
                    attr_i("K", k as i64),
                    attr_i("N", n as i64),
                    attr_i("bits", bits as i64),
                    attr_i("block_size", block as i64),
                    attr_i("accuracy_level", q.accuracy_level),
                ],
            )
        }
    }
}

/// Token embedding lookup `table[ids] * scale` (`table` is `[vocab, dim]`).
pub fn embedding(b: &mut Builder, ids: &str, name: &str, table: &[f32], vocab: usize, dim: usize, scale: f32, q: &QuantConfig) -> String {
    let bits = if q.keeps(name) { None } else { q.embed_bits };
    match bits {
        None => {
            let scaled: Vec<f32> = if scale != 1.0 { table.iter().map(|x| x * scale).collect() } else { table.to_vec() };
            let t = b.init_f32(name, &[vocab as i64, dim as i64], &scaled);
            b.op("Gather", &[&t, ids], vec![attr_i("axis", 0)])
        }
        Some(bits) => {
            let block = q.embed_block;
            let (codes, mut scales) = quantize_blocks(table, vocab, dim, block, bits);
            scales.iter_mut().for_each(|s| *s *= scale);
            let kb = dim.div_ceil(block);
            // GatherBlockQuantized takes uint8 data with a zero point (default 2^(bits-1) for 4-bit packed,
            // explicit for 8-bit) and scales shaped like the data with the quantized axis divided by block.
            let (data, data_dims) = if bits == 4 {
                (pack4(&codes), vec![vocab as i64, (dim / 2) as i64])
            } else {
                (codes, vec![vocab as i64, dim as i64])
            };
            let dn = b.init(&format!("{name}.q"), DType::U8, &data_dims, data);
            let sn = b.init_f32(&format!("{name}.scales"), &[vocab as i64, kb as i64], &scales);
            let off = 1u8 << (bits - 1);
            let zp_len = if bits == 4 { vocab * kb.div_ceil(2) } else { vocab * kb };
            let zp_raw = if bits == 4 { vec![off | (off << 4); zp_len] } else { vec![off; zp_len] };
            let zp_dims = if bits == 4 { vec![vocab as i64, kb.div_ceil(2) as i64] } else { vec![vocab as i64, kb as i64] };
            let zn = b.init(&format!("{name}.zp"), DType::U8, &zp_dims, zp_raw);
            b.ms(
                "GatherBlockQuantized",
                &[&dn, ids, &sn, &zn],
                vec![
                    attr_i("gather_axis", 0),
                    attr_i("quantize_axis", 1),
                    attr_i("block_size", block as i64),
                    attr_i("bits", bits as i64),
                ],
            )
        }
    }
}
