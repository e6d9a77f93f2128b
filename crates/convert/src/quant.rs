//! Linear layers and embedding tables, in fp32 or block-quantized (MatMulNBits / GatherBlockQuantized).
use serde::{Deserialize, Serialize};

use crate::awq::{CalibMode, CALIB_PREFIX};
use crate::builder::{fixed, Builder, CUSTOM_DOMAIN, GATHER_CODED, GATHER_Q, QMATMUL4, QMATMUL8};
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
    /// Token table entropy-coded on a uniform grid of this step (relative to each row's RMS after the columns are
    /// standardized; see `coded_table`), by our `GatherCoded` op; None for fixed-width codes (`embed_bits`). Graphs
    /// without our ops fall back to `embed_bits`.
    #[serde(default)]
    pub embed_step: Option<f32>,
    /// Weight names (substring match) kept in fp32.
    pub keep_fp32: Vec<String>,
    /// Weight names (substring match) stored at 8 bits in a 4-bit scheme.
    #[serde(default)]
    pub keep_int8: Vec<String>,
    /// 4-bit linear weights with per-block zero points and an error-minimising scale search.
    #[serde(default)]
    pub asymmetric: bool,
    /// 4-bit token table rows with per-block zero points and an error-minimising scale search.
    #[serde(default)]
    pub embed_asymmetric: bool,
    /// Token table scales stored in fp16 (the lookup's output is cast back to fp32).
    #[serde(default)]
    pub embed_scales_f16: bool,
    /// In a 4-bit token table, id ranges `[start, end)` stored at 8 bits (block 128) instead: the frequent tokens.
    /// Ranges past the vocabulary are ignored.
    #[serde(default)]
    pub embed_int8_ids: Vec<[u32; 2]>,
    /// MatMulNBits accuracy_level for quantized Dense heads (None: `accuracy_level`). They see one pooled row per
    /// text, so fp32 activations (0) cost nothing and avoid int8 activation error.
    #[serde(default)]
    pub heads_accuracy_level: Option<i64>,
    /// Emit fused ONNX Runtime contrib ops (QKV and gate/up MatMuls, RotaryEmbedding, MultiHeadAttention,
    /// SkipSimplifiedLayerNormalization); false gives the plain-op reference graph.
    #[serde(default = "yes")]
    pub fused_ops: bool,
    /// Quantized linear layers run by our own per-block kernels (`ai.deposium:QMatMul8` / `QMatMul4`: int8
    /// activations per block of 32, the numerics of MatMulNBits accuracy_level 4, faster); false keeps stock ONNX
    /// Runtime ops only (a portable graph).
    #[serde(default)]
    pub custom_kernel: bool,
    /// 4-bit layers scaled by calibration statistics (see `awq`).
    #[serde(default)]
    pub awq: bool,
    /// 4-bit layers rounded by GPTQ from calibration statistics (see `gptq`).
    #[serde(default)]
    pub gptq: bool,
    /// Calibration for this build (never serialized: the manifest records `awq`, the statistics are re-measured).
    #[serde(skip)]
    pub calib: CalibMode,
    /// Dense heads kept unquantized are stored in fp16 (computed in fp32).
    #[serde(default)]
    pub heads_f16: bool,
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
            embed_step: None,
            keep_fp32: vec![],
            keep_int8: vec![],
            asymmetric: false,
            embed_asymmetric: false,
            embed_scales_f16: false,
            embed_int8_ids: vec![],
            heads_accuracy_level: None,
            fused_ops: true,
            custom_kernel: true,
            awq: false,
            gptq: false,
            calib: CalibMode::Off,
            heads_f16: false,
        };
        Ok(match scheme {
            "fp32" => base,
            // Token table entropy-coded (our GatherCoded op, step 0.125: 5.16 bits per value, 129.7 MB; the 6-bit
            // fixed-width table took 160.4 MB, 8 bits 204.5), fixtures 0.99964 / 0.99806 (6-bit: 0.99973 / 0.99849;
            // fp32 table: 0.99979 / 0.99759: the minimum is a 500-token repetition whose int8 error does not average
            // out). `--portable` graphs store it at 8 bits (`embed_bits` 6 → 8 there). Dense heads unquantized (fp16
            // storage): 8-bit weights with fp32 activations (MatMulNBits accuracy_level 0) cost 3.7 ms per call in
            // MLAS's dequantizing path, half a single text's time; int8 activations there cost 0.0007 min cosine.
            "int8" => QuantConfig {
                linear_bits: Some(8),
                embed_bits: Some(6),
                embed_block: 64,
                embed_step: Some(0.125),
                embed_scales_f16: true,
                keep_fp32: vec!["dense".into()],
                heads_f16: true,
                ..base
            },
            // QKV and gate/up projections and the table at 4 bits; the attention output and down projections, the
            // most sensitive (no norm in front to fold activation-aware scales into for o_proj), stay at 8 bits:
            // 4-bit down projections, even with AWQ + GPTQ, measured 0.9925 / 0.962 cosine to fp32, 4-bit o_proj
            // 0.9949 / 0.964. QKV and gate/up: activation-aware scales and GPTQ rounding from calibration. The
            // table entropy-coded at step 0.3 (4.0 bits per value, 97.8 MB; fixtures 0.99539 / 0.98312, where the
            // 4-bit asymmetric block-64 table, kept for `--portable`, takes 108.5 MB for 0.99511 / 0.98186); the
            // Dense heads as in int8.
            "int4" => QuantConfig {
                linear_bits: Some(4),
                embed_bits: Some(4),
                embed_block: 64,
                embed_step: Some(0.3),
                asymmetric: true,
                embed_asymmetric: true,
                embed_scales_f16: true,
                keep_fp32: vec!["dense".into()],
                keep_int8: vec!["o_proj".into(), "down_proj".into()],
                heads_f16: true,
                awq: true,
                gptq: true,
                ..base
            },
            s => anyhow::bail!("unknown scheme '{s}' (fp32, int8, int4)"),
        })
    }

    fn keeps(&self, name: &str) -> bool {
        self.keep_fp32.iter().any(|p| name.contains(p.as_str()))
    }

    /// Bits of linear layer `name` (None: fp32).
    pub fn linear_bits_for(&self, name: &str) -> Option<u8> {
        if self.keeps(name) {
            None
        } else if self.linear_bits == Some(4) && self.keep_int8.iter().any(|p| name.contains(p.as_str())) {
            Some(8)
        } else {
            self.linear_bits
        }
    }

    /// Whether this build needs calibration statistics (4-bit layers with `awq`).
    pub fn wants_calibration(&self) -> bool {
        (self.awq || self.gptq) && self.linear_bits == Some(4)
    }

    /// Asymmetric 4-bit codes, scales and zero points of layer `name` (weight `[n, k]`, already multiplied by its
    /// activation-aware scales if any): GPTQ when calibrated, else round-to-nearest.
    pub fn quantize_asym4(&self, name: &str, w: &[f32], n: usize, k: usize) -> (Vec<u8>, Vec<f32>, Vec<u8>) {
        if let (true, CalibMode::Apply(cal)) = (self.gptq, &self.calib) {
            if let Some(h) = cal.second_moment.get(name).filter(|h| h.len() == k * k) {
                // The layer sees x / s: its second moment is H / (s sᵀ).
                let h = match cal.chosen_scales(name, &self.awq_variant()) {
                    Some(s) => h.iter().enumerate().map(|(i, v)| v / (s[i / k] * s[i % k])).collect(),
                    None => h.clone(),
                };
                if let Some(q) = crate::gptq::gptq_asym4(w, n, k, self.block, &h) {
                    return q;
                }
                tracing::warn!(layer = name, "GPTQ: input second moment not factorable; rounding to nearest");
            }
        }
        quantize_blocks_asym4(w, n, k, self.block)
    }

    fn awq_variant(&self) -> String {
        format!("b{}a{}", self.block, self.asymmetric)
    }

    /// Activation-aware input scales for 4-bit layer `name` (weight `[n, k]`), when calibrated; the caller
    /// multiplies the weight's columns by them and divides the layer's input upstream.
    pub fn awq_scales(&self, name: &str, w: &[f32], n: usize, k: usize) -> Option<Vec<f32>> {
        let CalibMode::Apply(cal) = &self.calib else { return None };
        if !self.awq || self.linear_bits_for(name) != Some(4) {
            return None;
        }
        let (block, asym) = (self.block, self.asymmetric);
        let qdq = move |x: &[f32]| -> Vec<f32> {
            let rows = x.len() / k;
            let (codes, scales, zps) = if asym {
                quantize_blocks_asym4(x, rows, k, block)
            } else {
                let (c, s) = quantize_blocks(x, rows, k, block, 4);
                (c, s, vec![8u8; rows * k.div_ceil(block)])
            };
            dequantize_blocks4(&codes, &scales, &zps, rows, k, block)
        };
        cal.scales(name, &self.awq_variant(), w, n, k, &qdq)
    }
}

