//! The run itself: start (or reach) the server, describe its models, build the text pool and the references, warm
//! up, drive the clients while sampling RSS, then stop the server and write the report.
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deposium_test_support::{cosine, floats, Rng};
use serde_json::{json, Value};

use super::check::{check, Verdict};
use super::plan::plan;
use super::report::{build_report, push_check, write_report};
use super::workload::{log, mb, prompt_name, Config, ModelDesc, Stats, Workload, P_DOCUMENT, P_NONE, P_QUERY};
use crate::http::{self, Client};
use crate::server::{self, Server};
use crate::texts;

/// Live counters for progress lines.
#[derive(Default)]
struct Live {
    sent: AtomicU64,
    ok: AtomicU64,
    bad: AtomicU64,
}

/// Run the soak; the report's `pass` says whether every check passed.
pub fn run(cfg: Config) -> anyhow::Result<Value> {
    anyhow::ensure!(cfg.concurrency >= 1, "--concurrency must be at least 1");
    anyhow::ensure!(cfg.max_batch >= 1, "--max-batch must be at least 1");
    let sts = cfg
        .sts
        .clone()
        .or_else(crate::find_sts_file)
        .ok_or_else(|| anyhow::anyhow!("STSBenchmark_test.tsv not found: pass --sts PATH (../shared/data/sts/)"))?;
    let sentences = texts::load_sts(&sts)?;
    log(format!("{} sentences from {}", sentences.len(), sts.display()));

    // The server: started here, or the one at --url.
    let mut spawned: Option<Server> = None;
    let (addr, pid) = match &cfg.url {
        Some(url) => {
            let a = http::loopback(url)?;
            (a.to_string(), cfg.pid)
        }
        None => {
            let bin = cfg
                .bin
                .clone()
                .or_else(|| crate::find_server_binary(std::env::current_exe().ok().as_deref()))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "deposium-embed not found next to deposium-soak nor in target/release: run `cargo build --release -p deposium-embed` or pass --bin"
                    )
                })?;
            let mut args: Vec<String> = Vec::new();
            for m in &cfg.models {
                args.push("--model".into());
                args.push(m.clone());
            }
            args.extend(cfg.server_args.iter().cloned());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            log(format!("starting {} serve {}", bin.display(), args.join(" ")));
            let t0 = Instant::now();
            let s = Server::start(&bin, &args, Duration::from_secs(600))?;
            log(format!("listening on {} (pid {}), healthy after {:.1} s", s.addr, s.pid, t0.elapsed().as_secs_f64()));
            let out = (s.addr.clone(), Some(s.pid));
            spawned = Some(s);
            out
        }
    };
    let result = drive(&cfg, &addr, pid, &sentences, spawned.as_ref());
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(s) = &spawned {
                let log_text = s.log();
                let tail: Vec<&str> = log_text.lines().rev().take(30).collect();
                log(format!("server log (last lines):\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
            }
            return Err(e);
        }
    };

    // Stop a server we started: SIGTERM must drain and exit 0, without a panic in its log.
    if let Some(mut s) = spawned.take() {
        let t0 = Instant::now();
        s.signal("TERM")?;
        let status = s.wait_exit(Duration::from_secs(60));
        let log_text = s.log();
        let panicked = log_text.contains("panicked");
        let ok = status.is_some_and(|st| st.success()) && !panicked;
        let detail = format!(
            "exit {:?} after {:.1} s{}",
            status.and_then(|s| s.code()),
            t0.elapsed().as_secs_f64(),
            if panicked { "; a panic in the log" } else { "" }
        );
        report["shutdown"] = json!({ "exit_code": status.and_then(|s| s.code()), "seconds": t0.elapsed().as_secs_f64(), "panic_in_log": panicked });
        push_check(&mut report, "SIGTERM after the run: exit 0, no panic logged", ok, detail);
        let errors: Vec<&str> = log_text.lines().filter(|l| l.contains(" ERROR ")).take(10).collect();
        report["server_error_log_lines"] = json!(errors);
    }
    let pass = report["checks"].as_array().is_some_and(|c| c.iter().all(|c| c["pass"] == true));
    report["pass"] = json!(pass);
    write_report(&cfg, &report)?;
    Ok(report)
}

