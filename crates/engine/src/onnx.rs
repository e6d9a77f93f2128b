//! ONNX Runtime backend: graphs we build from safetensors (`deposium.json` directories) and stock ONNX exports
//! (`model.onnx` or `onnx/model*.onnx`, output `sentence_embedding`, or `last_hidden_state` + our pooling).
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use deposium_convert::Manifest;
use ort::session::Session;
use ort::value::Tensor;

use crate::st_config::{Pooling, StConfig};
use crate::{Backend, EngineError, LoadContext, ModelInfo, Result};

/// Padded tokens per run above which the heap is handed back to the system afterwards.
const TRIM_AFTER_TOKENS: usize = 2048;

fn release_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What the graph returns and what we still do on its output.
#[derive(Debug, Clone, Copy, PartialEq)]
enum OutputKind {
    /// `[B, dim]`, pooled (and maybe normalised) already.
    Pooled,
    /// `[B, S, dim]` token states; we pool.
    Tokens(Pooling),
}

pub struct OnnxModel {
    info: ModelInfo,
    session: Mutex<Session>,
    tokenizer: tokenizers::Tokenizer,
    output_name: String,
    output_kind: OutputKind,
    normalize: bool,
    has_token_type_ids: bool,
    pad_id: u32,
    /// Special tokens the tokenizer appends (kept when truncating).
    suffix: Vec<u32>,
    buckets: Vec<usize>,
    /// Rows of the graph's token table: ids at or past it cannot be embedded.
    vocab_size: usize,
    /// Where text tokenization maps ids the table lacks (added tokens such as Gemma's `<image_soft_token>`).
    unk_id: u32,
}

/// Some fp32 kernels of ONNX Runtime (attention among them) take another code path once the padded sequence is
/// longer than 64 tokens. The results differ by ~1e-7 (cosine 0.9999999999997 in the fp32 graph), but per-block
/// int8 rounding of the next layer's inputs amplifies any difference (cosine 0.9999 between the two paths, measured
/// with both MatMulNBits and our QMatMul8). Batching only sequences on the same side of 64 keeps every vector
/// equal to the one computed alone.
const INT8_KERNEL_BUCKETS: &[usize] = &[64];

fn find_onnx(dir: &Path) -> Option<PathBuf> {
    let direct = dir.join("model.onnx");
    if direct.exists() {
        return Some(direct);
    }
    let sub = dir.join("onnx");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&sub)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    // Prefer plain model.onnx, then any variant (model_quantized.onnx, model_int8.onnx...).
    files.iter().find(|p| p.file_name().is_some_and(|n| n == "model.onnx")).cloned().or_else(|| files.first().cloned())
}

