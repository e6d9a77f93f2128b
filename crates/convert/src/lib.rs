//! deposium-convert: safetensors → ONNX graph (Gemma3, BERT), with block quantization.
//!
//! `convert(src, out, quant)` writes a portable model directory: `model.onnx` + `model.onnx_data`, the tokenizer and
//! configs, and `deposium.json` (the manifest: scheme, source sha256, sizes, measured fidelity when known).
pub mod awq;
pub mod bert;
pub mod blocks;
pub mod builder;
pub mod coded_table;
pub mod emit;
pub mod gemma;
pub mod gptq;
pub mod heads;
pub mod proto;
pub mod scheme;
pub mod st_config;
pub mod vocab;
pub mod weights;

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use builder::Builder;
pub use builder::{
    CUSTOM_DOMAIN, GATHER_CODED, GATHER_Q, GEMMA_ATTENTION, GEMMA_NORM_ADD_NORM, MEAN_POOL, QMATMUL4, QMATMUL8,
};
use heads::load_dense;
pub use scheme::QuantConfig;
use st_config::{Pooling, StConfig};
use weights::Weights;

/// Bump when the graph a given source + scheme produces changes (invalidates cached conversions).
pub const GRAPH_VERSION: u32 = 16;

/// What a converted directory holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub family: String,
    pub scheme: String,
    pub quant: QuantConfig,
    pub dim: usize,
    pub max_tokens: usize,
    /// The graph's output is pooled (`sentence_embedding`) and needs only normalisation.
    pub output: String,
    pub normalize: bool,
    pub graph_version: u32,
    pub source_dir: PathBuf,
    pub source_sha256: String,
    /// Bytes: token table, transformer layers, heads, total on disk.
    pub sizes: Sizes,
    /// Cosine to reference vectors, filled in by whoever measured it.
    #[serde(default)]
    pub fidelity: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sizes {
    pub table: u64,
    pub layers: u64,
    pub heads: u64,
    pub total_on_disk: u64,
}

pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Family of a transformers directory from its config.json `model_type`.
pub fn detect_family(src: &Path) -> Result<String> {
    let cfg: serde_json::Value = st_config::read_json(&src.join("config.json"))?;
    let mt = cfg.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
    Ok(match mt {
        "gemma3_text" | "gemma3" => "gemma3".into(),
        "bert" => "bert".into(),
        other => {
            bail!("{}: model_type '{other}' is not supported by the graph builder (gemma3_text, bert)", src.display())
        }
    })
}

/// Converted directories hold tokenizer.json zstd-compressed (EmbeddingGemma's: 33.4 → 4.8 MB); `zstd -d` restores it.
pub const TOKENIZER_ZST: &str = "tokenizer.json.zst";
/// 0.6 s for EmbeddingGemma's tokenizer; level 19 saves 0.8 MB more but takes 30 s.
const TOKENIZER_ZSTD_LEVEL: i32 = 9;

/// A model directory's tokenizer.json: the plain file, else `tokenizer.json.zst` decompressed; None when neither exists.
pub fn read_tokenizer_json(dir: &Path) -> Result<Option<Vec<u8>>> {
    let plain = dir.join("tokenizer.json");
    if plain.exists() {
        return Ok(Some(std::fs::read(&plain).with_context(|| format!("reading {}", plain.display()))?));
    }
    let zst = dir.join(TOKENIZER_ZST);
    if !zst.exists() {
        return Ok(None);
    }
    let f = std::fs::File::open(&zst).with_context(|| format!("opening {}", zst.display()))?;
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(f)
        .and_then(|mut d| d.read_to_end(&mut out))
        .with_context(|| format!("decompressing {}", zst.display()))?;
    Ok(Some(out))
}

const COPY_FILES: &[&str] = &[
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
];