/// Describe the served models, build the pool, compute references, run the load, check the aftermath.
fn drive(
    cfg: &Config,
    addr: &str,
    pid: Option<u32>,
    sentences: &[String],
    spawned: Option<&Server>,
) -> anyhow::Result<Value> {
    let mut c = Client::new(addr, cfg.timeout)?;
    let info = c.get("/info")?;
    anyhow::ensure!(info.status == 200, "/info: {} {}", info.status, info.text());
    let info = info.json().unwrap_or_default();
    let max_inputs = info["max_client_batch_size"].as_u64().unwrap_or(2048) as usize;
    let served: Vec<Value> = info["models"].as_array().cloned().unwrap_or_default();
    let wanted: Vec<String> = if !cfg.models.is_empty() {
        cfg.models.clone()
    } else {
        served.iter().filter_map(|m| m["model_id"].as_str().map(String::from)).collect()
    };
    let mut rng = Rng::new(cfg.seed);
    let heavy_pool = cfg.heavy_pool.min(cfg.pool).max(1);
    // Transformer models use the first `heavy_pool` texts, static models all `pool`: both span 1..max_tokens.
    let mut seen = HashSet::new();
    let mut pool_texts = texts::distinct_texts(
        sentences,
        &texts::target_lengths(heavy_pool, cfg.max_tokens, &mut rng),
        &mut rng,
        &mut seen,
    );
    pool_texts.extend(texts::distinct_texts(
        sentences,
        &texts::target_lengths(cfg.pool.saturating_sub(heavy_pool), cfg.max_tokens, &mut rng),
        &mut rng,
        &mut seen,
    ));
    let mut models = Vec::new();
    for name in &wanted {
        let Some(m) = served.iter().find(|m| {
            m["model_id"].as_str() == Some(name.as_str())
                || m["aliases"].as_array().is_some_and(|a| a.iter().any(|x| x.as_str() == Some(name.as_str())))
        }) else {
            let names: Vec<&str> = served.iter().filter_map(|m| m["model_id"].as_str()).collect();
            anyhow::bail!("model {name} is not served (served: {})", names.join(", "));
        };
        let name = m["model_id"].as_str().unwrap_or(name).to_string();
        let heavy = m["family"].as_str() != Some("model2vec");
        let prompts = m["prompts"].as_object().cloned().unwrap_or_default();
        let n_texts = if heavy { heavy_pool } else { pool_texts.len() };
        let max_tokens = m["max_input_length"].as_u64().unwrap_or(512) as usize;
        let r = c.post_json("/tokenize", &json!({ "model": name, "inputs": &pool_texts[..n_texts] }))?;
        anyhow::ensure!(r.status == 200, "/tokenize: {} {}", r.status, r.text());
        let tokens: Vec<usize> = r
            .json()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|ids| ids.as_array().map_or(0, Vec::len).min(max_tokens))
            .collect();
        anyhow::ensure!(tokens.len() == n_texts, "/tokenize returned {} lists", tokens.len());
        let mut queries: Vec<usize> = (0..n_texts).filter(|&i| tokens[i] <= 64).collect();
        queries.truncate(48);
        if queries.is_empty() {
            queries.push(0);
        }
        models.push(ModelDesc {
            name,
            heavy,
            dim: m["dim"].as_u64().unwrap_or(0) as usize,
            max_tokens,
            has_query: prompts.contains_key("query"),
            has_document: prompts.contains_key("document"),
            matryoshka: m["matryoshka_dims"]
                .as_array()
                .map(|a| a.iter().filter_map(|d| d.as_u64().map(|d| d as usize)).collect())
                .unwrap_or_default(),
            n_texts,
            tokens,
            queries,
        });
    }
    anyhow::ensure!(!models.is_empty(), "no model to drive");
    for m in &models {
        let mut t = m.tokens.clone();
        t.sort_unstable();
        log(format!(
            "{}: {} texts, tokens min {} median {} max {} (total {}), {} rerank queries",
            m.name,
            m.n_texts,
            t[0],
            t[t.len() / 2],
            t[t.len() - 1],
            t.iter().sum::<usize>(),
            m.queries.len()
        ));
    }

    // References: one single-text request per (model, prompt, text), one at a time.
    let t_refs = Instant::now();
    let mut refs = HashMap::new();
    for (mi, m) in models.iter().enumerate() {
        let mut jobs: Vec<(u8, usize)> = (0..m.n_texts).map(|t| (P_NONE, t)).collect();
        if m.has_document {
            jobs.extend((0..m.n_texts).map(|t| (P_DOCUMENT, t)));
        }
        if m.has_query {
            jobs.extend(m.queries.iter().map(|&t| (P_QUERY, t)));
        }
        let t0 = Instant::now();
        for (p, t) in jobs.iter().copied() {
            let mut body = json!({ "model": m.name, "input": pool_texts[t] });
            if let Some(name) = prompt_name(p) {
                body["prompt_name"] = json!(name);
            }
            let r = c.post_json("/api/embed", &body)?;
            anyhow::ensure!(r.status == 200, "reference for text {t}: {} {}", r.status, r.text());
            let v = r
                .json()
                .and_then(|v| floats(&v["embeddings"][0]))
                .ok_or_else(|| anyhow::anyhow!("reference for text {t}: no vector"))?;
            anyhow::ensure!(v.len() == m.dim, "reference for text {t}: {} dims", v.len());
            refs.insert((mi, p, t), v);
        }
        log(format!("{}: {} reference vectors in {:.1} s", m.name, jobs.len(), t0.elapsed().as_secs_f64()));
    }
    let refs_seconds = t_refs.elapsed().as_secs_f64();

    // Peak warm-up: the largest steps the load can produce (every transformer client at once, each with the
    // longest texts its token budget allows), so ONNX Runtime's arena reaches its high-water mark before RSS is
    // judged. Vectors are checked here too.
    let t_warm = Instant::now();
    for (mi, m) in models.iter().enumerate().filter(|(_, m)| m.heavy) {
        let mut longest: Vec<usize> = (0..m.n_texts).collect();
        longest.sort_by_key(|&t| std::cmp::Reverse(m.tokens[t]));
        let mut batch = Vec::new();
        let mut tokens = 0;
        for &t in &longest {
            if !batch.is_empty() && tokens + m.tokens[t] + 8 > cfg.heavy_request_tokens {
                break;
            }
            tokens += m.tokens[t] + 8;
            batch.push(t);
        }
        let handles: Vec<_> = (0..cfg.heavy_clients.max(1))
            .map(|_| {
                let (addr, name, timeout) = (addr.to_string(), m.name.clone(), cfg.timeout);
                let texts: Vec<String> = batch.iter().map(|&t| pool_texts[t].clone()).collect();
                std::thread::spawn(move || {
                    http::once(
                        &addr,
                        "POST",
                        "/api/embed",
                        json!({"model": name, "input": texts}).to_string().as_bytes(),
                        timeout,
                    )
                })
            })
            .collect();
        for h in handles {
            let r = h.join().map_err(|_| anyhow::anyhow!("warm-up thread panicked"))??;
            anyhow::ensure!(r.status == 200, "warm-up request: {} {}", r.status, r.text());
            let v = r.json().unwrap_or_default();
            for (i, &t) in batch.iter().enumerate() {
                let got = floats(&v["embeddings"][i]).unwrap_or_default();
                let c = cosine(&got, &refs[&(mi, P_NONE, t)]);
                anyhow::ensure!(c >= cfg.min_cosine, "warm-up: text {t} cosine {c} to its reference");
            }
        }
        log(format!(
            "{}: peak warm-up, {} concurrent requests of {} texts ({} tokens each) in {:.1} s",
            m.name,
            cfg.heavy_clients.max(1),
            batch.len(),
            tokens,
            t_warm.elapsed().as_secs_f64()
        ));
    }
    let warmup_seconds = t_warm.elapsed().as_secs_f64();

    let max_body_bytes = cfg_body_limit(spawned, &cfg.server_args);
    let mut oversized = br#"{"input": [""#.to_vec();
    oversized.resize(max_body_bytes + 1024, b'x');
    oversized.extend_from_slice(br#""]}"#);
    let work =
        Arc::new(Workload { texts: pool_texts, models, refs, max_inputs, max_body_bytes, oversized, cfg: cfg.clone() });

    // RSS sampler: /proc/<pid>/status when the pid is known, else /api/status.
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Vec<(f64, u64)>>> = Arc::default();
    let t_start = Instant::now();
    let rss_now = {
        let addr = addr.to_string();
        move || -> Option<u64> {
            match pid {
                Some(pid) => server::rss_bytes(pid),
                None => http::once(&addr, "GET", "/api/status", b"", Duration::from_secs(10))
                    .ok()
                    .and_then(|r| r.json())
                    .and_then(|v| v["process_rss_bytes"].as_u64()),
            }
        }
    };
    let rss_before = rss_now();
    let sampler = {
        let (stop, samples, rss_now) = (stop.clone(), samples.clone(), rss_now.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(b) = rss_now() {
                    samples.lock().unwrap().push((t_start.elapsed().as_secs_f64(), b));
                }
                let next = Duration::from_secs(samples.lock().unwrap().len() as u64);
                let wait = next.saturating_sub(t_start.elapsed()).max(Duration::from_millis(50));
                std::thread::sleep(wait.min(Duration::from_millis(1000)));
            }
        })
    };

    // The load.
    log(format!(
        "load: {} clients for {:.0} s (at most {} requests), models {}",
        cfg.concurrency,
        cfg.duration.as_secs_f64(),
        cfg.max_requests,
        work.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
    ));
    let deadline = t_start + cfg.duration;
    let budget = Arc::new(AtomicU64::new(cfg.max_requests));
    let heavy_inflight = Arc::new(AtomicUsize::new(0));
    let live = Arc::new(Live::default());
    let clients: Vec<_> = (0..cfg.concurrency)
        .map(|i| {
            let (work, budget, heavy_inflight, live) =
                (work.clone(), budget.clone(), heavy_inflight.clone(), live.clone());
            let addr = addr.to_string();
            std::thread::Builder::new()
                .name(format!("client-{i}"))
                .spawn(move || client(i, &addr, &work, deadline, &budget, &heavy_inflight, &live))
                .expect("spawning a client thread")
        })
        .collect();
    let mut last = Instant::now();
    while clients.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(200));
        if last.elapsed() >= Duration::from_secs(10) {
            last = Instant::now();
            let rss = samples.lock().unwrap().last().map(|s| s.1);
            log(format!(
                "{:>5.0} s: sent {} ok {} rejected/failed {} rss {}",
                t_start.elapsed().as_secs_f64(),
                live.sent.load(Ordering::Relaxed),
                live.ok.load(Ordering::Relaxed),
                live.bad.load(Ordering::Relaxed),
                rss.map(mb).unwrap_or_else(|| "?".into())
            ));
        }
    }
    let mut stats = Stats::default();
    for h in clients {
        match h.join() {
            Ok(s) => stats.merge(s),
            Err(_) => anyhow::bail!("a client thread panicked"),
        }
    }
    let load_seconds = t_start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let samples = samples.lock().unwrap().clone();
    log(format!("load done after {load_seconds:.1} s: {} requests", stats.sent));

    let mut report = build_report(cfg, addr, &work, stats, samples, rss_before, load_seconds, refs_seconds)?;
    report["peak_warmup_seconds"] = json!(warmup_seconds);
    Ok(report)
}

