//! Comparison report: reads `<results>/<model>/{<Task>.json, bench.json, model_meta.json}`, writes a Markdown
//! decision document and two SVG plots.

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
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path)?).with_context(|| format!("parsing {}", path.display()))?;
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
        let mut row = ModelRow { name: dir_name.clone(), dir: dir_name, ..Default::default() };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "json")) {
            let fname = f.file_name().unwrap_or_default().to_string_lossy();
            if fname == "bench.json" {
                let b: BenchResult = serde_json::from_str(&std::fs::read_to_string(f)?)
                    .with_context(|| format!("parsing {}", f.display()))?;
                row.name = b.model.clone();
                row.quantization.get_or_insert(b.quantization.clone());
                row.size_bytes.get_or_insert(b.size_bytes);
                row.bench = Some(b);
            } else if fname == "model_meta.json" {
                let m: Value = serde_json::from_str(&std::fs::read_to_string(f)?)?;
                row.quantization = m["quantization"].as_str().map(String::from).or(row.quantization);
                row.size_bytes = m["size_bytes"].as_u64().or(row.size_bytes);
            } else if let Some(MtebFile { task, subsets, doc }) = read_mteb(f)? {
                if let Some(model) = doc["deposium"]["model"].as_str() {
                    row.name = match doc["deposium"]["dimensions"].as_u64() {
                        Some(d) => format!("{model} d={d}"),
                        None => model.to_string(),
                    };
                }
                row.scores.insert(task, subsets);
            }
        }
        if !row.scores.is_empty() || row.bench.is_some() {
            rows.push(row);
        }
    }
    Ok(rows)
}

/// A reference file like `sts_reference.json`: `{"model": ..., "scores": {"STS17_en-en_test": 0.90, ...}}`.
pub fn load_reference(path: &Path) -> Result<ModelRow> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?)?;
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
        return rows
            .iter()
            .position(|r| r.name.eq_ignore_ascii_case(n) || r.dir.eq_ignore_ascii_case(n))
            .with_context(|| {
                format!("baseline '{n}' not among: {}", rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", "))
            });
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
        let mut subsets: Vec<String> = rows.iter().filter_map(|r| r.scores.get(t)).flat_map(|s| s.keys().cloned()).collect();
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
    bytes.map_or("—".into(), |b| if b >= 1_000_000_000 { format!("{:.2} GB", b as f64 / 1e9) } else { format!("{:.1} MB", b as f64 / 1e6) })
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
        let cpus: Vec<String> = rows.iter().filter_map(|r| r.bench.as_ref()).map(|b| format!("{} ({} CPUs)", b.cpu, b.cpus)).collect();
        if let Some(cpu) = cpus.first() {
            md += &format!("\nMeasured on {cpu}. Compare ratios from one run: absolute times move on a shared machine.\n");
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

/// Scatter against ms/text (batch of 5 short texts, log scale): mean STS (filled) and, where the data has
/// cross-lingual subsets, their mean (hollow), one colour per model. False when no model has both axes.
pub fn plot_quality_vs_latency(rows: &[ModelRow], tasks: &[String], path: &Path) -> Result<bool> {
    struct Point<'a> {
        ms: f64,
        mean: f64,
        cross: Option<f64>,
        name: &'a str,
        color: RGBColor,
    }
    let points: Vec<Point> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let ms = r.batch5_ms().filter(|&m| m > 0.0)?;
            Some(Point { ms, mean: r.mean(tasks)?, cross: r.cross_lingual_mean(), name: &r.name, color: color(i) })
        })
        .collect();
    if points.is_empty() {
        return Ok(false);
    }
    let (xmin, xmax) = points.iter().fold((f64::INFINITY, 0f64), |(lo, hi), p| (lo.min(p.ms), hi.max(p.ms)));
    let ys = points.iter().flat_map(|p| std::iter::once(p.mean).chain(p.cross));
    let (ymin, ymax) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (x0, x1) = (xmin / 4.0, xmax * 4.0);
    let root = SVGBackend::new(path, (900, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (top, body) = root.split_vertically(70);
    let centered = TextStyle::from(("sans-serif", 24).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    top.draw(&Text::new("STS quality vs latency", (450, 12), centered)).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&body)
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((x0..x1).log_scale(), (ymin - 0.05).max(-1.0)..(ymax + 0.05).min(1.0))
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("ms per text, batch of 5 short texts (log scale)")
        .y_desc("STS Spearman")
        .x_label_formatter(&|x| axis_number(*x))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(plot_err)?;
    let has_cross = points.iter().any(|p| p.cross.is_some());
    let mean_label = format!("● mean of {}", tasks.join(", "));
    let legend = if has_cross { format!("{mean_label}  |  ○ mean of cross-lingual subsets") } else { mean_label };
    top.draw(&Text::new(legend, (90, 48), ("sans-serif", 14))).map_err(plot_err)?;
    let mid = (x0 * x1).sqrt();
    for (k, p) in points.iter().enumerate() {
        // Labels point inwards; alternate above/below so close points stay readable.
        let dy = if k % 2 == 0 { -20 } else { 8 };
        let (dx, h) = if p.ms > mid { (-12, HPos::Right) } else { (12, HPos::Left) };
        let style = TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(h, VPos::Top));
        let text = format!("{} ({:.3}, {} ms)", p.name, p.mean, fmt_ms(p.ms));
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((p.ms, p.mean)) + Circle::new((0, 0), 7, p.color.filled()) + Text::new(text, (dx, dy), style),
            ))
            .map_err(plot_err)?;
        if let Some(c) = p.cross {
            let style = TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(h, VPos::Center));
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((p.ms, c))
                        + Circle::new((0, 0), 7, p.color.stroke_width(2))
                        + Text::new(format!("cross-lingual {c:.3}"), (dx, 0), style),
                ))
                .map_err(plot_err)?;
        }
    }
    root.present().map_err(plot_err)?;
    Ok(true)
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
    let mut rows = load_results(results)?;
    if rows.is_empty() {
        bail!("no eval or bench results under {} (expected one subdirectory per model)", results.display());
    }
    if let Some(r) = reference {
        rows.push(load_reference(r)?);
    }
    let base = pick_baseline(&rows, baseline)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let tasks = task_list(&rows);
    let subsets = subset_list(&rows, &tasks);
    let mut plots = Vec::new();
    if plot_quality_vs_latency(&rows, &mean_tasks(&rows, base), &out.join(SCATTER_FILE))? {
        plots.push((SCATTER_FILE, "quality vs latency"));
    }
    if !subsets.is_empty() {
        plot_tasks(&rows, &subsets, &out.join(BARS_FILE))?;
        plots.push((BARS_FILE, "STS per task"));
    }
    let md = markdown(&rows, base, results, &plots);
    let path = out.join(REPORT_FILE);
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
