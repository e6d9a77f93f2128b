//! deposium-eval: STS evaluation (MTEB-style), latency benchmark, and a comparison report.
//!
//! - `eval`: STS tasks from TSV files and retrieval tasks from BEIR directories → `<out>/<model>/<Task>.json`
//!   (MTEB layout) + `model_meta.json`.
//! - `bench`: latency of `Model::embed` → `<out>/<model>/bench.json`.
//! - `report`: reads those files → Markdown decision document + SVG plots.

pub mod beir;
pub mod bench;
pub mod cache;
pub mod data;
pub mod eval;
pub mod metrics;
pub mod report;
pub mod retrieval;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// Model spec (`embeddinggemma:fp32`, `potion-base-8M`, `NAME=PATH`); repeat for several.
    #[arg(long = "model", required = true)]
    pub models: Vec<String>,
    /// Comma-separated tasks [default: BIOSSES,STSBenchmark,STS17]. An STS task is `<TASK>_<split>.tsv` or
    /// `<TASK>_<subset>_<split>.tsv` in the STS data dir; a retrieval task (e.g. SciFact) is a BEIR directory
    /// `<retrieval data>/<TASK>/`.
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// STS data directory [default: ../shared/data/sts if present, else $DEPOSIUM_STS_DATA]. A BEIR directory
    /// (with corpus.jsonl) here is evaluated as a retrieval task named after the directory.
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub retrieval: RetrievalArgs,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Results root: each model writes `<out>/<model-name>/`.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Texts per embed call.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Matryoshka dimension to evaluate (truncate + re-normalise); results go to `<model-name>-d<N>/`.
    #[arg(long)]
    pub dimensions: Option<usize>,
    /// Embedding cache directory [default: $DEPOSIUM_HOME/cache/eval].
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Embed everything again, read and write no cache.
    #[arg(long)]
    pub no_cache: bool,
}

/// Retrieval options of `eval`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RetrievalArgs {
    /// Retrieval data: a folder of BEIR directories, or one BEIR directory [default: ../shared/data/retrieval
    /// if present, else $DEPOSIUM_RETRIEVAL_DATA].
    #[arg(long)]
    pub retrieval_data: Option<PathBuf>,
    /// Retrieval: evaluate only the first N queries (file order) that have qrels.
    #[arg(long)]
    pub max_queries: Option<usize>,
    /// Retrieval: keep only the evaluated queries' relevant documents plus the first others (file order), M in all.
    #[arg(long)]
    pub max_corpus: Option<usize>,
    /// Retrieval: prompt name for queries [default: `query` when the model defines it, else none].
    #[arg(long, conflicts_with = "query_prompt")]
    pub query_prompt_name: Option<String>,
    /// Retrieval: prompt name for documents [default: `document` when the model defines it, else none].
    #[arg(long, conflicts_with = "document_prompt")]
    pub document_prompt_name: Option<String>,
    /// Retrieval: literal prefix for queries (instead of a prompt name).
    #[arg(long)]
    pub query_prompt: Option<String>,
    /// Retrieval: literal prefix for documents (instead of a prompt name).
    #[arg(long)]
    pub document_prompt: Option<String>,
    /// No prompt anywhere (STS and retrieval); results go to `<out>/<model>-noprompt/`.
    #[arg(long)]
    pub no_prompts: bool,
    /// Retrieval: cosine of every document vector to this model's vector of the same text and prompt (from its
    /// cache, embedding what is missing): mean / 1st percentile / min in the JSON's `deposium.fidelity_to`.
    #[arg(long)]
    pub fidelity_to: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Model spec; repeat for several (one process per model gives the cleanest peak-RSS figure).
    #[arg(long = "model", required = true)]
    pub models: Vec<String>,
    /// Sets DEPOSIUM_THREADS before loading the model: the ONNX backend's intra-op threads.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Measured calls per scenario, at least (fewer when a scenario exceeds --max-seconds).
    #[arg(long, default_value_t = 30)]
    pub iters: usize,
    /// Unmeasured calls before each scenario.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Measure each scenario at least this long, in seconds, even past --iters.
    #[arg(long, default_value_t = 1.0)]
    pub min_seconds: f64,
    /// Time budget per scenario, in seconds (at least 3 measured calls).
    #[arg(long, default_value_t = 20.0)]
    pub max_seconds: f64,
    /// Batch sizes to time.
    #[arg(long, value_delimiter = ',', default_value = "1,5,32")]
    pub batches: Vec<usize>,
    /// Tokens per text of the `long` scenario (at most the model's limit: 2048 times one text at EmbeddingGemma's
    /// limit).
    #[arg(long, default_value_t = 256)]
    pub long_tokens: usize,
    /// STS data directory (texts come from STSBenchmark_test.tsv).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Scenarios to run: short, long, documents [default: short,long, plus documents when the corpus is found].
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Option<Vec<String>>,
    /// BEIR corpus.jsonl for `documents` [default: ../shared/data/retrieval/SciFact/corpus.jsonl, else
    /// <STS data>/../retrieval/SciFact/corpus.jsonl].
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Documents in the `documents` sample (every k-th of the corpus).
    #[arg(long, default_value_t = bench::DEFAULT_DOCUMENTS)]
    pub documents: usize,
    /// Batch sizes for `documents`.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub document_batches: Vec<usize>,
    /// Results root: writes `<out>/<model-name>/bench.json`.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Also write all models' results to this JSON file (an array).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// Results root written by `eval` and `bench` (one subdirectory per model).
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Baseline model name [default: the first whose name contains "fp32", else the first].
    #[arg(long)]
    pub baseline: Option<String>,
    /// Also show a reference score file (e.g. ../shared/sts_reference.json) as a row.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// External points (other runtimes, published scores): a JSON array of {name, score, latency_ms or
    /// docs_per_s, metric: sts|retrieval, task, machine, source}, e.g. docs/reference-points.json.
    #[arg(long)]
    pub references: Option<PathBuf>,
    /// Output directory for the Markdown document and the plots.
    #[arg(long, default_value = "docs")]
    pub out: PathBuf,
}

