//! Comparison report: reads `<results>/<model>/{<Task>.json, bench.json, model_meta.json}` (STS and retrieval
//! results, benches) and optional external reference points, writes a Markdown decision document and SVG plots.

pub mod layout;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

use crate::bench::{fmt_ms, BenchResult};
use crate::data::is_cross_lingual;

pub const REPORT_FILE: &str = "eval-report.md";
pub const SCATTER_FILE: &str = "eval-quality-vs-latency.svg";
pub const BARS_FILE: &str = "eval-sts-tasks.svg";
pub const RETRIEVAL_FILE: &str = "eval-retrieval.svg";

/// Tasks in this order first, the rest alphabetically.
const TASK_ORDER: &[&str] = &["BIOSSES", "STSBenchmark", "STS17"];

/// Everything known about one model (one results subdirectory, or a reference file).
#[derive(Debug, Clone, Default)]
pub struct ModelRow {
    pub name: String,
    pub dir: String,
    pub quantization: Option<String>,
    pub size_bytes: Option<u64>,
    /// task → subset → cosine Spearman.
    pub scores: BTreeMap<String, BTreeMap<String, f64>>,
    pub bench: Option<BenchResult>,
    /// Retrieval task (`SciFact`) → scores.
    pub retrieval: BTreeMap<String, RetrievalRow>,
    /// The engine's model name (`deposium.model`), shared by a model's `-noprompt` twin.
    pub model: Option<String>,
    /// A `<model>-noprompt/` directory: retrieval without the query/document prompts.
    pub no_prompts: bool,
}

/// One retrieval result file (MTEB layout, `deposium.kind = "retrieval"`).
#[derive(Debug, Clone, Default)]
pub struct RetrievalRow {
    pub split: String,
    pub ndcg_at_10: f64,
    pub recall_at_100: Option<f64>,
    pub map_at_10: Option<f64>,
    pub mrr_at_10: Option<f64>,
    pub query_prompt: Option<String>,
    pub document_prompt: Option<String>,
    pub n_queries: Option<u64>,
    pub n_documents: Option<u64>,
    /// A slice of the task (`--max-queries` / `--max-corpus`), not the whole of it.
    pub subset: bool,
    /// Cosine of the document vectors to a baseline model's: (baseline, mean, p1, min).
    pub fidelity: Option<(String, f64, f64, f64)>,
}

impl ModelRow {
    /// Mean over a task's subsets.
    pub fn task_score(&self, task: &str) -> Option<f64> {
        let subsets = self.scores.get(task)?;
        (!subsets.is_empty()).then(|| subsets.values().sum::<f64>() / subsets.len() as f64)
    }

    /// Mean of task scores over `tasks`; None when one is missing.
    pub fn mean(&self, tasks: &[String]) -> Option<f64> {
        let v: Option<Vec<f64>> = tasks.iter().map(|t| self.task_score(t)).collect();
        v.filter(|v| !v.is_empty()).map(|v| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// Mean over cross-lingual subsets (`en-ar`...), if any.
    pub fn cross_lingual_mean(&self) -> Option<f64> {
        let v: Vec<f64> =
            self.scores.values().flat_map(|s| s.iter()).filter(|(k, _)| is_cross_lingual(k)).map(|(_, &v)| v).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    fn ms_per_text(&self, kind: &str, batch: usize) -> Option<f64> {
        self.bench.as_ref()?.scenario(kind, batch).map(|s| s.ms_per_text.p50)
    }

    /// Median ms per text in a batch of 5 short texts.
    pub fn batch5_ms(&self) -> Option<f64> {
        self.ms_per_text("short", 5)
    }

    /// Median ms for one short text.
    pub fn single_ms(&self) -> Option<f64> {
        self.ms_per_text("short", 1)
    }
}

/// One MTEB-style result file: task name, subset → main score, the whole document.
struct MtebFile {
    task: String,
    subsets: BTreeMap<String, f64>,
    doc: Value,
}

/// Read an MTEB-style result file; None for other JSON files.
fn read_mteb(path: &Path) -> Result<Option<MtebFile>> {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(path)?).with_context(|| format!("parsing {}", path.display()))?;
    let (Some(task), Some(scores)) = (v["task_name"].as_str(), v["scores"].as_object()) else {
        return Ok(None);
    };
    let mut subsets = BTreeMap::new();
    for entries in scores.values() {
        for e in entries.as_array().into_iter().flatten() {
            let subset = e["hf_subset"].as_str().unwrap_or("default").to_string();
            let score = e["main_score"].as_f64().with_context(|| format!("{}: no main_score", path.display()))?;
            subsets.insert(subset, score);
        }
    }
    Ok(Some(MtebFile { task: task.to_string(), subsets, doc: v }))
}

/// A retrieval result: `deposium.kind == "retrieval"`, or scores carrying `ndcg_at_10`.
fn is_retrieval(doc: &Value) -> bool {
    doc["deposium"]["kind"] == "retrieval"
        || doc["scores"].as_object().is_some_and(|s| s.values().any(|e| e[0].get("ndcg_at_10").is_some()))
}

fn prompt_label(name: &Value, text: &Value) -> Option<String> {
    match (name.as_str(), text.as_str()) {
        (Some(n), _) => Some(n.to_string()),
        (None, Some(t)) if !t.is_empty() => Some(format!("\"{t}\"")),
        _ => None,
    }
}

fn read_retrieval(path: &Path, doc: &Value) -> Result<RetrievalRow> {
    let scores = doc["scores"].as_object().context("no scores")?;
    let split = if scores.contains_key("test") {
        "test".to_string()
    } else {
        scores.keys().next().cloned().unwrap_or_default()
    };
    let e = &scores[&split][0];
    let ndcg = e["ndcg_at_10"]
        .as_f64()
        .or_else(|| e["main_score"].as_f64())
        .with_context(|| format!("{}: retrieval scores without ndcg_at_10", path.display()))?;
    let d = &doc["deposium"];
    let fid = if d["fidelity_to"].is_object() { &d["fidelity_to"] } else { &d["fidelity"] };
    let fidelity = match (fid["mean"].as_f64(), fid["p1"].as_f64(), fid["min"].as_f64()) {
        (Some(m), Some(p), Some(n)) => Some((fid["baseline"].as_str().unwrap_or("baseline").to_string(), m, p, n)),
        _ => None,
    };
    Ok(RetrievalRow {
        split,
        ndcg_at_10: ndcg,
        recall_at_100: e["recall_at_100"].as_f64(),
        map_at_10: e["map_at_10"].as_f64(),
        mrr_at_10: e["mrr_at_10"].as_f64(),
        query_prompt: prompt_label(&d["query_prompt_name"], &d["query_prompt"]),
        document_prompt: prompt_label(&d["document_prompt_name"], &d["document_prompt"]),
        n_queries: d["n_queries"].as_u64(),
        n_documents: d["n_documents"].as_u64(),
        subset: d["subset"].as_bool().unwrap_or(false),
        fidelity,
    })
}

/// Load every model subdirectory of `results`.
pub fn load_results(results: &Path) -> Result<Vec<ModelRow>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(results)
        .with_context(|| format!("reading {}", results.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut rows = Vec::new();
    for dir in dirs {
        let dir_name = dir.file_name().unwrap_or_default().to_string_lossy().to_string();
        let mut row = ModelRow { name: dir_name.clone(), dir: dir_name.clone(), ..Default::default() };
        row.no_prompts = dir_name.ends_with("-noprompt");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "json")) {
            let fname = f.file_name().unwrap_or_default().to_string_lossy();
            if fname == "bench.json" {
                let b: BenchResult = serde_json::from_str(&std::fs::read_to_string(f)?)
                    .with_context(|| format!("parsing {}", f.display()))?;
                row.name = b.model.clone();
                row.model.get_or_insert(b.model.clone());
                row.quantization.get_or_insert(b.quantization.clone());
                row.size_bytes.get_or_insert(b.size_bytes);
                row.bench = Some(b);
            } else if fname == "model_meta.json" {
                let m: Value = serde_json::from_str(&std::fs::read_to_string(f)?)?;
                row.quantization = m["quantization"].as_str().map(String::from).or(row.quantization);
                row.size_bytes = m["size_bytes"].as_u64().or(row.size_bytes);
            } else if let Some(MtebFile { task, subsets, doc }) = read_mteb(f)? {
                if is_retrieval(&doc) {
                    let r = read_retrieval(f, &doc)?;
                    row.no_prompts |= doc["deposium"]["no_prompts"].as_bool().unwrap_or(false);
                    if let Some(model) = doc["deposium"]["model"].as_str() {
                        row.model = Some(model.to_string());
                        if row.bench.is_none() && row.scores.is_empty() {
                            row.name = model.to_string();
                        }
                    }
                    row.retrieval.insert(task, r);
                    continue;
                }
                if let Some(model) = doc["deposium"]["model"].as_str() {
                    row.model = Some(model.to_string());
                    row.name = match doc["deposium"]["dimensions"].as_u64() {
                        Some(d) => format!("{model} d={d}"),
                        None => model.to_string(),
                    };
                }
                row.scores.insert(task, subsets);
            }
        }
        if row.no_prompts && !row.name.ends_with("(no prompts)") {
            row.name = format!("{} (no prompts)", row.name);
        }
        if !row.scores.is_empty() || row.bench.is_some() || !row.retrieval.is_empty() {
            rows.push(row);
        }
    }
    Ok(rows)
}

/// A reference file like `sts_reference.json`: `{"model": ..., "scores": {"STS17_en-en_test": 0.90, ...}}`.
pub fn load_reference(path: &Path) -> Result<ModelRow> {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?)?;
    let name = format!("reference: {}", v["model"].as_str().unwrap_or("?"));
    let mut row = ModelRow { name, dir: path.display().to_string(), ..Default::default() };
    for (key, score) in v["scores"].as_object().context("reference file has no 'scores' object")? {
        let key = key.rsplit_once('_').map_or(key.as_str(), |(k, _split)| k);
        let (task, subset) = key.split_once('_').unwrap_or((key, "default"));
        let score = score.as_f64().with_context(|| format!("reference score for {key} is not a number"))?;
        row.scores.entry(task.to_string()).or_default().insert(subset.to_string(), score);
    }
    Ok(row)
}

