//! Retrieval on a small SciFact slice through EmbeddingGemma int8 (needs the model on disk: `make fetch`), with
//! its `query` / `document` prompts.

use std::path::Path;

use deposium_eval::{beir, retrieval};

#[test]
fn gemma_int8_with_prompts_ranks_an_easy_slice_well() {
    let dir = deposium_engine::paths::models_dir().join("embeddinggemma-300m");
    assert!(dir.is_dir(), "model {} missing: run `scripts/fetch.sh` (make fetch) first", dir.display());
    let data = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/retrieval/SciFact"));
    let task =
        beir::load(data, "SciFact", "test", beir::Slice { max_queries: Some(20), max_corpus: Some(120) }).unwrap();
    let model = deposium_engine::registry::load("embeddinggemma").unwrap();
    let opts = retrieval::RetrievalOptions {
        cache_dir: Some(deposium_engine::paths::home().join("cache/eval")),
        ..Default::default()
    };
    let ev = retrieval::evaluate(&model, &task, &opts).unwrap();
    eprintln!("{}", retrieval::markdown_table(std::slice::from_ref(&ev)));
    assert_eq!(ev.query_prompt_name.as_deref(), Some("query"));
    assert_eq!(ev.query_prompt, "task: search result | query: ");
    assert_eq!(ev.document_prompt, "title: none | text: ");
    assert_eq!((ev.n_queries, ev.n_documents, ev.dim), (20, 120, 768));
    assert!(ev.scores.ndcg_at_10 > 0.8, "nDCG@10 {}", ev.scores.ndcg_at_10);
    assert!(ev.scores.recall_at_100 > 0.95, "recall@100 {}", ev.scores.recall_at_100);
}
