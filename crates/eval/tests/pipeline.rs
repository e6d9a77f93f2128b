//! The eval → files → report pipeline on a tiny fake bag-of-words model (no model files needed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use deposium_engine::{Backend, Model, ModelInfo};
use deposium_eval::{bench, data, eval, report};

const DIM: usize = 32;

/// Hashes words to ids; a text's vector is the mean of fixed pseudo-random vectors of its ids.
struct BagOfWords {
    info: ModelInfo,
    embedded: AtomicUsize,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl BagOfWords {
    fn new(with_prompt: bool) -> Self {
        let mut prompts = BTreeMap::new();
        if with_prompt {
            prompts.insert("STS".to_string(), "task: sentence similarity | query: ".to_string());
        }
        let info = ModelInfo {
            name: "fake-bow".into(),
            family: "test".into(),
            dim: DIM,
            max_tokens: 512,
            prompts,
            default_prompt_name: None,
            quantization: "fp32".into(),
            size_bytes: 1234,
            parameter_count: None,
            digest: "0123456789abcdef0123".into(),
            matryoshka_dims: vec![],
            path: PathBuf::new(),
        };
        Self { info, embedded: AtomicUsize::new(0) }
    }
}

impl Backend for BagOfWords {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn tokenize(&self, text: &str) -> deposium_engine::Result<Vec<u32>> {
        Ok(text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(|w| (w.to_lowercase().bytes().fold(7u64, |h, b| splitmix(h ^ b as u64)) % 4096) as u32)
            .collect())
    }
    fn embed_tokens(&self, batch: &[Vec<u32>]) -> deposium_engine::Result<Vec<Vec<f32>>> {
        self.embedded.fetch_add(batch.len(), Ordering::Relaxed);
        Ok(batch
            .iter()
            .map(|ids| {
                let mut v = vec![0f32; DIM];
                for &id in ids {
                    for (d, x) in v.iter_mut().enumerate() {
                        let r = splitmix((id as u64) << 8 | d as u64);
                        *x += (r % 2001) as f32 / 1000.0 - 1.0;
                    }
                }
                deposium_engine::l2_normalize(&mut v);
                v
            })
            .collect())
    }
}

fn data_dir() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/sts")).to_path_buf()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("deposium-eval-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn eval_cache_files_and_report() {
    let tasks: Vec<_> = ["BIOSSES", "STS17"].iter().map(|t| data::load_task(&data_dir(), t, "test").unwrap()).collect();
    assert!(tasks[1].subsets.len() >= 2, "STS17 has subsets");
    let backend = Arc::new(BagOfWords::new(true));
    let model = Model::new(backend.clone());
    let tmp = temp_dir("pipeline");
    let opts = eval::EvalOptions { batch: 64, cache_dir: Some(tmp.join("cache")), dimensions: None, progress: false };

    let first = eval::evaluate(&model, &tasks, &opts).unwrap();
    assert_eq!(first.prompt_name.as_deref(), Some("STS"));
    assert_eq!(first.cached_texts, 0);
    // Every distinct text embedded exactly once.
    let embedded = backend.embedded.load(Ordering::Relaxed);
    assert_eq!(embedded, first.unique_texts);
    let pairs: usize = tasks.iter().map(|t| t.n_pairs()).sum();
    assert!(first.unique_texts < 2 * pairs, "duplicates are embedded once");
    let en = first.tasks[1].subset("en-en").unwrap().scores.main_score;
    assert!(en > 0.2 && en < 0.95, "a bag of words correlates somewhat on en-en: {en}");
    let mean =
        first.tasks[1].subsets.iter().map(|s| s.scores.main_score).sum::<f64>() / first.tasks[1].subsets.len() as f64;
    assert!((first.tasks[1].main_score - mean).abs() < 1e-12);

    // Second run: all from cache, identical scores.
    let second = eval::evaluate(&model, &tasks, &opts).unwrap();
    assert_eq!(backend.embedded.load(Ordering::Relaxed), embedded, "no embedding on re-run");
    assert_eq!(second.cached_texts, second.unique_texts);
    assert_eq!(second.tasks[0].main_score, first.tasks[0].main_score);

    // Matryoshka-style truncation changes scores but still works off the cache.
    let d16 = eval::evaluate(&model, &tasks, &eval::EvalOptions { dimensions: Some(16), ..opts.clone() }).unwrap();
    assert_ne!(d16.tasks[0].main_score, first.tasks[0].main_score);
    assert_eq!(backend.embedded.load(Ordering::Relaxed), embedded);

    // Files: MTEB layout, then a report from them plus a bench result.
    let results = tmp.join("results");
    let dir = results.join(eval::result_dir_name(&first.model, None));
    eval::write_results(&dir, &model, &first, 0.01).unwrap();
    let sts17: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("STS17.json")).unwrap()).unwrap();
    assert_eq!(sts17["task_name"], "STS17");
    let subsets = sts17["scores"]["test"].as_array().unwrap();
    assert_eq!(subsets.len(), tasks[1].subsets.len());
    assert!(subsets.iter().any(|s| s["hf_subset"] == "en-ar" && s["languages"][1] == "ara-Arab"));
    for key in ["main_score", "cosine_spearman", "euclidean_spearman", "manhattan_pearson"] {
        assert!(subsets[0][key].is_f64(), "{key}");
    }

    let bench_opts = bench::BenchOptions {
        batches: vec![1, 5],
        iters: 3,
        warmup: 1,
        min_seconds: 0.0,
        max_seconds: 5.0,
        ..Default::default()
    };
    let sentences = bench::source_sentences(&data_dir()).unwrap();
    let prefix = model.resolve_prompt(&eval::sts_prompt(&model)).unwrap();
    let short = bench::short_texts(&model, &prefix, &sentences, 16, 20).unwrap();
    let long = bench::long_texts(&model, &prefix, &sentences, 256, 5).unwrap();
    for t in &long {
        let n = model.backend().tokenize(&format!("{prefix}{t}")).unwrap().len();
        assert!((240..=256).contains(&n), "long text of {n} tokens");
    }
    let s = bench::run_scenario(&model, &eval::sts_prompt(&model), "short", &short, 5, &bench_opts).unwrap();
    assert_eq!(s.iters, 3);
    assert!((s.mean_tokens_per_text - 16.0).abs() <= 1.0, "{}", s.mean_tokens_per_text);
    assert!(s.ms_per_call.min <= s.ms_per_call.p50 && s.ms_per_call.p50 <= s.ms_per_call.p95);

    // A second "model" without a bench, to exercise the baseline logic.
    let other = eval::evaluate(
        &Model::new(Arc::new(BagOfWords::new(false))),
        &tasks,
        &eval::EvalOptions { cache_dir: None, ..opts.clone() },
    )
    .unwrap();
    let mut other = other;
    other.model = "fake-bow:fp32".into();
    eval::write_results(&results.join("fake-bow-fp32"), &model, &other, 0.01).unwrap();
    let bench_json = bench::BenchResult {
        model: "fake-bow".into(),
        family: "test".into(),
        quantization: "fp32".into(),
        dim: DIM,
        size_bytes: 1234,
        digest: String::new(),
        threads: Some(1),
        cpu: "test".into(),
        cpus: 1,
        prompt_name: Some("STS".into()),
        load_seconds: 0.01,
        rss_after_load_bytes: None,
        peak_rss_bytes: bench::proc_status_bytes("VmHWM"),
        peak_rss_since_load: false,
        timestamp_unix: 0,
        scenarios: vec![
            s.clone(),
            bench::Scenario { kind: "short".into(), batch: 1, name: "short-b1".into(), ..s.clone() },
        ],
    };
    std::fs::write(dir.join("bench.json"), serde_json::to_string(&bench_json).unwrap()).unwrap();

    let docs = tmp.join("docs");
    let md_path =
        report::write_report(&results, None, Some(&data_dir().join("../../sts_reference.json")), &docs).unwrap();
    let md = std::fs::read_to_string(&md_path).unwrap();
    assert!(md.contains("**fake-bow:fp32** (baseline)"), "{md}");
    assert!(md.contains("| STS17 en-ar |"), "{md}");
    assert!(md.contains("reference: google/embeddinggemma-300m"), "{md}");
    assert!(docs.join(report::BARS_FILE).is_file());
    let svg = std::fs::read_to_string(docs.join(report::SCATTER_FILE)).unwrap();
    assert!(svg.contains("fake-bow"), "scatter labels the benched model");
    std::fs::remove_dir_all(&tmp).unwrap();
}