/// Index of the baseline: named, else the first whose name contains `fp32`, else the first.
pub fn pick_baseline(rows: &[ModelRow], name: Option<&str>) -> Result<usize> {
    if let Some(n) = name {
        return rows.iter().position(|r| r.name.eq_ignore_ascii_case(n) || r.dir.eq_ignore_ascii_case(n)).with_context(
            || {
                format!(
                    "baseline '{n}' not among: {}",
                    rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
                )
            },
        );
    }
    Ok(rows.iter().position(|r| r.name.contains("fp32") && !r.name.starts_with("reference")).unwrap_or(0))
}

fn task_list(rows: &[ModelRow]) -> Vec<String> {
    let mut tasks: Vec<String> = rows.iter().flat_map(|r| r.scores.keys().cloned()).collect();
    tasks.sort_by_key(|t| (TASK_ORDER.iter().position(|o| o == t).unwrap_or(usize::MAX), t.clone()));
    tasks.dedup();
    tasks
}

/// The tasks a mean is taken over: the baseline's (a model missing one of them gets no mean).
fn mean_tasks(rows: &[ModelRow], base: usize) -> Vec<String> {
    let tasks = task_list(&rows[base..=base]);
    if tasks.is_empty() {
        task_list(rows)
    } else {
        tasks
    }
}

/// (task, subset) columns in display order.
fn subset_list(rows: &[ModelRow], tasks: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for t in tasks {
        let mut subsets: Vec<String> =
            rows.iter().filter_map(|r| r.scores.get(t)).flat_map(|s| s.keys().cloned()).collect();
        subsets.sort();
        subsets.dedup();
        out.extend(subsets.into_iter().map(|s| (t.clone(), s)));
    }
    out
}

fn label(task: &str, subset: &str) -> String {
    if subset == "default" {
        task.to_string()
    } else {
        format!("{task} {subset}")
    }
}

fn f4(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.4}"))
}

fn delta(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) => format!("{:+.4}", v - b),
        _ => "—".into(),
    }
}

fn size(bytes: Option<u64>) -> String {
    bytes.map_or("—".into(), |b| {
        if b >= 1_000_000_000 {
            format!("{:.2} GB", b as f64 / 1e9)
        } else {
            format!("{:.1} MB", b as f64 / 1e6)
        }
    })
}

fn speedup(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) if v > 0.0 && b / v >= 100.0 => format!("{:.0}×", b / v),
        (Some(v), Some(b)) if v > 0.0 => format!("{:.1}×", b / v),
        _ => "—".into(),
    }
}

