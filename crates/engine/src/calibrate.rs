//! Calibration statistics for 4-bit conversion (`deposium_convert::awq`, `deposium_convert::gptq`): `E[xᵀx]` of
//! every layer's input, measured by running the fp32 graph over built-in calibration texts.
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use deposium_convert::awq::{Calibration, CALIBRATION_TEXTS, CALIB_PREFIX};
use ort::value::Tensor;

use crate::runtime;
use crate::{paths, LoadContext, Result};

/// Prompts per text (rotating through the model's prompts).
const PROMPTS_PER_TEXT: usize = 3;

/// Statistics for the safetensors model in `src`, measured now (a few seconds; conversions are cached, these are
/// not: `E[xᵀx]` of every layer is ~300 MB for EmbeddingGemma).
pub(crate) fn calibration_for(src: &Path) -> Result<Arc<Calibration>> {
    let t0 = std::time::Instant::now();
    let dir = paths::home().join("calibration").join(format!("graph-{}", deposium_convert::unique_suffix()));
    std::fs::create_dir_all(&dir).context_load(|| format!("calibration: creating {}", dir.display()))?;
    let measured = deposium_convert::write_calibration_graph(src, &dir)
        .context_load(|| "calibration")
        .and_then(|_| measure(src, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    let cal = measured?;
    tracing::info!(
        secs = t0.elapsed().as_secs_f32(),
        tokens = cal.tokens,
        layers = cal.mean_sq.len(),
        "calibration measured"
    );
    Ok(Arc::new(cal))
}

/// The calibration inputs: each text behind a few of the model's prompts.
fn calibration_inputs(src: &Path) -> Vec<String> {
    let mut prompts: Vec<String> = deposium_convert::st_config::StConfig::load(src)
        .map(|st| st.prompts.into_values().collect())
        .unwrap_or_default();
    prompts.sort();
    prompts.dedup();
    if prompts.is_empty() {
        prompts.push(String::new());
    }
    let texts: Vec<&str> = CALIBRATION_TEXTS.lines().filter(|l| !l.trim().is_empty()).collect();
    let per = PROMPTS_PER_TEXT.min(prompts.len());
    texts
        .iter()
        .enumerate()
        .flat_map(|(i, t)| (0..per).map(move |j| (i * per + j, *t)))
        .map(|(n, t)| format!("{}{t}", prompts[n % prompts.len()]))
        .collect()
}

fn measure(src: &Path, graph_dir: &Path) -> Result<Calibration> {
    let tokenizer = runtime::tokenizer(src)?;
    let mut session = runtime::session(&graph_dir.join("model.onnx"))?;
    let mut sums: HashMap<String, Vec<f64>> = HashMap::new();
    let mut tokens = 0usize;
    for text in calibration_inputs(src) {
        let enc = tokenizer.encode(text.as_str(), true).context_load(|| "calibration")?;
        let ids: Vec<i64> = enc.get_ids().iter().map(|&i| i as i64).collect();
        let s = ids.len();
        let shape = [1i64, s as i64];
        let outputs = session.run(ort::inputs![
            "input_ids" => Tensor::from_array((shape, ids))?,
            "attention_mask" => Tensor::from_array((shape, vec![1i64; s]))?,
        ])?;
        for (name, value) in &outputs {
            let Some(layer) = name.strip_prefix(CALIB_PREFIX) else { continue };
            let (_, xtx) = value.try_extract_tensor::<f32>()?;
            let acc = sums.entry(layer.to_string()).or_insert_with(|| vec![0.0; xtx.len()]);
            acc.iter_mut().zip(xtx).for_each(|(a, &v)| *a += v as f64);
        }
        tokens += s;
    }
    if sums.is_empty() {
        // Families whose layers are not calibrated (BERT): no statistics, round-to-nearest.
        tracing::info!("no calibrated layers in this model family");
    }
    let second_moment =
        sums.into_iter().map(|(k, v)| (k, v.iter().map(|s| (s / tokens as f64) as f32).collect())).collect();
    Ok(Calibration::new(tokens, second_moment))
}
