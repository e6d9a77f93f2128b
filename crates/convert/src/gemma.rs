//! Gemma3 bidirectional encoder (EmbeddingGemma) as an ONNX graph, from `model.safetensors`.
//!
//! input_ids, attention_mask `[B, S]` (right padding) → token embeddings × √hidden → 24 × (sandwich-normed
//! attention with q/k RMSNorm, RoPE, GQA, bidirectional sliding window; GELU-tanh gated MLP) → final RMSNorm →
//! masked mean pooling → Dense heads → `sentence_embedding` `[B, out]` (not normalised).
use anyhow::{Context, Result};
use serde::Deserialize;

use crate::builder::{fixed, sym, Builder};
use crate::emit::{embedding, linear, Linear};
use crate::heads::DenseHead;
use crate::proto::{attr_f, attr_i, attr_s, DType};
use crate::scheme::QuantConfig;
use crate::weights::Weights;

#[derive(Debug, Deserialize, Clone)]
pub struct Gemma3Config {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f64,
    #[serde(default = "default_local_base")]
    pub rope_local_base_freq: f64,
    pub sliding_window: usize,
    #[serde(default)]
    pub layer_types: Vec<String>,
    #[serde(default = "default_pattern")]
    pub _sliding_window_pattern: usize,
    pub query_pre_attn_scalar: f64,
    pub vocab_size: usize,
    #[serde(default = "yes")]
    pub use_bidirectional_attention: bool,
    #[serde(default)]
    pub hidden_activation: Option<String>,
}

fn default_local_base() -> f64 {
    10_000.0
}
fn default_pattern() -> usize {
    6
}
fn yes() -> bool {
    true
}

impl Gemma3Config {
    fn is_sliding(&self, layer: usize) -> bool {
        match self.layer_types.get(layer) {
            Some(t) => t == "sliding_attention",
            None => !(layer + 1).is_multiple_of(self._sliding_window_pattern),
        }
    }

    /// Tokens i, j see each other when |i − j| < this (transformers: window // 2 + 1 when bidirectional).
    pub fn window_reach(&self) -> usize {
        if self.use_bidirectional_attention {
            self.sliding_window / 2 + 1
        } else {
            self.sliding_window
        }
    }
}

const NEG: f32 = -1.0e9;

/// RMSNorm with Gemma's `(1 + w)` scale, optionally times a constant (folded into the weight).
fn rms_norm(b: &mut Builder, x: &str, w: &[f32], name: &str, eps: f32, extra_scale: f32) -> String {
    let s = b.init_f32(name, &[w.len() as i64], &norm_scale(w, extra_scale));
    b.op(
        "SimplifiedLayerNormalization",
        &[x, &s],
        vec![attr_i("axis", -1), attr_f("epsilon", eps), attr_i("stash_type", 1)],
    )
}

/// Gemma's RMSNorm multiplies by (1 + weight); `extra` folds a constant factor in.
fn norm_scale(w: &[f32], extra: f32) -> Vec<f32> {
    w.iter().map(|v| (1.0 + v) * extra).collect()
}

/// cos/sin tables `[S, head_dim]` for positions 0..S (rotate-half layout: the half-table repeated twice; the sin
/// table has its first half negated so that rope(x) = x·cos + swap_halves(x)·sin).
fn rope_tables(b: &mut Builder, pos_f: &str, head_dim: usize, theta: f64) -> (String, String) {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half).map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32).collect();
    let inv_n = b.init_f32("rope_inv_freq", &[1, half as i64], &inv);
    let pos_col = b.unsqueeze(pos_f, &[1]);
    let freqs = b.op("Mul", &[&pos_col, &inv_n], vec![]); // [S, half]
    let cos_h = b.op("Cos", &[&freqs], vec![]);
    let sin_h = b.op("Sin", &[&freqs], vec![]);
    let neg_sin = b.op("Neg", &[&sin_h], vec![]);
    let cos = b.op("Concat", &[&cos_h, &cos_h], vec![attr_i("axis", -1)]);
    let sin = b.op("Concat", &[&neg_sin, &sin_h], vec![attr_i("axis", -1)]);
    (cos, sin)
}