/// Drops `added_tokens_decoder` from a copied tokenizer_config.json: tokenizer.json's `added_tokens` hold the same
/// tokens (transformers rebuilds it from them), and for EmbeddingGemma it is 1.15 of the file's 1.16 MB.
fn slim_tokenizer_config(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let mut cfg: serde_json::Map<String, serde_json::Value> = st_config::read_json(path)?;
    if cfg.remove("added_tokens_decoder").is_some() {
        std::fs::write(path, serde_json::to_vec_pretty(&cfg)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `<pid>-<nanoseconds>`: names temporary directories that concurrent conversions never share.
pub fn unique_suffix() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

/// Write the fp32 graph of `src` with every layer's input as an extra output (`awq::CALIB_PREFIX` + name) to `dir`.
pub fn write_calibration_graph(src: &Path, dir: &Path) -> Result<()> {
    let mut q = QuantConfig::from_scheme("fp32")?;
    q.calib = awq::CalibMode::Record;
    let (builder, ..) = build_graph(src, &q)?;
    builder.model.write_dir(dir).with_context(|| format!("writing {}", dir.display()))
}

/// The graph of `src` with `q`: (builder, family, output dim, max tokens).
fn build_graph(src: &Path, q: &QuantConfig) -> Result<(Builder, String, usize, usize)> {
    let family = detect_family(src)?;
    let st = StConfig::load(src)?;
    let dense = load_dense(&st)?;
    let w = Weights::open(&src.join("model.safetensors"))?;
    let q = &with_repeated_char_rows(src, q)?;
    let (builder, dim, max_tokens) = match family.as_str() {
        "gemma3" => {
            let cfg: gemma::Gemma3Config = st_config::read_json(&src.join("config.json"))?;
            let b = gemma::build(&w, &cfg, &dense, q)?;
            let dim = dense.last().map(|d| d.out_features).unwrap_or(cfg.hidden_size);
            (b, dim, st.max_seq_length.unwrap_or(2048))
        }
        "bert" => {
            let cfg: bert::BertConfig = st_config::read_json(&src.join("config.json"))?;
            let b = bert::build(&w, &cfg, st.pooling, &dense, q)?;
            let dim = dense.last().map(|d| d.out_features).unwrap_or(cfg.hidden_size);
            (b, dim, st.max_seq_length.unwrap_or(cfg.max_position_embeddings).min(cfg.max_position_embeddings))
        }
        _ => unreachable!(),
    };
    if st.pooling != Pooling::Mean && family == "gemma3" {
        bail!("gemma3 graphs pool by mean only");
    }
    Ok((builder, family, dim, max_tokens))
}

/// `q` with `embed_fine_runs` resolved: the source vocabulary's repeated-character tokens added to `embed_fine_ids`.
fn with_repeated_char_rows(src: &Path, q: &QuantConfig) -> Result<QuantConfig> {
    let mut q = q.clone();
    if q.embed_fine_runs {
        let json = read_tokenizer_json(src)?
            .with_context(|| format!("embed_fine_runs needs the tokenizer.json of {}", src.display()))?;
        let runs = vocab::repeated_char_ids(&json).with_context(|| format!("in {}", src.display()))?;
        // One range per id: the table's emitter merges adjacent ranges.
        q.embed_fine_ids.extend(runs.into_iter().map(|id| [id, id + 1]));
    }
    Ok(q)
}

/// Build the ONNX graph for `src` with `q`, and write a model directory to `out` (atomically).
pub fn convert(src: &Path, out: &Path, q: &QuantConfig) -> Result<Manifest> {
    let st = StConfig::load(src)?;
    let wpath = src.join("model.safetensors");
    let t0 = std::time::Instant::now();
    let (builder, family, dim, max_tokens) = build_graph(src, q)?;
    let mut sizes = Sizes::default();
    for t in &builder.model.initializers {
        let n = t.raw.len() as u64;
        if t.name.starts_with("embed_tokens") || t.name.contains("embeddings.") {
            sizes.table += n;
        } else if t.name.starts_with("dense") {
            sizes.heads += n;
        } else {
            sizes.layers += n;
        }
    }
    tracing::info!(secs = t0.elapsed().as_secs_f32(), nodes = builder.model.nodes.len(), "graph built");
    // A unique temporary directory, renamed into place at the end: concurrent conversions never see half a model.
    let tmp = out.with_extension(format!("tmp-{}", unique_suffix()));
    let _ = std::fs::remove_dir_all(&tmp);
    builder.model.write_dir(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    drop_from_page_cache(&tmp.join("model.onnx_data"));
    drop(builder);
    let tok = src.join("tokenizer.json");
    if tok.exists() {
        let raw = std::fs::read(&tok).with_context(|| format!("reading {}", tok.display()))?;
        let packed = zstd::bulk::compress(&raw, TOKENIZER_ZSTD_LEVEL)
            .with_context(|| format!("compressing {}", tok.display()))?;
        std::fs::write(tmp.join(TOKENIZER_ZST), packed)?;
    }
    for f in COPY_FILES {
        let p = src.join(f);
        if p.exists() {
            std::fs::copy(&p, tmp.join(f)).with_context(|| format!("copying {}", p.display()))?;
        }
    }
    if tok.exists() {
        slim_tokenizer_config(&tmp.join("tokenizer_config.json"))?;
    }
    sizes.total_on_disk = dir_size(&tmp);
    let manifest = Manifest {
        format: "deposium-onnx".into(),
        family,
        scheme: q.scheme.clone(),
        quant: q.clone(),
        dim,
        max_tokens,
        output: "sentence_embedding".into(),
        normalize: st.normalize,
        graph_version: GRAPH_VERSION,
        source_dir: src.to_path_buf(),
        source_sha256: sha256_file(&wpath)?,
        sizes,
        fidelity: None,
    };
    std::fs::write(tmp.join("deposium.json"), serde_json::to_vec_pretty(&manifest)?)?;
    let _ = std::fs::remove_dir_all(out);
    if let Err(e) = std::fs::rename(&tmp, out) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another process may have finished the same conversion first.
        if !out.join("deposium.json").exists() {
            return Err(e).with_context(|| format!("moving {} to {}", tmp.display(), out.display()));
        }
    }
    Ok(manifest)
}

/// Write `path` to disk and drop it from the page cache. ONNX Runtime memory-maps the weights; pages left in the
/// cache by this process's writes get mapped in large runs around every row a lookup touches (measured: ~90 MB more
/// resident token-table pages after 256 texts than when the file is read back from disk). Best effort.
fn drop_from_page_cache(path: &Path) {
    let Ok(f) = std::fs::File::open(path) else { return };
    if f.sync_all().is_err() {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: advisory call on an open descriptor; it only drops clean cached pages.
        unsafe {
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
}

pub fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_json_reads_plain_or_zstd() {
        let dir = std::env::temp_dir().join(format!("deposium-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(read_tokenizer_json(&dir).unwrap().is_none());
        let json = br#"{"model": {"type": "BPE"}}"#.repeat(100);
        std::fs::write(dir.join(TOKENIZER_ZST), zstd::bulk::compress(&json, TOKENIZER_ZSTD_LEVEL).unwrap()).unwrap();
        assert_eq!(read_tokenizer_json(&dir).unwrap().unwrap(), json);
        // A plain tokenizer.json wins.
        std::fs::write(dir.join("tokenizer.json"), b"{}").unwrap();
        assert_eq!(read_tokenizer_json(&dir).unwrap().unwrap(), b"{}");
        std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
        std::fs::write(dir.join(TOKENIZER_ZST), b"not zstd").unwrap();
        assert!(read_tokenizer_json(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
