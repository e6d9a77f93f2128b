//! ONNX Runtime backend: graphs we build from safetensors (`deposium.json` directories) and stock ONNX exports
//! (`model.onnx` or `onnx/model*.onnx`, output `sentence_embedding`, or `last_hidden_state` + our pooling).
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use deposium_convert::{Manifest, QuantConfig};
use ort::session::{builder::GraphOptimizationLevel, Session};
use ort::value::Tensor;

use crate::st_config::{Pooling, StConfig};
use crate::{paths, Backend, EngineError, ModelInfo, Result};

static ORT: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();

/// Where libonnxruntime is looked for, in order.
pub fn ort_library_candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    for var in ["DEPOSIUM_ORT_LIB", "ORT_DYLIB_PATH"] {
        if let Some(p) = std::env::var_os(var) {
            c.push(PathBuf::from(p));
        }
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(d) = exe.parent() {
            c.push(d.join("libonnxruntime.so.1"));
            c.push(d.join("lib").join("libonnxruntime.so.1"));
        }
    }
    c.push(paths::home().join("onnxruntime").join("libonnxruntime.so.1"));
    c
}

/// Load ONNX Runtime once per process.
pub fn init_ort() -> Result<&'static ort::environment::Environment> {
    ORT.get_or_init(|| {
        let cands = ort_library_candidates();
        let Some(lib) = cands.iter().find(|p| p.exists()) else {
            return Err(format!(
                "ONNX Runtime library not found (looked at: {}); run `make fetch` (scripts/fetch.sh ort) or set DEPOSIUM_ORT_LIB",
                cands.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ));
        };
        let env = ort::init_from(lib)
            .map_err(|e| format!("cannot load {}: {e}", lib.display()))?
            .with_name("deposium")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))?;
        tracing::debug!(lib = %lib.display(), "onnxruntime loaded");
        Ok(env)
    })
    .as_ref()
    .map_err(|e| EngineError::Load(e.clone()))
}

/// Our ONNX Runtime custom operators (`ai.deposium`), which every session of the engine registers.
pub fn operator_domain() -> ort::Result<ort::operator::OperatorDomain> {
    crate::qop::domain()
}

