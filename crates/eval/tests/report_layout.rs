//! `report` on fabricated result files (STS, retrieval with and without prompts, benches with the documents
//! scenario) and the shipped docs/reference-points.json: rows, tables, plots, and label boxes that never overlap.

use std::path::{Path, PathBuf};

use deposium_eval::report::{self, layout::Rect};
use serde_json::{json, Value};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("deposium-report-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn reference_points() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/reference-points.json")).to_path_buf()
}

fn write(path: &Path, v: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

fn sts(task: &str, model: &str, subsets: &[(&str, f64)]) -> Value {
    let scores: Vec<Value> =
        subsets.iter().map(|(s, v)| json!({"hf_subset": s, "main_score": v, "cosine_spearman": v})).collect();
    json!({"task_name": task, "scores": {"test": scores}, "deposium": {"model": model, "dimensions": null}})
}

fn scifact(model: &str, ndcg: f64, no_prompts: bool, fidelity: Option<f64>) -> Value {
    let (q, d) = if no_prompts { (Value::Null, Value::Null) } else { (json!("query"), json!("document")) };
    json!({
        "task_name": "SciFact",
        "scores": {"test": [{"main_score": ndcg, "ndcg_at_10": ndcg, "recall_at_100": ndcg + 0.15, "map_at_10": ndcg - 0.05,
                             "mrr_at_10": ndcg - 0.04, "hf_subset": "default"}]},
        "deposium": {"kind": "retrieval", "model": model, "no_prompts": no_prompts, "query_prompt_name": q,
                     "query_prompt": if no_prompts { "" } else { "task: search result | query: " },
                     "document_prompt_name": d, "document_prompt": if no_prompts { "" } else { "title: none | text: " },
                     "n_queries": 300, "n_documents": 5183, "dimensions": 768, "subset": false,
                     "fidelity_to": fidelity.map(|m| json!({"baseline": "embeddinggemma:fp32", "n": 5183, "mean": m, "p1": m - 0.001, "min": m - 0.003}))}
    })
}

fn scenario(kind: &str, batch: usize, ms_per_text: f64, tokens: f64) -> Value {
    let call = ms_per_text * batch as f64;
    json!({"name": format!("{kind}-b{batch}"), "kind": kind, "batch": batch, "iters": 10, "warmup": 1,
           "mean_tokens_per_text": tokens,
           "ms_per_call": {"p50": call, "p95": call * 1.2, "min": call * 0.9, "mean": call},
           "ms_per_text": {"p50": ms_per_text, "p95": ms_per_text * 1.2, "min": ms_per_text * 0.9, "mean": ms_per_text},
           "texts_per_s": 1e3 / ms_per_text, "tokens_per_s": tokens * 1e3 / ms_per_text})
}

fn bench(model: &str, quant: &str, short_ms: f64, doc_ms: f64) -> Value {
    let mut docs = scenario("documents", 32, doc_ms, 330.0);
    docs["corpus"] = json!({"path": "corpus.jsonl", "corpus_documents": 5183, "stride": 20, "documents": 256,
                            "mean_tokens": 331.5, "max_tokens": 2048, "truncated": 1, "prompt_name": "document"});
    json!({"model": model, "family": "gemma3", "quantization": quant, "dim": 768, "size_bytes": 244_000_000u64, "digest": "x",
           "threads": 2, "cpu": "Intel(R) Xeon(R) Processor", "cpus": 2, "prompt_name": "STS", "load_seconds": 1.0,
           "rss_after_load_bytes": null, "peak_rss_bytes": 300_000_000u64, "peak_rss_since_load": true, "timestamp_unix": 0,
           "scenarios": [scenario("short", 1, short_ms * 1.5, 16.0), scenario("short", 5, short_ms, 16.0),
                         scenario("documents", 1, doc_ms * 1.1, 330.0), docs]})
}

/// fp32, int8 and int4 of one model (int8/int4 nearly on top of each other), potion, and a no-prompt twin.
fn fabricate(results: &Path) {
    let models = [
        ("embeddinggemma-fp32", "embeddinggemma:fp32", "fp32", 0.8818, 0.8116, 10.9, 160.0, 0.7500, None),
        ("embeddinggemma", "embeddinggemma", "int8", 0.8817, 0.8123, 3.18, 60.0, 0.7490, Some(0.9996)),
        ("embeddinggemma-int4", "embeddinggemma:int4", "int4", 0.8820, 0.8122, 3.30, 62.0, 0.7460, Some(0.995)),
        ("potion-base-8M", "potion-base-8M", "fp32", 0.7541, 0.1045, 0.0012, 0.02, 0.5050, None),
    ];
    for (dir, name, quant, stsb, cross, ms, doc_ms, ndcg, fid) in models {
        let d = results.join(dir);
        write(&d.join("STSBenchmark.json"), &sts("STSBenchmark", name, &[("default", stsb)]));
        write(&d.join("BIOSSES.json"), &sts("BIOSSES", name, &[("default", stsb - 0.05)]));
        write(
            &d.join("STS17.json"),
            &sts("STS17", name, &[("en-en", stsb + 0.02), ("en-ar", cross), ("es-en", cross)]),
        );
        write(&d.join("SciFact.json"), &scifact(name, ndcg, false, fid));
        write(&d.join("bench.json"), &bench(name, quant, ms, doc_ms));
        write(&d.join("model_meta.json"), &json!({"name": name, "quantization": quant, "size_bytes": 244_000_000u64}));
    }
    write(&results.join("embeddinggemma-noprompt/SciFact.json"), &scifact("embeddinggemma", 0.7380, true, None));
}

fn assert_disjoint(boxes: &[Rect]) {
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            assert!(!a.intersects(b), "label boxes overlap: {a:?} and {b:?}");
        }
    }
}