fn apply_rope(b: &mut Builder, x: &str, cos: &str, sin: &str) -> String {
    let halves = b.node("", "Split", &[x], 2, vec![attr_i("axis", -1), attr_i("num_outputs", 2)]);
    let swapped = b.op("Concat", &[&halves[1], &halves[0]], vec![attr_i("axis", -1)]);
    let a = b.op("Mul", &[x, cos], vec![]);
    let c = b.op("Mul", &[&swapped, sin], vec![]);
    b.op("Add", &[&a, &c], vec![])
}

/// The stock attention ops' masks, as additive biases (0 or −1e9): key padding `[B,1,1,S]` for every layer, plus
/// the bidirectional window for sliding layers (`[B,1,S,S]`); the positions `[S]` (f32) and a 0 scalar, built
/// among them in the order these graphs always had (the fp32 graph stays byte-identical).
struct AttentionBiases {
    key: String,
    window: String,
    sliding: String,
    positions: String,
    zero: String,
}

fn attention_biases(b: &mut Builder, ids: &str, mask_f: &str, cfg: &Gemma3Config) -> AttentionBiases {
    let one = b.scalar_f32(1.0);
    let neg = b.scalar_f32(NEG);
    let big = b.scalar_f32(-NEG);
    let pad = b.op("Sub", &[mask_f, &one], vec![]);
    let pad = b.op("Mul", &[&pad, &big], vec![]); // 0 where kept, -1e9 on padding
    let key = b.unsqueeze(&pad, &[1, 2]); // [B,1,1,S]
    let shape = b.op("Shape", &[ids], vec![]);
    let one_i = b.scalar_i64(1);
    let seq_len = b.op("Gather", &[&shape, &one_i], vec![attr_i("axis", 0)]);
    let zero_i = b.scalar_i64(0);
    let step = b.scalar_i64(1);
    let pos = b.op("Range", &[&zero_i, &seq_len, &step], vec![]); // [S]
    let positions = b.cast(&pos, DType::F32);
    let pi = b.unsqueeze(&pos, &[1]);
    let pj = b.unsqueeze(&pos, &[0]);
    let diff = b.op("Sub", &[&pi, &pj], vec![]);
    let dist = b.op("Abs", &[&diff], vec![]);
    let reach = b.scalar_i64(cfg.window_reach() as i64);
    let far = b.op("GreaterOrEqual", &[&dist, &reach], vec![]);
    let zero = b.scalar_f32(0.0);
    let window = b.op("Where", &[&far, &neg, &zero], vec![]); // [S,S]
    let sliding = b.op("Add", &[&key, &window], vec![]); // [B,1,S,S]
    AttentionBiases { key, window, sliding, positions, zero }
}