/// The Markdown decision document.
pub fn markdown(rows: &[ModelRow], base: usize, results_dir: &Path, plots: &[(&str, &str)]) -> String {
    let tasks = task_list(rows);
    let subsets = subset_list(rows, &tasks);
    let mtasks = mean_tasks(rows, base);
    let b = &rows[base];
    let mut md = String::new();
    md += "# Embedding models: quality vs speed\n\n";
    md += &format!(
        "Generated by `deposium-embed report` from `{}`. Baseline: **{}**. Quality: Spearman correlation of cosine \
         similarity with gold scores (MTEB STS main score); a task with subsets (STS17) scores the mean of its subsets. \
         Latency: median of `deposium-embed bench` calls, short texts ≈16 tokens with the STS prompt.\n\n",
        results_dir.display(),
        b.name
    );

    // Decision table.
    md += "## Summary\n\n";
    md += &format!(
        "| model | quant | on disk | {} | mean | Δ mean | worst Δ (subset) | cross-lingual | ms/text (batch 5) | ms (1 text) | speedup b5 | speedup 1 |\n",
        tasks.join(" | ")
    );
    md += &format!("|---|---|---|{}---|---|---|---|---|---|---|---|\n", "---|".repeat(tasks.len()));
    for (i, r) in rows.iter().enumerate() {
        let worst = subsets
            .iter()
            .filter_map(|(t, s)| {
                let v = r.scores.get(t)?.get(s)?;
                let bv = b.scores.get(t)?.get(s)?;
                Some((v - bv, label(t, s)))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let name = if i == base { format!("**{}** (baseline)", r.name) } else { r.name.clone() };
        md += &format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.quantization.as_deref().unwrap_or("—"),
            size(r.size_bytes),
            tasks.iter().map(|t| f4(r.task_score(t))).collect::<Vec<_>>().join(" | "),
            f4(r.mean(&mtasks)),
            if i == base { "—".into() } else { delta(r.mean(&mtasks), b.mean(&mtasks)) },
            match worst {
                Some((d, l)) if i != base => format!("{d:+.4} ({l})"),
                _ => "—".into(),
            },
            f4(r.cross_lingual_mean()),
            r.batch5_ms().map_or("—".into(), fmt_ms),
            r.single_ms().map_or("—".into(), fmt_ms),
            speedup(r.batch5_ms(), b.batch5_ms()),
            speedup(r.single_ms(), b.single_ms()),
        );
    }
    md += "\nΔ: difference to the baseline's score (negative: worse). Cross-lingual: mean over the subsets whose two \
           sentences are in different languages (STS17 en-ar, en-tr, es-en...).\n\n";
    md += &format!("Mean: over {}.\n\n", mtasks.join(", "));
    md += &findings(rows, base, &mtasks);

    for (file, caption) in plots {
        md += &format!("![{caption}]({file})\n\n");
    }

    // Per-subset table.
    md += "## Quality per task and subset\n\n";
    md += &format!("| task | {} |\n", rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(" | "));
    md += &format!("|---|{}\n", "---|".repeat(rows.len()));
    for (t, s) in &subsets {
        let bv = b.scores.get(t).and_then(|m| m.get(s)).copied();
        let cells: Vec<String> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let v = r.scores.get(t).and_then(|m| m.get(s)).copied();
                if i == base || v.is_none() || bv.is_none() {
                    f4(v)
                } else {
                    format!("{} ({})", f4(v), delta(v, bv))
                }
            })
            .collect();
        md += &format!("| {} | {} |\n", label(t, s), cells.join(" | "));
    }

    // Latency table.
    let benched: Vec<&ModelRow> = rows.iter().filter(|r| r.bench.is_some()).collect();
    if !benched.is_empty() {
        md += "\n## Latency (median ms per text; per call for batch 1)\n\n";
        md += "| model | threads | short ×1 | short ×5 | short ×32 | long ×1 | long ×5 | long ×32 | short texts/s (×32) | load s | peak RSS |\n";
        md += "|---|---|---|---|---|---|---|---|---|---|---|\n";
        for r in benched {
            let bench = r.bench.as_ref().expect("filtered");
            let cell = |kind: &str, batch: usize| r.ms_per_text(kind, batch).map_or("—".into(), fmt_ms);
            md += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} |\n",
                r.name,
                bench.threads.map_or("default".into(), |t| t.to_string()),
                cell("short", 1),
                cell("short", 5),
                cell("short", 32),
                cell("long", 1),
                cell("long", 5),
                cell("long", 32),
                bench.scenario("short", 32).map_or("—".into(), |s| format!("{:.0}", s.texts_per_s)),
                bench.load_seconds,
                size(bench.peak_rss_bytes),
            );
        }
        let cpus: Vec<String> =
            rows.iter().filter_map(|r| r.bench.as_ref()).map(|b| format!("{} ({} CPUs)", b.cpu, b.cpus)).collect();
        if let Some(cpu) = cpus.first() {
            md += &format!(
                "\nMeasured on {cpu}. Compare ratios from one run: absolute times move on a shared machine.\n"
            );
        }
    }
    md
}

/// Short automatic findings: speed/quality of each model against the baseline.
fn findings(rows: &[ModelRow], base: usize, tasks: &[String]) -> String {
    let b = &rows[base];
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        if i == base {
            continue;
        }
        let mut parts = Vec::new();
        if let (Some(v), Some(bv)) = (r.batch5_ms(), b.batch5_ms()) {
            parts.push(format!("{} the baseline's speed (batch 5)", speedup(Some(v), Some(bv))));
        }
        if let (Some(m), Some(bm)) = (r.mean(tasks), b.mean(tasks)) {
            parts.push(format!("mean STS {:+.4}", m - bm));
        }
        if let (Some(c), Some(bc)) = (r.cross_lingual_mean(), b.cross_lingual_mean()) {
            if bc - c > 0.1 {
                parts.push(format!("cross-lingual quality collapses ({c:.3} vs {bc:.3}): unusable across languages"));
            } else {
                parts.push(format!("cross-lingual {:+.4}", c - bc));
            }
        }
        if !parts.is_empty() {
            out += &format!("- **{}**: {}.\n", r.name, parts.join(", "));
        }
    }
    if !out.is_empty() {
        out += "\n";
    }
    out
}

fn color(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    COLORS[i % COLORS.len()]
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e:?}")
}

/// An axis value without trailing zeros: `0.001`, `0.5`, `10`.
fn axis_number(x: f64) -> String {
    if x >= 1.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.6}").trim_end_matches('0').to_string()
    }
}

/// A labelled point of a scatter, in data coordinates.
struct Mark {
    x: f64,
    y: f64,
    color: RGBColor,
    shape: Shape,
    label: Option<(String, u32)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Filled,
    Hollow,
    Square,
    Triangle,
}

const MARKER_R: i32 = 7;

