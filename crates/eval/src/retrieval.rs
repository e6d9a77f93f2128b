//! Retrieval evaluation (MTEB conventions): queries with the model's `query` prompt, documents with its
//! `document` prompt, exact cosine search (blocked matrix product over normalised vectors, top-k per query),
//! nDCG@10 (main score), recall@100, MAP@10, MRR@10 as pytrec_eval / MTEB compute them.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use deposium_engine::{Model, Prompt};
use serde_json::json;

use crate::beir::RetrievalTask;
use crate::cache::EmbeddingCache;
use crate::eval::embed_texts;

/// Prompt names used when the model defines them (sentence-transformers convention).
pub const QUERY_PROMPT: &str = "query";
pub const DOCUMENT_PROMPT: &str = "document";
/// Cut-offs computed; the JSON holds `<metric>_at_<k>` for each.
pub const K_VALUES: [usize; 4] = [1, 10, 100, 1000];
/// Hits kept per query.
pub const TOP_K: usize = 1000;

/// Which prompts to use on queries and documents.
#[derive(Debug, Clone, Default)]
pub struct PromptChoice {
    /// None: the model's `query` prompt when it has one, else no prompt.
    pub query: Option<Prompt>,
    pub document: Option<Prompt>,
    /// No prompt on either side (wins over the two above).
    pub none: bool,
}

impl PromptChoice {
    fn resolve(side: &Option<Prompt>, default_name: &str, none: bool, model: &Model) -> Prompt {
        if none {
            return Prompt::None;
        }
        match side {
            Some(p) => p.clone(),
            None if model.info().prompts.contains_key(default_name) => Prompt::Named(default_name.into()),
            None => Prompt::None,
        }
    }
    pub fn query_prompt(&self, model: &Model) -> Prompt {
        Self::resolve(&self.query, QUERY_PROMPT, self.none, model)
    }
    pub fn document_prompt(&self, model: &Model) -> Prompt {
        Self::resolve(&self.document, DOCUMENT_PROMPT, self.none, model)
    }
}

#[derive(Debug, Clone)]
pub struct RetrievalOptions {
    pub batch: usize,
    pub cache_dir: Option<PathBuf>,
    pub dimensions: Option<usize>,
    pub prompts: PromptChoice,
    pub progress: bool,
}

impl Default for RetrievalOptions {
    fn default() -> Self {
        Self { batch: 64, cache_dir: None, dimensions: None, prompts: PromptChoice::default(), progress: false }
    }
}

/// Mean over queries of each metric.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RetrievalScores {
    pub ndcg_at_1: f64,
    pub ndcg_at_10: f64,
    pub ndcg_at_100: f64,
    pub ndcg_at_1000: f64,
    pub map_at_1: f64,
    pub map_at_10: f64,
    pub map_at_100: f64,
    pub map_at_1000: f64,
    pub recall_at_1: f64,
    pub recall_at_10: f64,
    pub recall_at_100: f64,
    pub recall_at_1000: f64,
    pub mrr_at_1: f64,
    pub mrr_at_10: f64,
    pub mrr_at_100: f64,
    pub mrr_at_1000: f64,
    /// = ndcg_at_10.
    pub main_score: f64,
}