pub fn build(w: &Weights, cfg: &Gemma3Config, dense: &[DenseHead], q: &QuantConfig) -> Result<Builder> {
    let h = cfg.hidden_size;
    let hd = cfg.head_dim;
    let eps = cfg.rms_norm_eps;
    let prefix = if w.has("embed_tokens.weight") { "" } else { "model." };
    let p = |s: &str| format!("{prefix}{s}");

    let mut b = Builder::new("gemma3_encoder");
    let ids = b.input("input_ids", DType::I64, vec![sym("batch"), sym("sequence")]);
    let mask = b.input("attention_mask", DType::I64, vec![sym("batch"), sym("sequence")]);

    // Token embeddings × √hidden (the scale is folded into the table / its scales).
    let table = w.matrix(&p("embed_tokens.weight"), cfg.vocab_size, h).context("embedding table")?;
    let mut x = embedding(&mut b, &ids, "embed_tokens", &table.data, cfg.vocab_size, h, (h as f32).sqrt(), q);
    drop(table);

    let mask_f = b.cast(&mask, DType::F32);
    let fused = q.fused_ops;
    // Our GemmaAttention op takes the token mask and the window reach; the stock attention ops take biases.
    let own_attention = fused && uses_custom_ops(q);
    let biases = (!own_attention).then(|| attention_biases(&mut b, &ids, &mask_f, cfg));
    let attn_scale = (cfg.query_pre_attn_scalar.powf(-0.5)) as f32;
    // Per-path inputs, (local, global): fused: cos/sin caches for RotaryEmbedding and a [B,1,S,S] bias for full
    // layers (MultiHeadAttention wants the full shape); plain: cos/sin tables over the positions, [B,1,1,S] bias.
    let (rope_local, rope_global, full_bias) = if fused {
        let local = rope_cache(&mut b, hd, cfg.rope_local_base_freq, "rope_local");
        let global = rope_cache(&mut b, hd, cfg.rope_theta, "rope_global");
        let full = biases.as_ref().map(|m| {
            let zero_win = b.op("Mul", &[&m.window, &m.zero], vec![]);
            b.op("Add", &[&m.key, &zero_win], vec![])
        });
        (local, global, full.unwrap_or_default())
    } else {
        let m = biases.as_ref().expect("graphs without fused ops use the stock attention");
        let local = rope_tables(&mut b, &m.positions, hd, cfg.rope_local_base_freq);
        let global = rope_tables(&mut b, &m.positions, hd, cfg.rope_theta);
        (local, global, m.key.clone())
    };
    let slide_bias = biases.map(|m| m.sliding).unwrap_or_default();
    // RotaryEmbedding's position offset: only the fused path without our ops needs it.
    let pos0 = if fused && !own_attention { b.const_i64(&[0]) } else { String::new() };

    // With fused ops, the residual add and the next norm are one SkipSimplifiedLayerNormalization.
    let mut lw = LayerWeights::load(w, cfg, prefix, 0, q)?;
    let mut hn = rms_norm(&mut b, &x, &lw.input_norm, "layers.0.input_layernorm", eps, 1.0);
    for l in 0..cfg.num_hidden_layers {
        let lp = |s: &str| layer_key(prefix, l, s);
        let ((cos, sin), bias) =
            if cfg.is_sliding(l) { (&rope_local, &slide_bias) } else { (&rope_global, &full_bias) };
        let attn = if fused {
            let masks =
                AttnMasks { bias, tokens: &mask_f, reach: if cfg.is_sliding(l) { cfg.window_reach() } else { 0 } };
            attention_fused(&mut b, w, cfg, &lw, &hn, (cos, sin, &pos0), masks, attn_scale, q)?
        } else {
            attention_reference(&mut b, w, cfg, prefix, l, &hn, cos, sin, bias, attn_scale, q)?
        };
        let post = (std::mem::take(&mut lw.post_attention_norm), lp("post_attention_layernorm"));
        let pre_ff = (std::mem::take(&mut lw.pre_feedforward_norm), lp("pre_feedforward_layernorm"));
        let (hn2, x2) = norm_add_norm(&mut b, &attn, &x, post, pre_ff, eps, q);
        x = x2;
        let down = mlp(&mut b, w, cfg, &lw, &hn2, q)?;
        let post = (std::mem::take(&mut lw.post_feedforward_norm), lp("post_feedforward_layernorm"));
        let next = if l + 1 < cfg.num_hidden_layers {
            lw = LayerWeights::load(w, cfg, prefix, l + 1, q)?;
            (lw.input_norm.clone(), format!("layers.{}.input_layernorm", l + 1))
        } else {
            (w.vector(&p("norm.weight"), h)?, "final_norm".to_string())
        };
        let (hn_next, x_next) = norm_add_norm(&mut b, &down, &x, post, next, eps, q);
        hn = hn_next;
        x = x_next;
    }
    let x = hn;
    let pooled = if uses_custom_ops(q) {
        // Our MeanPool op sums each text's tokens in order, whatever the padding: a text's vector does not depend on
        // the batch it is in (a MatMul over the padded length sums in blocks that depend on that length).
        b.node(crate::builder::CUSTOM_DOMAIN, crate::builder::MEAN_POOL, &[&x, &mask_f], 1, vec![]).remove(0)
    } else {
        crate::heads::mean_pool(&mut b, &x, &mask_f)
    };
    let out = crate::heads::dense_heads(&mut b, &pooled, dense, q)?;
    let out_dim = dense.last().map(|d| d.out_features).unwrap_or(h);
    b.output(&out, "sentence_embedding", DType::F32, vec![sym("batch"), fixed(out_dim as i64)]);
    Ok(b)
}

