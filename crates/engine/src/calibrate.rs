//! Calibration statistics for activation-aware 4-bit conversion (`deposium_convert::awq`): the mean of x² per input
//! channel of every layer, measured by running the fp32 graph over built-in calibration texts. Cached under
//! `$DEPOSIUM_HOME/calibration`, keyed like conversions (source path, size, mtime).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use deposium_convert::awq::{Calibration, CALIBRATION_TEXTS, CALIB_PREFIX};
use ort::value::Tensor;

use crate::onnx::OnnxModel;
use crate::{paths, EngineError, Result};

/// Bump when the texts, prompts or statistics change.
const CALIBRATION_VERSION: u32 = 1;
/// Prompts per text (rotating through the model's prompts).
const PROMPTS_PER_TEXT: usize = 3;

fn err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Load(format!("calibration: {e}"))
}

fn cache_path(src: &Path) -> Result<PathBuf> {
    let w = src.join("model.safetensors");
    let meta = std::fs::metadata(&w).map_err(|e| err(format!("{}: {e}", w.display())))?;
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs()).unwrap_or(0);
    let key = format!("{}|{}|{mtime}|{CALIBRATION_VERSION}", std::fs::canonicalize(src).unwrap_or(src.to_path_buf()).display(), meta.len());
    use sha2::Digest;
    let h = hex::encode(&sha2::Sha256::digest(key.as_bytes())[..4]);
    let base = src.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
    Ok(paths::home().join("calibration").join(format!("{base}-{h}.json")))
}

/// Statistics for the safetensors model in `src`: from the cache, or measured now (seconds) and cached.
pub fn calibration_for(src: &Path) -> Result<Arc<Calibration>> {
    let path = cache_path(src)?;
    if let Ok(bytes) = std::fs::read(&path) {
        if let Ok(c) = serde_json::from_slice::<Calibration>(&bytes) {
            return Ok(Arc::new(Calibration::new(c.tokens, c.mean_sq)));
        }
    }
    let t0 = std::time::Instant::now();
    let dir = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let measured = deposium_convert::write_calibration_graph(src, &dir).map_err(|e| err(format!("{e:#}"))).and_then(|_| measure(src, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    let cal = measured?;
    tracing::info!(secs = t0.elapsed().as_secs_f32(), tokens = cal.tokens, layers = cal.mean_sq.len(), "calibration measured");
    let json = serde_json::to_vec(&cal).map_err(err)?;
    let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    if std::fs::write(&tmp, json).and_then(|_| std::fs::rename(&tmp, &path)).is_err() {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(path = %path.display(), "could not cache calibration statistics");
    }
    Ok(Arc::new(cal))
}

/// The calibration inputs: each text behind a few of the model's prompts.
fn calibration_inputs(src: &Path) -> Vec<String> {
    let mut prompts: Vec<String> = deposium_convert::st_config::StConfig::load(src).map(|st| st.prompts.into_values().collect()).unwrap_or_default();
    prompts.sort();
    prompts.dedup();
    if prompts.is_empty() {
        prompts.push(String::new());
    }
    let texts: Vec<&str> = CALIBRATION_TEXTS.lines().filter(|l| !l.trim().is_empty()).collect();
    let per = PROMPTS_PER_TEXT.min(prompts.len());
    texts.iter().enumerate().flat_map(|(i, t)| (0..per).map(move |j| (i * per + j, *t))).map(|(n, t)| format!("{}{t}", prompts[n % prompts.len()])).collect()
}

fn measure(src: &Path, graph_dir: &Path) -> Result<Calibration> {
    std::fs::create_dir_all(graph_dir.parent().unwrap_or(graph_dir)).map_err(err)?;
    let tokenizer = OnnxModel::tokenizer(src)?;
    let mut session = OnnxModel::session(&graph_dir.join("model.onnx"))?;
    let mut sums: HashMap<String, Vec<f64>> = HashMap::new();
    let mut tokens = 0usize;
    for text in calibration_inputs(src) {
        let enc = tokenizer.encode(text.as_str(), true).map_err(err)?;
        let ids: Vec<i64> = enc.get_ids().iter().map(|&i| i as i64).collect();
        let s = ids.len();
        let shape = [1i64, s as i64];
        let outputs = session.run(ort::inputs![
            "input_ids" => Tensor::from_array((shape, ids))?,
            "attention_mask" => Tensor::from_array((shape, vec![1i64; s]))?,
        ])?;
        for (name, value) in &outputs {
            let Some(layer) = name.strip_prefix(CALIB_PREFIX) else { continue };
            let (shape, x) = value.try_extract_tensor::<f32>()?;
            let k = *shape.last().unwrap_or(&0) as usize;
            let acc = sums.entry(layer.to_string()).or_insert_with(|| vec![0.0; k]);
            for row in x.chunks_exact(k) {
                acc.iter_mut().zip(row).for_each(|(a, &v)| *a += (v as f64) * (v as f64));
            }
        }
        tokens += s;
    }
    if sums.is_empty() {
        return Err(err("the calibration graph has no layer outputs"));
    }
    let mean_sq = sums.into_iter().map(|(k, v)| (k, v.iter().map(|s| (s / tokens as f64) as f32).collect())).collect();
    Ok(Calibration::new(tokens, mean_sq))
}
