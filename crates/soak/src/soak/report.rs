//! The report: the checks with their verdicts, latency and RSS figures, as JSON and Markdown.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::workload::{log, mb, Config, Stats, Workload};
use crate::http::{self, Client};
use crate::percentile;

pub(super) fn push_check(report: &mut Value, name: &str, pass: bool, detail: String) {
    if !report["checks"].is_array() {
        report["checks"] = json!([]);
    }
    report["checks"].as_array_mut().unwrap().push(json!({ "name": name, "pass": pass, "detail": detail }));
}

/// Median of the samples with `t` in `[from, to)`.
pub(super) fn window_median(samples: &[(f64, u64)], from: f64, to: f64) -> Option<u64> {
    let mut v: Vec<u64> = samples.iter().filter(|s| s.0 >= from && s.0 < to).map(|s| s.1).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

#[allow(clippy::too_many_arguments)]
pub(super) fn build_report(
    cfg: &Config,
    addr: &str,
    work: &Workload,
    stats: Stats,
    samples: Vec<(f64, u64)>,
    rss_before: Option<u64>,
    load_seconds: f64,
    refs_seconds: f64,
) -> anyhow::Result<Value> {
    let mut report = json!({
        "tool": "deposium-soak",
        "version": env!("CARGO_PKG_VERSION"),
        "config": {
            "duration_s": cfg.duration.as_secs_f64(), "concurrency": cfg.concurrency, "max_requests": cfg.max_requests,
            "pool": cfg.pool, "heavy_pool": cfg.heavy_pool, "max_tokens": cfg.max_tokens, "max_batch": cfg.max_batch,
            "heavy_request_tokens": cfg.heavy_request_tokens, "heavy_clients": cfg.heavy_clients,
            "timeout_s": cfg.timeout.as_secs_f64(), "seed": cfg.seed, "bad_share": cfg.bad_share,
            "warmup": cfg.warmup, "max_rss_growth_pct": cfg.max_rss_growth_pct, "min_cosine": cfg.min_cosine,
            "server_args": cfg.server_args, "url": cfg.url,
        },
        "server": { "addr": addr },
        "reference_seconds": refs_seconds,
        "load_seconds": load_seconds,
        "checks": [],
    });
    report["models"] = json!(work
        .models
        .iter()
        .map(|m| {
            let mut t = m.tokens.clone();
            t.sort_unstable();
            let v = stats.vectors.get(&m.name).copied().unwrap_or_default();
            json!({
                "name": m.name, "transformer": m.heavy, "dim": m.dim, "texts": m.n_texts,
                "tokens": { "min": t[0], "median": t[t.len() / 2], "max": t[t.len() - 1] },
                "references": work.refs.keys().filter(|k| work.models[k.0].name == m.name).count(),
                "inputs_embedded": stats.inputs_by_model.get(&m.name).copied().unwrap_or(0),
                "vectors_and_scores_checked": v.checked, "min_cosine": v.min_cosine,
                "vectors_comparable_bitwise": v.comparable, "vectors_bit_identical": v.identical,
            })
        })
        .collect::<Vec<_>>());
    let mut sizes = stats.batch_sizes.clone();
    sizes.sort_unstable();
    report["batch_sizes"] = json!({
        "min": sizes.first(), "median": sizes.get(sizes.len() / 2), "max": sizes.last(),
        "requests_with_32_or_more": sizes.iter().filter(|&&s| s >= 32).count(),
    });
    report["requests"] = json!({
        "sent": stats.sent, "ok": stats.ok, "rejected": stats.rejected, "rejected_429": stats.rejected_429,
        "lost": stats.lost(), "lost_timeout": stats.lost_timeout, "lost_transport": stats.lost_transport,
        "unexpected_status": stats.unexpected, "mismatched": stats.mismatched,
        "per_second": stats.sent as f64 / load_seconds.max(1e-9),
        "statuses": stats.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    });
    // Latency per route (all models) and per route and model.
    let mut by_route: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for ((route, _), v) in &stats.latency {
        by_route.entry(route.clone()).or_default().extend(v);
    }
    let lat = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        json!({ "count": v.len(), "p50_ms": percentile(v, 50.0), "p95_ms": percentile(v, 95.0),
                "p99_ms": percentile(v, 99.0), "max_ms": v.last() })
    };
    report["latency_by_route"] =
        json!(by_route.iter_mut().map(|(k, v)| (k.clone(), lat(v))).collect::<serde_json::Map<_, _>>());
    let mut by_rm: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for ((route, model), v) in &stats.latency {
        by_rm.entry(format!("{route} [{model}]")).or_default().extend(v);
    }
    report["latency_by_route_and_model"] =
        json!(by_rm.iter_mut().map(|(k, v)| (k.clone(), lat(v))).collect::<serde_json::Map<_, _>>());
    report["failures"] = json!(stats.failures);
    report["not_bit_identical_examples"] = json!(stats.not_identical);

    // RSS: start/peak/end, and growth from just after the warm-up to the end.
    let warm = load_seconds * cfg.warmup;
    let win = (load_seconds * 0.05).max(3.0);
    let baseline = window_median(&samples, warm, warm + win);
    let end = window_median(&samples, load_seconds - win, f64::INFINITY);
    let growth = match (baseline, end) {
        (Some(b), Some(e)) if b > 0 => Some((e as f64 - b as f64) / b as f64 * 100.0),
        _ => None,
    };
    let after: Vec<(f64, f64)> = samples.iter().filter(|s| s.0 >= warm).map(|s| (s.0, s.1 as f64)).collect();
    // Least-squares line through the samples after the warm-up: RSS swings by hundreds of MB with the size of the
    // step running at the time of a sample, so the fitted line's rise (not two single windows) is what a leak
    // would show. Growth = fitted end vs fitted warm-up end.
    let fit = if after.len() >= 3 {
        let n = after.len() as f64;
        let (mx, my) = (after.iter().map(|s| s.0).sum::<f64>() / n, after.iter().map(|s| s.1).sum::<f64>() / n);
        let cov: f64 = after.iter().map(|s| (s.0 - mx) * (s.1 - my)).sum();
        let var: f64 = after.iter().map(|s| (s.0 - mx).powi(2)).sum();
        (var > 0.0).then(|| {
            let slope = cov / var;
            (my + slope * (warm - mx), my + slope * (load_seconds - mx), slope)
        })
    } else {
        None
    };
    let slope_mb_per_min = fit.map(|f| f.2 * 60.0 / 1e6);
    let fitted_growth = fit.and_then(|(a, b, _)| (a > 0.0).then(|| (b - a) / a * 100.0));
    let floor = |from: f64, to: f64| samples.iter().filter(|s| s.0 >= from && s.0 < to).map(|s| s.1).min();
    let (floor_start, floor_end) = (floor(warm, warm + win), floor(load_seconds - win, f64::INFINITY));
    let peak = samples.iter().map(|s| s.1).max();
    report["rss"] = json!({
        "source": if cfg.pid.is_some() || cfg.url.is_none() { "/proc/<pid>/status VmRSS" } else { "/api/status process_rss_bytes" },
        "before_load_mb": rss_before.map(|b| b as f64 / 1e6),
        "start_mb": samples.first().map(|s| s.1 as f64 / 1e6),
        "peak_mb": peak.map(|b| b as f64 / 1e6),
        "end_mb": samples.last().map(|s| s.1 as f64 / 1e6),
        "after_warmup_mb": baseline.map(|b| b as f64 / 1e6),
        "final_mb": end.map(|b| b as f64 / 1e6),
        "growth_after_warmup_pct": fitted_growth,
        "fitted_after_warmup_mb": fit.map(|f| f.0 / 1e6),
        "fitted_end_mb": fit.map(|f| f.1 / 1e6),
        "window_median_growth_pct": growth,
        "floor_after_warmup_mb": floor_start.map(|b| b as f64 / 1e6),
        "floor_end_mb": floor_end.map(|b| b as f64 / 1e6),
        "slope_after_warmup_mb_per_min": slope_mb_per_min,
        "samples": samples.len(),
        "series_mb": samples.iter().map(|s| json!([(s.0 * 10.0).round() / 10.0, (s.1 as f64 / 1e5).round() / 10.0])).collect::<Vec<_>>(),
    });

    // Aftermath: queues drained, still healthy, no 5xx anywhere.
    let mut c = Client::new(addr, Duration::from_secs(30))?;
    let t0 = Instant::now();
    let (mut depth, mut metrics_text) = (f64::NAN, String::new());
    while t0.elapsed() < Duration::from_secs(30) {
        metrics_text = c.get("/metrics").map(|r| r.text()).unwrap_or_default();
        depth = work
            .models
            .iter()
            .map(|m| {
                http::metric(&metrics_text, &format!("deposium_queue_depth{{model=\"{}\"}}", m.name))
                    .unwrap_or(f64::NAN)
            })
            .sum();
        if depth == 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let server_5xx: f64 = 0.0
        + metrics_text
            .lines()
            // /health answers 503 while models load (documented); everything else must never be 5xx.
            .filter(|l| {
                l.starts_with("deposium_requests_total{")
                    && l.contains("status=\"5")
                    && !l.contains("route=\"/health\"")
            })
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum::<f64>();
    let health = c.get("/health").map(|r| r.status).unwrap_or(0);
    let status_lines: Vec<&str> = metrics_text
        .lines()
        .filter(|l| l.starts_with("deposium_requests_total{") && !l.contains("status=\"2"))
        .collect();
    report["server"]["metrics"] = json!({
        "non_2xx_by_route": status_lines,
        "queue_depth_after": depth,
        "requests_5xx": server_5xx,
        "cancelled_inputs": work.models.iter().map(|m| (m.name.clone(), json!(http::metric(&metrics_text, &format!("deposium_cancelled_inputs_total{{model=\"{}\"}}", m.name))))).collect::<serde_json::Map<_, _>>(),
    });

    let lost = stats.lost();
    push_check(
        &mut report,
        "every request answered (sent = ok + rejected; lost = 0)",
        lost == 0 && stats.sent == stats.ok + stats.rejected + stats.unexpected + stats.mismatched,
        format!(
            "sent {}, ok {}, rejected {} (429: {}), lost {} (timeouts {}, transport {})",
            stats.sent, stats.ok, stats.rejected, stats.rejected_429, lost, stats.lost_timeout, stats.lost_transport
        ),
    );
    push_check(
        &mut report,
        "no unexpected status (no 5xx; invalid requests get their 4xx with a JSON error)",
        stats.unexpected == 0 && server_5xx == 0.0,
        format!("{} unexpected; server counted {:.0} 5xx", stats.unexpected, server_5xx + 0.0),
    );
    let checked: u64 = stats.vectors.values().map(|v| v.checked).sum();
    push_check(
        &mut report,
        &format!("every vector equals its single-request reference (cosine ≥ {})", cfg.min_cosine),
        stats.mismatched == 0 && checked > 0,
        format!(
            "{} mismatched responses; {checked} vectors/scores checked; min cosine {}",
            stats.mismatched,
            work.models
                .iter()
                .map(|m| format!("{} {:.7}", m.name, stats.vectors.get(&m.name).map_or(f64::NAN, |v| v.min_cosine)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let served_all = work.models.iter().all(|m| stats.inputs_by_model.get(&m.name).copied().unwrap_or(0) > 0);
    push_check(
        &mut report,
        "every model and route was exercised",
        served_all && by_route.len() >= 8,
        format!("{} routes, inputs per model {:?}", by_route.len(), stats.inputs_by_model),
    );
    push_check(
        &mut report,
        &format!("RSS growth after the first {:.0}% of the run < {}%", cfg.warmup * 100.0, cfg.max_rss_growth_pct),
        fitted_growth.is_some_and(|g| g < cfg.max_rss_growth_pct),
        format!(
            "fitted line {} → {} ({}; {} MB/min); window medians {} → {} ({}); floor {} → {}; peak {}",
            fit.map(|f| mb(f.0 as u64)).unwrap_or_else(|| "?".into()),
            fit.map(|f| mb(f.1 as u64)).unwrap_or_else(|| "?".into()),
            fitted_growth.map(|g| format!("{g:+.2}%")).unwrap_or_else(|| "no samples".into()),
            slope_mb_per_min.map(|s| format!("{s:+.2}")).unwrap_or_else(|| "?".into()),
            baseline.map(mb).unwrap_or_else(|| "?".into()),
            end.map(mb).unwrap_or_else(|| "?".into()),
            growth.map(|g| format!("{g:+.2}%")).unwrap_or_else(|| "?".into()),
            floor_start.map(mb).unwrap_or_else(|| "?".into()),
            floor_end.map(mb).unwrap_or_else(|| "?".into()),
            peak.map(mb).unwrap_or_else(|| "?".into())
        ),
    );
    push_check(
        &mut report,
        "afterwards: queues drained, /health 200",
        depth == 0.0 && health == 200,
        format!("queue depth {depth}, /health {health}"),
    );
    Ok(report)
}

pub(super) fn write_report(cfg: &Config, report: &Value) -> anyhow::Result<()> {
    if let Some(dir) = cfg.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let json_path = cfg.out.with_extension("json");
    let md_path = cfg.out.with_extension("md");
    std::fs::write(&json_path, serde_json::to_string_pretty(report)?)?;
    let md = markdown(report);
    std::fs::write(&md_path, &md)?;
    println!("{md}");
    log(format!("report: {} and {}", json_path.display(), md_path.display()));
    Ok(())
}

pub(super) fn num(v: &Value, digits: usize) -> String {
    v.as_f64().map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "–".into())
}

/// The report as Markdown.
pub fn markdown(r: &Value) -> String {
    let mut s = String::new();
    let c = &r["config"];
    let q = &r["requests"];
    s.push_str(&format!(
        "# Soak: {}\n\n{} clients, {} s of load (before it: references {} s, peak warm-up {} s), {} distinct texts \
         ({} for transformer models), batches of 1–{}, seed {}.\n\n",
        if r["pass"] == true { "PASS" } else { "FAIL" },
        c["concurrency"],
        num(&r["load_seconds"], 0),
        num(&r["reference_seconds"], 0),
        num(&r["peak_warmup_seconds"], 0),
        c["pool"],
        c["heavy_pool"],
        c["max_batch"],
        c["seed"],
    ));
    s.push_str("| check | result | detail |\n|---|---|---|\n");
    for ch in r["checks"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} | {} | {} |\n",
            ch["name"].as_str().unwrap_or(""),
            if ch["pass"] == true { "pass" } else { "**FAIL**" },
            ch["detail"].as_str().unwrap_or("")
        ));
    }
    s.push_str(&format!(
        "\n**Requests**: sent {}, ok {}, rejected {} (expected 4xx; 429: {}), lost {}, unexpected {}, mismatched {} — {} req/s.\n\n",
        q["sent"], q["ok"], q["rejected"], q["rejected_429"], q["lost"], q["unexpected_status"], q["mismatched"], num(&q["per_second"], 1)
    ));
    let rss = &r["rss"];
    s.push_str(&format!(
        "**RSS** ({}): before load {} MB, start {} MB, peak {} MB, end {} MB; after warm-up, fitted line {} MB → {} MB \
         ({}%, slope {} MB/min), window medians {} MB → {} MB ({}%), floor {} MB → {} MB.\n\n",
        rss["source"].as_str().unwrap_or(""),
        num(&rss["before_load_mb"], 1),
        num(&rss["start_mb"], 1),
        num(&rss["peak_mb"], 1),
        num(&rss["end_mb"], 1),
        num(&rss["fitted_after_warmup_mb"], 1),
        num(&rss["fitted_end_mb"], 1),
        num(&rss["growth_after_warmup_pct"], 2),
        num(&rss["slope_after_warmup_mb_per_min"], 2),
        num(&rss["after_warmup_mb"], 1),
        num(&rss["final_mb"], 1),
        num(&rss["window_median_growth_pct"], 2),
        num(&rss["floor_after_warmup_mb"], 1),
        num(&rss["floor_end_mb"], 1),
    ));
    s.push_str("| model | texts | tokens min/median/max | inputs embedded | vectors + scores checked | bit-identical (of comparable) | min cosine |\n|---|---|---|---|---|---|---|\n");
    for m in r["models"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} | {} | {}/{}/{} | {} | {} | {} of {} | {} |\n",
            m["name"].as_str().unwrap_or(""),
            m["texts"],
            m["tokens"]["min"],
            m["tokens"]["median"],
            m["tokens"]["max"],
            m["inputs_embedded"],
            m["vectors_and_scores_checked"],
            m["vectors_bit_identical"],
            m["vectors_comparable_bitwise"],
            num(&m["min_cosine"], 7)
        ));
    }
    for (title, key) in [("route", "latency_by_route"), ("route [model]", "latency_by_route_and_model")] {
        s.push_str(&format!(
            "\n| {title} | answered | p50 ms | p95 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n"
        ));
        for (k, v) in r[key].as_object().into_iter().flatten() {
            s.push_str(&format!(
                "| {k} | {} | {} | {} | {} | {} |\n",
                v["count"],
                num(&v["p50_ms"], 1),
                num(&v["p95_ms"], 1),
                num(&v["p99_ms"], 1),
                num(&v["max_ms"], 1)
            ));
        }
    }
    if let Some(sd) = r.get("shutdown") {
        s.push_str(&format!(
            "\n**Shutdown** (SIGTERM): exit code {}, {} s.\n",
            sd["exit_code"],
            num(&sd["seconds"], 1)
        ));
    }
    let odd = r["not_bit_identical_examples"].as_array().cloned().unwrap_or_default();
    if !odd.is_empty() {
        s.push_str("\n## Vectors within the cosine bound but not bit-identical (examples)\n\n");
        for e in odd {
            s.push_str(&format!("- {}\n", e.as_str().unwrap_or("")));
        }
    }
    let failures = r["failures"].as_array().cloned().unwrap_or_default();
    if !failures.is_empty() {
        s.push_str("\n## First failures\n\n");
        for f in failures {
            s.push_str(&format!("- {}\n", f.as_str().unwrap_or("")));
        }
    }
    s
}