/// Draw marks on `chart`, then their labels on `root` placed by [`layout::place_labels`] (no label over
/// another label or a marker); a thin leader line joins a label placed away from its point. Returns the boxes.
fn draw_marks<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    to_px: &dyn Fn(f64, f64) -> (i32, i32),
    area: layout::Rect,
    marks: &[Mark],
    extra_obstacles: &[layout::Rect],
) -> Result<Vec<layout::Rect>>
where
    DB::ErrorType: 'static,
{
    let px: Vec<(i32, i32)> = marks.iter().map(|m| to_px(m.x, m.y)).collect();
    for (m, &(x, y)) in marks.iter().zip(&px) {
        let r = if m.shape == Shape::Square { 4 } else { MARKER_R };
        match m.shape {
            Shape::Filled => root.draw(&Circle::new((x, y), r, m.color.filled())),
            Shape::Hollow => root.draw(&Circle::new((x, y), r, m.color.stroke_width(2))),
            Shape::Square => root.draw(&Rectangle::new([(x - r, y - r), (x + r, y + r)], m.color.filled())),
            Shape::Triangle => root.draw(&TriangleMarker::new((x, y), r + 1, m.color.filled())),
        }
        .map_err(plot_err)?;
    }
    let mut obstacles: Vec<layout::Rect> =
        px.iter().map(|&(x, y)| layout::Rect::around(x as f64, y as f64, MARKER_R as f64)).collect();
    obstacles.extend_from_slice(extra_obstacles);
    let mid = (area.x0 + area.x1) / 2.0;
    let labelled: Vec<usize> = (0..marks.len()).filter(|&i| marks[i].label.is_some()).collect();
    let requests: Vec<layout::Label> = labelled
        .iter()
        .map(|&i| {
            let (text, size) = marks[i].label.as_ref().expect("filtered");
            layout::Label {
                anchor: (px[i].0 as f64, px[i].1 as f64),
                size: layout::text_box(text, svg_px(*size)),
                prefer_left: px[i].0 as f64 > mid,
            }
        })
        .collect();
    let boxes = layout::place_labels(&requests, &obstacles, area, MARKER_R as f64 + 5.0);
    for (&i, b) in labelled.iter().zip(&boxes) {
        let (text, size) = marks[i].label.as_ref().expect("filtered");
        let (ax, ay) = (px[i].0 as f64, px[i].1 as f64);
        let (nx, ny) = b.nearest_point(ax, ay);
        if ((nx - ax).powi(2) + (ny - ay).powi(2)).sqrt() > MARKER_R as f64 + 9.0 {
            root.draw(&PathElement::new(
                vec![(ax as i32, ay as i32), (nx as i32, ny as i32)],
                m_color(&marks[i]).mix(0.6).stroke_width(1),
            ))
            .map_err(plot_err)?;
        }
        // Text drawn from the box's top-left; the box's extra height is the line gap.
        let tc = m_color(&marks[i]);
        let style = TextStyle::from(("sans-serif", *size).into_font()).color(&tc).pos(Pos::new(HPos::Left, VPos::Top));
        root.draw(&Text::new(text.clone(), (b.x0 as i32, (b.y0 + 0.1 * svg_px(*size)) as i32), style))
            .map_err(plot_err)?;
    }
    Ok(boxes)
}

/// The pixel size plotters' SVG backend writes for a font of `size` (it divides by 1.24).
fn svg_px(size: u32) -> f64 {
    size as f64 / 1.24
}

/// Label text colour: the mark's, darkened a little for contrast on white.
fn m_color(m: &Mark) -> RGBColor {
    let RGBColor(r, g, b) = m.color;
    RGBColor((r as f64 * 0.8) as u8, (g as f64 * 0.8) as u8, (b as f64 * 0.8) as u8)
}

const REF_COLOR: RGBColor = RGBColor(60, 60, 60);

/// Scatter against ms/text (batch of 5 short texts, log scale): mean STS (filled) and, where the data has
/// cross-lingual subsets, their mean (hollow), one colour per model; with STS reference points, their score (▲)
/// beside our models' score on the same task (■). False when no model has both axes. Returns the label boxes.
pub fn plot_quality_vs_latency(
    rows: &[ModelRow],
    tasks: &[String],
    refs: &[ReferencePoint],
    path: &Path,
) -> Result<Option<Vec<layout::Rect>>> {
    let refs: Vec<&ReferencePoint> =
        refs.iter().filter(|p| p.metric == RefMetric::Sts && p.latency_ms.is_some() && p.same_machine(rows)).collect();
    let ref_tasks: Vec<&str> = {
        let mut t: Vec<&str> = refs.iter().map(|p| p.task()).collect();
        t.sort_unstable();
        t.dedup();
        t
    };
    let mut marks = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let (Some(ms), Some(mean)) = (r.batch5_ms().filter(|&m| m > 0.0), r.mean(tasks)) else { continue };
        let c = color(i);
        marks.push(Mark {
            x: ms,
            y: mean,
            color: c,
            shape: Shape::Filled,
            label: Some((format!("{} ({mean:.3}, {} ms)", r.name, fmt_ms(ms)), 14)),
        });
        if let Some(x) = r.cross_lingual_mean() {
            marks.push(Mark {
                x: ms,
                y: x,
                color: c,
                shape: Shape::Hollow,
                label: Some((format!("cross-lingual {x:.3}"), 13)),
            });
        }
        if let [t] = ref_tasks[..] {
            if let Some(v) = r.task_score(t) {
                marks.push(Mark { x: ms, y: v, color: c, shape: Shape::Square, label: None });
            }
        }
    }
    if marks.is_empty() {
        return Ok(None);
    }
    for p in &refs {
        let ms = p.latency_ms.expect("filtered");
        marks.push(Mark {
            x: ms,
            y: p.score,
            color: REF_COLOR,
            shape: Shape::Triangle,
            label: Some((format!("{} ({:.3}, {} ms)", p.name, p.score, fmt_ms(ms)), 13)),
        });
    }
    let (xmin, xmax) = marks.iter().fold((f64::INFINITY, 0f64), |(lo, hi), m| (lo.min(m.x), hi.max(m.x)));
    let (ymin, ymax) = marks.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), m| (lo.min(m.y), hi.max(m.y)));
    let (x0, x1) = (xmin / 6.0, xmax * 6.0);
    let (w, h) = (1000u32, 720u32);
    let root = SVGBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let centered = TextStyle::from(("sans-serif", 24).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    root.draw(&Text::new("STS quality vs latency", (w as i32 / 2, 12), centered)).map_err(plot_err)?;
    let mut legend = vec![format!("● mean of {}", tasks.join(", "))];
    if rows.iter().any(|r| r.cross_lingual_mean().is_some()) {
        legend.push("○ mean of cross-lingual subsets".into());
    }
    match &ref_tasks[..] {
        [] => {}
        [t] => legend.push(format!("■ our {t}   ▲ external runtimes, {t}")),
        _ => legend.push("▲ external runtimes (task in the table)".into()),
    }
    root.draw(&Text::new(legend.join("   "), (90, 46), ("sans-serif", 14))).map_err(plot_err)?;
    let (_, body) = root.split_vertically(70);
    let pad = 0.06 * (ymax - ymin).max(0.05);
    let mut chart = ChartBuilder::on(&body)
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((x0..x1).log_scale(), (ymin - pad).max(-1.0)..(ymax + pad).min(1.0))
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("ms per text, batch of 5 short texts (log scale)")
        .y_desc("STS Spearman")
        .x_label_formatter(&|x| axis_number(*x))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(plot_err)?;
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    let area = layout::Rect { x0: xr.start as f64, y0: yr.start as f64, x1: xr.end as f64, y1: yr.end as f64 };
    let to_px = |x: f64, y: f64| chart.backend_coord(&(x, y));
    let boxes = draw_marks(&root, &to_px, area, &marks, &[])?;
    root.present().map_err(plot_err)?;
    Ok(Some(boxes))
}

