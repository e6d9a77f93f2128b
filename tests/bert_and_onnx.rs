//! The same loader and graph builder on a BERT model (all-MiniLM-L6-v2 safetensors), and a stock ONNX export.
mod common;

use deposium_engine::{cosine, registry, EmbedRequest, Prompt};

struct SmallRef {
    texts: Vec<String>,
    token_ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f32>>,
}

fn small_ref(model: &str) -> SmallRef {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::shared().join("fixtures/small_models_reference.json")).unwrap(),
    )
    .unwrap();
    let m = &v["models"][model];
    SmallRef {
        texts: serde_json::from_value(v["texts"].clone()).unwrap(),
        token_ids: serde_json::from_value(m["token_ids"].clone()).unwrap(),
        embeddings: serde_json::from_value(m["embeddings"].clone()).unwrap(),
    }
}

fn embed_each(spec: &str, texts: &[String]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let model = registry::load(spec).expect("load");
    let alone = texts
        .iter()
        .map(|t| {
            let mut r = EmbedRequest::new(vec![t.clone()]);
            r.prompt = Prompt::None;
            model.embed(&r).unwrap().embeddings.remove(0)
        })
        .collect();
    let mut r = EmbedRequest::new(texts.to_vec());
    r.prompt = Prompt::None;
    (alone, model.embed(&r).unwrap().embeddings)
}

#[test]
fn minilm_safetensors_graph_matches_reference() {
    common::require_model("all-MiniLM-L6-v2");
    let r = small_ref("all-MiniLM-L6-v2");
    let model = registry::load("all-MiniLM-L6-v2").unwrap();
    assert_eq!(model.info().family, "bert");
    assert_eq!(model.info().dim, 384);
    for (t, ids) in r.texts.iter().zip(&r.token_ids) {
        assert_eq!(&model.backend().tokenize(t).unwrap(), ids, "token ids for {t:?}");
    }
    let (alone, batched) = embed_each("all-MiniLM-L6-v2", &r.texts);
    for (i, (g, w)) in alone.iter().zip(&r.embeddings).enumerate() {
        let c = cosine(g, w);
        assert!(c >= 0.9999, "text {i} {:?}: cosine {c}", r.texts[i]);
        assert!(cosine(g, &batched[i]) >= 0.99999, "text {i}: batched differs");
    }
}

#[test]
fn stock_onnx_export_runs_with_our_pooling() {
    common::require_model("minilm-int8-onnx");
    let r = small_ref("all-MiniLM-L6-v2");
    let (alone, batched) = embed_each("minilm-int8-onnx", &r.texts);
    for (i, (g, w)) in alone.iter().zip(&r.embeddings).enumerate() {
        assert_eq!(g.len(), 384);
        let c = cosine(g, w);
        // A stock dynamic-int8 export: close to the fp32 model, not equal.
        assert!(c >= 0.95, "text {i}: cosine to fp32 reference {c}");
        let n: f32 = g.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-4, "normalised");
        assert!(cosine(g, &batched[i]) >= 0.99, "text {i}: batched differs");
    }
}
