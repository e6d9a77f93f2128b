//! EmbeddingGemma int8 / int4 graphs: fidelity to the fp32 reference and batch invariance.
mod common;

use deposium_engine::{fidelity, registry};

fn check(spec: &str, mean_min: f32, min_min: f32) {
    common::require_model("embeddinggemma-300m");
    let r = common::gemma_reference();
    let model = registry::load(spec).expect("load");
    let f = fidelity::measure(&model, &r).unwrap();
    eprintln!("{spec} fidelity: {}", serde_json::to_string(&f).unwrap());
    assert!(f.all.mean >= mean_min && f.all.min >= min_min, "{spec}: mean {} (≥ {mean_min}), min {} (≥ {min_min})", f.all.mean, f.all.min);
    // A text's vector must not depend on the rest of its batch.
    assert!(f.batch_vs_alone.min >= 0.99999, "{spec}: batched vs alone min cosine {}", f.batch_vs_alone.min);
}

#[test]
fn int8_default_is_faithful_and_batch_invariant() {
    check("embeddinggemma", 0.9995, 0.998);
}

#[test]
fn int4_is_faithful_and_batch_invariant() {
    check("embeddinggemma:int4", 0.99, 0.97);
}
