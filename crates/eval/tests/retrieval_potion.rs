//! Retrieval on a SciFact slice (30 queries, their documents plus distractors: 300 documents) through the real
//! potion-base-8M (`scripts/fetch.sh small`), via the `eval` entry point: files, scores, cache reuse, bad input.

use std::path::{Path, PathBuf};

use deposium_eval::{beir, EvalArgs, RetrievalArgs};

const MODEL: &str = "potion-base-8M";

fn scifact() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/retrieval/SciFact")).to_path_buf()
}

fn tmp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("deposium-retrieval-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn args(tmp: &Path, data: Option<PathBuf>, tasks: &[&str], retrieval: RetrievalArgs) -> EvalArgs {
    EvalArgs {
        models: vec![MODEL.into()],
        tasks: tasks.iter().map(|s| s.to_string()).collect(),
        data,
        retrieval,
        split: "test".into(),
        out: tmp.join("results"),
        batch: 64,
        dimensions: None,
        cache: Some(tmp.join("cache")),
        no_cache: false,
    }
}

fn read(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

#[test]
fn scifact_slice_end_to_end_with_cache_reuse() {
    let tmp = tmp("potion");
    let slice = RetrievalArgs {
        retrieval_data: Some(scifact().parent().unwrap().to_path_buf()),
        max_queries: Some(30),
        max_corpus: Some(300),
        ..Default::default()
    };
    let a = args(&tmp, None, &["SciFact"], slice.clone());
    deposium_eval::run_eval(a.clone()).unwrap();
    let path = tmp.join("results").join(MODEL).join("SciFact.json");
    let j = read(&path);
    assert_eq!(j["task_name"], "SciFact");
    let s = &j["scores"]["test"][0];
    let ndcg = s["ndcg_at_10"].as_f64().unwrap();
    eprintln!("potion-base-8M SciFact slice: {}", serde_json::to_string(s).unwrap());
    assert_eq!(s["main_score"].as_f64().unwrap(), ndcg);
    assert_eq!(s["hf_subset"], "default");
    assert_eq!(s["languages"][0], "eng-Latn");
    // potion-base-8M scores 0.506 on all of SciFact; 300 documents instead of 5,183 make it easier.
    assert!((0.45..0.95).contains(&ndcg), "nDCG@10 {ndcg}");
    for k in ["recall_at_100", "map_at_10", "mrr_at_10", "ndcg_at_1", "ndcg_at_100"] {
        let v = s[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} {v}");
    }
    assert!(s["recall_at_100"].as_f64().unwrap() >= s["recall_at_10"].as_f64().unwrap());
    assert!(s["mrr_at_10"].as_f64().unwrap() >= s["map_at_10"].as_f64().unwrap() - 1e-12);
    let d = &j["deposium"];
    assert_eq!(d["kind"], "retrieval");
    assert_eq!(d["model"], MODEL);
    assert_eq!(d["subset"], true);
    assert_eq!((d["n_queries"].as_u64(), d["n_documents"].as_u64()), (Some(30), Some(300)));
    assert_eq!(d["query_prompt"], "", "Model2Vec has no prompts");
    assert_eq!(d["document_prompt"], "");
    assert_eq!(d["dimensions"], 256);
    assert!(d["mean_document_tokens"].as_f64().unwrap() > 100.0, "SciFact abstracts are long");
    assert_eq!(d["cached_texts"], 0);
    assert!(tmp.join("results").join(MODEL).join("model_meta.json").is_file());

    // Again: every vector from the cache, the same scores.
    deposium_eval::run_eval(a).unwrap();
    let again = read(&path);
    assert_eq!(again["scores"], j["scores"]);
    assert_eq!(again["deposium"]["cached_texts"], 330);
    assert_eq!(again["deposium"]["embedded_texts"], 0);

    // --no-prompts writes beside it; for a model without prompts, the scores are the same.
    deposium_eval::run_eval(args(&tmp, None, &["SciFact"], RetrievalArgs { no_prompts: true, ..slice.clone() }))
        .unwrap();
    let np = read(&tmp.join("results").join(format!("{MODEL}-noprompt")).join("SciFact.json"));
    assert_eq!(np["deposium"]["no_prompts"], true);
    assert_eq!(np["scores"], j["scores"]);

    // --data naming the BEIR directory itself (task named after it); --fidelity-to the model itself is skipped.
    let by_data = RetrievalArgs { max_queries: Some(30), max_corpus: Some(300), ..Default::default() };
    let mut a = args(&tmp, Some(scifact()), &[], by_data);
    a.out = tmp.join("results-data");
    deposium_eval::run_eval(a).unwrap();
    let j2 = read(&tmp.join("results-data").join(MODEL).join("SciFact.json"));
    assert_eq!(j2["scores"], j["scores"]);
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn bad_beir_input_names_file_and_line() {
    let tmp = tmp("bad");
    let dir = tmp.join("Tiny");
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = "{\"_id\": \"d1\", \"title\": \"Cats\", \"text\": \"Cats purr.\"}\n\
                  {\"_id\": \"d2\", \"title\": \"Dogs\", \"text\": \"Dogs bark.\"}\n";
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(dir.join("queries.jsonl"), "{\"_id\": \"q1\", \"text\": \"what purrs?\"}\n").unwrap();
    std::fs::write(dir.join("qrels.tsv"), "query-id\tcorpus-id\tscore\nq1\td1\t1\n").unwrap();
    let run = |tag: &str| {
        let mut a =
            args(&tmp, None, &["Tiny"], RetrievalArgs { retrieval_data: Some(tmp.clone()), ..Default::default() });
        a.out = tmp.join(tag);
        deposium_eval::run_eval(a).map_err(|e| format!("{e:#}"))
    };
    run("ok").unwrap();
    let j = read(&tmp.join("ok").join(MODEL).join("Tiny.json"));
    assert_eq!(j["scores"]["test"][0]["ndcg_at_10"], 1.0, "the only relevant document ranks first");

    std::fs::write(dir.join("qrels.tsv"), "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td7\t1\n").unwrap();
    let e = run("a").unwrap_err();
    assert!(e.contains("Tiny/qrels.tsv:3: corpus id \"d7\" is not in corpus.jsonl"), "{e}");
    std::fs::write(dir.join("qrels.tsv"), "query-id\tcorpus-id\tscore\nq9\td1\t1\n").unwrap();
    let e = run("b").unwrap_err();
    assert!(e.contains("Tiny/qrels.tsv:2: query id \"q9\" is not in queries.jsonl"), "{e}");
    std::fs::write(dir.join("qrels.tsv"), "query-id\tcorpus-id\tscore\nq1\td1\n").unwrap();
    let e = run("c").unwrap_err();
    assert!(e.contains("Tiny/qrels.tsv:2: expected 3 tab-separated fields"), "{e}");
    std::fs::write(dir.join("qrels.tsv"), "query-id\tcorpus-id\tscore\nq1\td1\t1\n").unwrap();
    std::fs::write(dir.join("corpus.jsonl"), format!("{corpus}{{\"_id\": \"d3\", \"title\": \"x\"\n")).unwrap();
    let e = run("d").unwrap_err();
    assert!(e.contains("Tiny/corpus.jsonl:3: malformed JSON"), "{e}");
    std::fs::write(dir.join("corpus.jsonl"), "").unwrap();
    let e = run("e").unwrap_err();
    assert!(e.contains("Tiny/corpus.jsonl: empty corpus"), "{e}");
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    std::fs::remove_file(dir.join("queries.jsonl")).unwrap();
    let e = run("f").unwrap_err();
    assert!(e.contains("Tiny/queries.jsonl"), "{e}");
    assert!(!tmp.join("a").exists(), "nothing written on bad input");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn slice_is_deterministic_and_keeps_relevant_documents() {
    let slice = beir::Slice { max_queries: Some(30), max_corpus: Some(300) };
    let a = beir::load(&scifact(), "SciFact", "test", slice).unwrap();
    let b = beir::load(&scifact(), "SciFact", "test", slice).unwrap();
    assert_eq!(a.corpus, b.corpus);
    assert_eq!(a.queries, b.queries);
    let ids: std::collections::HashSet<&str> = a.corpus.iter().map(|d| d.id.as_str()).collect();
    assert!(a.queries.iter().flat_map(|q| q.relevant.keys()).all(|d| ids.contains(d.as_str())));
    let full = beir::load(&scifact(), "SciFact", "test", beir::Slice::default()).unwrap();
    assert_eq!((full.queries.len(), full.corpus.len()), (300, 5183), "MTEB SciFact test split");
    assert_eq!(full.queries.iter().map(|q| q.relevant.len()).sum::<usize>(), 339);
}