/// One query's metrics at cut-off `k` over `ranked` corpus ids (best first) and its graded qrels.
///
/// pytrec_eval / trec_eval definitions: nDCG with linear gain (the grade) and log2(rank + 1) discount, the ideal
/// ranking from all the query's judged grades; MAP@k = sum of precision at each relevant hit within k over the
/// number of relevant documents (grade ≥ 1); recall@k = relevant hits within k over that number; MRR@k (MTEB) =
/// 1 / rank of the first relevant hit within k.
pub fn query_metrics(ranked: &[&str], relevant: &BTreeMap<String, i32>, k: usize) -> (f64, f64, f64, f64) {
    let grade = |id: &str| relevant.get(id).copied().unwrap_or(0);
    let n_rel = relevant.values().filter(|&&g| g >= 1).count();
    let top = &ranked[..ranked.len().min(k)];
    let dcg: f64 = top.iter().enumerate().map(|(i, id)| grade(id).max(0) as f64 / ((i + 2) as f64).log2()).sum();
    let mut ideal: Vec<i32> = relevant.values().copied().filter(|&g| g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal.iter().take(k).enumerate().map(|(i, &g)| g as f64 / ((i + 2) as f64).log2()).sum();
    let ndcg = if idcg > 0.0 { dcg / idcg } else { 0.0 };
    let (mut hits, mut ap, mut rr) = (0usize, 0.0, 0.0);
    for (i, id) in top.iter().enumerate() {
        if grade(id) >= 1 {
            hits += 1;
            ap += hits as f64 / (i + 1) as f64;
            if rr == 0.0 {
                rr = 1.0 / (i + 1) as f64;
            }
        }
    }
    let (map, recall) = if n_rel > 0 { (ap / n_rel as f64, hits as f64 / n_rel as f64) } else { (0.0, 0.0) };
    (ndcg, map, recall, rr)
}

/// Mean metrics over queries: `runs[i]` is query i's ranked corpus ids.
pub fn score_runs(runs: &[Vec<&str>], qrels: &[&BTreeMap<String, i32>]) -> RetrievalScores {
    let n = runs.len().max(1) as f64;
    let mut m = [[0f64; 4]; 4]; // [k][ndcg, map, recall, mrr]
    for (run, rel) in runs.iter().zip(qrels) {
        for (ki, &k) in K_VALUES.iter().enumerate() {
            let (a, b, c, d) = query_metrics(run, rel, k);
            for (j, x) in [a, b, c, d].into_iter().enumerate() {
                m[ki][j] += x / n;
            }
        }
    }
    RetrievalScores {
        ndcg_at_1: m[0][0],
        ndcg_at_10: m[1][0],
        ndcg_at_100: m[2][0],
        ndcg_at_1000: m[3][0],
        map_at_1: m[0][1],
        map_at_10: m[1][1],
        map_at_100: m[2][1],
        map_at_1000: m[3][1],
        recall_at_1: m[0][2],
        recall_at_10: m[1][2],
        recall_at_100: m[2][2],
        recall_at_1000: m[3][2],
        mrr_at_1: m[0][3],
        mrr_at_10: m[1][3],
        mrr_at_100: m[2][3],
        mrr_at_1000: m[3][3],
        main_score: m[1][0],
    }
}

/// Ranking order of two hits (score, corpus id): higher score first; ties by corpus id in descending string
/// order, as trec_eval sorts a run (so results are deterministic and match pytrec_eval).
fn hit_order(a: &(f32, &str), b: &(f32, &str)) -> Ordering {
    b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal).then_with(|| b.1.cmp(a.1))
}

/// Exact search: for each query (row of `queries`, unit vectors of `dim`), the `top_k` corpus ids by dot product,
/// best first. `exclude[i]` is a corpus id never returned for query i (MTEB ignores a hit that is the query's own
/// id). Scores come from a blocked matrix product (queries × documents in tiles).
pub fn search<'a>(
    queries: &[Vec<f32>],
    corpus: &[Vec<f32>],
    corpus_ids: &'a [&'a str],
    exclude: &[&str],
    top_k: usize,
) -> Vec<Vec<(f32, &'a str)>> {
    const QB: usize = 32;
    const DB: usize = 256;
    let mut out: Vec<Vec<(f32, &str)>> = vec![Vec::new(); queries.len()];
    let mut tile = vec![0f32; QB * DB];
    for q0 in (0..queries.len()).step_by(QB) {
        let qs = &queries[q0..(q0 + QB).min(queries.len())];
        for d0 in (0..corpus.len()).step_by(DB) {
            let ds = &corpus[d0..(d0 + DB).min(corpus.len())];
            for (qi, q) in qs.iter().enumerate() {
                for (di, d) in ds.iter().enumerate() {
                    tile[qi * DB + di] = dot(q, d);
                }
            }
            for (qi, hits) in out[q0..q0 + qs.len()].iter_mut().enumerate() {
                for di in 0..ds.len() {
                    let id = corpus_ids[d0 + di];
                    if id != exclude[q0 + qi] {
                        hits.push((tile[qi * DB + di], id));
                    }
                }
                if hits.len() > 2 * top_k {
                    hits.sort_unstable_by(hit_order);
                    hits.truncate(top_k);
                }
            }
        }
    }
    for hits in &mut out {
        hits.sort_unstable_by(hit_order);
        hits.truncate(top_k);
    }
    out
}

