//! The bench `documents` scenario on the real potion-base-8M (needs `scripts/fetch.sh small`) and the SciFact
//! corpus in ../shared, and its bad-input errors.

use std::path::{Path, PathBuf};

use deposium_eval::{bench, BenchArgs};

const MODEL: &str = "potion-base-8M";

fn shared() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")).to_path_buf()
}

fn corpus() -> PathBuf {
    shared().join("data/retrieval/SciFact/corpus.jsonl")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("deposium-bench-docs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn args(out: &Path, scenarios: Option<&[&str]>, corpus: Option<PathBuf>) -> BenchArgs {
    BenchArgs {
        models: vec![MODEL.into()],
        threads: None,
        iters: 3,
        warmup: 1,
        min_seconds: 0.0,
        max_seconds: 5.0,
        batches: vec![1],
        long_tokens: 256,
        data: Some(shared().join("data/sts")),
        scenarios: scenarios.map(|s| s.iter().map(|s| s.to_string()).collect()),
        corpus,
        documents: 64,
        document_batches: vec![1, 16],
        out: out.to_path_buf(),
        json: None,
    }
}

fn read_bench(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join(MODEL).join("bench.json")).unwrap()).unwrap()
}

#[test]
fn documents_scenario_on_scifact() {
    let docs = bench::read_corpus(&corpus()).unwrap();
    assert_eq!(docs.len(), 5183, "SciFact test corpus");
    // MTEB's document text: title + " " + text, stripped.
    let first: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(corpus()).unwrap().lines().next().unwrap()).unwrap();
    let want = format!("{} {}", first["title"].as_str().unwrap(), first["text"].as_str().unwrap());
    assert_eq!(docs[0], want.trim());
    let (stride, sample) = bench::sample_documents(&docs, 64);
    assert_eq!((stride, sample.len()), (5183 / 64, 64));
    assert_eq!(sample[1], docs[stride]);

    let out = temp_dir("run");
    deposium_eval::run_bench(args(&out, Some(&["documents"]), Some(corpus()))).unwrap();
    let b = read_bench(&out);
    let sc = b["scenarios"].as_array().unwrap();
    assert_eq!(sc.len(), 2, "documents only: {sc:?}");
    for (s, batch) in sc.iter().zip([1, 16]) {
        assert_eq!(s["kind"], "documents");
        assert_eq!(s["batch"], batch);
        assert_eq!(s["name"], format!("documents-b{batch}"));
        let c = &s["corpus"];
        assert_eq!(c["documents"], 64);
        assert_eq!(c["corpus_documents"], 5183);
        assert_eq!(c["stride"], 80);
        assert!(c["prompt_name"].is_null(), "potion has no document prompt");
        // potion cuts at 512 tokens; SciFact abstracts are long, some longer than that.
        let (mean, max) = (c["mean_tokens"].as_f64().unwrap(), c["max_tokens"].as_u64().unwrap());
        assert!((150.0..512.0).contains(&mean), "mean tokens per document {mean}");
        assert!(max <= 512 && c["truncated"].as_u64().unwrap() > 0, "{c}");
        // One pass over the sample at least (potion is fast).
        let iters = s["iters"].as_u64().unwrap() as usize;
        assert!(iters * batch >= 64, "{iters} calls of {batch}");
        let tokens = s["mean_tokens_per_text"].as_f64().unwrap();
        assert!((tokens - mean).abs() < 0.25 * mean, "{tokens} vs sample mean {mean}");
        let (dps, tps) = (s["texts_per_s"].as_f64().unwrap(), s["tokens_per_s"].as_f64().unwrap());
        assert!(dps > 0.0 && (tps / dps - tokens).abs() < 1e-6 * tokens.max(1.0), "{dps} docs/s, {tps} tokens/s");
        let p = &s["ms_per_call"];
        assert!(p["min"].as_f64().unwrap() <= p["p50"].as_f64().unwrap());
        assert!(p["p50"].as_f64().unwrap() <= p["p95"].as_f64().unwrap());
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn default_scenarios_add_documents_when_the_corpus_is_found() {
    let out = temp_dir("default");
    // No --corpus: found beside the STS data (../retrieval/SciFact/corpus.jsonl).
    deposium_eval::run_bench(BenchArgs { documents: 16, ..args(&out, None, None) }).unwrap();
    let b = read_bench(&out);
    let kinds: Vec<&str> = b["scenarios"].as_array().unwrap().iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["short", "long", "documents", "documents"]);
    // Explicit scenarios are honoured.
    deposium_eval::run_bench(args(&out, Some(&["long"]), None)).unwrap();
    assert_eq!(read_bench(&out)["scenarios"].as_array().unwrap().len(), 1);
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn bad_corpus_files_are_named_with_their_line() {
    let dir = temp_dir("bad");
    let run = |name: &str, content: Option<&str>| -> String {
        let path = dir.join(name);
        if let Some(c) = content {
            std::fs::write(&path, c).unwrap();
        }
        let err = deposium_eval::run_bench(args(&dir, Some(&["documents"]), Some(path))).unwrap_err();
        format!("{err:#}")
    };
    let e = run("missing.jsonl", None);
    assert!(e.contains("missing.jsonl"), "{e}");
    let e =
        run("broken.jsonl", Some("{\"_id\": \"1\", \"title\": \"a\", \"text\": \"b\"}\n{\"_id\": \"2\", \"text\": \n"));
    assert!(e.contains("broken.jsonl:2"), "{e}");
    let e = run("notext.jsonl", Some("{\"_id\": \"1\", \"title\": \"a\"}\n"));
    assert!(e.contains("notext.jsonl:1") && e.contains("text"), "{e}");
    let e = run("badtitle.jsonl", Some("{\"_id\": \"1\", \"title\": 3, \"text\": \"x\"}\n"));
    assert!(e.contains("badtitle.jsonl:1") && e.contains("title"), "{e}");
    let e = run("empty.jsonl", Some("\n\n"));
    assert!(e.contains("empty.jsonl") && e.contains("no documents"), "{e}");
    let e =
        format!("{:#}", deposium_eval::run_bench(args(&dir, Some(&["short", "huge"]), Some(corpus()))).unwrap_err());
    assert!(e.contains("unknown bench scenario 'huge'") && e.contains("documents"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