/// Intra-op threads: `DEPOSIUM_THREADS` or the number of cores.
pub fn thread_count() -> usize {
    std::env::var("DEPOSIUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// ONNX Runtime's CPU arena keeps the largest batch's buffers for good (2.6 GB measured); off unless
/// `DEPOSIUM_ORT_ARENA=1`. Buffers then come from malloc, which the binary tunes to reuse them within a run.
fn arena_enabled() -> bool {
    std::env::var("DEPOSIUM_ORT_ARENA").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

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

fn load_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Load(e.to_string())
}

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

/// Directory where a safetensors model converted with `scheme` is cached.
pub fn converted_path(src: &Path, scheme: &str) -> Result<PathBuf> {
    let w = src.join("model.safetensors");
    let meta = std::fs::metadata(&w).map_err(|e| load_err(format!("{}: {e}", w.display())))?;
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs()).unwrap_or(0);
    // The scheme's settings are part of the key: changing a scheme's defaults must not reuse an old conversion.
    let settings = QuantConfig::from_scheme(scheme).ok().and_then(|q| serde_json::to_string(&q).ok()).unwrap_or_default();
    let key = format!("{}|{}|{}|{settings}", std::fs::canonicalize(src).unwrap_or(src.to_path_buf()).display(), meta.len(), mtime);
    use sha2::Digest;
    let h = hex::encode(&sha2::Sha256::digest(key.as_bytes())[..4]);
    let base = src.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
    Ok(paths::converted_dir().join(format!("{base}-{scheme}-g{}-{h}", deposium_convert::GRAPH_VERSION)))
}

/// Drop other conversions of the same model directory name and scheme (`<base>-<scheme>-g<N>-<hash>`): made by an
/// older graph builder or older scheme settings (a cache; a source elsewhere with the same name converts again).
fn remove_stale_conversions(current: &Path) {
    let Some(name) = current.file_name().and_then(|n| n.to_str()) else { return };
    let Some(g) = name.rfind("-g") else { return };
    let prefix = &name[..g + 2];
    let Ok(rd) = std::fs::read_dir(paths::converted_dir()) else { return };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        if n != name && n.starts_with(prefix) && e.path().join("deposium.json").exists() {
            tracing::info!(dir = %e.path().display(), "removing an outdated conversion");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Convert `src` with `scheme` unless a valid cached conversion exists; returns its directory.
pub fn ensure_converted(src: &Path, scheme: &str) -> Result<PathBuf> {
    let out = converted_path(src, scheme)?;
    if out.join("deposium.json").exists() && out.join("model.onnx").exists() {
        return Ok(out);
    }
    let q = QuantConfig::from_scheme(scheme).map_err(|e| EngineError::InvalidInput(e.to_string()))?;
    tracing::info!(src = %src.display(), scheme, out = %out.display(), "building ONNX graph from safetensors (once; cached)");
    std::fs::create_dir_all(paths::converted_dir()).map_err(load_err)?;
    crate::calibrate::convert(src, &out, &q)?;
    remove_stale_conversions(&out);
    Ok(out)
}

/// Identity of a converted graph: source weights, scheme settings and graph builder version (caches key on it).
fn converted_digest(m: &Manifest) -> String {
    use sha2::Digest;
    let key = format!("{}|{}|{}", m.source_sha256, serde_json::to_string(&m.quant).unwrap_or_default(), m.graph_version);
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
            let out = ensure_converted(dir, scheme)?;
            return Self::load_converted(&out, name);
        }
        Err(EngineError::Load(format!(
            "{}: no model found (expected deposium.json, model.onnx, onnx/*.onnx, or model.safetensors + config.json)",
            dir.display()
        )))
    }

    pub(crate) fn session(path: &Path) -> Result<Session> {
        // ONNX Runtime registers a custom op domain's version in a process-wide map without a lock: two sessions
        // built at once can both try to add `ai.deposium` and one fails ("domain is already exist").
        static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = BUILD.lock().unwrap_or_else(|e| e.into_inner());
        let env = init_ort()?;
        let threads = thread_count();
        deposium_kernels::set_pool_threads(threads);
        let mut b = Session::builder(env)
            .map_err(load_err)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(load_err)?
            .with_intra_threads(threads)
            .map_err(load_err)?
            .with_inter_threads(1)
            .map_err(load_err)?
            // Arena off by default (see `arena_enabled`): RSS follows the current batch.
            .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(arena_enabled()).build()])
            .map_err(load_err)?
            .with_operators(operator_domain().map_err(load_err)?)
            .map_err(load_err)?;
        if let Ok(p) = std::env::var("DEPOSIUM_ORT_PROFILE") {
            b = b.with_profiling(p).map_err(load_err)?;
        }
        b.commit_from_file(path).map_err(|e| EngineError::Load(format!("{}: {e}", path.display())))
    }

    pub(crate) fn tokenizer(dir: &Path) -> Result<tokenizers::Tokenizer> {
        // Converted directories hold it zstd-compressed (tokenizer.json.zst).
        let p = dir.join("tokenizer.json");
        let bytes = deposium_convert::read_tokenizer_json(dir)
            .map_err(|e| EngineError::Load(format!("{e:#}")))?
            .ok_or_else(|| EngineError::Load(format!("{}: no such file (nor {})", p.display(), deposium_convert::TOKENIZER_ZST)))?;
        let mut t = crate::tokenizer_load::from_json(&bytes).map_err(|e| EngineError::Load(format!("{}: {e}", p.display())))?;
        t.with_truncation(None).map_err(load_err)?;
        t.with_padding(None);
        Ok(t)
    }

    fn load_converted(dir: &Path, name: &str) -> Result<Self> {
        let m: Manifest = crate::st_config::read_json(&dir.join("deposium.json")).map_err(|e| load_err(format!("{e:#}")))?;
        let st = StConfig::load(dir).map_err(|e| load_err(format!("{e:#}")))?;
        let session = Self::session(&dir.join("model.onnx"))?;
        let tokenizer = Self::tokenizer(dir)?;
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
        let mut model = Self::finish_load(info, session, tokenizer, "sentence_embedding".into(), OutputKind::Pooled, m.normalize)?;
        if m.quant.linear_bits.is_some() {
            model.buckets = INT8_KERNEL_BUCKETS.to_vec();
        }
        Ok(model)
    }

    fn load_stock(dir: &Path, name: &str) -> Result<Self> {
        let path = find_onnx(dir).expect("checked");
        let st = StConfig::load(dir).map_err(|e| load_err(format!("{e:#}")))?;
        let session = Self::session(&path)?;
        let outs: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
        let (output_name, kind) = if let Some(o) = outs.iter().find(|o| *o == "sentence_embedding") {
            (o.clone(), OutputKind::Pooled)
        } else if let Some(o) = outs.iter().find(|o| *o == "last_hidden_state" || *o == "token_embeddings") {
            (o.clone(), OutputKind::Tokens(st.pooling))
        } else {
            return Err(EngineError::Load(format!(
                "{}: outputs {outs:?} include neither sentence_embedding nor last_hidden_state",
                path.display()
            )));
        };
        let tokenizer = Self::tokenizer(dir)?;
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
            digest: deposium_convert::sha256_file(&path).map_err(|e| load_err(format!("{e:#}")))?,
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
        let with = tokenizer.encode("a", true).map_err(load_err)?.get_ids().to_vec();
        let without = tokenizer.encode("a", false).map_err(load_err)?.get_ids().to_vec();
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
        m.vocab_size = cfg.get("vocab_size").and_then(|v| v.as_u64()).map(|v| (v as usize).min(tok_vocab)).unwrap_or(tok_vocab);
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
        let enc = self.tokenizer.encode_fast(text, true).map_err(|e| EngineError::InvalidInput(format!("tokenizer: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        if self.vocab_size > 0 {
            ids.iter_mut().filter(|t| **t as usize >= self.vocab_size).for_each(|t| *t = self.unk_id);
        }
        Ok(ids)
    }

    fn batch_buckets(&self) -> &[usize] {
        &self.buckets
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