/// Dot product in 8 independent lanes (vectorises; fixed summation order).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Cosine agreement of one model's vectors with a baseline's on the same texts and prompts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fidelity {
    pub baseline: String,
    pub baseline_digest: String,
    pub n: usize,
    pub mean: f64,
    /// 1st percentile (nearest rank).
    pub p1: f64,
    pub min: f64,
}

pub fn fidelity_stats(baseline: &str, digest: &str, cosines: &mut [f64]) -> Fidelity {
    cosines.sort_by(|a, b| a.total_cmp(b));
    let n = cosines.len();
    let p1 = if n == 0 { f64::NAN } else { cosines[((0.01 * n as f64).ceil() as usize).clamp(1, n) - 1] };
    Fidelity {
        baseline: baseline.into(),
        baseline_digest: digest.into(),
        n,
        mean: cosines.iter().sum::<f64>() / n.max(1) as f64,
        p1,
        min: cosines.first().copied().unwrap_or(f64::NAN),
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RetrievalEval {
    pub model: String,
    pub digest: String,
    pub task: String,
    pub split: String,
    /// A `--max-queries` / `--max-corpus` slice rather than the whole task.
    pub subset: bool,
    pub query_prompt_name: Option<String>,
    pub query_prompt: String,
    pub document_prompt_name: Option<String>,
    pub document_prompt: String,
    pub no_prompts: bool,
    pub dimensions: Option<usize>,
    pub dim: usize,
    pub scores: RetrievalScores,
    pub n_queries: usize,
    pub n_documents: usize,
    pub mean_document_tokens: f64,
    /// Documents at the model's token limit (cut).
    pub truncated_documents: usize,
    pub embedded_texts: usize,
    pub cached_texts: usize,
    pub embed_seconds: f64,
    pub total_seconds: f64,
    pub fidelity: Option<Fidelity>,
    /// The evaluated document vectors (for `fidelity_to`), not written.
    #[serde(skip)]
    pub document_vectors: Vec<Vec<f32>>,
    #[serde(skip)]
    pub document_prefix: String,
}

fn prompt_name(p: &Prompt) -> Option<String> {
    match p {
        Prompt::Named(n) => Some(n.clone()),
        _ => None,
    }
}

fn open_cache(model: &Model, dir: &Option<PathBuf>) -> Result<EmbeddingCache> {
    let info = model.info();
    Ok(match (dir, info.digest.is_empty()) {
        (Some(dir), false) => EmbeddingCache::open(dir, &info.name, &info.digest)?,
        (Some(_), true) => {
            tracing::warn!(model = %info.name, "model has no digest: embedding cache disabled");
            EmbeddingCache::disabled(&info.name, "")
        }
        (None, _) => EmbeddingCache::disabled(&info.name, &info.digest),
    })
}

fn truncate_normalize(mut v: Vec<f32>, dims: Option<usize>) -> Vec<f32> {
    if let Some(d) = dims {
        v.truncate(d);
        deposium_engine::l2_normalize(&mut v);
    }
    v
}

/// Evaluate `model` on `task`.
pub fn evaluate(model: &Model, task: &RetrievalTask, opts: &RetrievalOptions) -> Result<RetrievalEval> {
    let start = Instant::now();
    let info = model.info();
    model.check_dimensions(opts.dimensions)?;
    let (qp, dp) = (opts.prompts.query_prompt(model), opts.prompts.document_prompt(model));
    let (q_prefix, d_prefix) = (model.resolve_prompt(&qp)?, model.resolve_prompt(&dp)?);

    // Token counts of the documents as embedded (prompt and special tokens included, after truncation).
    let mut tokens = 0usize;
    let mut truncated = 0usize;
    for d in &task.corpus {
        let full = model.tokenize_one(&d_prefix, &d.text, true)?.ids.len();
        tokens += full;
        truncated += usize::from(full >= info.max_tokens);
    }

    let mut cache = open_cache(model, &opts.cache_dir)?;
    let t_embed = Instant::now();
    let doc_texts: Vec<&str> = task.corpus.iter().map(|d| d.text.as_str()).collect();
    let (docs, cached_d) = embed_texts(model, &doc_texts, &dp, &mut cache, opts.batch, opts.progress)
        .with_context(|| format!("embedding the {} corpus", task.name))?;
    let q_texts: Vec<&str> = task.queries.iter().map(|q| q.text.as_str()).collect();
    let (queries, cached_q) = embed_texts(model, &q_texts, &qp, &mut cache, opts.batch, opts.progress)
        .with_context(|| format!("embedding the {} queries", task.name))?;
    let embed_seconds = t_embed.elapsed().as_secs_f64();
    let docs: Vec<Vec<f32>> = docs.into_iter().map(|v| truncate_normalize(v, opts.dimensions)).collect();
    let queries: Vec<Vec<f32>> = queries.into_iter().map(|v| truncate_normalize(v, opts.dimensions)).collect();

    let ids: Vec<&str> = task.corpus.iter().map(|d| d.id.as_str()).collect();
    let exclude: Vec<&str> = task.queries.iter().map(|q| q.id.as_str()).collect();
    let hits = search(&queries, &docs, &ids, &exclude, TOP_K);
    let runs: Vec<Vec<&str>> = hits.iter().map(|h| h.iter().map(|&(_, id)| id).collect()).collect();
    let qrels: Vec<&BTreeMap<String, i32>> = task.queries.iter().map(|q| &q.relevant).collect();
    let scores = score_runs(&runs, &qrels);
    if !scores.ndcg_at_10.is_finite() {
        bail!("{}: non-finite nDCG@10", task.name);
    }
    Ok(RetrievalEval {
        model: info.name.clone(),
        digest: info.digest.clone(),
        task: task.name.clone(),
        split: task.split.clone(),
        subset: task.subset,
        query_prompt_name: prompt_name(&qp),
        query_prompt: q_prefix,
        document_prompt_name: prompt_name(&dp),
        document_prompt: d_prefix.clone(),
        no_prompts: opts.prompts.none,
        dimensions: opts.dimensions,
        dim: docs.first().map_or(0, |v| v.len()),
        scores,
        n_queries: task.queries.len(),
        n_documents: task.corpus.len(),
        mean_document_tokens: tokens as f64 / task.corpus.len().max(1) as f64,
        truncated_documents: truncated,
        embedded_texts: doc_texts.len() + q_texts.len() - cached_d - cached_q,
        cached_texts: cached_d + cached_q,
        embed_seconds,
        total_seconds: start.elapsed().as_secs_f64(),
        fidelity: None,
        document_vectors: docs,
        document_prefix: d_prefix,
    })
}

/// Cosine of each document vector of `ev` to `baseline`'s vector for the same text and document prompt (embedding
/// with `baseline` whatever its cache lacks).
pub fn fidelity_to(
    baseline: &Model,
    task: &RetrievalTask,
    ev: &RetrievalEval,
    opts: &RetrievalOptions,
) -> Result<Fidelity> {
    let mut cache = open_cache(baseline, &opts.cache_dir)?;
    let texts: Vec<&str> = task.corpus.iter().map(|d| d.text.as_str()).collect();
    let prompt = Prompt::Raw(ev.document_prefix.clone());
    let (base, _) = embed_texts(baseline, &texts, &prompt, &mut cache, opts.batch, opts.progress)?;
    if base.first().map(|v| v.len()) != Some(baseline.info().dim) || baseline.info().dim < ev.dim {
        bail!("baseline {} has dimension {}, {} needs {}", baseline.info().name, baseline.info().dim, ev.model, ev.dim);
    }
    let mut cos: Vec<f64> = base
        .into_iter()
        .zip(&ev.document_vectors)
        .map(|(b, v)| {
            let b = truncate_normalize(b, ev.dimensions);
            deposium_engine::cosine(&b, v) as f64
        })
        .collect();
    Ok(fidelity_stats(&baseline.info().name, &baseline.info().digest, &mut cos))
}

/// Directory name of a model's results: `<model>[-dN][-noprompt]`.
pub fn result_dir_name(ev: &RetrievalEval) -> String {
    let base = crate::eval::result_dir_name(&ev.model, ev.dimensions);
    if ev.no_prompts {
        format!("{base}-noprompt")
    } else {
        base
    }
}

/// The MTEB-style result document.
pub fn mteb_json(ev: &RetrievalEval) -> serde_json::Value {
    let mut scores = serde_json::to_value(ev.scores).expect("scores serialise");
    scores["hf_subset"] = json!("default");
    scores["languages"] = json!(["eng-Latn"]);
    json!({
        "dataset_revision": null,
        "task_name": ev.task,
        "mteb_version": null,
        "scores": { ev.split.clone(): [scores] },
        "evaluation_time": ev.total_seconds,
        "kg_co2_emissions": null,
        "deposium": {
            "kind": "retrieval",
            "model": ev.model,
            "digest": ev.digest,
            "subset": ev.subset,
            "no_prompts": ev.no_prompts,
            "query_prompt_name": ev.query_prompt_name,
            "query_prompt": ev.query_prompt,
            "document_prompt_name": ev.document_prompt_name,
            "document_prompt": ev.document_prompt,
            "dimensions": ev.dimensions.unwrap_or(ev.dim),
            "n_queries": ev.n_queries,
            "n_documents": ev.n_documents,
            "mean_document_tokens": ev.mean_document_tokens,
            "truncated_documents": ev.truncated_documents,
            "embedded_texts": ev.embedded_texts,
            "cached_texts": ev.cached_texts,
            "embed_seconds": ev.embed_seconds,
            "fidelity_to": ev.fidelity,
        },
    })
}

/// Write `<Task>.json` and `model_meta.json` into `dir`.
pub fn write_results(dir: &Path, model: &Model, ev: &RetrievalEval, load_seconds: f64) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{}.json", ev.task));
    std::fs::write(&path, serde_json::to_string_pretty(&mteb_json(ev))? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    let meta_path = dir.join("model_meta.json");
    if !meta_path.exists() {
        let mut meta = serde_json::to_value(model.info())?;
        meta["load_seconds"] = json!(load_seconds);
        meta["dimensions_evaluated"] = json!(ev.dimensions.unwrap_or(model.info().dim));
        std::fs::write(&meta_path, serde_json::to_string_pretty(&meta)? + "\n")?;
    }
    Ok(path)
}

/// Markdown table: one row per (model, task).
pub fn markdown_table(evals: &[RetrievalEval]) -> String {
    let mut out = String::new();
    if evals.is_empty() {
        return out;
    }
    let with_fid = evals.iter().any(|e| e.fidelity.is_some());
    out += "| model | task | prompts | nDCG@10 | recall@100 | MAP@10 | MRR@10 | queries | documents | seconds |";
    out += if with_fid { " doc cosine to baseline: mean / p1 / min |\n" } else { "\n" };
    out += "|---|---|---|---|---|---|---|---|---|---|";
    out += if with_fid { "---|\n" } else { "\n" };
    for e in evals {
        let prompts = if e.no_prompts {
            "none".to_string()
        } else {
            format!(
                "{} / {}",
                e.query_prompt_name.as_deref().unwrap_or(if e.query_prompt.is_empty() { "—" } else { "raw" }),
                e.document_prompt_name.as_deref().unwrap_or(if e.document_prompt.is_empty() { "—" } else { "raw" })
            )
        };
        let name = match e.dimensions {
            Some(d) => format!("{} (d={d})", e.model),
            None => e.model.clone(),
        };
        out += &format!(
            "| {name} | {}{} | {prompts} | {:.4} | {:.4} | {:.4} | {:.4} | {} | {} | {:.1} |",
            e.task,
            if e.subset { " (subset)" } else { "" },
            e.scores.ndcg_at_10,
            e.scores.recall_at_100,
            e.scores.map_at_10,
            e.scores.mrr_at_10,
            e.n_queries,
            e.n_documents,
            e.total_seconds
        );
        if with_fid {
            out += &match &e.fidelity {
                Some(f) => format!(" {:.6} / {:.6} / {:.6} (vs {}) |", f.mean, f.p1, f.min, f.baseline),
                None => " — |".into(),
            };
        }
        out += "\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(pairs: &[(&str, i32)]) -> BTreeMap<String, i32> {
        pairs.iter().map(|&(d, g)| (d.to_string(), g)).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn metrics_on_hand_computed_cases() {
        // Relevant a and c (grade 1) of a 2-relevant query; ranking: b, a, d, c.
        let r = rel(&[("a", 1), ("c", 1), ("x", 0)]);
        let run = ["b", "a", "d", "c"];
        let (ndcg, map, recall, mrr) = query_metrics(&run, &r, 10);
        // DCG = 1/log2(3) + 1/log2(5); IDCG = 1 + 1/log2(3).
        let dcg = 1.0 / 3f64.log2() + 1.0 / 5f64.log2();
        assert!(close(ndcg, dcg / (1.0 + 1.0 / 3f64.log2())), "{ndcg}");
        // AP = (1/2 + 2/4) / 2.
        assert!(close(map, 0.5), "{map}");
        assert!(close(recall, 1.0) && close(mrr, 0.5));
        // Cut at 2: only a counts; MAP divides by all relevant (trec_eval map_cut), IDCG over two positions.
        let (ndcg, map, recall, mrr) = query_metrics(&run, &r, 2);
        assert!(close(ndcg, (1.0 / 3f64.log2()) / (1.0 + 1.0 / 3f64.log2())), "{ndcg}");
        assert!(close(map, 0.25) && close(recall, 0.5) && close(mrr, 0.5));
        // Cut at 1: nothing relevant.
        assert_eq!(query_metrics(&run, &r, 1), (0.0, 0.0, 0.0, 0.0));
    }

    #[test]
    fn graded_ndcg_uses_linear_gain_and_ideal_from_qrels() {
        // Grades 2 and 1; the grade-2 document is not retrieved at all.
        let r = rel(&[("hi", 2), ("lo", 1)]);
        let (ndcg, map, recall, mrr) = query_metrics(&["lo", "z"], &r, 10);
        let idcg = 2.0 + 1.0 / 3f64.log2();
        assert!(close(ndcg, 1.0 / idcg), "{ndcg}");
        assert!(close(map, 0.5) && close(recall, 0.5) && close(mrr, 1.0));
        // Perfect ranking.
        assert!(close(query_metrics(&["hi", "lo"], &r, 10).0, 1.0));
    }

    #[test]
    fn mean_over_queries() {
        let (r1, r2) = (rel(&[("a", 1)]), rel(&[("b", 1)]));
        let s = score_runs(&[vec!["a", "b"], vec!["a", "c"]], &[&r1, &r2]);
        assert!(close(s.ndcg_at_10, 0.5) && close(s.mrr_at_10, 0.5) && close(s.recall_at_100, 0.5));
        assert_eq!(s.main_score, s.ndcg_at_10);
    }

    #[test]
    fn search_is_exact_excludes_own_id_and_breaks_ties_by_id() {
        let corpus = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.6, 0.8], vec![1.0, 0.0], vec![0.8, 0.6]];
        let ids = ["d0", "d1", "d2", "d3", "q1"];
        let queries = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        let hits = search(&queries, &corpus, &ids, &["q0", "q1"], 3);
        // d0 and d3 tie at 1.0: the larger id first, as trec_eval orders a run.
        let h0: Vec<&str> = hits[0].iter().map(|h| h.1).collect();
        assert_eq!(h0, ["d3", "d0", "q1"]);
        // Query q1 never retrieves the document with its own id.
        let h1: Vec<&str> = hits[1].iter().map(|h| h.1).collect();
        assert_eq!(h1, ["d1", "d2", "d3"]);
        assert!((hits[1][1].0 - 0.8).abs() < 1e-6);
    }

    #[test]
    fn search_matches_brute_force_over_many_blocks() {
        let mut seed = 1u64;
        let mut rnd = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let dim = 37;
        let corpus: Vec<Vec<f32>> = (0..700).map(|_| (0..dim).map(|_| rnd()).collect()).collect();
        let queries: Vec<Vec<f32>> = (0..45).map(|_| (0..dim).map(|_| rnd()).collect()).collect();
        let names: Vec<String> = (0..corpus.len()).map(|i| format!("d{i:04}")).collect();
        let ids: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let exclude = vec!["none"; queries.len()];
        let hits = search(&queries, &corpus, &ids, &exclude, 20);
        for (q, h) in queries.iter().zip(&hits) {
            let mut all: Vec<(f32, &str)> = corpus.iter().zip(&ids).map(|(d, &id)| (dot(q, d), id)).collect();
            all.sort_by(hit_order);
            assert_eq!(h.as_slice(), &all[..20]);
        }
    }

    #[test]
    fn fidelity_percentile() {
        let mut c: Vec<f64> = (1..=200).map(|i| i as f64 / 200.0).collect();
        let f = fidelity_stats("b", "d", &mut c);
        assert_eq!((f.n, f.min, f.p1), (200, 0.005, 0.01));
        assert!(close(f.mean, 100.5 / 200.0));
    }
}