const MAX_POSITIONS: usize = 2048;

/// Name of a layer's tensor in the safetensors file (`prefix` is "" or "model.").
fn layer_key(prefix: &str, l: usize, s: &str) -> String {
    format!("{prefix}layers.{l}.{s}")
}

/// cos/sin caches `[MAX_POSITIONS, head_dim/2]` for com.microsoft RotaryEmbedding (rotate-half layout).
fn rope_cache(b: &mut Builder, head_dim: usize, theta: f64, name: &str) -> (String, String) {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half).map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32).collect();
    // Built from the frequencies by ops that ONNX Runtime folds into constants at load (4.2 MB less on disk than
    // stored tables). The angle is an f32 product, as transformers computes it.
    let inv_n = b.init_f32(&format!("{name}.inv_freq"), &[1, half as i64], &inv);
    let (start, limit, delta) = (b.scalar_f32(0.0), b.scalar_f32(MAX_POSITIONS as f32), b.scalar_f32(1.0));
    let positions = b.op("Range", &[&start, &limit, &delta], vec![]);
    let column = b.unsqueeze(&positions, &[1]);
    let angles = b.op("Mul", &[&column, &inv_n], vec![]);
    (b.op("Cos", &[&angles], vec![]), b.op("Sin", &[&angles], vec![]))
}

/// `x + branch` and its RMSNorm: one SkipSimplifiedLayerNormalization when fused. Returns (normed, sum).
fn add_norm(b: &mut Builder, branch: &str, x: &str, w: &[f32], name: &str, eps: f32, fused: bool) -> (String, String) {
    if !fused {
        let sum = b.op("Add", &[x, branch], vec![]);
        let normed = rms_norm(b, &sum, w, name, eps, 1.0);
        return (normed, sum);
    }
    let scale: Vec<f32> = w.iter().map(|v| 1.0 + v).collect();
    let g = b.init_f32(name, &[w.len() as i64], &scale);
    let outs = b.node(
        crate::builder::MS,
        "SkipSimplifiedLayerNormalization",
        &[branch, x, &g],
        4,
        vec![attr_f("epsilon", eps)],
    );
    let node = b.model.nodes.last_mut().expect("just added");
    node.outputs[1].clear();
    node.outputs[2].clear();
    (outs[0].clone(), outs[3].clone())
}

/// `sum = x + rms_norm(branch)·post`, `normed = rms_norm(sum)·next` → (normed, sum): one `GemmaNormAddNorm` node
/// where our ops are in use, else SimplifiedLayerNormalization then Add + norm (`add_norm`).
fn norm_add_norm(
    b: &mut Builder,
    branch: &str,
    x: &str,
    post: (Vec<f32>, String),
    next: (Vec<f32>, String),
    eps: f32,
    q: &QuantConfig,
) -> (String, String) {
    if !(q.fused_ops && uses_custom_ops(q)) {
        let normed = rms_norm(b, branch, &post.0, &post.1, eps, 1.0);
        return add_norm(b, &normed, x, &next.0, &next.1, eps, q.fused_ops);
    }
    let ps = b.init_f32(&post.1, &[post.0.len() as i64], &norm_scale(&post.0, 1.0));
    let ns = b.init_f32(&next.1, &[next.0.len() as i64], &norm_scale(&next.0, 1.0));
    let mut outs = b.node(
        crate::builder::CUSTOM_DOMAIN,
        crate::builder::GEMMA_NORM_ADD_NORM,
        &[branch, x, &ps, &ns],
        2,
        vec![attr_f("epsilon", eps)],
    );
    let sum = outs.pop().unwrap();
    (outs.pop().unwrap(), sum)
}

