//! BERT-family encoders (e.g. all-MiniLM-L6-v2) as an ONNX graph: the same builder, another architecture.
use anyhow::Result;
use serde::Deserialize;

use crate::builder::{fixed, sym, Builder};
use crate::emit::{linear, Linear};
use crate::heads::DenseHead;
use crate::proto::{attr_f, attr_i, attr_s, DType};
use crate::scheme::QuantConfig;
use crate::st_config::Pooling;
use crate::weights::Weights;

#[derive(Debug, Deserialize, Clone)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub layer_norm_eps: f32,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    #[serde(default)]
    pub hidden_act: Option<String>,
}

fn layer_norm(b: &mut Builder, x: &str, w: &Weights, name: &str, n: usize, eps: f32) -> Result<String> {
    let g = w.vector(&format!("{name}.weight"), n)?;
    let bias = w.vector(&format!("{name}.bias"), n)?;
    let gn = b.init_f32(&format!("{name}.weight"), &[n as i64], &g);
    let bn = b.init_f32(&format!("{name}.bias"), &[n as i64], &bias);
    Ok(b.op("LayerNormalization", &[x, &gn, &bn], vec![attr_i("axis", -1), attr_f("epsilon", eps)]))
}

fn dense(b: &mut Builder, x: &str, w: &Weights, name: &str, n: usize, k: usize, q: &QuantConfig) -> Result<String> {
    let wm = w.matrix(&format!("{name}.weight"), n, k)?;
    let bias = w.vector(&format!("{name}.bias"), n)?;
    Ok(linear(b, x, &Linear { bias: Some(&bias), ..Linear::new(name, &wm.data, n, k) }, q))
}

pub fn build(w: &Weights, cfg: &BertConfig, pooling: Pooling, heads: &[DenseHead], q: &QuantConfig) -> Result<Builder> {
    let h = cfg.hidden_size;
    let nh = cfg.num_attention_heads;
    let hd = h / nh;
    let prefix = if w.has("embeddings.word_embeddings.weight") { "" } else { "bert." };
    let p = |s: &str| format!("{prefix}{s}");
    if let Some(act) = &cfg.hidden_act {
        anyhow::ensure!(act == "gelu", "BERT hidden_act '{act}' is not supported (gelu)");
    }

    let mut b = Builder::new("bert_encoder");
    let ids = b.input("input_ids", DType::I64, vec![sym("batch"), sym("sequence")]);
    let mask = b.input("attention_mask", DType::I64, vec![sym("batch"), sym("sequence")]);

    let word = w.matrix(&p("embeddings.word_embeddings.weight"), cfg.vocab_size, h)?;
    let word_n = b.init_f32("embeddings.word", &[cfg.vocab_size as i64, h as i64], &word.data);
    let pos_t = w.matrix(&p("embeddings.position_embeddings.weight"), cfg.max_position_embeddings, h)?;
    let pos_n = b.init_f32("embeddings.position", &[cfg.max_position_embeddings as i64, h as i64], &pos_t.data);
    let typ = w.get(&p("embeddings.token_type_embeddings.weight"))?;
    let type0 = b.init_f32("embeddings.type0", &[h as i64], &typ.data[..h]);

    let x = b.op("Gather", &[&word_n, &ids], vec![attr_i("axis", 0)]);
    let shape = b.op("Shape", &[&ids], vec![]);
    let one_i = b.scalar_i64(1);
    let seq_len = b.op("Gather", &[&shape, &one_i], vec![attr_i("axis", 0)]);
    let zero = b.scalar_i64(0);
    let pos = b.op("Range", &[&zero, &seq_len, &one_i], vec![]);
    let pe = b.op("Gather", &[&pos_n, &pos], vec![attr_i("axis", 0)]);
    let x = b.op("Add", &[&x, &pe], vec![]);
    let x = b.op("Add", &[&x, &type0], vec![]);
    let mut x = layer_norm(&mut b, &x, w, &p("embeddings.LayerNorm"), h, cfg.layer_norm_eps)?;

    let mask_f = b.cast(&mask, DType::F32);
    let one = b.scalar_f32(1.0);
    let big = b.scalar_f32(1.0e9);
    let pad = b.op("Sub", &[&mask_f, &one], vec![]);
    let pad = b.op("Mul", &[&pad, &big], vec![]);
    let bias = b.unsqueeze(&pad, &[1, 2]); // [B,1,1,S]
    let scale = b.scalar_f32((hd as f32).powf(-0.5));

    for l in 0..cfg.num_hidden_layers {
        let lp = |s: &str| p(&format!("encoder.layer.{l}.{s}"));
        let qv = dense(&mut b, &x, w, &lp("attention.self.query"), h, h, q)?;
        let kv = dense(&mut b, &x, w, &lp("attention.self.key"), h, h, q)?;
        let vv = dense(&mut b, &x, w, &lp("attention.self.value"), h, h, q)?;
        let split = |b: &mut Builder, t: &str, perm: &[i64]| {
            let r = b.reshape(t, &[0, 0, nh as i64, hd as i64]);
            b.transpose(&r, perm)
        };
        let qt = split(&mut b, &qv, &[0, 2, 1, 3]);
        let kt = split(&mut b, &kv, &[0, 2, 3, 1]);
        let vt = split(&mut b, &vv, &[0, 2, 1, 3]);
        let s = b.op("MatMul", &[&qt, &kt], vec![]);
        let s = b.op("Mul", &[&s, &scale], vec![]);
        let s = b.op("Add", &[&s, &bias], vec![]);
        let pr = b.op("Softmax", &[&s], vec![attr_i("axis", -1)]);
        let ctx = b.op("MatMul", &[&pr, &vt], vec![]);
        let ctx = b.transpose(&ctx, &[0, 2, 1, 3]);
        let ctx = b.reshape(&ctx, &[0, 0, h as i64]);
        let ao = dense(&mut b, &ctx, w, &lp("attention.output.dense"), h, h, q)?;
        let sum = b.op("Add", &[&ao, &x], vec![]);
        x = layer_norm(&mut b, &sum, w, &lp("attention.output.LayerNorm"), h, cfg.layer_norm_eps)?;
        let inter = dense(&mut b, &x, w, &lp("intermediate.dense"), cfg.intermediate_size, h, q)?;
        let act = b.op("Gelu", &[&inter], vec![attr_s("approximate", "none")]);
        let out = dense(&mut b, &act, w, &lp("output.dense"), h, cfg.intermediate_size, q)?;
        let sum = b.op("Add", &[&out, &x], vec![]);
        x = layer_norm(&mut b, &sum, w, &lp("output.LayerNorm"), h, cfg.layer_norm_eps)?;
    }
    let pooled = match pooling {
        Pooling::Mean => crate::heads::mean_pool(&mut b, &x, &mask_f),
        Pooling::Cls => crate::heads::cls_pool(&mut b, &x),
        Pooling::LastToken => anyhow::bail!("last-token pooling is not supported for BERT graphs"),
    };
    let out = crate::heads::dense_heads(&mut b, &pooled, heads, q)?;
    let out_dim = heads.last().map(|d| d.out_features).unwrap_or(h);
    b.output(&out, "sentence_embedding", DType::F32, vec![sym("batch"), fixed(out_dim as i64)]);
    Ok(b)
}