/// nDCG@10 against documents/s (bench `documents`, log scale): prompts (filled), no prompts (hollow, its model's
/// colour and speed), external points with a speed (▲); published scores without speed as dashed lines named in
/// a side list. None when no row has both axes. Returns the label boxes (points, then side list).
pub fn plot_retrieval(
    rows: &[ModelRow],
    task: &str,
    refs: &[ReferencePoint],
    path: &Path,
) -> Result<Option<Vec<layout::Rect>>> {
    let mut marks = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let Some(s) = r.retrieval.get(task) else { continue };
        let Some(d) = bench_of(rows, r).and_then(documents_scenario) else { continue };
        let c = color(color_index(rows, i));
        let (shape, label) = if r.no_prompts {
            (Shape::Hollow, format!("no prompts {:.3}", s.ndcg_at_10))
        } else {
            (Shape::Filled, format!("{} ({:.3}, {} docs/s)", r.name, s.ndcg_at_10, per_s(d.texts_per_s)))
        };
        marks.push(Mark { x: d.texts_per_s, y: s.ndcg_at_10, color: c, shape, label: Some((label, 14)) });
    }
    if marks.is_empty() {
        return Ok(None);
    }
    let task_refs: Vec<&ReferencePoint> =
        refs.iter().filter(|p| p.metric == RefMetric::Retrieval && p.task() == task).collect();
    for p in task_refs.iter().filter(|p| p.docs_per_s.is_some() && p.same_machine(rows)) {
        let x = p.docs_per_s.expect("filtered");
        marks.push(Mark {
            x,
            y: p.score,
            color: REF_COLOR,
            shape: Shape::Triangle,
            label: Some((format!("{} ({:.3})", p.name, p.score), 13)),
        });
    }
    let lines: Vec<&ReferencePoint> = task_refs.iter().copied().filter(|p| p.docs_per_s.is_none()).collect();
    let ys = marks.iter().map(|m| m.y).chain(lines.iter().map(|p| p.score));
    let (ymin, ymax) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (xmin, xmax) = marks.iter().fold((f64::INFINITY, 0f64), |(lo, hi), m| (lo.min(m.x), hi.max(m.x)));
    let (x0, x1) = (xmin / 6.0, xmax * 6.0);
    let side = if lines.is_empty() { 0 } else { 300 };
    let (w, h) = (1000 + side, 680u32);
    let root = SVGBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let centered = TextStyle::from(("sans-serif", 24).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    root.draw(&Text::new(
        format!("{task} retrieval quality vs long-document throughput"),
        (w as i32 / 2, 12),
        centered,
    ))
    .map_err(plot_err)?;
    let mut legend = vec!["● with the query / document prompts".to_string()];
    if rows.iter().any(|r| r.no_prompts && r.retrieval.contains_key(task)) {
        legend.push("○ the same model without prompts".into());
    }
    if !lines.is_empty() {
        legend.push("- - published scores of other models".into());
    }
    root.draw(&Text::new(legend.join("   "), (90, 46), ("sans-serif", 14))).map_err(plot_err)?;
    let (_, body) = root.split_vertically(70);
    let (plot_area, side_area) = body.split_horizontally(w - side);
    let pad = 0.08 * (ymax - ymin).max(0.05);
    let mut chart = ChartBuilder::on(&plot_area)
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((x0..x1).log_scale(), (ymin - pad).max(0.0)..(ymax + pad).min(1.0))
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("documents per second, bench documents scenario (log scale)")
        .y_desc(format!("{task} nDCG@10"))
        .x_label_formatter(&|x| axis_number(*x))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(plot_err)?;
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    let area = layout::Rect { x0: xr.start as f64, y0: yr.start as f64, x1: xr.end as f64, y1: yr.end as f64 };
    let gray = RGBColor(150, 150, 150);
    for p in &lines {
        let (_, y) = chart.backend_coord(&(x0, p.score));
        let mut x = xr.start;
        while x < xr.end {
            root.draw(&PathElement::new(vec![(x, y), ((x + 6).min(xr.end), y)], gray.stroke_width(1)))
                .map_err(plot_err)?;
            x += 10;
        }
    }
    let to_px = |x: f64, y: f64| chart.backend_coord(&(x, y));
    // Labels keep off the dashed lines too.
    let line_boxes: Vec<layout::Rect> = lines
        .iter()
        .map(|p| {
            let y = chart.backend_coord(&(x0, p.score)).1 as f64;
            layout::Rect { x0: area.x0, y0: y - 1.0, x1: area.x1, y1: y + 1.0 }
        })
        .collect();
    let mut boxes = draw_marks(&root, &to_px, area, &marks, &line_boxes)?;
    if !lines.is_empty() {
        // Side list: one name per dashed line, spread apart vertically, joined to its line's end.
        let (sx, _) = side_area.get_base_pixel();
        let ys: Vec<f64> = lines.iter().map(|p| chart.backend_coord(&(x0, p.score)).1 as f64).collect();
        let size = 13u32;
        let px = svg_px(size);
        let spread = layout::spread_1d(&ys, 1.4 * px, area.y0 + px, area.y1 - px);
        for ((p, &y), &ly) in lines.iter().zip(&ys).zip(&spread) {
            let text = format!("{} {:.3}", p.name, p.score);
            let (tw, th) = layout::text_box(&text, px);
            let bx = layout::Rect::new(sx as f64 + 14.0, ly - th / 2.0, tw, th);
            root.draw(&PathElement::new(vec![(xr.end, y as i32), (bx.x0 as i32 - 3, ly as i32)], gray.stroke_width(1)))
                .map_err(plot_err)?;
            let style = TextStyle::from(("sans-serif", size).into_font())
                .color(&REF_COLOR)
                .pos(Pos::new(HPos::Left, VPos::Center));
            root.draw(&Text::new(text, (bx.x0 as i32, ly as i32), style)).map_err(plot_err)?;
            boxes.push(bx);
        }
    }
    root.present().map_err(plot_err)?;
    Ok(Some(boxes))
}