/// `(code − zero_point) · scale` back to a row-major `[rows, k]` matrix, from the 4-bit layout of
/// `quantize_blocks_asym4` (codes `[rows, kb·block]`, scales and zero points `[rows, kb]`).
pub fn dequantize_blocks4(codes: &[u8], scales: &[f32], zps: &[u8], rows: usize, k: usize, block: usize) -> Vec<f32> {
    let kb = k.div_ceil(block);
    (0..rows * k)
        .map(|i| {
            let (r, j) = (i / k, i % k);
            (codes[r * kb * block + j] as f32 - zps[r * kb + j / block] as f32) * scales[r * kb + j / block]
        })
        .collect()
}

/// `w[r][j] · s[j]` for a row-major `[n, k]` matrix.
pub fn scale_columns(w: &[f32], k: usize, s: &[f32]) -> Vec<f32> {
    w.chunks(k).flat_map(|row| row.iter().zip(s).map(|(x, s)| x * s)).collect()
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

/// Scale and zero point of one asymmetric 4-bit block: the range is shrunk step by step (clipping outliers) and
/// the choice with the lowest squared error kept. A constant-zero block gets scale 0.
pub fn asym4_block_params(vals: &[f32]) -> (f32, u8) {
    asym_block_params(vals, 4)
}

/// `asym4_block_params` for codes of `bits` bits (0..2^bits − 1).
pub fn asym_block_params(vals: &[f32], bits: u8) -> (f32, u8) {
    let levels = ((1u32 << bits) - 1) as f32;
    let (mn, mx) = vals.iter().fold((0f32, 0f32), |(a, c), &x| (a.min(x), c.max(x)));
    if mx - mn == 0.0 {
        return (0.0, 1 << (bits - 1));
    }
    let mut best = (f32::INFINITY, 0f32, 8u8);
    for step in 0..16 {
        let shrink = 1.0 - 0.02 * step as f32;
        let (lo, hi) = (mn * shrink, mx * shrink);
        let scale = (hi - lo) / levels;
        let zp = (-lo / scale).round().clamp(0.0, levels);
        let inv = 1.0 / scale;
        let err: f32 = vals
            .iter()
            .map(|&x| {
                let c = ((x * inv).round() + zp).clamp(0.0, levels);
                let d = (c - zp) * scale - x;
                d * d
            })
            .sum();
        if err < best.0 {
            best = (err, scale, zp as u8);
        }
    }
    (best.1, best.2)
}

/// One row in asymmetric `bits`-bit blocks (`asym_block_params`), its output multiplied by `out_scale`: (codes,
/// scales in output units and already rounded to fp16, zero points). `(code − zp) · scale` is the stored value.
pub fn quantize_row_asym(row: &[f32], bits: u8, block: usize, out_scale: f32) -> (Vec<u8>, Vec<f32>, Vec<u8>) {
    let levels = ((1u32 << bits) - 1) as f32;
    let (mut codes, mut scales, mut zps) = (Vec::with_capacity(row.len()), Vec::new(), Vec::new());
    for vals in row.chunks(block) {
        let (s, zp) = asym_block_params(vals, bits);
        // The codes are rounded with the scale as stored (fp16).
        let stored = half::f16::from_f32(s * out_scale).to_f32();
        let inv = if stored > 0.0 { out_scale / stored } else { 0.0 };
        codes.extend(vals.iter().map(|&x| ((x * inv).round() + zp as f32).clamp(0.0, levels) as u8));
        scales.push(stored);
        zps.push(zp);
    }
    (codes, scales, zps)
}

/// A bit-packed table for our `ai.deposium:GatherQ` op (any width from 5 to 7 bits, where GatherBlockQuantized
/// offers 4 or 8 only): each row's codes `(value / scale + zero_point)`, `bits` each, little-endian bit order, rows
/// padded to whole bytes (plus 3 trailing bytes, so that the op can read 4 bytes at any code); fp16 scales and u8
/// zero points per row and block. A 6-bit EmbeddingGemma table, block 64, takes 160 MB where 8 bits take 204.
#[allow(clippy::too_many_arguments)]
fn packed_table(b: &mut Builder, ids: &str, name: &str, table: &[f32], vocab: usize, dim: usize, bits: u8, block: usize, scale: f32) -> String {
    use rayon::prelude::*;
    let kb = dim.div_ceil(block);
    let row_bytes = (dim * bits as usize).div_ceil(8);
    let rows: Vec<(Vec<u8>, Vec<u16>, Vec<u8>)> = (0..vocab)
        .into_par_iter()
        .map(|r| {
            let (codes, scales, zps) = quantize_row_asym(&table[r * dim..(r + 1) * dim], bits, block, scale);
            let mut packed = vec![0u8; row_bytes];
            for (j, &code) in codes.iter().enumerate() {
                let bit = j * bits as usize;
                for (i, byte) in ((code as u32) << (bit % 8)).to_le_bytes().iter().enumerate().take(3) {
                    if let Some(p) = packed.get_mut(bit / 8 + i) {
                        *p |= byte;
                    }
                }
            }
            (packed, scales.iter().map(|s| half::f16::from_f32(*s).to_bits()).collect(), zps)
        })
        .collect();
    let mut data = Vec::with_capacity(vocab * row_bytes + 3);
    let (mut scales, mut zps) = (Vec::with_capacity(vocab * kb * 2), Vec::with_capacity(vocab * kb));
    for (p, s, z) in rows {
        data.extend(p);
        scales.extend(s.iter().flat_map(|x| x.to_le_bytes()));
        zps.extend(z);
    }
    data.extend([0u8; 3]);
    let len = data.len() as i64;
    let dn = b.init(&format!("{name}.q{bits}"), DType::U8, &[len], data);
    let sn = b.init(&format!("{name}.scales"), DType::U16, &[vocab as i64, kb as i64], scales);
    let zn = b.init(&format!("{name}.zp"), DType::U8, &[vocab as i64, kb as i64], zps);
    let attrs = vec![attr_i("bits", bits as i64), attr_i("block_size", block as i64), attr_i("dim", dim as i64)];
    b.node(CUSTOM_DOMAIN, GATHER_Q, &[&dn, ids, &sn, &zn], 1, attrs).remove(0)
}

fn u16_bytes(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// An entropy-coded table (`coded_table`) read by our `ai.deposium:GatherCoded` op. Inputs: coded rows, ids, row
/// offsets (u32), row steps (fp16 bits), column scales and means (f32), code lengths (u8); attributes dim, min_code.
#[allow(clippy::too_many_arguments)]
fn coded_table(b: &mut Builder, ids: &str, name: &str, table: &[f32], vocab: usize, dim: usize, step: f32, scale: f32) -> String {
    let t = crate::coded_table::encode(table, vocab, dim, step, scale, false);
    tracing::info!(step, bits_per_value = t.bits_per_value(), "entropy-coded token table");
    let len = t.data.len() as i64;
    let dn = b.init(&format!("{name}.coded"), DType::U8, &[len], t.data);
    let on = b.init(&format!("{name}.offsets"), DType::U32, &[vocab as i64 + 1], t.offsets.iter().flat_map(|x| x.to_le_bytes()).collect());
    let sn = b.init(&format!("{name}.row_steps"), DType::U16, &[vocab as i64], u16_bytes(&t.row_steps));
    let cs = b.init_f32(&format!("{name}.col_scale"), &[dim as i64], &t.col_scale);
    let cm = b.init_f32(&format!("{name}.col_mean"), &[dim as i64], &t.col_mean);
    let nsym = t.lengths.len() as i64;
    let ln = b.init(&format!("{name}.code_lengths"), DType::U8, &[nsym], t.lengths);
    let attrs = vec![attr_i("dim", dim as i64), attr_i("min_code", t.min_code as i64)];
    b.node(CUSTOM_DOMAIN, GATHER_CODED, &[&dn, ids, &on, &sn, &cs, &cm, &ln], 1, attrs).remove(0)
}

/// Asymmetric 4-bit per-block quantization of `[rows, k]` along k (`asym4_block_params` per block). Returns (codes
/// 0..15, one per value, `[rows, kb·block]`; scales `[rows, kb]`; zero points `[rows, kb]`).
pub fn quantize_blocks_asym4(w: &[f32], rows: usize, k: usize, block: usize) -> (Vec<u8>, Vec<f32>, Vec<u8>) {
    let kb = k.div_ceil(block);
    let mut codes = vec![0u8; rows * kb * block];
    let mut scales = vec![0f32; rows * kb];
    let mut zps = vec![8u8; rows * kb];
    for r in 0..rows {
        for b in 0..kb {
            let s0 = b * block;
            let vals = &w[r * k + s0..r * k + (s0 + block).min(k)];
            let (scale, zp) = asym4_block_params(vals);
            scales[r * kb + b] = scale;
            zps[r * kb + b] = zp;
            if scale == 0.0 {
                continue;
            }
            let (inv, z) = (1.0 / scale, zp as f32);
            for (c, &x) in codes[(r * kb + b) * block..].iter_mut().zip(vals) {
                *c = ((x * inv).round() + z).clamp(0.0, 15.0) as u8;
            }
        }
    }
    (codes, scales, zps)
}

/// Pack 4-bit codes two per byte, low nibble first.
pub fn pack4(codes: &[u8]) -> Vec<u8> {
    codes.chunks(2).map(|c| (c[0] & 0xF) | ((c.get(1).copied().unwrap_or(0) & 0xF) << 4)).collect()
}

/// `x @ W^T (+ bias)` for a PyTorch-layout weight `w` `[n_out, k_in]`.
#[allow(clippy::too_many_arguments)]
pub fn linear(b: &mut Builder, x: &str, name: &str, w: &[f32], n: usize, k: usize, bias: Option<&[f32]>, q: &QuantConfig) -> String {
    if q.calib == CalibMode::Record && name.contains("layers.") {
        // E[xᵀx] summed over this run's tokens: [B·S, k]ᵀ · [B·S, k].
        let shape = b.const_i64(&[-1, k as i64]);
        let rows = b.op("Reshape", &[x, &shape], vec![]);
        let cols = b.op("Transpose", &[&rows], vec![crate::proto::attr_ints("perm", &[1, 0])]);
        let xtx = b.op("MatMul", &[&cols, &rows], vec![]);
        b.output(&xtx, &format!("{CALIB_PREFIX}{name}"), DType::F32, vec![fixed(k as i64), fixed(k as i64)]);
    }
    match q.linear_bits_for(name) {
        None => float_linear(b, x, name, w, n, k, bias, false),
        Some(bits) if custom_kernel_bits(q, Some(bits), n, k, bias.is_some()) => custom_linear(b, x, name, w, n, k, bits, q, vec![]),
        Some(bits) => {
            let block = q.block;
            let kb = k.div_ceil(block);
            let asym = bits == 4 && q.asymmetric;
            let (codes, scales, zps) = if asym {
                let (c, s, z) = q.quantize_asym4(name, w, n, k);
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

/// `x @ W^T (+ bias)` in fp32; with `f16`, the weight is stored in fp16 and cast back to fp32 in the graph (ONNX
/// Runtime folds the cast at load).
#[allow(clippy::too_many_arguments)]
pub fn float_linear(b: &mut Builder, x: &str, name: &str, w: &[f32], n: usize, k: usize, bias: Option<&[f32]>, f16: bool) -> String {
    let wt = crate::weights::transpose(w, n, k);
    let wn = if f16 {
        let raw = wt.iter().flat_map(|v| deposium_kernels::f16_bits(*v).to_le_bytes()).collect();
        let half = b.init(&format!("{name}.f16"), DType::F16, &[k as i64, n as i64], raw);
        b.op("Cast", &[&half], vec![attr_i("to", DType::F32 as i64)])
    } else {
        b.init_f32(name, &[k as i64, n as i64], &wt)
    };
    let y = b.op("MatMul", &[x, &wn], vec![]);
    match bias {
        Some(bv) => {
            let bn = b.init_f32(&format!("{name}.bias"), &[n as i64], bv);
            b.op("Add", &[&y, &bn], vec![])
        }
        None => y,
    }
}

/// Whether a layer of `bits` runs on our QMatMul kernels.
fn custom_kernel_bits(q: &QuantConfig, bits: Option<u8>, n: usize, k: usize, has_bias: bool) -> bool {
    matches!(bits, Some(4 | 8)) && q.custom_kernel && q.block == deposium_kernels::BLOCK && deposium_kernels::supports(n, k) && !has_bias
}

/// `ai.deposium:QMatMul8` / `QMatMul4` for `w` `[n, k]`.
#[allow(clippy::too_many_arguments)]
fn custom_linear(b: &mut Builder, x: &str, name: &str, w: &[f32], n: usize, k: usize, bits: u8, q: &QuantConfig, attrs: Vec<crate::proto::Attr>) -> String {
    let (tiles, kb) = ((n / deposium_kernels::TILE) as i64, (k / deposium_kernels::BLOCK) as i64);
    let scale_dims = [tiles, kb, deposium_kernels::TILE as i64];
    let (op, mut inputs) = if bits == 8 {
        let (codes, scales) = quantize_blocks(w, n, k, q.block, 8);
        let (packed, packed_scales) = deposium_kernels::pack(&codes, &scales, n, k);
        let wn = b.init(&format!("{name}.q8"), DType::U8, &[tiles, (k / 4) as i64, 64], packed);
        let sn = b.init(&format!("{name}.q8scales"), DType::U16, &scale_dims, u16_bytes(&packed_scales));
        (QMATMUL8, vec![wn, sn])
    } else {
        let (codes, scales, zps) = if q.asymmetric {
            q.quantize_asym4(name, w, n, k)
        } else {
            let (c, s) = quantize_blocks(w, n, k, q.block, 4);
            (c, s, vec![8u8; n * kb as usize]) // symmetric: code = q + 8
        };
        let (packed, packed_scales, packed_zps) = deposium_kernels::pack4_stored(&codes, &scales, &zps, n, k);
        let wn = b.init(&format!("{name}.q4"), DType::U8, &[tiles, kb, 4, 64], packed);
        let sn = b.init(&format!("{name}.q4scales"), DType::U16, &scale_dims, u16_bytes(&packed_scales));
        let zn = b.init(&format!("{name}.q4zp"), DType::U8, &[tiles, kb, deposium_kernels::TILE as i64 / 2], packed_zps);
        (QMATMUL4, vec![wn, sn, zn])
    };
    inputs.insert(0, x.to_string());
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    b.node(CUSTOM_DOMAIN, op, &refs, 1, attrs).remove(0)
}

/// `gelu_tanh(x · Wgᵀ) ⊙ (x · Wuᵀ)` for a stacked gate/up weight `[2·inter, k]` as one QMatMul node (attribute
/// `geglu`), where the layer runs on our kernels; None otherwise (the caller emits MatMul, Split, Gelu, Mul).
pub fn geglu_linear(b: &mut Builder, x: &str, name: &str, w: &[f32], n: usize, k: usize, q: &QuantConfig) -> Option<String> {
    let bits = q.linear_bits_for(name);
    (custom_kernel_bits(q, bits, n, k, false) && (n / 2).is_multiple_of(deposium_kernels::TILE))
        .then(|| custom_linear(b, x, name, w, n, k, bits.unwrap(), q, vec![attr_i("geglu", 1)]))
}

/// Token embedding lookup `table[ids] * scale` (`table` is `[vocab, dim]`).
#[allow(clippy::too_many_arguments)]
pub fn embedding(b: &mut Builder, ids: &str, name: &str, table: &[f32], vocab: usize, dim: usize, scale: f32, q: &QuantConfig) -> String {
    let bits = if q.keeps(name) { None } else { q.embed_bits };
    let Some(bits) = bits else {
        let scaled: Vec<f32> = if scale != 1.0 { table.iter().map(|x| x * scale).collect() } else { table.to_vec() };
        let t = b.init_f32(name, &[vocab as i64, dim as i64], &scaled);
        return b.op("Gather", &[&t, ids], vec![attr_i("axis", 0)]);
    };
    if let (Some(step), true) = (q.embed_step, q.custom_kernel) {
        return coded_table(b, ids, name, table, vocab, dim, step, scale);
    }
    if (5..=7).contains(&bits) {
        if q.custom_kernel {
            return packed_table(b, ids, name, table, vocab, dim, bits, q.embed_block, scale);
        }
        // Stock ONNX Runtime has no such widths: portable graphs store the table at 8 bits.
        let s = TableSpec { bits: 8, block: q.embed_block, asym: false, f16: q.embed_scales_f16, scale };
        return block_table(b, ids, name, table, std::slice::from_ref(&(0..vocab)), dim, &s);
    }
    let hot = if bits == 4 { hot_ranges(&q.embed_int8_ids, vocab) } else { vec![] };
    let n_hot: usize = hot.iter().map(|r| r.len()).sum();
    let all: Vec<std::ops::Range<usize>> = std::iter::once(0..vocab).collect();
    let spec = |bits: u8, block: usize| TableSpec { bits, block, asym: bits == 4 && q.embed_asymmetric, f16: q.embed_scales_f16, scale };
    if n_hot == 0 || n_hot == vocab {
        let s = if n_hot == vocab { spec(8, HOT_BLOCK) } else { spec(bits, q.embed_block) };
        return block_table(b, ids, name, table, &all, dim, &s);
    }
    // Mixed: hot ids from an 8-bit table, the rest from a 4-bit one. With cum(i) = Σ clip(i - start, 0, len) over the
    // hot ranges (the number of hot ids below i), a hot id is row cum(i) of the 8-bit table and a cold id row
    // i - cum(i) of the 4-bit one; i is hot when cum(i + 1) > cum(i).
    let cold = cold_ranges(&hot, vocab);
    let cum = |b: &mut Builder, x: &str| -> String {
        let mut acc: Option<String> = None;
        for r in &hot {
            let start = b.scalar_i64(r.start as i64);
            let d = b.op("Sub", &[x, &start], vec![]);
            let (lo, hi) = (b.scalar_i64(0), b.scalar_i64(r.len() as i64));
            let c = b.op("Clip", &[&d, &lo, &hi], vec![]);
            acc = Some(match acc {
                Some(a) => b.op("Add", &[&a, &c], vec![]),
                None => c,
            });
        }
        acc.expect("at least one hot range")
    };
    let below = cum(b, ids);
    let one = b.scalar_i64(1);
    let next = b.op("Add", &[ids, &one], vec![]);
    let upto = cum(b, &next);
    let is_hot = b.op("Greater", &[&upto, &below], vec![]);
    let zero = b.scalar_i64(0);
    let hot_row = b.op("Where", &[&is_hot, &below, &zero], vec![]);
    let cold_idx = b.op("Sub", &[ids, &below], vec![]);
    let cold_row = b.op("Where", &[&is_hot, &zero, &cold_idx], vec![]);
    let e8 = block_table(b, &hot_row, &format!("{name}.hot"), table, &hot, dim, &spec(8, HOT_BLOCK));
    let e4 = block_table(b, &cold_row, &format!("{name}.cold"), table, &cold, dim, &spec(bits, q.embed_block));
    let hot3 = b.unsqueeze(&is_hot, &[-1]);
    b.op("Where", &[&hot3, &e8, &e4], vec![])
}

/// Block of the 8-bit rows of a mixed table.
const HOT_BLOCK: usize = 128;

/// Sorted, merged hot ranges clipped to the vocabulary.
fn hot_ranges(ids: &[[u32; 2]], vocab: usize) -> Vec<std::ops::Range<usize>> {
    let mut r: Vec<std::ops::Range<usize>> =
        ids.iter().map(|&[a, z]| (a as usize).min(vocab)..(z as usize).min(vocab)).filter(|r| !r.is_empty()).collect();
    r.sort_by_key(|r| r.start);
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for x in r {
        match out.last_mut() {
            Some(l) if x.start <= l.end => l.end = l.end.max(x.end),
            _ => out.push(x),
        }
    }
    out
}

fn cold_ranges(hot: &[std::ops::Range<usize>], vocab: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    for r in hot {
        if r.start > at {
            out.push(at..r.start);
        }
        at = r.end;
    }
    if at < vocab {
        out.push(at..vocab);
    }
    out
}

struct TableSpec {
    bits: u8,
    block: usize,
    asym: bool,
    f16: bool,
    scale: f32,
}

/// One GatherBlockQuantized table holding `rows` of `table` (in order), looked up with `idx` (row numbers in it).
fn block_table(b: &mut Builder, idx: &str, name: &str, table: &[f32], rows: &[std::ops::Range<usize>], dim: usize, s: &TableSpec) -> String {
    use rayon::prelude::*;
    let n: usize = rows.iter().map(|r| r.len()).sum();
    let (bits, block) = (s.bits, s.block);
    let kb = dim.div_ceil(block);
    // Quantize in chunks of rows, in parallel.
    let row_ids: Vec<usize> = rows.iter().flat_map(|r| r.clone()).collect();
    let parts: Vec<(Vec<u8>, Vec<f32>, Vec<u8>)> = row_ids
        .par_chunks(1024)
        .map(|chunk| {
            let mut w = Vec::with_capacity(chunk.len() * dim);
            for &r in chunk {
                w.extend_from_slice(&table[r * dim..(r + 1) * dim]);
            }
            let (c, sc, z) = if s.asym {
                quantize_blocks_asym4(&w, chunk.len(), dim, block)
            } else {
                let (c, sc) = quantize_blocks(&w, chunk.len(), dim, block, bits);
                (c, sc, vec![])
            };
            // The quantizers pad each row to whole blocks; the table holds `dim` codes per row.
            let c = if kb * block == dim { c } else { c.chunks(kb * block).flat_map(|r| r[..dim].to_vec()).collect() };
            (c, sc, z)
        })
        .collect();
    let (mut codes, mut scales, mut zps) = (Vec::with_capacity(n * dim), Vec::with_capacity(n * kb), Vec::new());
    for (c, sc, z) in parts {
        codes.extend(c);
        scales.extend(sc);
        zps.extend(z);
    }
    scales.iter_mut().for_each(|x| *x *= s.scale);
    // GatherBlockQuantized takes uint8 data (4-bit: two codes per byte, low nibble first) with zero points packed the
    // same way (default 2^(bits-1), our symmetric offset) and scales shaped like the data with the quantized axis
    // divided by block; the output has the scales' type.
    let (data, data_dims) = if bits == 4 { (pack4(&codes), vec![n as i64, (dim / 2) as i64]) } else { (codes, vec![n as i64, dim as i64]) };
    let dn = b.init(&format!("{name}.q"), DType::U8, &data_dims, data);
    let sn = if s.f16 {
        let raw: Vec<u8> = scales.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
        b.init(&format!("{name}.scales"), DType::F16, &[n as i64, kb as i64], raw)
    } else {
        b.init_f32(&format!("{name}.scales"), &[n as i64, kb as i64], &scales)
    };
    let mut inputs = vec![dn, idx.to_string(), sn];
    if s.asym {
        let packed: Vec<u8> = zps.chunks(kb).flat_map(pack4).collect();
        inputs.push(b.init(&format!("{name}.zp"), DType::U8, &[n as i64, kb.div_ceil(2) as i64], packed));
    }
    let refs: Vec<&str> = inputs.iter().map(|x| x.as_str()).collect();
    let out = b.ms(
        "GatherBlockQuantized",
        &refs,
        vec![attr_i("gather_axis", 0), attr_i("quantize_axis", 1), attr_i("block_size", block as i64), attr_i("bits", bits as i64)],
    );
    if s.f16 {
        b.cast(&out, DType::F32)
    } else {
        out
    }
}
