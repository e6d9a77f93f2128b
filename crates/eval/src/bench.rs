//! Latency benchmark: short (~16 tokens) and long (~256 tokens) texts built from STSBenchmark sentences,
//! with the STS prompt where the model has one, in batches of 1, 5, 32; and `documents`: a fixed sample of a
//! BEIR corpus (SciFact) as it is, with the model's `document` prompt, truncated at the model's limit.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use deposium_engine::{EmbedRequest, Model, Prompt};

use crate::metrics::percentile;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub batches: Vec<usize>,
    pub iters: usize,
    pub warmup: usize,
    /// Keep measuring at least this long, past `iters` (fast models need many calls for a stable median).
    pub min_seconds: f64,
    /// Stop a scenario after this long (at least `MIN_ITERS` measured calls).
    pub max_seconds: f64,
    pub short_tokens: usize,
    pub long_tokens: usize,
    /// Scenario kinds to run: `short`, `long`, `documents`.
    pub scenarios: Vec<String>,
    /// BEIR `corpus.jsonl` for `documents` (required when that scenario runs).
    pub corpus: Option<PathBuf>,
    /// Documents in the fixed sample (every k-th of the corpus).
    pub documents: usize,
    /// Batch sizes for `documents`.
    pub document_batches: Vec<usize>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            batches: vec![1, 5, 32],
            iters: 30,
            warmup: 3,
            min_seconds: 1.0,
            max_seconds: 20.0,
            short_tokens: 16,
            long_tokens: 256,
            scenarios: vec!["short".into(), "long".into()],
            corpus: None,
            documents: DEFAULT_DOCUMENTS,
            document_batches: vec![1, 32],
        }
    }
}

pub const SCENARIO_KINDS: &[&str] = &["short", "long", "documents"];
pub const DEFAULT_DOCUMENTS: usize = 256;
/// Where `bench` looks for the documents corpus by default (relative to the current directory).
pub const DEFAULT_CORPUS: &str = "../shared/data/retrieval/SciFact/corpus.jsonl";
/// The prompt name `documents` uses where the model defines it.
pub const DOCUMENT_PROMPT: &str = "document";

const MIN_ITERS: usize = 3;
const MAX_ITERS: usize = 1_000_000;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub p50: f64,
    pub p95: f64,
    pub min: f64,
    pub mean: f64,
}

impl Stats {
    fn of(samples: &[f64]) -> Self {
        Self {
            p50: percentile(samples, 50.0),
            p95: percentile(samples, 95.0),
            min: samples.iter().copied().fold(f64::INFINITY, f64::min),
            mean: samples.iter().sum::<f64>() / samples.len() as f64,
        }
    }