/// Grouped bars: one group per task/subset, one bar per model (models without scores left out).
pub fn plot_tasks(rows: &[ModelRow], subsets: &[(String, String)], path: &Path) -> Result<()> {
    let rows: Vec<(usize, &ModelRow)> = rows.iter().enumerate().filter(|(_, r)| !r.scores.is_empty()).collect();
    let n = subsets.len().max(1);
    let width = (160 + 30 * rows.len().max(3) * n).max(800) as u32;
    let legend_rows = rows.len().div_ceil(3) as u32;
    let root = SVGBackend::new(path, (width, 600 + 22 * legend_rows)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (top, body) = root.split_vertically(50 + 22 * legend_rows);
    let centered = |size: u32| TextStyle::from(("sans-serif", size).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    top.draw(&Text::new("STS cosine Spearman per task", (width as i32 / 2, 12), centered(24))).map_err(plot_err)?;
    for (k, (m, r)) in rows.iter().enumerate() {
        let (x, y) = (80 + (k % 3) as i32 * ((width as i32 - 100) / 3), 48 + (k / 3) as i32 * 22);
        top.draw(&Rectangle::new([(x, y), (x + 14, y + 14)], color(*m).filled())).map_err(plot_err)?;
        top.draw(&Text::new(r.name.clone(), (x + 20, y), ("sans-serif", 15))).map_err(plot_err)?;
    }

    let lowest = rows.iter().flat_map(|(_, r)| r.scores.values().flat_map(|s| s.values())).fold(0f64, |a, &b| a.min(b));
    let y0 = (lowest - 0.05).min(0.0);
    let mut chart = ChartBuilder::on(&body)
        .margin(20)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n as f64, y0..1.0)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("Spearman")
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()
        .map_err(plot_err)?;
    let w = 0.8 / rows.len().max(1) as f64;
    for (k, (m, r)) in rows.iter().enumerate() {
        let bars: Vec<(f64, f64)> = subsets
            .iter()
            .enumerate()
            .filter_map(|(i, (t, s))| Some((i as f64 + 0.1 + k as f64 * w, *r.scores.get(t)?.get(s)?)))
            .collect();
        chart
            .draw_series(bars.iter().map(|&(x0, v)| Rectangle::new([(x0, 0.0), (x0 + w * 0.9, v)], color(*m).filled())))
            .map_err(plot_err)?;
        // Value on top of each bar.
        for &(x0, v) in &bars {
            let (px, py) = chart.backend_coord(&(x0 + w * 0.45, v.max(0.0)));
            root.draw(&Text::new(format!("{:.2}", v).trim_start_matches('0').to_string(), (px, py - 14), centered(11)))
                .map_err(plot_err)?;
        }
    }
    for (i, (t, s)) in subsets.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, y0));
        root.draw(&Text::new(label(t, s), (px, py + 8), centered(14))).map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Build the report in `out`; returns the Markdown path.
pub fn write_report(results: &Path, baseline: Option<&str>, reference: Option<&Path>, out: &Path) -> Result<PathBuf> {
    write_report_with(results, baseline, reference, None, out)
}

/// [`write_report`] with external reference points (`report --references FILE`).
pub fn write_report_with(
    results: &Path,
    baseline: Option<&str>,
    reference: Option<&Path>,
    references: Option<&Path>,
    out: &Path,
) -> Result<PathBuf> {
    let all = load_results(results)?;
    if all.is_empty() {
        bail!("no eval or bench results under {} (expected one subdirectory per model)", results.display());
    }
    let refs = match references {
        Some(p) => load_references(p)?,
        None => Vec::new(),
    };
    // STS sections: rows with STS scores or a bench (a retrieval-only `-noprompt` row has neither).
    let mut rows: Vec<ModelRow> = all.iter().filter(|r| !r.scores.is_empty() || r.bench.is_some()).cloned().collect();
    if let Some(r) = reference {
        rows.push(load_reference(r)?);
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut md;
    let mut sts_base = None;
    if rows.is_empty() {
        md = format!(
            "# Embedding models: quality vs speed\n\nGenerated by `deposium-embed report` from `{}`.\n\n",
            results.display()
        );
    } else {
        let base = pick_baseline(&rows, baseline)?;
        sts_base = Some(rows[base].name.clone());
        let tasks = task_list(&rows);
        let subsets = subset_list(&rows, &tasks);
        let mut plots = Vec::new();
        if plot_quality_vs_latency(&rows, &mean_tasks(&rows, base), &refs, &out.join(SCATTER_FILE))?.is_some() {
            plots.push((SCATTER_FILE, "quality vs latency"));
        }
        if !subsets.is_empty() {
            plot_tasks(&rows, &subsets, &out.join(BARS_FILE))?;
            plots.push((BARS_FILE, "STS per task"));
        }
        md = markdown(&rows, base, results, &plots);
        md += "\n";
        md += &references_markdown(&refs, &rows);
    }
    md += &documents_markdown(&all);
    let tasks = retrieval_tasks(&all);
    for (k, task) in tasks.iter().enumerate() {
        // The first retrieval task gets the plot file; others are listed without one.
        let plot = if k == 0 && plot_retrieval(&all, task, &refs, &out.join(RETRIEVAL_FILE))?.is_some() {
            Some(RETRIEVAL_FILE)
        } else {
            None
        };
        md += &retrieval_markdown(&all, task, sts_base.as_deref(), &refs, plot);
    }
    let path = out.join(REPORT_FILE);
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// What an external reference point measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RefMetric {
    /// STS cosine Spearman (of `task`, STSBenchmark by default); `latency_ms`: ms per text in a batch of 5.
    Sts,
    /// Retrieval nDCG@10 (of `task`, SciFact by default); `docs_per_s`: documents embedded per second.
    Retrieval,
}

/// An external point (another runtime, a published score) from `report --references FILE`.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct ReferencePoint {
    pub name: String,
    pub score: f64,
    #[serde(default)]
    pub latency_ms: Option<f64>,
    #[serde(default)]
    pub docs_per_s: Option<f64>,
    pub metric: RefMetric,
    #[serde(default)]
    pub task: Option<String>,
    /// The machine the numbers come from.
    #[serde(default)]
    pub machine: Option<String>,
    /// A latency from one machine kind: drawn only when a benched model's `cpu` contains this (case-insensitive).
    #[serde(default)]
    pub cpu: Option<String>,
    pub source: String,
}

