//! EmbeddingGemma fp32 graph built from safetensors vs sentence-transformers fp32 reference vectors.
mod common;

use deposium_engine::{registry, EmbedRequest, Prompt};

#[test]
fn fp32_matches_sentence_transformers() {
    common::require_model("embeddinggemma-300m");
    let fx = common::gemma_fixtures();
    let model = registry::load("embeddinggemma:fp32").expect("load");
    for (name, prompt) in &fx.prompts {
        // Each text alone, as the reference was computed.
        let mut got = Vec::new();
        for s in &fx.sentences {
            let mut req = EmbedRequest::new(vec![s.clone()]);
            req.prompt = Prompt::Raw(prompt.clone());
            got.push(model.embed(&req).unwrap().embeddings.remove(0));
        }
        let want = &fx.vectors[name];
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let c = deposium_engine::cosine(g, w);
            assert!(c >= 0.9999, "prompt {name}, sentence {i} ({:?}): cosine {c}", &fx.sentences[i].chars().take(40).collect::<String>());
        }
        let (mean, min) = common::cos_stats(&got, want);
        eprintln!("prompt {name}: cosine mean {mean:.6} min {min:.6}");
    }
}

#[test]
fn batch_equals_one_by_one() {
    common::require_model("embeddinggemma-300m");
    let fx = common::gemma_fixtures();
    let model = registry::load("embeddinggemma:fp32").expect("load");
    let mut req = EmbedRequest::new(fx.sentences.clone());
    req.prompt = Prompt::Named("STS".into());
    let batched = model.embed(&req).unwrap().embeddings;
    for (i, s) in fx.sentences.iter().enumerate() {
        let mut one = EmbedRequest::new(vec![s.clone()]);
        one.prompt = Prompt::Named("STS".into());
        let alone = model.embed(&one).unwrap().embeddings.remove(0);
        let c = deposium_engine::cosine(&alone, &batched[i]);
        assert!(c >= 0.99999, "sentence {i}: batched vs alone cosine {c}");
    }
}
