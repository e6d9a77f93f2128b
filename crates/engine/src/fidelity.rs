//! Fidelity of a model to reference vectors (the sentence-transformers fp32 fixtures): cosine per text, each text
//! embedded alone, plus batch invariance (the same texts in one padded batch).
use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::{cosine, EmbedRequest, LoadContext, Model, Prompt, Result};

/// Reference vectors: sentences, prompts (name → text) and one row per sentence per prompt.
pub struct Reference {
    pub sentences: Vec<String>,
    pub prompts: BTreeMap<String, String>,
    pub vectors: BTreeMap<String, Vec<Vec<f32>>>,
}

impl Reference {
    /// Read `sentences.json` + `embeddinggemma_fp32_reference.safetensors` from a fixtures directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let what = || format!("fixtures in {}", dir.display());
        let meta: serde_json::Value = crate::st_config::read_json(&dir.join("sentences.json")).context_load(what)?;
        let sentences: Vec<String> = serde_json::from_value(meta["sentences"].clone()).context_load(what)?;
        let prompts: BTreeMap<String, String> = serde_json::from_value(meta["prompts"].clone()).context_load(what)?;
        let bytes = std::fs::read(dir.join("embeddinggemma_fp32_reference.safetensors")).context_load(what)?;
        let st = safetensors::SafeTensors::deserialize(&bytes).context_load(what)?;
        let mut vectors = BTreeMap::new();
        for name in prompts.keys() {
            let t = st.tensor(name).context_load(what)?;
            let cols = t.shape()[1];
            let data: Vec<f32> =
                t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            vectors.insert(name.clone(), data.chunks(cols).map(|c| c.to_vec()).collect());
        }
        Ok(Self { sentences, prompts, vectors })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub mean: f32,
    pub min: f32,
}

pub fn stats(a: &[Vec<f32>], b: &[Vec<f32>]) -> Stats {
    let c: Vec<f32> = a.iter().zip(b).map(|(x, y)| cosine(x, y)).collect();
    Stats { mean: c.iter().sum::<f32>() / c.len().max(1) as f32, min: c.iter().cloned().fold(f32::INFINITY, f32::min) }
}

#[derive(Debug, Clone, Serialize)]
pub struct Fidelity {
    /// Over every sentence × prompt, each text alone.
    pub all: Stats,
    pub per_prompt: BTreeMap<String, Stats>,
    /// Cosine between each text alone and inside one batch of all sentences (STS prompt).
    pub batch_vs_alone: Stats,
}

fn embed_each(model: &Model, texts: &[String], prompt: &str) -> Result<Vec<Vec<f32>>> {
    texts
        .iter()
        .map(|s| {
            let mut req = EmbedRequest::new(vec![s.clone()]);
            req.prompt = Prompt::Raw(prompt.to_string());
            Ok(model.embed(&req)?.embeddings.remove(0))
        })
        .collect()
}

pub fn measure(model: &Model, r: &Reference) -> Result<Fidelity> {
    let (mut got_all, mut want_all) = (Vec::new(), Vec::new());
    let mut per_prompt = BTreeMap::new();
    let mut alone_sts = None;
    for (name, prompt) in &r.prompts {
        let got = embed_each(model, &r.sentences, prompt)?;
        per_prompt.insert(name.clone(), stats(&got, &r.vectors[name]));
        if name == "STS" || alone_sts.is_none() {
            alone_sts = Some((prompt.clone(), got.clone()));
        }
        got_all.extend(got);
        want_all.extend(r.vectors[name].iter().cloned());
    }
    let (prompt, alone) = alone_sts.unwrap_or_default();
    let mut req = EmbedRequest::new(r.sentences.clone());
    req.prompt = Prompt::Raw(prompt);
    let batched = model.embed(&req)?.embeddings;
    Ok(Fidelity { all: stats(&got_all, &want_all), per_prompt, batch_vs_alone: stats(&alone, &batched) })
}