#[test]
fn report_with_retrieval_documents_and_references() {
    let tmp = temp_dir("full");
    let results = tmp.join("results");
    fabricate(&results);
    let docs = tmp.join("docs");
    let md_path = report::write_report_with(&results, None, None, Some(&reference_points()), &docs).unwrap();
    let md = std::fs::read_to_string(md_path).unwrap();

    // SciFact is a retrieval task, never an STS column.
    let summary = md.lines().find(|l| l.starts_with("| model | quant |")).unwrap();
    assert!(!summary.contains("SciFact"), "{summary}");
    assert!(!md.contains("| SciFact |"), "SciFact as an STS row:\n{md}");
    assert!(md.contains("**embeddinggemma:fp32** (baseline)"), "{md}");
    assert!(
        !md.lines().any(|l| l.starts_with("| embeddinggemma (no prompts) | —")),
        "no-prompt row in the STS tables:\n{md}"
    );

    // Retrieval table: baseline, deltas, prompts, fidelity, speed from the documents scenario, no-prompt row.
    assert!(md.contains("## Retrieval: SciFact"), "{md}");
    assert!(md.contains("| **embeddinggemma:fp32** (baseline) | query / document | 0.7500 | — |"), "{md}");
    assert!(md.contains("| embeddinggemma | query / document | 0.7490 | -0.0010 |"), "{md}");
    assert!(md.contains("0.99960 / 0.99860 / 0.99660"), "fidelity mean / p1 / min:\n{md}");
    assert!(md.contains("| embeddinggemma (no prompts) | none | 0.7380 | -0.0120 |"), "{md}");
    assert!(md.contains("**embeddinggemma** without its prompts: nDCG@10 0.7380 instead of 0.7490 (-0.0110)"), "{md}");
    assert!(md.contains("16.7 (×32)"), "int8 documents/s at batch 32:\n{md}");
    assert!(md.contains("| bge-small-en-v1.5 | 0.713 |"), "{md}");
    assert!(md.contains(&format!("![retrieval quality vs documents/s]({})", report::RETRIEVAL_FILE)), "{md}");

    // Long documents table.
    assert!(md.contains("## Long documents (bench `documents`)"), "{md}");
    assert!(md.contains("| embeddinggemma:int4 | 330 |"), "{md}");
    assert!(md.contains("256 of the 5183 documents"), "{md}");

    // External STS points: listed with their machine; only this machine's kind drawn.
    assert!(md.contains("| llama.cpp Q8_0 | STSBenchmark | 0.8816 | 32.0 |"), "{md}");
    assert!(md.contains("| yes |") && md.contains("| no (other machine) |"), "{md}");

    let scatter = std::fs::read_to_string(docs.join(report::SCATTER_FILE)).unwrap();
    assert!(scatter.contains("llama.cpp Q8_0 (0.882, 32.0 ms)"), "reference label in the scatter");
    assert!(!scatter.contains("19.0 ms"), "the AMD point is not drawn beside Intel benches");
    assert!(scatter.contains("embeddinggemma:int4 (0.") && scatter.contains("cross-lingual 0.812"));
    let retrieval = std::fs::read_to_string(docs.join(report::RETRIEVAL_FILE)).unwrap();
    for text in [
        "no prompts 0.738",
        "bge-small-en-v1.5 0.713",
        "embeddinggemma:fp32 (0.750",
        "potion-base-8M (published) 0.506",
    ] {
        assert!(retrieval.contains(text), "{text} not in the retrieval plot");
    }
    // KEEP_REPORT_TMP=1 keeps the report and plots in the temp dir, to look at them.
    if std::env::var_os("KEEP_REPORT_TMP").is_some() {
        return;
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn plot_labels_never_overlap() {
    let tmp = temp_dir("boxes");
    let results = tmp.join("results");
    fabricate(&results);
    let rows = report::load_results(&results).unwrap();
    let refs = report::load_references(&reference_points()).unwrap();
    let sts_rows: Vec<_> = rows.iter().filter(|r| !r.scores.is_empty()).cloned().collect();
    let tasks: Vec<String> = ["BIOSSES", "STSBenchmark", "STS17"].iter().map(|s| s.to_string()).collect();
    let boxes = report::plot_quality_vs_latency(&sts_rows, &tasks, &refs, &tmp.join("s.svg")).unwrap().unwrap();
    // 4 models × (mean + cross-lingual) + 3 references of this machine kind.
    assert_eq!(boxes.len(), 11);
    assert_disjoint(&boxes);
    let boxes = report::plot_retrieval(&rows, "SciFact", &refs, &tmp.join("r.svg")).unwrap().unwrap();
    // 5 points + 7 published lines.
    assert_eq!(boxes.len(), 12);
    assert_disjoint(&boxes);
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn bad_reference_files_are_named() {
    let tmp = temp_dir("badref");
    let p = tmp.join("refs.json");
    std::fs::write(&p, "[\n  {\"name\": \"x\", \"score\": 0.8, \"metric\": \"sts\"}\n]\n").unwrap();
    let e = format!("{:#}", report::load_references(&p).unwrap_err());
    assert!(e.contains("refs.json:") && e.contains("source"), "{e}");
    std::fs::write(&p, "[{\"name\": \"x\", \"score\": 0.8, \"metric\": \"speed\", \"source\": \"s\"}]").unwrap();
    let e = format!("{:#}", report::load_references(&p).unwrap_err());
    assert!(e.contains("refs.json:1") && e.contains("speed"), "{e}");
    std::fs::write(
        &p,
        "[{\"name\": \"x\", \"score\": 0.8, \"metric\": \"sts\", \"latency_ms\": -1, \"source\": \"s\"}]",
    )
    .unwrap();
    let e = format!("{:#}", report::load_references(&p).unwrap_err());
    assert!(e.contains("entry 1 ('x')") && e.contains("latency_ms"), "{e}");
    let e = format!("{:#}", report::load_references(&tmp.join("none.json")).unwrap_err());
    assert!(e.contains("none.json"), "{e}");
    std::fs::remove_dir_all(&tmp).unwrap();
}
