//! STS on the real potion-base-8M Model2Vec model (needs `scripts/fetch.sh small`), against python model2vec's
//! scores on the same files, then the CLI entry points end to end.

use std::path::{Path, PathBuf};

use deposium_eval::{data, eval, BenchArgs, EvalArgs, ReportArgs};

const MODEL: &str = "potion-base-8M";
const TOLERANCE: f64 = 0.005;
/// Python model2vec, cosine Spearman, the files in shared/data/sts.
const EXPECTED: &[(&str, &str, f64)] = &[
    ("BIOSSES", "default", 0.7612),
    ("STSBenchmark", "default", 0.7541),
    ("STS17", "en-en", 0.8597),
    ("STS17", "es-es", 0.7118),
    ("STS17", "ar-ar", 0.5074),
    ("STS17", "ko-ko", 0.4831),
    ("STS17", "en-ar", 0.0542),
    ("STS17", "en-tr", 0.1119),
    ("STS17", "es-en", 0.1473),
];

fn data_dir() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/sts")).to_path_buf()
}

fn load_model() -> deposium_engine::Model {
    deposium_engine::registry::load(MODEL)
        .unwrap_or_else(|e| panic!("{MODEL} must be on disk for this test (scripts/fetch.sh small): {e}"))
}

#[test]
fn potion_sts_matches_python_model2vec() {
    let model = load_model();
    let tasks: Vec<_> =
        ["BIOSSES", "STSBenchmark", "STS17"].iter().map(|t| data::load_task(&data_dir(), t, "test").unwrap()).collect();
    let ev = eval::evaluate(&model, &tasks, &eval::EvalOptions::default()).unwrap();
    assert_eq!(ev.prompt_name, None, "potion has no STS prompt");
    let mut report = String::new();
    let mut bad = Vec::new();
    for &(task, subset, want) in EXPECTED {
        let t = ev.tasks.iter().find(|t| t.task == task).unwrap();
        let got = t.subset(subset).unwrap_or_else(|| panic!("{task} has no subset {subset}")).scores.main_score;
        report += &format!("{task} {subset}: {got:.4} (python {want:.4})\n");
        if (got - want).abs() > TOLERANCE {
            bad.push(format!("{task} {subset}: {got:.4}, expected {want:.4} ± {TOLERANCE}"));
        }
    }
    println!("{report}");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // STS17 is the mean of its 7 available subsets.
    let sts17 = ev.tasks.iter().find(|t| t.task == "STS17").unwrap();
    assert_eq!(sts17.subsets.len(), 7);
}

#[test]
fn cli_eval_bench_report_end_to_end() {
    let tmp = std::env::temp_dir().join(format!("deposium-eval-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let results = tmp.join("results");
    let eval_args = EvalArgs {
        models: vec![MODEL.into()],
        tasks: vec!["STSBenchmark".into(), "STS17".into()],
        data: Some(data_dir()),
        retrieval: Default::default(),
        split: "test".into(),
        out: results.clone(),
        batch: 64,
        dimensions: None,
        cache: Some(tmp.join("cache")),
        no_cache: false,
    };
    deposium_eval::run_eval(eval_args.clone()).unwrap();
    let dir = results.join(MODEL);
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    let stsb = read("STSBenchmark.json");
    let main = stsb["scores"]["test"][0]["main_score"].as_f64().unwrap();
    assert!((main - 0.7541).abs() < TOLERANCE, "{main}");
    // The re-run reads every embedding from the cache.
    deposium_eval::run_eval(eval_args).unwrap();
    let again = read("STSBenchmark.json");
    assert_eq!(again["scores"]["test"][0]["main_score"].as_f64().unwrap(), main);
    assert_eq!(again["deposium"]["cached_texts_all_tasks"], again["deposium"]["unique_texts_all_tasks"]);
    assert_eq!(read("model_meta.json")["family"], "model2vec");

    deposium_eval::run_bench(BenchArgs {
        models: vec![MODEL.into()],
        threads: None,
        iters: 5,
        warmup: 1,
        min_seconds: 0.0,
        max_seconds: 2.0,
        batches: vec![1, 5, 32],
        long_tokens: 256,
        data: Some(data_dir()),
        scenarios: Some(vec!["short".into(), "long".into()]),
        corpus: None,
        documents: 256,
        document_batches: vec![1, 32],
        out: results.clone(),
        json: Some(tmp.join("bench.json")),
    })
    .unwrap();
    let bench = read("bench.json");
    assert_eq!(bench["scenarios"].as_array().unwrap().len(), 6);
    let long = bench["scenarios"].as_array().unwrap().iter().find(|s| s["name"] == "long-b5").unwrap();
    let tokens = long["mean_tokens_per_text"].as_f64().unwrap();
    assert!((230.0..=256.0).contains(&tokens), "long texts are ~256 tokens: {tokens}");
    assert!(bench["peak_rss_bytes"].as_u64().unwrap() > 0);

    let docs = tmp.join("docs");
    deposium_eval::run_report(ReportArgs {
        results,
        baseline: None,
        reference: None,
        references: None,
        out: docs.clone(),
    })
    .unwrap();
    let md = std::fs::read_to_string(docs.join(deposium_eval::report::REPORT_FILE)).unwrap();
    assert!(md.contains("**potion-base-8M** (baseline)"), "{md}");
    assert!(docs.join(deposium_eval::report::SCATTER_FILE).is_file());
    std::fs::remove_dir_all(&tmp).unwrap();
}
