//! Shared helpers for the integration tests: fixtures from ../shared and the models fetched by scripts/fetch.sh.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::path::PathBuf;

pub fn shared() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared"))
}

pub fn require_model(dir: &str) {
    let p = deposium_engine::paths::models_dir().join(dir);
    assert!(p.is_dir(), "model {} missing: run `scripts/fetch.sh` (make fetch) first", p.display());
}

pub struct GemmaFixtures {
    pub sentences: Vec<String>,
    /// prompt name → prompt text
    pub prompts: BTreeMap<String, String>,
    /// prompt name → rows (one per sentence)
    pub vectors: BTreeMap<String, Vec<Vec<f32>>>,
}

pub fn gemma_fixtures() -> GemmaFixtures {
    let dir = shared().join("fixtures");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sentences.json")).unwrap()).unwrap();
    let sentences: Vec<String> = serde_json::from_value(meta["sentences"].clone()).unwrap();
    let prompts: BTreeMap<String, String> = serde_json::from_value(meta["prompts"].clone()).unwrap();
    let bytes = std::fs::read(dir.join("embeddinggemma_fp32_reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut vectors = BTreeMap::new();
    for name in prompts.keys() {
        let t = st.tensor(name).unwrap();
        let cols = t.shape()[1];
        let data: Vec<f32> = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        vectors.insert(name.clone(), data.chunks(cols).map(|c| c.to_vec()).collect());
    }
    GemmaFixtures { sentences, prompts, vectors }
}

/// (mean, min) cosine between paired rows.
pub fn cos_stats(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f32, f32) {
    let c: Vec<f32> = a.iter().zip(b).map(|(x, y)| deposium_engine::cosine(x, y)).collect();
    (c.iter().sum::<f32>() / c.len() as f32, c.iter().cloned().fold(f32::INFINITY, f32::min))
}
