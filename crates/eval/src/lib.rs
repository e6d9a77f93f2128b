//! deposium-eval: STS evaluation (MTEB-style), latency benchmark, and a comparison report.
//!
//! - `eval`: STS tasks from TSV files → `<out>/<model>/<Task>.json` (MTEB layout) + `model_meta.json`.
//! - `bench`: latency of `Model::embed` → `<out>/<model>/bench.json`.
//! - `report`: reads those files → Markdown decision document + SVG plots.

pub mod bench;
pub mod cache;
pub mod data;
pub mod eval;
pub mod metrics;
pub mod report;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// Model spec (`embeddinggemma:fp32`, `potion-base-8M`, `NAME=PATH`); repeat for several.
    #[arg(long = "model", required = true)]
    pub models: Vec<String>,
    /// Comma-separated tasks; a task is `<TASK>_<split>.tsv` or `<TASK>_<subset>_<split>.tsv` in the data dir.
    #[arg(long, value_delimiter = ',', default_value = "BIOSSES,STSBenchmark,STS17")]
    pub tasks: Vec<String>,
    /// STS data directory [default: ../shared/data/sts if present, else $DEPOSIUM_STS_DATA].
    #[arg(long)]
    pub data: Option<PathBuf>,
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
    /// STS data directory (texts come from STSBenchmark_test.tsv).
    #[arg(long)]
    pub data: Option<PathBuf>,
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
    /// Output directory for the Markdown document and the plots.
    #[arg(long, default_value = "docs")]
    pub out: PathBuf,
}

pub fn run_eval(args: EvalArgs) -> Result<()> {
    let data_dir = data::resolve_data_dir(args.data.as_deref())?;
    let tasks = args
        .tasks
        .iter()
        .map(|t| data::load_task(&data_dir, t.trim(), &args.split))
        .collect::<Result<Vec<_>>>()?;
    let cache_dir = (!args.no_cache)
        .then(|| args.cache.clone().unwrap_or_else(|| deposium_engine::paths::home().join("cache").join("eval")));
    let opts = eval::EvalOptions { batch: args.batch, cache_dir, dimensions: args.dimensions, progress: true };
    let mut evals = Vec::new();
    for spec in &args.models {
        let t = Instant::now();
        let model = deposium_engine::registry::load(spec).with_context(|| format!("loading {spec}"))?;
        let load_seconds = t.elapsed().as_secs_f64();
        let ev = eval::evaluate(&model, &tasks, &opts)?;
        let dir = args.out.join(eval::result_dir_name(&ev.model, ev.dimensions));
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
    print!("{}", eval::markdown_table(&evals));
    Ok(())
}

pub fn run_bench(args: BenchArgs) -> Result<()> {
    if let Some(n) = args.threads {
        // Read by the ONNX backend when it builds its session.
        std::env::set_var("DEPOSIUM_THREADS", n.to_string());
    }
    let data_dir = data::resolve_data_dir(args.data.as_deref())?;
    let opts = bench::BenchOptions {
        batches: args.batches.clone(),
        iters: args.iters,
        warmup: args.warmup,
        min_seconds: args.min_seconds,
        max_seconds: args.max_seconds,
        ..Default::default()
    };
    let mut results = Vec::new();
    for spec in &args.models {
        let r = bench::bench_model(spec, &data_dir, &opts, true)?;
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
    let path = report::write_report(&args.results, args.baseline.as_deref(), args.reference.as_deref(), &args.out)?;
    println!("{}", std::fs::read_to_string(&path)?);
    eprintln!("report → {}", path.display());
    Ok(())
}