/// Rows of several PyTorch-layout weights stacked into one `[sum(n), k]` matrix (one fused MatMul).
fn stack_rows(w: &Weights, names: &[String], k: usize) -> Result<(Vec<f32>, Vec<usize>)> {
    let mut data = Vec::new();
    let mut sizes = Vec::new();
    for n in names {
        let m = w.get(n)?;
        anyhow::ensure!(
            m.shape.len() == 2 && m.shape[1] == k,
            "tensor '{n}' has shape {:?}, expected [_, {k}]",
            m.shape
        );
        sizes.push(m.shape[0]);
        data.extend_from_slice(&m.data);
    }
    Ok((data, sizes))
}

fn split_last(b: &mut Builder, x: &str, sizes: &[usize]) -> Vec<String> {
    let split = b.const_i64(&sizes.iter().map(|&s| s as i64).collect::<Vec<_>>());
    b.node("", "Split", &[x, &split], sizes.len(), vec![attr_i("axis", -1)])
}

const QKV: &str = "self_attn.qkv_proj";
const GATE_UP: &str = "mlp.gate_up_proj";
const DOWN: &str = "mlp.down_proj";

/// Whether this build scales 4-bit layers by calibration statistics (fused graphs only: one QKV and one gate/up
/// MatMul per layer, each fed by one norm).
fn calibrated(q: &QuantConfig) -> bool {
    q.fused_ops && matches!(q.calib, crate::awq::CalibMode::Apply(_))
}

/// A weight as the graph stores it: multiplied by its activation-aware input scales, when it has some.
struct Scaled {
    w: Vec<f32>,
    scales: Option<Vec<f32>>,
}

impl Scaled {
    /// `w` `[n, k]` with the scales `awq_scales` chooses for layer `name`.
    fn new(q: &QuantConfig, name: &str, w: Vec<f32>, n: usize, k: usize) -> Scaled {
        match q.awq_scales(name, &w, n, k) {
            Some(s) => Scaled { w: crate::blocks::scale_columns(&w, k, &s), scales: Some(s) },
            None => Scaled { w, scales: None },
        }
    }

    fn linear<'a>(&'a self, name: &'a str, n: usize, k: usize) -> Linear<'a> {
        Linear { input_scales: self.scales.as_deref(), ..Linear::new(name, &self.w, n, k) }
    }
}

/// One layer's norm weights and projections, computed once before the layer is emitted. With calibration, the
/// activation-aware `1 / s` of the QKV and gate/up projections is folded into the norms in front of them, and the
/// down projection's into the up rows.
struct LayerWeights {
    prefix: String,
    layer: usize,
    input_norm: Vec<f32>,
    post_attention_norm: Vec<f32>,
    pre_feedforward_norm: Vec<f32>,
    post_feedforward_norm: Vec<f32>,
    /// Fused graphs: q, k and v stacked `[Σn, h]` (one MatMul), and their row counts.
    qkv: Option<(Scaled, Vec<usize>)>,
    /// Fused graphs: gate and up stacked `[2·inter, h]`.
    gate_up: Option<Scaled>,
    down: Scaled,
}

