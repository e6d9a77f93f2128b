//! Quantization schemes: what each preset (`fp32`, `int8`, `int4`) stores at which precision, and the per-layer
//! decisions that follow (bits, calibrated scales and rounding). Emission is `emit`'s, block codes `blocks`'.
use serde::{Deserialize, Serialize};

use crate::awq::CalibMode;
use crate::blocks::{dequantize_blocks4, quantize_blocks, quantize_blocks_asym4};

/// How to store weights.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QuantConfig {
    /// Scheme name (`fp32`, `int8`, `w8a16`, `int4`).
    pub scheme: String,
    /// Bits for linear layers (None = fp32).
    pub linear_bits: Option<u8>,
    /// Quantization block along K for linear layers.
    pub block: usize,
    /// MatMulNBits accuracy_level (4 = int8 activations per block).
    pub accuracy_level: i64,
    /// Bits of our QMatMul8 kernel's activation codes per block of 32: 8 (Q8_0 numerics) or 16 (W8A16: the
    /// activations' rounding, int8's main error, all but vanishes). Graphs without our ops use `accuracy_level`.
    #[serde(default = "eight", skip_serializing_if = "is_eight")]
    pub activation_bits: u8,
    /// Bits for the token embedding table (None = fp32).
    pub embed_bits: Option<u8>,
    pub embed_block: usize,
    /// In an entropy-coded table, id ranges `[start, end)` coded at `embed_fine_step` instead of `embed_step`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub embed_fine_ids: Vec<[u32; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed_fine_step: Option<f32>,
    /// In an entropy-coded table, the tokens made of one character repeated (`----`, `xxxxxxxx`, whitespace runs;
    /// read from the source's tokenizer.json) are `embed_fine_ids` rows too: documents repeat them back to back, so
    /// their rows' error does not average out.
    #[serde(default, skip_serializing_if = "is_false")]
    pub embed_fine_runs: bool,
    /// In an entropy-coded table, every column scaled by the table's spread (the same absolute error in each) instead
    /// of by its own (`coded_table::Columns`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub embed_uniform_columns: bool,
    /// Token table entropy-coded on a uniform grid of this step (relative to each row's RMS after the columns are
    /// scaled; see `coded_table`), by our `GatherCoded` op; None for fixed-width codes (`embed_bits`). Graphs
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
    /// Layers of the scheme's own width (`linear_bits`: 4 or 8) rounded by GPTQ from calibration statistics (see
    /// `gptq`).
    #[serde(default)]
    pub gptq: bool,
    /// 8-bit schemes: SmoothQuant-style input scales with this α, `s_j = rms(x_j)^α / max_i |W_ij|^(1−α)` (the
    /// activations' RMS from calibration), folded upstream as AWQ's are, so that the int8 activations of the QKV,
    /// gate/up and down projections carry smaller outliers. None: no smoothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smooth: Option<f32>,
    /// Calibration for this build (never serialized: the manifest records `awq`, the statistics are re-measured).
    #[serde(skip)]
    pub calib: CalibMode,
    /// Dense heads kept unquantized are stored in fp16 (computed in fp32).
    #[serde(default)]
    pub heads_f16: bool,
}

/// The Gemma 3 tokenizer's most frequent token rows: the first 32,768 BPE merges (merge order follows frequency) and
/// the first 4,096 single characters (most frequent first, from id 236,743): 79 % of the STS texts' tokens
/// (docs/size-and-memory.md).
pub const FREQUENT_GEMMA_IDS: [[u32; 2]; 2] = [[0, 32_768], [236_743, 240_839]];

fn yes() -> bool {
    true
}

fn eight() -> u8 {
    8
}

fn is_eight(bits: &u8) -> bool {
    *bits == 8
}

fn is_false(b: &bool) -> bool {
    !b
}

impl QuantConfig {
    pub fn from_scheme(scheme: &str) -> anyhow::Result<Self> {
        let base = QuantConfig {
            scheme: scheme.into(),
            linear_bits: None,
            block: 32,
            accuracy_level: 4,
            activation_bits: 8,
            embed_bits: None,
            embed_block: 32,
            embed_step: None,
            embed_fine_ids: vec![],
            embed_fine_step: None,
            embed_fine_runs: false,
            embed_uniform_columns: false,
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
            smooth: None,
            calib: CalibMode::Off,
            heads_f16: false,
        };
        Ok(match scheme {
            "fp32" => base,
            // int8: every linear layer 8-bit per block of 32 (our QMatMul8); token table entropy-coded at step 0.125
            // (`--portable`: 8-bit fixed width); Dense heads unquantized, stored in fp16. Measurements behind each
            // choice: docs/quantization.md.
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
            // w8a16: int8's weights, with 16-bit activation codes in our QMatMul8 (the portable graph's
            // MatMulNBits computes in fp32: accuracy_level 1). The token table, then the main error, codes its most
            // frequent rows and its repeated-character tokens at half int8's step, with the same absolute error in
            // every column. Measurements: docs/long-inputs.md, "Session 12" and "Session 13".
            "w8a16" => {
                let int8 = QuantConfig::from_scheme("int8")?;
                QuantConfig {
                    scheme: scheme.into(),
                    accuracy_level: 1,
                    activation_bits: 16,
                    embed_fine_ids: FREQUENT_GEMMA_IDS.to_vec(),
                    embed_fine_step: int8.embed_step.map(|s| s / 2.0),
                    embed_fine_runs: true,
                    embed_uniform_columns: true,
                    ..int8
                }
            }
            // int4: QKV and gate/up projections 4-bit, scaled and rounded from calibration statistics (AWQ + GPTQ);
            // o_proj and down_proj, the most sensitive, stay 8-bit; token table entropy-coded at step 0.3
            // (`--portable`: 4-bit asymmetric block 64); Dense heads as in int8. Measurements: docs/quantization.md.
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
            s => anyhow::bail!("unknown scheme '{s}' (fp32, int8, w8a16, int4)"),
        })
    }