    fn scaled(&self, f: f64) -> Self {
        Self { p50: self.p50 * f, p95: self.p95 * f, min: self.min * f, mean: self.mean * f }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Scenario {
    /// `short-b5`, `long-b32`...
    pub name: String,
    /// `short` or `long`.
    pub kind: String,
    pub batch: usize,
    pub iters: usize,
    pub warmup: usize,
    /// Tokens per text as the model counted them (prompt and special tokens included).
    pub mean_tokens_per_text: f64,
    pub ms_per_call: Stats,
    pub ms_per_text: Stats,
    /// From the median call (`documents`: from the total time, as call sizes vary).
    pub texts_per_s: f64,
    pub tokens_per_s: f64,
    /// `documents` only: the sample the calls cycle through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus: Option<CorpusSample>,
}

/// The fixed document sample of a `documents` scenario.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CorpusSample {
    pub path: String,
    pub corpus_documents: usize,
    /// Every `stride`-th document, from the first.
    pub stride: usize,
    pub documents: usize,
    /// Over the whole sample, prompt and special tokens included, after truncation.
    pub mean_tokens: f64,
    pub max_tokens: usize,
    /// Documents cut at the model's token limit.
    pub truncated: usize,
    pub prompt_name: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BenchResult {
    pub model: String,
    pub family: String,
    pub quantization: String,
    pub dim: usize,
    pub size_bytes: u64,
    pub digest: String,
    /// DEPOSIUM_THREADS at load time (None: the backend's default).
    pub threads: Option<usize>,
    pub cpu: String,
    pub cpus: usize,
    pub prompt_name: Option<String>,
    pub load_seconds: f64,
    pub rss_after_load_bytes: Option<u64>,
    /// VmHWM: process peak, reset just before the model load where the kernel allows.
    pub peak_rss_bytes: Option<u64>,
    /// False when VmHWM could not be reset: the peak may then include earlier models of the same run.
    #[serde(default)]
    pub peak_rss_since_load: bool,
    pub timestamp_unix: u64,
    pub scenarios: Vec<Scenario>,
}

impl BenchResult {
    pub fn scenario(&self, kind: &str, batch: usize) -> Option<&Scenario> {
        self.scenarios.iter().find(|s| s.kind == kind && s.batch == batch)
    }
}

/// A `/proc/self/status` field in bytes (`VmHWM`, `VmRSS`).
pub fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kb: u64 = line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Reset VmHWM to the current RSS (Linux `clear_refs` 5); false where not allowed.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Distinct STSBenchmark sentences in file order.
pub fn source_sentences(data_dir: &Path) -> Result<Vec<String>> {
    let path = data_dir.join("STSBenchmark_test.tsv");
    let pairs = crate::data::read_tsv(&path)?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for p in pairs {
        for s in [p.sentence1, p.sentence2] {
            if !s.trim().is_empty() && seen.insert(s.clone()) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

fn token_count(model: &Model, prefix: &str, text: &str) -> Result<usize> {
    Ok(model.backend().tokenize(&format!("{prefix}{text}"))?.len())
}

/// `n` sentences whose token count (with the prompt) is closest to `target`, in file order within a tolerance
/// that widens until enough are found.
pub fn short_texts(model: &Model, prefix: &str, sentences: &[String], target: usize, n: usize) -> Result<Vec<String>> {
    let counts: Vec<usize> = sentences.iter().map(|s| token_count(model, prefix, s)).collect::<Result<_>>()?;
    for tol in [1usize, 2, 4, 8, 16, 64] {
        let picked: Vec<String> = sentences
            .iter()
            .zip(&counts)
            .filter(|(_, &c)| c.abs_diff(target) <= tol)
            .map(|(s, _)| s.clone())
            .take(n)
            .collect();
        if picked.len() == n {
            return Ok(picked);
        }
    }
    bail!("not enough STSBenchmark sentences near {target} tokens")
}

/// `n` texts of about `target` tokens (never more), each made of consecutive sentences; a sentence that would
/// overshoot is skipped.
pub fn long_texts(model: &Model, prefix: &str, sentences: &[String], target: usize, n: usize) -> Result<Vec<String>> {
    let target = target.min(model.info().max_tokens);
    let mut out = Vec::new();
    let mut cursor = 0;
    let mut tried = 0;
    while out.len() < n {
        let mut text = String::new();
        let mut tokens = 0;
        while tokens + 8 < target {
            if tried >= sentences.len() * 2 {
                bail!("could not build {n} texts of {target} tokens from {} sentences", sentences.len());
            }
            let s = &sentences[cursor % sentences.len()];
            cursor += 1;
            tried += 1;
            let candidate = if text.is_empty() { s.clone() } else { format!("{text} {s}") };
            let c = token_count(model, prefix, &candidate)?;
            if c <= target {
                text = candidate;
                tokens = c;
            }
        }
        out.push(text);
    }
    Ok(out)
}

/// Time `model.embed` on batches cut from `pool`, cycling through it.
pub fn run_scenario(
    model: &Model,
    prompt: &Prompt,
    kind: &str,
    pool: &[String],
    batch: usize,
    opts: &BenchOptions,
) -> Result<Scenario> {
    timed_calls(model, prompt, kind, pool, batch, opts.warmup, opts.iters.max(1), opts, false)
}

/// The `documents` scenario on a document sample: one warm-up call at most (documents are slow), at least one
/// pass over the sample (3 calls at least, and `--min-seconds`), stopped by `--max-seconds`; throughput from the
/// total time.
pub fn run_documents(
    model: &Model,
    prompt: &Prompt,
    sample: &[String],
    batch: usize,
    opts: &BenchOptions,
) -> Result<Scenario> {
    timed_calls(
        model,
        prompt,
        "documents",
        sample,
        batch,
        opts.warmup.min(1),
        sample.len().div_ceil(batch).max(MIN_ITERS),
        opts,
        true,
    )
}

#[allow(clippy::too_many_arguments)]
fn timed_calls(
    model: &Model,
    prompt: &Prompt,
    kind: &str,
    pool: &[String],
    batch: usize,
    warmup: usize,
    min_calls: usize,
    opts: &BenchOptions,
    throughput_from_total: bool,
) -> Result<Scenario> {
    if pool.is_empty() || batch == 0 {
        bail!("{kind}: nothing to embed (pool of {}, batch {batch})", pool.len());
    }
    let request = |i: usize| {
        let inputs = (0..batch).map(|j| pool[(i * batch + j) % pool.len()].clone()).collect();
        let mut r = EmbedRequest::new(inputs);
        r.prompt = prompt.clone();
        r
    };
    for i in 0..warmup {
        model.embed(&request(i))?;
    }
    let budget = Duration::from_secs_f64(opts.max_seconds);
    let started = Instant::now();
    let (mut ms, mut tokens) = (Vec::new(), 0usize);
    let min_time = Duration::from_secs_f64(opts.min_seconds.min(opts.max_seconds));
    let mut i = 0;
    loop {
        let req = request(warmup + i);
        let t = Instant::now();
        let resp = model.embed(&req)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        tokens += resp.token_counts.iter().sum::<usize>();
        i += 1;
        let elapsed = started.elapsed();
        let enough = ms.len() >= min_calls && elapsed >= min_time;
        let over_budget = ms.len() >= MIN_ITERS && elapsed > budget;
        if enough || over_budget || ms.len() >= MAX_ITERS {
            break;
        }
    }
    let ms_per_call = Stats::of(&ms);
    let texts = ms.len() * batch;
    let mean_tokens = tokens as f64 / texts as f64;
    let (texts_per_s, tokens_per_s) = if throughput_from_total {
        let secs = ms.iter().sum::<f64>() / 1e3;
        (texts as f64 / secs, tokens as f64 / secs)
    } else {
        let secs = ms_per_call.p50 / 1e3;
        (batch as f64 / secs, mean_tokens * batch as f64 / secs)
    };
    Ok(Scenario {
        name: format!("{kind}-b{batch}"),
        kind: kind.into(),
        batch,
        iters: ms.len(),
        warmup,
        mean_tokens_per_text: mean_tokens,
        ms_per_text: ms_per_call.scaled(1.0 / batch as f64),
        ms_per_call,
        texts_per_s,
        tokens_per_s,
        corpus: None,
    })
}

/// Document texts of a BEIR `corpus.jsonl`, MTEB's way: `title + " " + text`, stripped. A line that is not a JSON
/// object with a string `text` (and, if present, a string `title`) is an error naming the file and line.
pub fn read_corpus(path: &Path) -> Result<Vec<String>> {
    let raw = std::fs::read_to_string(path).with_context(|| format!("reading corpus {}", path.display()))?;
    let mut docs = Vec::new();
    for (n, line) in raw.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: not a JSON object (BEIR corpus line)", at()))?;
        let text = v.get("text").and_then(|t| t.as_str()).with_context(|| format!("{}: no \"text\" string", at()))?;
        let title = match v.get("title") {
            None | Some(serde_json::Value::Null) => "",
            Some(t) => t.as_str().with_context(|| format!("{}: \"title\" is not a string", at()))?,
        };
        docs.push(format!("{title} {text}").trim().to_string());
    }
    if docs.is_empty() {
        bail!("{}: no documents", path.display());
    }
    Ok(docs)
}

/// Every k-th document (k = corpus size / `n`, at least 1), from the first: `n` documents or the whole corpus.
pub fn sample_documents(docs: &[String], n: usize) -> (usize, Vec<String>) {
    let stride = (docs.len() / n.max(1)).max(1);
    (stride, docs.iter().step_by(stride).take(n.max(1)).cloned().collect())
}

/// The corpus `bench` uses: `explicit`, else [`DEFAULT_CORPUS`], else `<sts data>/../retrieval/SciFact/corpus.jsonl`.
pub fn resolve_corpus(explicit: Option<&Path>, sts_data: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let default = PathBuf::from(DEFAULT_CORPUS);
    if default.is_file() {
        return Some(default);
    }
    let beside = sts_data?.join("../retrieval/SciFact/corpus.jsonl");
    beside.is_file().then_some(beside)
}

/// The `document` prompt where the model defines it, else none.
pub fn document_prompt(model: &Model) -> Prompt {
    if model.info().prompts.contains_key(DOCUMENT_PROMPT) {
        Prompt::Named(DOCUMENT_PROMPT.into())
    } else {
        Prompt::None
    }
}

/// Tokenize the sample once (as `embed` will: prompt, truncation) for its length statistics.
fn describe_sample(
    model: &Model,
    prompt: &Prompt,
    path: &Path,
    corpus_documents: usize,
    stride: usize,
    sample: &[String],
) -> Result<CorpusSample> {
    let prefix = model.resolve_prompt(prompt)?;
    let max = model.info().max_tokens;
    let (mut total, mut longest, mut truncated) = (0usize, 0usize, 0usize);
    for d in sample {
        let n = model.backend().tokenize(&format!("{prefix}{d}"))?.len();
        truncated += usize::from(n > max);
        let n = n.min(max);
        total += n;
        longest = longest.max(n);
    }
    Ok(CorpusSample {
        path: path.display().to_string(),
        corpus_documents,
        stride,
        documents: sample.len(),
        mean_tokens: total as f64 / sample.len() as f64,
        max_tokens: longest,
        truncated,
        prompt_name: match prompt {
            Prompt::Named(n) => Some(n.clone()),
            _ => None,
        },
    })
}

/// Load `spec` and run every scenario of `opts.scenarios` (`data_dir`: STS data for short/long).
pub fn bench_model(spec: &str, data_dir: Option<&Path>, opts: &BenchOptions, progress: bool) -> Result<BenchResult> {
    for k in &opts.scenarios {
        if !SCENARIO_KINDS.contains(&k.as_str()) {
            bail!("unknown bench scenario '{k}'; known: {}", SCENARIO_KINDS.join(", "));
        }
    }
    let wants = |k: &str| opts.scenarios.iter().any(|s| s == k);
    // Read the corpus before the (slow) model load, so a bad file fails fast.
    let corpus = if wants("documents") {
        let path = opts.corpus.clone().context("the documents scenario needs a corpus (--corpus FILE)")?;
        let docs = read_corpus(&path)?;
        Some((path, docs))
    } else {
        None
    };
    let sentences = if wants("short") || wants("long") {
        let dir = data_dir.context("short/long scenarios need the STS data directory")?;
        Some(source_sentences(dir)?)
    } else {
        None
    };
    let peak_reset = reset_peak_rss();
    let t = Instant::now();
    let model = deposium_engine::registry::load(spec).with_context(|| format!("loading {spec}"))?;
    let load_seconds = t.elapsed().as_secs_f64();
    let rss_after_load_bytes = proc_status_bytes("VmRSS");
    let info = model.info().clone();
    let prompt = crate::eval::sts_prompt(&model);
    let prefix = model.resolve_prompt(&prompt)?;

    let max_batch = opts.batches.iter().copied().max().unwrap_or(1);
    let mut pools = Vec::new();
    if let Some(sentences) = &sentences {
        if wants("short") {
            pools.push(("short", short_texts(&model, &prefix, sentences, opts.short_tokens, (2 * max_batch).max(64))?));
        }
        if wants("long") {
            pools.push(("long", long_texts(&model, &prefix, sentences, opts.long_tokens, max_batch.max(8))?));
        }
    }
    let doc_prompt = document_prompt(&model);
    let doc_sample = match &corpus {
        Some((path, docs)) => {
            let (stride, sample) = sample_documents(docs, opts.documents);
            let meta = describe_sample(&model, &doc_prompt, path, docs.len(), stride, &sample)?;
            Some((sample, meta))
        }
        None => None,
    };
    let n_runs = pools.len() * opts.batches.len() + doc_sample.as_ref().map_or(0, |_| opts.document_batches.len());
    let bar = if progress { indicatif::ProgressBar::new(n_runs as u64) } else { indicatif::ProgressBar::hidden() };
    let mut scenarios = Vec::new();
    for (kind, pool) in &pools {
        for &b in &opts.batches {
            bar.set_message(format!("{} {kind} batch {b}", info.name));
            let s = run_scenario(&model, &prompt, kind, pool, b, opts)?;
            let target = if *kind == "short" { opts.short_tokens } else { opts.long_tokens } as f64;
            if (s.mean_tokens_per_text - target).abs() > 0.25 * target {
                tracing::warn!(model = %info.name, kind, tokens = s.mean_tokens_per_text, target, "texts far from the target length");
            }
            scenarios.push(s);
            bar.inc(1);
        }
    }
    if let Some((sample, meta)) = &doc_sample {
        for &b in &opts.document_batches {
            bar.set_message(format!("{} documents batch {b}", info.name));
            let mut s = run_documents(&model, &doc_prompt, sample, b, opts)?;
            s.corpus = Some(meta.clone());
            scenarios.push(s);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(BenchResult {
        model: info.name.clone(),
        family: info.family.clone(),
        quantization: info.quantization.clone(),
        dim: info.dim,
        size_bytes: info.size_bytes,
        digest: info.digest.clone(),
        threads: std::env::var("DEPOSIUM_THREADS").ok().and_then(|v| v.parse().ok()),
        cpu: cpu_name(),
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        prompt_name: match prompt {
            Prompt::Named(n) => Some(n),
            _ => None,
        },
        load_seconds,
        rss_after_load_bytes,
        peak_rss_bytes: proc_status_bytes("VmHWM"),
        peak_rss_since_load: peak_reset,
        timestamp_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        scenarios,
    })
}

pub fn markdown(results: &[BenchResult]) -> String {
    let mut out = String::new();
    for r in results {
        out += &format!(
            "**{}** ({}, {}): load {:.2} s, {:.1} MB on disk, peak RSS {}, threads {}, {}\n\n",
            r.model,
            r.family,
            r.quantization,
            r.load_seconds,
            r.size_bytes as f64 / 1e6,
            r.peak_rss_bytes.map_or("?".into(), |b| format!("{:.0} MB", b as f64 / 1e6)),
            r.threads.map_or("default".into(), |t| t.to_string()),
            r.cpu,
        );
        out += "| texts | batch | tokens/text | ms/call p50 | p95 | min | ms/text p50 | min | texts/s | tokens/s | iters |\n";
        out += "|---|---|---|---|---|---|---|---|---|---|---|\n";
        for s in &r.scenarios {
            out += &format!(
                "| {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {:.0} | {} |\n",
                s.kind,
                s.batch,
                s.mean_tokens_per_text,
                fmt_ms(s.ms_per_call.p50),
                fmt_ms(s.ms_per_call.p95),
                fmt_ms(s.ms_per_call.min),
                fmt_ms(s.ms_per_text.p50),
                fmt_ms(s.ms_per_text.min),
                fmt_rate(s.texts_per_s),
                s.tokens_per_s,
                s.iters
            );
        }
        if let Some(c) = r.scenarios.iter().find_map(|s| s.corpus.as_ref()) {
            out += &format!(
                "\ndocuments: {} of the {} documents of {} (one in {}), prompt {}, {:.0} tokens on average, longest {}, \
                 {} cut at the model's limit; texts/s and tokens/s from the total time of the calls.\n",
                c.documents,
                c.corpus_documents,
                c.path,
                c.stride,
                c.prompt_name.as_deref().unwrap_or("none"),
                c.mean_tokens,
                c.max_tokens,
                c.truncated,
            );
        }
        out += "\n";
    }
    out
}

/// A rate (texts/s): whole numbers from 100, else 3 significant digits.
pub fn fmt_rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Milliseconds with 3 significant digits, sub-microsecond-safe.
pub fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else if ms >= 1.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.4}")
    }
}
