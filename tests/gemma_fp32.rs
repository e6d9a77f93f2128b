//! EmbeddingGemma fp32 graph built from safetensors vs sentence-transformers fp32 reference vectors.
mod common;

use deposium_engine::{fidelity, registry};

#[test]
fn fp32_matches_sentence_transformers_and_is_batch_invariant() {
    common::require_model("embeddinggemma-300m");
    let r = common::gemma_reference();
    let model = registry::load("embeddinggemma:fp32").expect("load");
    let f = fidelity::measure(&model, &r).unwrap();
    eprintln!("fp32 fidelity: {}", serde_json::to_string(&f).unwrap());
    // Every sentence (empty, 3000 chars, ~400 tokens included) under every prompt.
    assert!(f.all.min >= 0.9999, "fp32: min cosine to reference {} < 0.9999", f.all.min);
    assert!(f.batch_vs_alone.min >= 0.99999, "fp32: batched vs alone min cosine {}", f.batch_vs_alone.min);
}