impl ReferencePoint {
    /// Whether this point's speed was measured on the machine kind of `rows`' benches (always, without `cpu`).
    pub fn same_machine(&self, rows: &[ModelRow]) -> bool {
        self.cpu.as_ref().is_none_or(|c| {
            let c = c.to_lowercase();
            rows.iter().filter_map(|r| r.bench.as_ref()).any(|b| b.cpu.to_lowercase().contains(&c))
        })
    }

    pub fn task(&self) -> &str {
        self.task.as_deref().unwrap_or(match self.metric {
            RefMetric::Sts => "STSBenchmark",
            RefMetric::Retrieval => "SciFact",
        })
    }
}

/// Read a JSON array of reference points; errors name the file (and line for JSON errors, entry otherwise).
pub fn load_references(path: &Path) -> Result<Vec<ReferencePoint>> {
    let raw = std::fs::read_to_string(path).with_context(|| format!("reading references {}", path.display()))?;
    let points: Vec<ReferencePoint> = serde_json::from_str(&raw).map_err(|e| {
        anyhow::anyhow!(
            "{}:{}: {e} (expected a JSON array of {{\"name\", \"score\", \"latency_ms\" or \"docs_per_s\", \"metric\": \"sts\"|\"retrieval\", \"source\"}})",
            path.display(),
            e.line()
        )
    })?;
    for (i, p) in points.iter().enumerate() {
        let at = || format!("{}: entry {} ('{}')", path.display(), i + 1, p.name);
        if p.name.trim().is_empty() || p.source.trim().is_empty() {
            bail!("{}: empty name or source", at());
        }
        if !p.score.is_finite() || !(-1.0..=1.0).contains(&p.score) {
            bail!("{}: score {} is not in [-1, 1]", at(), p.score);
        }
        for (key, v) in [("latency_ms", p.latency_ms), ("docs_per_s", p.docs_per_s)] {
            if v.is_some_and(|v| !v.is_finite() || v <= 0.0) {
                bail!("{}: {key} must be a positive number", at());
            }
        }
    }
    Ok(points)
}

/// The `documents` scenario a row's speed comes from: the largest batch (the indexing case).
pub fn documents_scenario(b: &BenchResult) -> Option<&crate::bench::Scenario> {
    b.scenarios.iter().filter(|s| s.kind == "documents").max_by_key(|s| s.batch)
}

/// The bench of a row, or of its model's other row (a `-noprompt` twin shares its model's speed).
fn bench_of<'a>(rows: &'a [ModelRow], r: &'a ModelRow) -> Option<&'a BenchResult> {
    r.bench.as_ref().or_else(|| {
        let m = r.model.as_deref()?;
        rows.iter().filter_map(|o| o.bench.as_ref()).find(|b| b.model == m)
    })
}

/// Colour index of a row: a `-noprompt` twin takes its model's.
fn color_index(rows: &[ModelRow], i: usize) -> usize {
    let r = &rows[i];
    if r.no_prompts {
        if let Some(j) = rows.iter().position(|o| !o.no_prompts && o.model.is_some() && o.model == r.model) {
            return j;
        }
    }
    i
}

/// The retrieval baseline for `task`: the STS baseline's row with prompts, else the first with `fp32` in its
/// name, else the first row with scores.
fn retrieval_baseline(rows: &[ModelRow], task: &str, sts_base: Option<&str>) -> Option<usize> {
    let with: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].retrieval.contains_key(task)).collect();
    let pick = |f: &dyn Fn(&ModelRow) -> bool| with.iter().copied().find(|&i| f(&rows[i]));
    sts_base
        .and_then(|b| pick(&|r: &ModelRow| !r.no_prompts && r.name == b))
        .or_else(|| pick(&|r: &ModelRow| !r.no_prompts && r.name.contains("fp32")))
        .or_else(|| with.first().copied())
}

fn retrieval_tasks(rows: &[ModelRow]) -> Vec<String> {
    let mut t: Vec<String> = rows.iter().flat_map(|r| r.retrieval.keys().cloned()).collect();
    t.sort();
    t.dedup();
    t
}

fn per_s(v: f64) -> String {
    crate::bench::fmt_rate(v)
}