/// Default `eval --tasks`.
pub const DEFAULT_STS_TASKS: [&str; 3] = ["BIOSSES", "STSBenchmark", "STS17"];

/// Every `--model` resolves, and to its own name: results are written under `<out>/<name>/`, so two specs of one name
/// would overwrite each other's.
fn check_model_names(specs: &[String]) -> Result<()> {
    let mut seen: Vec<(String, &str)> = Vec::new();
    for spec in specs {
        let name = deposium_engine::registry::resolve(spec).with_context(|| format!("--model {spec}"))?.name;
        if let Some((_, first)) = seen.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            anyhow::bail!(
                "--model {first} and --model {spec} are both named '{name}', so their results would overwrite each \
                 other: give one another NAME (NAME=PATH) or drop the repeat"
            );
        }
        seen.push((name, spec));
    }
    Ok(())
}

pub fn run_eval(args: EvalArgs) -> Result<()> {
    check_model_names(&args.models)?;
    let ra = &args.retrieval;
    // `--data` naming a BEIR directory is a retrieval task of that name.
    let beir_data = args.data.as_deref().filter(|d| beir::is_beir_dir(d));
    let mut task_names: Vec<String> =
        args.tasks.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
    if task_names.is_empty() {
        task_names = match beir_data.and_then(|d| d.file_name()) {
            Some(n) => vec![n.to_string_lossy().to_string()],
            None => DEFAULT_STS_TASKS.iter().map(|s| s.to_string()).collect(),
        };
    }
    let retrieval_root = match beir_data {
        Some(d) if ra.retrieval_data.is_none() => Some(d.to_path_buf()),
        _ => beir::resolve_root(ra.retrieval_data.as_deref())?,
    };
    let slice = beir::Slice { max_queries: ra.max_queries, max_corpus: ra.max_corpus };
    let (mut sts_names, mut retrieval_tasks) = (Vec::new(), Vec::new());
    for t in &task_names {
        match retrieval_root.as_deref().and_then(|r| beir::find_task(r, t)) {
            Some(dir) => retrieval_tasks.push(beir::load(&dir, t, &args.split, slice)?),
            None => sts_names.push(t.clone()),
        }
    }
    let tasks = if sts_names.is_empty() {
        Vec::new()
    } else {
        let data_dir = data::resolve_data_dir(args.data.as_deref().filter(|d| !beir::is_beir_dir(d)))?;
        sts_names.iter().map(|t| data::load_task(&data_dir, t, &args.split)).collect::<Result<Vec<_>>>()?
    };
    let cache_dir = (!args.no_cache)
        .then(|| args.cache.clone().unwrap_or_else(|| deposium_engine::paths::home().join("cache").join("eval")));
    let opts = eval::EvalOptions {
        batch: args.batch,
        cache_dir: cache_dir.clone(),
        dimensions: args.dimensions,
        progress: true,
    };
    let prompt_of = |name: &Option<String>, raw: &Option<String>| match (name, raw) {
        (Some(n), _) => Some(deposium_engine::Prompt::Named(n.clone())),
        (None, Some(r)) => Some(deposium_engine::Prompt::Raw(r.clone())),
        (None, None) => None,
    };
    let ropts = retrieval::RetrievalOptions {
        batch: args.batch,
        cache_dir,
        dimensions: args.dimensions,
        prompts: retrieval::PromptChoice {
            query: prompt_of(&ra.query_prompt_name, &ra.query_prompt),
            document: prompt_of(&ra.document_prompt_name, &ra.document_prompt),
            none: ra.no_prompts,
        },
        progress: true,
    };
    let suffix = if ra.no_prompts { "-noprompt" } else { "" };
    let (mut evals, mut revals) = (Vec::new(), Vec::new());
    for spec in &args.models {
        let t = Instant::now();
        let model = deposium_engine::registry::load(spec).with_context(|| format!("loading {spec}"))?;
        let load_seconds = t.elapsed().as_secs_f64();
        if !tasks.is_empty() {
            let prompt = if ra.no_prompts { deposium_engine::Prompt::None } else { eval::sts_prompt(&model) };
            let ev = eval::evaluate_with_prompt(&model, &tasks, &opts, prompt)?;
            let dir = args.out.join(eval::result_dir_name(&ev.model, ev.dimensions) + suffix);
            eval::write_results(&dir, &model, &ev, load_seconds)?;
            eprintln!(
                "{}: {} texts ({} cached) embedded in {:.1} s, total {:.1} s → {}",
                ev.model,
                ev.unique_texts,
                ev.cached_texts,
                ev.embed_seconds,
                ev.total_seconds,
                dir.display()
            );
            evals.push(ev);
        }
        let mut model_revals = Vec::new();
        for task in &retrieval_tasks {
            let ev = retrieval::evaluate(&model, task, &ropts)?;
            eprintln!(
                "{} {}: nDCG@10 {:.4}, {} texts embedded ({} cached) in {:.1} s, total {:.1} s",
                ev.model,
                ev.task,
                ev.scores.ndcg_at_10,
                ev.embedded_texts,
                ev.cached_texts,
                ev.embed_seconds,
                ev.total_seconds
            );
            model_revals.push(ev);
        }
        if let Some(base_spec) = ra.fidelity_to.as_deref().filter(|_| !model_revals.is_empty()) {
            let base =
                deposium_engine::registry::resolve(base_spec).with_context(|| format!("resolving {base_spec}"))?;
            if base.name == model.info().name {
                eprintln!("{}: --fidelity-to names the model itself; skipped", base.name);
            } else {
                let t = Instant::now();
                let baseline =
                    deposium_engine::registry::load_spec(&base).with_context(|| format!("loading {base_spec}"))?;
                for (task, ev) in retrieval_tasks.iter().zip(&mut model_revals) {
                    let f = retrieval::fidelity_to(&baseline, task, ev, &ropts)?;
                    eprintln!(
                        "{} vs {} on {} {} documents: cosine mean {:.6}, p1 {:.6}, min {:.6} ({:.1} s)",
                        ev.model,
                        f.baseline,
                        f.n,
                        ev.task,
                        f.mean,
                        f.p1,
                        f.min,
                        t.elapsed().as_secs_f64()
                    );
                    ev.fidelity = Some(f);
                }
            }
        }
        for ev in &mut model_revals {
            let dir = args.out.join(retrieval::result_dir_name(ev));
            let path = retrieval::write_results(&dir, &model, ev, load_seconds)?;
            eprintln!("→ {}", path.display());
            ev.document_vectors = Vec::new();
        }
        revals.extend(model_revals);
    }
    print!("{}", eval::markdown_table(&evals));
    if !evals.is_empty() && !revals.is_empty() {
        println!();
    }
    print!("{}", retrieval::markdown_table(&revals));
    Ok(())
}