impl LayerWeights {
    fn load(w: &Weights, cfg: &Gemma3Config, prefix: &str, l: usize, q: &QuantConfig) -> Result<LayerWeights> {
        let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
        let lp = |s: &str| layer_key(prefix, l, s);
        let norm = |name: &str| w.vector(&lp(&format!("{name}.weight")), h);
        let fold = |norm: Vec<f32>, s: &Option<Vec<f32>>| match s {
            Some(s) => crate::awq::fold_into_gemma_norm(&norm, s),
            None => norm,
        };
        let wd = w.matrix(&lp(&format!("{DOWN}.weight")), h, inter)?.data;
        let down = if calibrated(q) { Scaled::new(q, &lp(DOWN), wd, h, inter) } else { Scaled { w: wd, scales: None } };
        let (mut input_norm, mut pre_feedforward_norm) = (norm("input_layernorm")?, norm("pre_feedforward_layernorm")?);
        let (mut qkv, mut gate_up) = (None, None);
        if q.fused_ops {
            let names = ["q_proj", "k_proj", "v_proj"].map(|p| lp(&format!("self_attn.{p}.weight")));
            let (stacked, sizes) = stack_rows(w, &names, h)?;
            let stacked = Scaled::new(q, &lp(QKV), stacked, sizes.iter().sum(), h);
            input_norm = fold(input_norm, &stacked.scales);
            qkv = Some((stacked, sizes));
            let (mut stacked, _) = stack_rows(w, &[lp("mlp.gate_proj.weight"), lp("mlp.up_proj.weight")], h)?;
            if let Some(s) = &down.scales {
                for (row, s) in stacked[inter * h..].chunks_mut(h).zip(s) {
                    row.iter_mut().for_each(|v| *v /= s);
                }
            }
            let stacked = Scaled::new(q, &lp(GATE_UP), stacked, 2 * inter, h);
            pre_feedforward_norm = fold(pre_feedforward_norm, &stacked.scales);
            gate_up = Some(stacked);
        }
        Ok(LayerWeights {
            prefix: prefix.to_string(),
            layer: l,
            input_norm,
            post_attention_norm: norm("post_attention_layernorm")?,
            pre_feedforward_norm,
            post_feedforward_norm: norm("post_feedforward_layernorm")?,
            qkv,
            gate_up,
            down,
        })
    }

    /// Name of this layer's tensor `s`.
    fn key(&self, s: &str) -> String {
        layer_key(&self.prefix, self.layer, s)
    }
}

/// `gelu_tanh(gate) ⊙ up`.
fn geglu(b: &mut Builder, gate: &str, up: &str) -> String {
    let act = b.op("Gelu", &[gate], vec![attr_s("approximate", "tanh")]);
    b.op("Mul", &[&act, up], vec![])
}

fn mlp(
    b: &mut Builder,
    w: &Weights,
    cfg: &Gemma3Config,
    lw: &LayerWeights,
    hn: &str,
    q: &QuantConfig,
) -> Result<String> {
    let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
    let prod = match &lw.gate_up {
        Some(stacked) => {
            let name = lw.key(GATE_UP);
            let l = stacked.linear(&name, 2 * inter, h);
            match crate::emit::geglu_linear(b, hn, &l, q) {
                Some(prod) => prod,
                None => {
                    let gu = linear(b, hn, &l, q);
                    let parts = split_last(b, &gu, &[inter, inter]);
                    geglu(b, &parts[0], &parts[1])
                }
            }
        }
        None => {
            let (gate_name, up_name) = (lw.key("mlp.gate_proj"), lw.key("mlp.up_proj"));
            let wg = w.matrix(&format!("{gate_name}.weight"), inter, h)?;
            let gate = linear(b, hn, &Linear::new(&gate_name, &wg.data, inter, h), q);
            let wu = w.matrix(&format!("{up_name}.weight"), inter, h)?;
            let up = linear(b, hn, &Linear::new(&up_name, &wu.data, inter, h), q);
            geglu(b, &gate, &up)
        }
    };
    let name = lw.key(DOWN);
    Ok(linear(b, &prod, &lw.down.linear(&name, h, inter), q))
}

/// Quantized graphs with our kernels also use our GemmaAttention and GemmaNormAddNorm ops (fp32 graphs keep stock
/// ops only).
fn uses_custom_ops(q: &QuantConfig) -> bool {
    q.custom_kernel && q.linear_bits.is_some()
}

/// A layer's key masks: the additive bias `[B,1,S|1,S]` (MultiHeadAttention), or the token mask `[B,S]` and the
/// window reach (0: none) for our GemmaAttention op.
struct AttnMasks<'a> {
    bias: &'a str,
    tokens: &'a str,
    reach: usize,
}