/// Identity of a converted graph: source weights, scheme settings and graph builder version (caches key on it).
fn converted_digest(m: &Manifest) -> String {
    use sha2::Digest;
    let key =
        format!("{}|{}|{}", m.source_sha256, serde_json::to_string(&m.quant).unwrap_or_default(), m.graph_version);
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

impl OnnxModel {
    /// Load any supported directory: converted, stock ONNX, or safetensors (converted on first use).
    pub fn load_dir(dir: &Path, name: &str, scheme: &str) -> Result<Self> {
        let model = Self::load_dir_inner(dir, name, scheme);
        // Parsing the graph leaves hundreds of MB of freed heap behind.
        release_heap();
        model
    }

    fn load_dir_inner(dir: &Path, name: &str, scheme: &str) -> Result<Self> {
        if dir.join("deposium.json").exists() {
            return Self::load_converted(dir, name);
        }
        if find_onnx(dir).is_some() {
            return Self::load_stock(dir, name);
        }
        if dir.join("model.safetensors").exists() && dir.join("config.json").exists() {
            let out = crate::conversion::ensure_converted(dir, scheme)?;
            return Self::load_converted(&out, name);
        }
        Err(EngineError::load(format!(
            "{}: no model found (expected deposium.json, model.onnx, onnx/*.onnx, or model.safetensors + config.json)",
            dir.display()
        )))
    }

    fn load_converted(dir: &Path, name: &str) -> Result<Self> {
        let m: Manifest = crate::st_config::read_json(&dir.join("deposium.json")).context_load(|| "manifest")?;
        let st = StConfig::load(dir).context_load(|| "sentence-transformers config")?;
        let session = crate::runtime::session(&dir.join("model.onnx"))?;
        let tokenizer = crate::runtime::tokenizer(dir)?;
        let info = ModelInfo {
            name: name.to_string(),
            family: m.family.clone(),
            dim: m.dim,
            max_tokens: m.max_tokens,
            prompts: st.prompts.clone(),
            default_prompt_name: st.default_prompt_name.clone(),
            quantization: m.scheme.clone(),
            size_bytes: m.sizes.total_on_disk,
            parameter_count: None,
            digest: converted_digest(&m),
            matryoshka_dims: if m.family == "gemma3" { vec![768, 512, 256, 128] } else { vec![] },
            path: dir.to_path_buf(),
        };
        let mut model =
            Self::finish_load(info, session, tokenizer, "sentence_embedding".into(), OutputKind::Pooled, m.normalize)?;
        if m.quant.linear_bits.is_some() {
            model.buckets = INT8_KERNEL_BUCKETS.to_vec();
        }
        Ok(model)
    }

    fn load_stock(dir: &Path, name: &str) -> Result<Self> {
        let path = find_onnx(dir).expect("checked");
        let st = StConfig::load(dir).context_load(|| "sentence-transformers config")?;
        let session = crate::runtime::session(&path)?;
        let outs: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
        let (output_name, kind) = if let Some(o) = outs.iter().find(|o| *o == "sentence_embedding") {
            (o.clone(), OutputKind::Pooled)
        } else if let Some(o) = outs.iter().find(|o| *o == "last_hidden_state" || *o == "token_embeddings") {
            (o.clone(), OutputKind::Tokens(st.pooling))
        } else {
            return Err(EngineError::load(format!(
                "{}: outputs {outs:?} include neither sentence_embedding nor last_hidden_state",
                path.display()
            )));
        };
        let tokenizer = crate::runtime::tokenizer(dir)?;
        let cfg: serde_json::Value = crate::st_config::read_json(&dir.join("config.json")).unwrap_or_default();
        let dim = cfg.get("hidden_size").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        let max_pos = cfg.get("max_position_embeddings").and_then(|v| v.as_u64()).unwrap_or(512) as usize;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
            + std::fs::metadata(path.with_extension("onnx_data")).map(|m| m.len()).unwrap_or(0);
        let info = ModelInfo {
            name: name.to_string(),
            family: cfg.get("model_type").and_then(|v| v.as_str()).unwrap_or("onnx").to_string(),
            dim,
            max_tokens: st.max_seq_length.unwrap_or(max_pos).min(max_pos),
            prompts: st.prompts.clone(),
            default_prompt_name: st.default_prompt_name.clone(),
            quantization: "onnx".into(),
            size_bytes: size,
            parameter_count: None,
            digest: deposium_convert::sha256_file(&path).context_load(|| "digest")?,
            matryoshka_dims: vec![],
            path: dir.to_path_buf(),
        };
        // A stock export of a sentence-transformers model normalises when its modules say so (or by default).
        Self::finish_load(info, session, tokenizer, output_name, kind, st.normalize)
    }

    fn finish_load(
        mut info: ModelInfo,
        session: Session,
        tokenizer: tokenizers::Tokenizer,
        output_name: String,
        output_kind: OutputKind,
        normalize: bool,
    ) -> Result<Self> {
        let has_token_type_ids = session.inputs().iter().any(|i| i.name() == "token_type_ids");
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| ["<pad>", "[PAD]"].iter().find_map(|t| tokenizer.token_to_id(t)))
            .unwrap_or(0);
        // Special tokens appended after the content: compare "a" with and without them.
        let probe = || "tokenizer's special tokens";
        let with = tokenizer.encode("a", true).context_load(probe)?.get_ids().to_vec();
        let without = tokenizer.encode("a", false).context_load(probe)?.get_ids().to_vec();
        let suffix = match with.windows(without.len().max(1)).position(|w| w == without.as_slice()) {
            Some(pos) => with[pos + without.len()..].to_vec(),
            None => vec![],
        };
        if info.size_bytes == 0 {
            info.size_bytes = deposium_convert::dir_size(&info.path);
        }
        let mut m = Self {
            info,
            session: Mutex::new(session),
            tokenizer,
            output_name,
            output_kind,
            normalize,
            has_token_type_ids,
            pad_id,
            suffix,
            buckets: vec![],
            vocab_size: 0,
            unk_id: 0,
        };
        // The tokenizer may know more ids than the model's table (added multimodal tokens): the config says.
        let cfg: serde_json::Value = crate::st_config::read_json(&m.info.path.join("config.json")).unwrap_or_default();
        let tok_vocab = m.tokenizer.get_vocab_size(true);
        m.vocab_size =
            cfg.get("vocab_size").and_then(|v| v.as_u64()).map(|v| (v as usize).min(tok_vocab)).unwrap_or(tok_vocab);
        m.unk_id = ["<unk>", "[UNK]"].iter().find_map(|t| m.tokenizer.token_to_id(t)).unwrap_or(m.pad_id);
        if m.info.dim == 0 {
            // Learn the output width from one run.
            let ids = m.tokenize("a")?;
            m.info.dim = m.embed_tokens(&[ids])?[0].len();
        }
        Ok(m)
    }
}