/// The retrieval section of `task`: table, the no-prompt loss, the plot, external points.
pub fn retrieval_markdown(
    rows: &[ModelRow],
    task: &str,
    sts_base: Option<&str>,
    refs: &[ReferencePoint],
    plot: Option<&str>,
) -> String {
    let Some(base) = retrieval_baseline(rows, task, sts_base) else { return String::new() };
    let bv = rows[base].retrieval[task].ndcg_at_10;
    let mut md = format!("## Retrieval: {task}\n\n");
    md += "nDCG@10 is the main score (MTEB). Prompts: the model's `query` prompt on queries and `document` prompt on \
           documents; \"no prompts\" rows embed both bare, as a client that sends only a model name gets them. \
           Documents/s: `bench` documents scenario, largest batch.\n\n";
    md += "| model | prompts (query / document) | nDCG@10 | Δ | recall@100 | MAP@10 | MRR@10 | cosine to baseline, mean / p1 / min | documents/s | tokens/s | queries × documents |\n";
    md += "|---|---|---|---|---|---|---|---|---|---|---|\n";
    // A no-prompt row right after its model's row.
    let twin_of = |i: usize| color_index(rows, i);
    let mut order: Vec<usize> = (0..rows.len()).filter(|&i| twin_of(i) == i).collect();
    for i in (0..rows.len()).filter(|&i| twin_of(i) != i) {
        let at = order.iter().position(|&j| j == twin_of(i)).map_or(order.len(), |p| p + 1);
        order.insert(at, i);
    }
    for i in order {
        let r = &rows[i];
        let Some(s) = r.retrieval.get(task) else { continue };
        let name = if i == base { format!("**{}** (baseline)", r.name) } else { r.name.clone() };
        let prompts = match (&s.query_prompt, &s.document_prompt) {
            (None, None) => "none".to_string(),
            (q, d) => format!("{} / {}", q.as_deref().unwrap_or("none"), d.as_deref().unwrap_or("none")),
        };
        let speed = bench_of(rows, r).and_then(documents_scenario);
        md += &format!(
            "| {name} | {prompts} | {:.4} | {} | {} | {} | {} | {} | {} | {} | {}{} |\n",
            s.ndcg_at_10,
            if i == base { "—".into() } else { format!("{:+.4}", s.ndcg_at_10 - bv) },
            f4(s.recall_at_100),
            f4(s.map_at_10),
            f4(s.mrr_at_10),
            s.fidelity.as_ref().map_or("—".into(), |(_, m, p, n)| format!("{m:.5} / {p:.5} / {n:.5}")),
            speed.map_or("—".into(), |d| format!("{} (×{})", per_s(d.texts_per_s), d.batch)),
            speed.map_or("—".into(), |d| format!("{:.0}", d.tokens_per_s)),
            s.n_queries.map_or("?".into(), |n| n.to_string()),
            s.n_documents.map_or(String::new(), |n| format!(" × {n}")),
        );
    }
    md += "\n";
    let mut notes = Vec::new();
    for r in rows.iter().filter(|r| r.no_prompts) {
        let Some(s) = r.retrieval.get(task) else { continue };
        let twin = rows.iter().find(|o| !o.no_prompts && o.model.is_some() && o.model == r.model);
        if let Some(p) = twin.and_then(|t| t.retrieval.get(task)) {
            notes.push(format!(
                "- **{}** without its prompts: nDCG@10 {:.4} instead of {:.4} ({:+.4}).",
                r.model.as_deref().unwrap_or(&r.name),
                s.ndcg_at_10,
                p.ndcg_at_10,
                s.ndcg_at_10 - p.ndcg_at_10
            ));
        }
    }
    if rows.iter().any(|r| r.retrieval.get(task).is_some_and(|s| s.subset)) {
        notes.push(
            "- Rows on a slice of the task (`--max-queries` / `--max-corpus`) are not comparable with full runs."
                .into(),
        );
    }
    if let Some((b, ..)) = rows.iter().filter_map(|r| r.retrieval.get(task)?.fidelity.as_ref()).next() {
        notes.push(format!("- Cosine to baseline: each document's vector against {b}'s, over the corpus."));
    }
    if !notes.is_empty() {
        md += &(notes.join("\n") + "\n\n");
    }
    if let Some(file) = plot {
        md += &format!("![retrieval quality vs documents/s]({file})\n\n");
    }
    let mut published: Vec<&ReferencePoint> =
        refs.iter().filter(|p| p.metric == RefMetric::Retrieval && p.task() == task).collect();
    if !published.is_empty() {
        md += &format!("External {task} points (other models or runtimes, for scale):\n\n");
        md += "| model | nDCG@10 | documents/s | machine | source |\n|---|---|---|---|---|\n";
        published.sort_by(|a, b| b.score.total_cmp(&a.score));
        for p in published {
            md += &format!(
                "| {} | {:.3} | {} | {} | {} |\n",
                p.name,
                p.score,
                p.docs_per_s.map_or("—".into(), per_s),
                p.machine.as_deref().unwrap_or("—"),
                p.source
            );
        }
        md += "\n";
    }
    md
}

/// The long-document bench table (`documents` scenarios).
pub fn documents_markdown(rows: &[ModelRow]) -> String {
    let benched: Vec<(&ModelRow, &BenchResult)> = rows
        .iter()
        .filter_map(|r| Some((r, r.bench.as_ref()?)))
        .filter(|(_, b)| b.scenarios.iter().any(|s| s.kind == "documents"))
        .collect();
    if benched.is_empty() {
        return String::new();
    }
    let mut md = String::from("## Long documents (bench `documents`)\n\n");
    md += "| model | tokens/document | ms/document ×1 p50 | p95 | documents/s ×1 | documents/s (largest batch) | tokens/s (largest batch) | calls |\n";
    md += "|---|---|---|---|---|---|---|---|\n";
    for (r, b) in &benched {
        let one = b.scenario("documents", 1);
        let big = documents_scenario(b);
        md += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            big.or(one).map_or("—".into(), |s| format!("{:.0}", s.mean_tokens_per_text)),
            one.map_or("—".into(), |s| fmt_ms(s.ms_per_call.p50)),
            one.map_or("—".into(), |s| fmt_ms(s.ms_per_call.p95)),
            one.map_or("—".into(), |s| per_s(s.texts_per_s)),
            big.map_or("—".into(), |s| format!("{} (×{})", per_s(s.texts_per_s), s.batch)),
            big.map_or("—".into(), |s| format!("{:.0}", s.tokens_per_s)),
            b.scenarios
                .iter()
                .filter(|s| s.kind == "documents")
                .map(|s| s.iters.to_string())
                .collect::<Vec<_>>()
                .join(" / "),
        );
    }
    if let Some(c) = benched.iter().find_map(|(_, b)| b.scenarios.iter().find_map(|s| s.corpus.as_ref())) {
        md += &format!(
            "\nThe sample: {} of the {} documents of `{}` (one in {}, from the first), title + text with the model's `document` prompt \
             where it has one, cut at the model's token limit (longest {} tokens, {} cut). Calls cycle through the \
             sample in file order, each stopped by `--max-seconds`; documents/s and tokens/s come from the total time \
             of the calls (lengths vary per call), tokens/document from the documents embedded; p50/p95 per call.\n\n",
            c.documents, c.corpus_documents, c.path, c.stride, c.max_tokens, c.truncated,
        );
    }
    md
}

/// The external STS reference points, with their sources.
pub fn references_markdown(refs: &[ReferencePoint], rows: &[ModelRow]) -> String {
    let sts: Vec<&ReferencePoint> = refs.iter().filter(|p| p.metric == RefMetric::Sts).collect();
    if sts.is_empty() {
        return String::new();
    }
    let mut md = String::from("## External reference points (STS)\n\n");
    md += "Drawn as ▲ on the quality-vs-latency plot, beside our models' score on the same task (■), when measured on \
           the machine kind of our benches (ms from different machines do not compare).\n\n";
    md += "| runtime / model | task | Spearman | ms/text (batch of 5) | machine | on the plot | source |\n|---|---|---|---|---|---|---|\n";
    for p in sts {
        md += &format!(
            "| {} | {} | {:.4} | {} | {} | {} | {} |\n",
            p.name,
            p.task(),
            p.score,
            p.latency_ms.map_or("—".into(), fmt_ms),
            p.machine.as_deref().unwrap_or("—"),
            if p.latency_ms.is_none() {
                "no (no latency)"
            } else if p.same_machine(rows) {
                "yes"
            } else {
                "no (other machine)"
            },
            p.source
        );
    }
    md + "\n"
}