/// Attention with fused ops: one QKV MatMul, then either our GemmaAttention op (q/k norms, RoPE and attention in one
/// node) or RotaryEmbedding and MultiHeadAttention (kv heads repeated).
/// `rope`: the cos and sin caches and RotaryEmbedding's position offset.
#[allow(clippy::too_many_arguments)]
fn attention_fused(
    b: &mut Builder,
    w: &Weights,
    cfg: &Gemma3Config,
    lw: &LayerWeights,
    hn: &str,
    rope: (&str, &str, &str),
    masks: AttnMasks<'_>,
    attn_scale: f32,
    q: &QuantConfig,
) -> Result<String> {
    let (h, hd, nq, nkv, eps) =
        (cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.rms_norm_eps);
    let (cos_c, sin_c, pos0) = rope;
    let lp = |s: &str| lw.key(s);
    let (stacked, sizes) = lw.qkv.as_ref().expect("fused graphs stack QKV");
    let name = lp(QKV);
    let qkv = linear(b, hn, &stacked.linear(&name, sizes.iter().sum(), h), q);
    let ctx = if uses_custom_ops(q) {
        // Our GemmaAttention op: split, q/k norms, RoPE and the attention in one node.
        let qs = norm_scale(&w.vector(&lp("self_attn.q_norm.weight"), hd)?, attn_scale);
        let ks = norm_scale(&w.vector(&lp("self_attn.k_norm.weight"), hd)?, 1.0);
        let qs = b.init_f32(&lp("q_norm"), &[hd as i64], &qs);
        let ks = b.init_f32(&lp("k_norm"), &[hd as i64], &ks);
        let attrs = vec![
            attr_i("num_heads", nq as i64),
            attr_i("kv_heads", nkv as i64),
            attr_f("epsilon", eps),
            attr_i("window_reach", masks.reach as i64),
        ];
        b.node(
            crate::builder::CUSTOM_DOMAIN,
            crate::builder::GEMMA_ATTENTION,
            &[&qkv, &qs, &ks, cos_c, sin_c, masks.tokens],
            1,
            attrs,
        )
        .remove(0)
    } else {
        let parts = split_last(b, &qkv, sizes);
        let q4 = b.reshape(&parts[0], &[0, 0, nq as i64, hd as i64]);
        let qn = rms_norm(b, &q4, &w.vector(&lp("self_attn.q_norm.weight"), hd)?, &lp("q_norm"), eps, attn_scale);
        let q3 = b.reshape(&qn, &[0, 0, (nq * hd) as i64]);
        // One kv head (EmbeddingGemma): [B, S, hd] is already per head, no reshapes around its norm.
        let k3 = if nkv == 1 {
            rms_norm(b, &parts[1], &w.vector(&lp("self_attn.k_norm.weight"), hd)?, &lp("k_norm"), eps, 1.0)
        } else {
            let k4 = b.reshape(&parts[1], &[0, 0, nkv as i64, hd as i64]);
            let kn = rms_norm(b, &k4, &w.vector(&lp("self_attn.k_norm.weight"), hd)?, &lp("k_norm"), eps, 1.0);
            b.reshape(&kn, &[0, 0, (nkv * hd) as i64])
        };
        let rope = |b: &mut Builder, x: &str, heads: usize| {
            b.ms(
                "RotaryEmbedding",
                &[x, pos0, cos_c, sin_c],
                vec![attr_i("num_heads", heads as i64), attr_i("interleaved", 0)],
            )
        };
        let qr = rope(b, &q3, nq);
        let kr = rope(b, &k3, nkv);
        // Each kv head serves nq/nkv consecutive q heads.
        let repeat = |b: &mut Builder, x: &str| -> String {
            if nkv == nq {
                return x.to_string();
            }
            let g = (nq / nkv) as i64;
            if nkv == 1 {
                let reps = b.const_i64(&[1, 1, g]);
                return b.op("Tile", &[x, &reps], vec![]);
            }
            let x5 = b.reshape(x, &[0, 0, nkv as i64, 1, hd as i64]);
            let ones = b.const_i64(&[1, 1, 1, g, 1]);
            let t = b.op("Tile", &[&x5, &ones], vec![]);
            b.reshape(&t, &[0, 0, (nq * hd) as i64])
        };
        let kx = repeat(b, &kr);
        let vx = repeat(b, &parts[2]);
        b.ms(
            "MultiHeadAttention",
            &[&qr, &kx, &vx, "", "", masks.bias],
            vec![attr_i("num_heads", nq as i64), attr_f("scale", 1.0)],
        )
    };
    o_proj(b, w, &ctx, &lp("self_attn.o_proj"), h, nq * hd, q)
}