pub fn run_bench(args: BenchArgs) -> Result<()> {
    check_model_names(&args.models)?;
    if let Some(n) = args.threads {
        // Read by the ONNX backend when it builds its session.
        std::env::set_var("DEPOSIUM_THREADS", n.to_string());
    }
    let explicit = args.scenarios.is_some();
    let mut scenarios: Vec<String> = args
        .scenarios
        .clone()
        .unwrap_or_else(|| vec!["short".into(), "long".into()])
        .iter()
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let needs_sts = scenarios.iter().any(|s| s == "short" || s == "long");
    let data_dir =
        if needs_sts || args.data.is_some() { Some(data::resolve_data_dir(args.data.as_deref())?) } else { None };
    let corpus = bench::resolve_corpus(args.corpus.as_deref(), data_dir.as_deref());
    if !explicit {
        if let Some(c) = &corpus {
            eprintln!("documents scenario on {}", c.display());
            scenarios.push("documents".into());
        }
    }
    if scenarios.iter().any(|s| s == "documents") && corpus.is_none() {
        anyhow::bail!(
            "the documents scenario needs a corpus: pass --corpus FILE (BEIR corpus.jsonl); {} not found",
            bench::DEFAULT_CORPUS
        );
    }
    let opts = bench::BenchOptions {
        batches: args.batches.clone(),
        iters: args.iters,
        warmup: args.warmup,
        min_seconds: args.min_seconds,
        max_seconds: args.max_seconds,
        scenarios,
        corpus,
        documents: args.documents,
        document_batches: args.document_batches.clone(),
        long_tokens: args.long_tokens,
        ..Default::default()
    };
    let mut results = Vec::new();
    for spec in &args.models {
        let r = bench::bench_model(spec, data_dir.as_deref(), &opts, true)?;
        let dir = args.out.join(cache::sanitize(&r.model));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("bench.json"), serde_json::to_string_pretty(&r)? + "\n")?;
        eprintln!("{}: → {}", r.model, dir.join("bench.json").display());
        results.push(r);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{}", bench::markdown(&results));
    Ok(())
}

pub fn run_report(args: ReportArgs) -> Result<()> {
    let path = report::write_report_with(
        &args.results,
        args.baseline.as_deref(),
        args.reference.as_deref(),
        args.references.as_deref(),
        &args.out,
    )?;
    println!("{}", std::fs::read_to_string(&path)?);
    eprintln!("report → {}", path.display());
    Ok(())
}
