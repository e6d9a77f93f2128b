//! The cache of graphs converted from safetensors: one directory per source, scheme and graph-builder version under
//! `$DEPOSIUM_HOME/converted`, built on first use (calibrated first where the scheme wants it).
use std::path::{Path, PathBuf};

use deposium_convert::awq::CalibMode;
use deposium_convert::QuantConfig;

use crate::{paths, EngineError, LoadContext, Result};

/// `deposium_convert::convert`, with calibration statistics measured first when `q` wants them (int4): the one
/// conversion path of the CLI and of models converted on first load.
pub fn convert(src: &Path, out: &Path, q: &QuantConfig) -> Result<deposium_convert::Manifest> {
    let mut q = q.clone();
    if q.wants_calibration() {
        q.calib = CalibMode::Apply(crate::calibrate::calibration_for(src)?);
    }
    deposium_convert::convert(src, out, &q).context_load(|| format!("converting {}", src.display()))
}

/// Directory where a safetensors model converted with `scheme` is cached.
pub fn converted_path(src: &Path, scheme: &str) -> Result<PathBuf> {
    let w = src.join("model.safetensors");
    let meta = std::fs::metadata(&w).context_load(|| w.display().to_string())?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // The scheme's settings are part of the key: changing a scheme's defaults must not reuse an old conversion.
    let settings =
        QuantConfig::from_scheme(scheme).ok().and_then(|q| serde_json::to_string(&q).ok()).unwrap_or_default();
    let key = format!(
        "{}|{}|{}|{settings}",
        std::fs::canonicalize(src).unwrap_or(src.to_path_buf()).display(),
        meta.len(),
        mtime
    );
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
    let dir = paths::converted_dir();
    std::fs::create_dir_all(&dir).context_load(|| format!("creating {}", dir.display()))?;
    convert(src, &out, &q)?;
    remove_stale_conversions(&out);
    Ok(out)
}