impl Drop for OnnxModel {
    fn drop(&mut self) {
        if std::env::var_os("DEPOSIUM_ORT_PROFILE").is_some() {
            if let Ok(mut s) = self.session.lock() {
                match s.end_profiling() {
                    Ok(path) => tracing::info!(%path, "ONNX Runtime profile written"),
                    Err(e) => tracing::warn!("ending the ONNX Runtime profile: {e}"),
                }
            }
        }
    }
}

impl Backend for OnnxModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let enc =
            self.tokenizer.encode_fast(text, true).map_err(|e| EngineError::InvalidInput(format!("tokenizer: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        if self.vocab_size > 0 {
            ids.iter_mut().filter(|t| **t as usize >= self.vocab_size).for_each(|t| *t = self.unk_id);
        }
        Ok(ids)
    }

    fn batch_buckets(&self) -> &[usize] {
        &self.buckets
    }

    fn tokenizer(&self) -> Option<&tokenizers::Tokenizer> {
        Some(&self.tokenizer)
    }

    fn truncate_tokens(&self, ids: &mut Vec<u32>) {
        let max = self.info.max_tokens;
        if ids.len() > max {
            let keep = max.saturating_sub(self.suffix.len());
            ids.truncate(keep);
            ids.extend_from_slice(&self.suffix);
        }
    }

    fn embed_tokens(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(vec![]);
        }
        if let Some(bad) = batch.iter().flatten().find(|&&t| t as usize >= self.vocab_size) {
            return Err(EngineError::InvalidInput(format!(
                "token id {bad} is out of range for model '{}' (vocabulary size {})",
                self.info.name, self.vocab_size
            )));
        }
        let b = batch.len();
        let s = batch.iter().map(|x| x.len()).max().unwrap_or(1).max(1);
        let mut ids = vec![self.pad_id as i64; b * s];
        let mut mask = vec![0i64; b * s];
        for (r, seq) in batch.iter().enumerate() {
            for (c, &t) in seq.iter().enumerate() {
                ids[r * s + c] = t as i64;
                mask[r * s + c] = 1;
            }
        }
        let shape = [b as i64, s as i64];
        let mut inputs: Vec<(std::borrow::Cow<'_, str>, ort::session::SessionInputValue<'_>)> = vec![
            ("input_ids".into(), Tensor::from_array((shape, ids))?.into()),
            ("attention_mask".into(), Tensor::from_array((shape, mask.clone()))?.into()),
        ];
        if self.has_token_type_ids {
            inputs.push(("token_type_ids".into(), Tensor::from_array((shape, vec![0i64; b * s]))?.into()));
        }
        let mut session = self.session.lock().map_err(|_| EngineError::Internal("session lock poisoned".into()))?;
        let outputs = session.run(inputs)?;
        let (oshape, data) = outputs[self.output_name.as_str()].try_extract_tensor::<f32>()?;
        let mut out: Vec<Vec<f32>> = match self.output_kind {
            OutputKind::Pooled => {
                let d = oshape[oshape.len() - 1] as usize;
                data.chunks_exact(d).map(|c| c.to_vec()).collect()
            }
            OutputKind::Tokens(pooling) => {
                let d = oshape[2] as usize;
                let s_out = oshape[1] as usize;
                (0..b)
                    .map(|r| {
                        let n = batch[r].len();
                        let row = |c: usize| &data[(r * s_out + c) * d..(r * s_out + c + 1) * d];
                        match pooling {
                            Pooling::Cls => row(0).to_vec(),
                            Pooling::LastToken => row(n.saturating_sub(1)).to_vec(),
                            Pooling::Mean => {
                                let mut acc = vec![0f32; d];
                                for c in 0..n {
                                    acc.iter_mut().zip(row(c)).for_each(|(a, x)| *a += x);
                                }
                                let inv = 1.0 / n.max(1) as f32;
                                acc.iter_mut().for_each(|a| *a *= inv);
                                acc
                            }
                        }
                    })
                    .collect()
            }
        };
        drop(outputs);
        drop(session);
        if b * s >= TRIM_AFTER_TOKENS {
            release_heap();
        }
        if self.normalize {
            out.iter_mut().for_each(|v| crate::l2_normalize(v));
        }
        Ok(out)
    }
}
