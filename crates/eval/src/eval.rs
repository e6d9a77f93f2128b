//! STS evaluation: embed every distinct text once (with the model's `STS` prompt when it has one), score
//! each subset like MTEB, write one MTEB-style JSON per task.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use deposium_engine::{EmbedRequest, Model, Prompt};
use serde_json::json;

use crate::cache::{sanitize, EmbeddingCache};
use crate::data::StsTask;
use crate::metrics::{sts_scores, StsScores};

/// The prompt name used for STS when the model defines it.
pub const STS_PROMPT: &str = "STS";

#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Texts per `Model::embed` call.
    pub batch: usize,
    /// Directory of the embedding cache; None disables it.
    pub cache_dir: Option<PathBuf>,
    /// Matryoshka truncation (then re-normalisation) before scoring.
    pub dimensions: Option<usize>,
    pub progress: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { batch: 64, cache_dir: None, dimensions: None, progress: false }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SubsetResult {
    pub subset: String,
    pub languages: Vec<String>,
    pub n_pairs: usize,
    pub scores: StsScores,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskResult {
    pub task: String,
    pub split: String,
    pub subsets: Vec<SubsetResult>,
    /// Mean of the subsets' main scores (cosine Spearman).
    pub main_score: f64,
}

impl TaskResult {
    pub fn subset(&self, name: &str) -> Option<&SubsetResult> {
        self.subsets.iter().find(|s| s.subset == name)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelEval {
    pub model: String,
    pub digest: String,
    /// `STS` or none.
    pub prompt_name: Option<String>,
    pub prompt: String,
    pub dimensions: Option<usize>,
    pub tasks: Vec<TaskResult>,
    pub unique_texts: usize,
    pub cached_texts: usize,
    pub embed_seconds: f64,
    pub total_seconds: f64,
}

impl ModelEval {
    /// Mean over tasks of their main scores (a multi-subset task counts once).
    pub fn mean_score(&self) -> f64 {
        self.tasks.iter().map(|t| t.main_score).sum::<f64>() / self.tasks.len().max(1) as f64
    }
}

/// `Prompt::Named("STS")` when the model has that prompt, else no prompt.
pub fn sts_prompt(model: &Model) -> Prompt {
    if model.info().prompts.contains_key(STS_PROMPT) {
        Prompt::Named(STS_PROMPT.into())
    } else {
        Prompt::None
    }
}

/// Truncate to `dims` and L2-normalise.
fn truncate_normalize(mut v: Vec<f32>, dims: Option<usize>) -> Vec<f32> {
    if let Some(d) = dims {
        v.truncate(d);
        deposium_engine::l2_normalize(&mut v);
    }
    v
}

/// Embed `texts` (already distinct) with `prompt`, using and filling the cache.
pub fn embed_texts(
    model: &Model,
    texts: &[&str],
    prompt: &Prompt,
    cache: &mut EmbeddingCache,
    batch: usize,
    progress: bool,
) -> Result<(Vec<Vec<f32>>, usize)> {
    let prefix = model.resolve_prompt(prompt)?;
    let keys: Vec<_> = texts.iter().map(|t| cache.key(&prefix, t)).collect();
    let mut missing: Vec<usize> = (0..texts.len()).filter(|&i| cache.get(&keys[i]).is_none()).collect();
    let cached = texts.len() - missing.len();
    // Longest first: chunks of similar length pad less.
    missing.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(missing.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} texts {per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(format!("{} ({cached} cached)", model.info().name));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    for chunk in missing.chunks(batch.max(1)) {
        let mut req = EmbedRequest::new(chunk.iter().map(|&i| texts[i].to_string()).collect());
        req.prompt = prompt.clone();
        let resp = model.embed(&req).with_context(|| format!("embedding with {}", model.info().name))?;
        cache.insert(chunk.iter().map(|&i| keys[i]).zip(resp.embeddings).collect())?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let vecs = keys
        .iter()
        .map(|k| cache.get(k).cloned().context("embedding missing after embedding pass"))
        .collect::<Result<Vec<_>>>()?;
    Ok((vecs, cached))
}

/// Evaluate `model` on `tasks` with its `STS` prompt (when it has one).
pub fn evaluate(model: &Model, tasks: &[StsTask], opts: &EvalOptions) -> Result<ModelEval> {
    evaluate_with_prompt(model, tasks, opts, sts_prompt(model))
}

/// Evaluate `model` on `tasks` with `prompt` on every sentence.
pub fn evaluate_with_prompt(model: &Model, tasks: &[StsTask], opts: &EvalOptions, prompt: Prompt) -> Result<ModelEval> {
    let start = Instant::now();
    let info = model.info();
    model.check_dimensions(opts.dimensions)?;
    let prefix = model.resolve_prompt(&prompt)?;

    // Distinct texts over all tasks, in first-seen order.
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut texts: Vec<&str> = Vec::new();
    for pair in tasks.iter().flat_map(|t| &t.subsets).flat_map(|s| &s.pairs) {
        for s in [pair.sentence1.as_str(), pair.sentence2.as_str()] {
            index.entry(s).or_insert_with(|| {
                texts.push(s);
                texts.len() - 1
            });
        }
    }

    let mut cache = match (&opts.cache_dir, info.digest.is_empty()) {
        (Some(dir), false) => EmbeddingCache::open(dir, &info.name, &info.digest)?,
        (Some(_), true) => {
            tracing::warn!(model = %info.name, "model has no digest: embedding cache disabled");
            EmbeddingCache::disabled(&info.name, "")
        }
        (None, _) => EmbeddingCache::disabled(&info.name, &info.digest),
    };
    let t_embed = Instant::now();
    let (vecs, cached) = embed_texts(model, &texts, &prompt, &mut cache, opts.batch, opts.progress)?;
    let embed_seconds = t_embed.elapsed().as_secs_f64();
    let vecs: Vec<Vec<f32>> = vecs.into_iter().map(|v| truncate_normalize(v, opts.dimensions)).collect();

    let mut results = Vec::new();
    for task in tasks {
        let mut subsets = Vec::new();
        for subset in &task.subsets {
            let left: Vec<&[f32]> = subset.pairs.iter().map(|p| vecs[index[p.sentence1.as_str()]].as_slice()).collect();
            let right: Vec<&[f32]> =
                subset.pairs.iter().map(|p| vecs[index[p.sentence2.as_str()]].as_slice()).collect();
            let gold: Vec<f64> = subset.pairs.iter().map(|p| p.score).collect();
            let scores = sts_scores(&left, &right, &gold)
                .with_context(|| format!("scoring {} {} ({})", task.name, subset.name, subset.path.display()))?;
            subsets.push(SubsetResult {
                subset: subset.name.clone(),
                languages: subset.languages(),
                n_pairs: subset.pairs.len(),
                scores,
            });
        }
        let main_score = subsets.iter().map(|s| s.scores.main_score).sum::<f64>() / subsets.len() as f64;
        results.push(TaskResult { task: task.name.clone(), split: task.split.clone(), subsets, main_score });
    }
    Ok(ModelEval {
        model: info.name.clone(),
        digest: info.digest.clone(),
        prompt_name: match &prompt {
            Prompt::Named(n) => Some(n.clone()),
            _ => None,
        },
        prompt: prefix,
        dimensions: opts.dimensions,
        tasks: results,
        unique_texts: texts.len(),
        cached_texts: cached,
        embed_seconds,
        total_seconds: start.elapsed().as_secs_f64(),
    })
}

/// Directory name of a model's results (`embeddinggemma:fp32` → `embeddinggemma-fp32`, `-d256` when truncated).
pub fn result_dir_name(model: &str, dimensions: Option<usize>) -> String {
    match dimensions {
        Some(d) => format!("{}-d{d}", sanitize(model)),
        None => sanitize(model),
    }
}

/// One MTEB-style result document for a task.
pub fn mteb_json(ev: &ModelEval, task: &TaskResult) -> serde_json::Value {
    let scores: Vec<serde_json::Value> = task
        .subsets
        .iter()
        .map(|s| {
            let mut v = serde_json::to_value(&s.scores).expect("scores serialise");
            v["hf_subset"] = json!(s.subset);
            v["languages"] = json!(s.languages);
            v
        })
        .collect();
    json!({
        "dataset_revision": null,
        "task_name": task.task,
        "mteb_version": null,
        "scores": { task.split.clone(): scores },
        "evaluation_time": ev.total_seconds,
        "kg_co2_emissions": null,
        "deposium": {
            "model": ev.model,
            "digest": ev.digest,
            "prompt_name": ev.prompt_name,
            "prompt": ev.prompt,
            "dimensions": ev.dimensions,
            "main_score_mean": task.main_score,
            "n_pairs": task.subsets.iter().map(|s| s.n_pairs).sum::<usize>(),
            "unique_texts_all_tasks": ev.unique_texts,
            "cached_texts_all_tasks": ev.cached_texts,
            "embed_seconds_all_tasks": ev.embed_seconds,
        },
    })
}

/// Write `<Task>.json` per task and `model_meta.json` into `dir`.
pub fn write_results(dir: &Path, model: &Model, ev: &ModelEval, load_seconds: f64) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for task in &ev.tasks {
        let path = dir.join(format!("{}.json", task.task));
        let body = serde_json::to_string_pretty(&mteb_json(ev, task))?;
        std::fs::write(&path, body + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    let mut meta = serde_json::to_value(model.info())?;
    meta["load_seconds"] = json!(load_seconds);
    meta["dimensions_evaluated"] = json!(ev.dimensions.unwrap_or(model.info().dim));
    std::fs::write(dir.join("model_meta.json"), serde_json::to_string_pretty(&meta)? + "\n")?;
    Ok(())
}

/// Markdown tables: one row per model (task main scores, mean), then per-subset detail for multi-subset tasks.
pub fn markdown_table(evals: &[ModelEval]) -> String {
    let mut out = String::new();
    let Some(first) = evals.first() else { return out };
    let task_names: Vec<&str> = first.tasks.iter().map(|t| t.task.as_str()).collect();
    out += &format!("| model | {} | mean | texts (cached) | seconds |\n", task_names.join(" | "));
    out += &format!("|---|{}---|---|---|\n", "---|".repeat(task_names.len()));
    for ev in evals {
        let cells: Vec<String> = ev.tasks.iter().map(|t| format!("{:.4}", t.main_score)).collect();
        out += &format!(
            "| {} | {} | {:.4} | {} ({}) | {:.1} |\n",
            display_name(ev),
            cells.join(" | "),
            ev.mean_score(),
            ev.unique_texts,
            ev.cached_texts,
            ev.total_seconds
        );
    }
    for (ti, task) in first.tasks.iter().enumerate() {
        if task.subsets.len() < 2 {
            continue;
        }
        let names: Vec<String> = evals.iter().map(display_name).collect();
        out += &format!("\n| {} subset | {} |\n", task.task, names.join(" | "));
        out += &format!("|---|{}\n", "---|".repeat(evals.len()));
        for s in &task.subsets {
            let cells: Vec<String> = evals
                .iter()
                .map(|ev| {
                    ev.tasks
                        .get(ti)
                        .and_then(|t| t.subset(&s.subset))
                        .map_or("—".into(), |r| format!("{:.4}", r.scores.main_score))
                })
                .collect();
            out += &format!("| {} | {} |\n", s.subset, cells.join(" | "));
        }
    }
    out
}

fn display_name(ev: &ModelEval) -> String {
    match ev.dimensions {
        Some(d) => format!("{} (d={d})", ev.model),
        None => ev.model.clone(),
    }
}