    /// Whether weight `name` stays fp32 (`keep_fp32`).
    pub fn keeps(&self, name: &str) -> bool {
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

    /// Whether this build needs calibration statistics: 4-bit layers with `awq` or `gptq`, 8-bit schemes with `gptq`
    /// or `smooth`.
    pub fn wants_calibration(&self) -> bool {
        match self.linear_bits {
            Some(4) => self.awq || self.gptq,
            Some(8) => self.gptq || self.smooth.is_some(),
            _ => false,
        }
    }

    /// The input second moment of layer `name` (`[k, k]`) as the quantized weight sees it, when calibrated with
    /// GPTQ on: divided by the activation-aware scales `input_scales` already multiplied into the weight.
    fn gptq_hessian(&self, name: &str, k: usize, input_scales: Option<&[f32]>) -> Option<Vec<f32>> {
        let CalibMode::Apply(cal) = &self.calib else { return None };
        let h = cal.second_moment.get(name).filter(|h| self.gptq && h.len() == k * k)?;
        // The layer sees x / s: its second moment is H / (s sᵀ).
        Some(match input_scales {
            Some(s) => h.iter().enumerate().map(|(i, v)| v / (s[i / k] * s[i % k])).collect(),
            None => h.clone(),
        })
    }

    /// Asymmetric 4-bit codes, scales and zero points of layer `name` (weight `[n, k]`, already multiplied by its
    /// activation-aware scales `input_scales` if any): GPTQ when calibrated, else round-to-nearest.
    pub fn quantize_asym4(
        &self,
        name: &str,
        w: &[f32],
        n: usize,
        k: usize,
        input_scales: Option<&[f32]>,
    ) -> (Vec<u8>, Vec<f32>, Vec<u8>) {
        self.gptq_rounding(name, k, input_scales, |h| crate::gptq::gptq_asym4(w, n, k, self.block, h))
            .unwrap_or_else(|| quantize_blocks_asym4(w, n, k, self.block))
    }

    /// GPTQ's codes for layer `name` by `gptq` (given the layer's input second moment) when calibrated with GPTQ
    /// on; None (round to nearest) otherwise or when the moment cannot be factored.
    fn gptq_rounding<T>(
        &self,
        name: &str,
        k: usize,
        input_scales: Option<&[f32]>,
        gptq: impl FnOnce(&[f32]) -> Option<T>,
    ) -> Option<T> {
        let q = gptq(&self.gptq_hessian(name, k, input_scales)?);
        if q.is_none() {
            tracing::warn!(layer = name, "GPTQ: input second moment not factorable; rounding to nearest");
        }
        q
    }

    /// Symmetric 8-bit codes (`q + 128`) and scales of layer `name` (weight `[n, k]`, already multiplied by its
    /// input scales `input_scales` if any): GPTQ on the same grid when the scheme's own width is 8 bits and it is
    /// calibrated (`--gptq true`), else round-to-nearest. The 8-bit layers of a 4-bit scheme (`keep_int8`) round
    /// to nearest.
    pub fn quantize_sym8(
        &self,
        name: &str,
        w: &[f32],
        n: usize,
        k: usize,
        input_scales: Option<&[f32]>,
    ) -> (Vec<u8>, Vec<f32>) {
        (self.linear_bits == Some(8))
            .then(|| self.gptq_rounding(name, k, input_scales, |h| crate::gptq::gptq_sym8(w, n, k, self.block, h)))
            .flatten()
            .unwrap_or_else(|| quantize_blocks(w, n, k, self.block, 8))
    }

    /// Input scales for layer `name` (weight `[n, k]`), when calibrated: activation-aware (AWQ) for 4-bit layers,
    /// SmoothQuant's for the 8-bit layers of an 8-bit scheme with `smooth`. The caller multiplies the weight's columns
    /// by them and divides the layer's input upstream.
    pub fn awq_scales(&self, name: &str, w: &[f32], n: usize, k: usize) -> Option<Vec<f32>> {
        let CalibMode::Apply(cal) = &self.calib else { return None };
        if let (Some(alpha), Some(8)) = (self.smooth, self.linear_bits) {
            let m = cal.mean_sq.get(name).filter(|m| m.len() == k)?;
            return (self.linear_bits_for(name) == Some(8)).then(|| crate::awq::smooth_scales(w, n, k, m, alpha));
        }
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
        cal.scales(name, w, n, k, &qdq)
    }
}