/// The attention output projection `name` (weight `[h, k]`).
fn o_proj(b: &mut Builder, w: &Weights, ctx: &str, name: &str, h: usize, k: usize, q: &QuantConfig) -> Result<String> {
    let wo = w.matrix(&format!("{name}.weight"), h, k)?;
    Ok(linear(b, ctx, &Linear::new(name, &wo.data, h, k), q))
}

/// Attention with plain ONNX ops (the reference path).
#[allow(clippy::too_many_arguments)]
fn attention_reference(
    b: &mut Builder,
    w: &Weights,
    cfg: &Gemma3Config,
    prefix: &str,
    l: usize,
    hn: &str,
    cos: &str,
    sin: &str,
    bias: &str,
    attn_scale: f32,
    q: &QuantConfig,
) -> Result<String> {
    let (h, hd, nq, nkv, eps) =
        (cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.rms_norm_eps);
    let lp = |s: &str| layer_key(prefix, l, s);
    let mut proj = |name: &str, n: usize| -> Result<String> {
        let name = lp(&format!("self_attn.{name}"));
        let m = w.matrix(&format!("{name}.weight"), n, h)?;
        Ok(linear(b, hn, &Linear::new(&name, &m.data, n, h), q))
    };
    let (qv, kv, vv) = (proj("q_proj", nq * hd)?, proj("k_proj", nkv * hd)?, proj("v_proj", nkv * hd)?);
    let q4 = b.reshape(&qv, &[0, 0, nq as i64, hd as i64]);
    // The attention scale (a power of two for Gemma) is folded into the q norm weight.
    let qn = rms_norm(b, &q4, &w.vector(&lp("self_attn.q_norm.weight"), hd)?, &lp("q_norm"), eps, attn_scale);
    let qt = b.transpose(&qn, &[0, 2, 1, 3]);
    let k4 = b.reshape(&kv, &[0, 0, nkv as i64, hd as i64]);
    let kn = rms_norm(b, &k4, &w.vector(&lp("self_attn.k_norm.weight"), hd)?, &lp("k_norm"), eps, 1.0);
    let kt = b.transpose(&kn, &[0, 2, 1, 3]);
    let v4 = b.reshape(&vv, &[0, 0, nkv as i64, hd as i64]);
    let vt = b.transpose(&v4, &[0, 2, 1, 3]);
    let qr = apply_rope(b, &qt, cos, sin);
    let kr = apply_rope(b, &kt, cos, sin);
    let grouped = !(nkv == 1 || nkv == nq);
    let (qg, kg, vg) = if grouped {
        let g = (nq / nkv) as i64;
        let qg = b.reshape(&qr, &[0, nkv as i64, g, -1, hd as i64]);
        (qg, b.unsqueeze(&kr, &[2]), b.unsqueeze(&vt, &[2]))
    } else {
        (qr, kr, vt)
    };
    let perm = if grouped { vec![0, 1, 2, 4, 3] } else { vec![0, 1, 3, 2] };
    let ktt = b.op("Transpose", &[&kg], vec![crate::proto::attr_ints("perm", &perm)]);
    let scores = b.op("MatMul", &[&qg, &ktt], vec![]);
    let bias_use = if grouped { b.unsqueeze(bias, &[2]) } else { bias.to_string() };
    let scores = b.op("Add", &[&scores, &bias_use], vec![]);
    let probs = b.op("Softmax", &[&scores], vec![attr_i("axis", -1)]);
    let ctx = b.op("MatMul", &[&probs, &vg], vec![]);
    let ctx = if grouped { b.reshape(&ctx, &[0, nq as i64, -1, hd as i64]) } else { ctx };
    let ctx = b.transpose(&ctx, &[0, 2, 1, 3]);
    let ctx = b.reshape(&ctx, &[0, 0, (nq * hd) as i64]);
    o_proj(b, w, &ctx, &lp("self_attn.o_proj"), h, nq * hd, q)
}