/// The server's `--max-body-bytes` (from our own flags when we started it; the default otherwise).
fn cfg_body_limit(_spawned: Option<&Server>, args: &[String]) -> usize {
    args.iter()
        .position(|a| a == "--max-body-bytes")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .or_else(|| args.iter().find_map(|a| a.strip_prefix("--max-body-bytes=").and_then(|v| v.parse().ok())))
        .unwrap_or(8 << 20)
}

/// One client: requests until the deadline or the request budget is spent.
fn client(
    i: usize,
    addr: &str,
    work: &Workload,
    deadline: Instant,
    budget: &AtomicU64,
    heavy_inflight: &AtomicUsize,
    live: &Live,
) -> Stats {
    let mut rng = Rng::new(work.cfg.seed.wrapping_mul(1_000_003).wrapping_add(i as u64 + 1));
    let mut stats = Stats::default();
    let mut c = match Client::new(addr, work.cfg.timeout) {
        Ok(c) => c,
        Err(e) => {
            stats.fail(format!("client {i}: {e}"));
            return stats;
        }
    };
    while Instant::now() < deadline {
        if budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1)).is_err() {
            break;
        }
        let plan = plan(work, &mut rng, heavy_inflight);
        stats.sent += 1;
        live.sent.fetch_add(1, Ordering::Relaxed);
        let t0 = Instant::now();
        let res = c.request(plan.method, plan.path, &plan.body, plan.close);
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        if plan.heavy {
            heavy_inflight.fetch_sub(1, Ordering::Relaxed);
        }
        let model_name = plan.model.map(|m| work.models[m].name.clone()).unwrap_or_else(|| "-".into());
        let resp = match res {
            Ok(r) => r,
            Err(e) => {
                let timeout = matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock);
                if timeout {
                    stats.lost_timeout += 1;
                } else {
                    stats.lost_transport += 1;
                }
                live.bad.fetch_add(1, Ordering::Relaxed);
                stats.fail(format!("LOST {} [{model_name}] after {ms:.0} ms: {e} ({:?})", plan.route, e.kind()));
                continue;
            }
        };
        *stats.statuses.entry(resp.status).or_default() += 1;
        match check(work, &plan, &resp, &mut stats) {
            Verdict::Ok => {
                stats.ok += 1;
                live.ok.fetch_add(1, Ordering::Relaxed);
                stats.latency.entry((plan.route.to_string(), model_name)).or_default().push(ms);
            }
            Verdict::Rejected => {
                stats.rejected += 1;
                if resp.status == 429 {
                    stats.rejected_429 += 1;
                }
                live.bad.fetch_add(1, Ordering::Relaxed);
                stats.latency.entry(("invalid (expected 4xx)".to_string(), "-".into())).or_default().push(ms);
            }
            Verdict::Unexpected(msg) => {
                stats.unexpected += 1;
                live.bad.fetch_add(1, Ordering::Relaxed);
                stats.fail(format!("UNEXPECTED {} [{model_name}]: {msg}", plan.route));
            }
            Verdict::Mismatch(msg) => {
                stats.mismatched += 1;
                live.bad.fetch_add(1, Ordering::Relaxed);
                stats.fail(format!("MISMATCH {} [{model_name}]: {msg}", plan.route));
            }
        }
    }
    stats
}
