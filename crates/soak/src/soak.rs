//! The soak run: N keep-alive clients drive every embedding route of a loopback server with mixed lengths, batch
//! sizes, prompts and models for a bounded time and request count, check every answer against single-request
//! reference vectors, sample the server's RSS every second, and write a JSON + Markdown report.
//!
//! Checks (each must pass for exit 0):
//! - nothing lost: every request sent got an HTTP answer (2xx, or the 4xx/429 it was meant to get); transport
//!   errors and client-side timeouts count as lost and must be 0; no unexpected status (no 5xx at all);
//! - every vector equals the single-request reference for its text, model, prompt and dimensions (cosine ≥
//!   `min_cosine`), every rerank score equals the cosine of the references, in order;
//! - RSS growth over the last (1 - warmup) of the run below `max_rss_growth_pct`;
//! - afterwards: queues drained, `/health` 200, no 5xx in `/metrics`, and (for a server it started) SIGTERM
//!   exits 0 without a panic in the log.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http::{self, Client, Resp};
use crate::server::{self, Server};
use crate::texts;
use deposium_test_support::{base64_floats, cosine, floats, Rng};

use crate::percentile;

/// Settings of one run (the CLI flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// A running server (`127.0.0.1:PORT`); `None` starts `bin`.
    pub url: Option<String>,
    /// With `url`: the server's pid, for RSS from `/proc` (else RSS comes from `/api/status`).
    pub pid: Option<u32>,
    pub bin: Option<PathBuf>,
    pub models: Vec<String>,
    pub server_args: Vec<String>,
    pub duration: Duration,
    pub concurrency: usize,
    pub max_requests: u64,
    /// Distinct texts in the pool (the static models use all of them).
    pub pool: usize,
    /// Of those, how many transformer models use (references cost real inference).
    pub heavy_pool: usize,
    /// Longest text, in tokens (about).
    pub max_tokens: usize,
    /// Token budget of one request to a transformer model.
    pub heavy_request_tokens: usize,
    /// Requests to transformer models in flight at once (others go to a static model).
    pub heavy_clients: usize,
    pub max_batch: usize,
    pub timeout: Duration,
    pub seed: u64,
    /// Share of deliberately invalid requests (each with the 4xx it must get).
    pub bad_share: f64,
    pub warmup: f64,
    pub max_rss_growth_pct: f64,
    pub min_cosine: f64,
    /// Report path without extension: `<out>.json`, `<out>.md`.
    pub out: PathBuf,
    pub sts: Option<PathBuf>,
}

/// A served model as `/info` describes it.
#[derive(Debug, Clone)]
struct ModelDesc {
    name: String,
    /// A transformer (real inference per token), as opposed to a static lookup model.
    heavy: bool,
    dim: usize,
    max_tokens: usize,
    has_query: bool,
    has_document: bool,
    matryoshka: Vec<usize>,
    /// Texts this model is driven with: pool indices `0..n_texts`.
    n_texts: usize,
    /// Token count of each text (from `/tokenize`, cut to `max_tokens`).
    tokens: Vec<usize>,
    /// Short texts used as rerank queries.
    queries: Vec<usize>,
}

const P_NONE: u8 = 0;
const P_DOCUMENT: u8 = 1;
const P_QUERY: u8 = 2;

fn prompt_name(p: u8) -> Option<&'static str> {
    match p {
        P_DOCUMENT => Some("document"),
        P_QUERY => Some("query"),
        _ => None,
    }
}

/// The texts, the models and the reference vectors, shared read-only by the clients.
struct Workload {
    texts: Vec<String>,
    models: Vec<ModelDesc>,
    /// (model, prompt, text) → normalised reference vector from a single request.
    refs: HashMap<(usize, u8, usize), Vec<f32>>,
    max_inputs: usize,
    max_body_bytes: usize,
    /// A body just over `max_body_bytes`.
    oversized: Vec<u8>,
    cfg: Config,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    OllamaEmbed,
    LegacySingle,
    LegacyList,
    OpenAiFloat,
    OpenAiBase64,
    Tei,
}

enum Check {
    Vectors {
        shape: Shape,
        model: usize,
        items: Vec<(usize, u8)>,
        dims: Option<usize>,
        normalized: bool,
    },
    Rerank {
        tei: bool,
        model: usize,
        query: usize,
        docs: Vec<usize>,
        top_k: Option<usize>,
        with_text: bool,
    },
    /// A deliberately invalid request: this status and a JSON error body.
    Status(u16),
}

struct Planned {
    route: &'static str,
    method: &'static str,
    path: &'static str,
    body: Vec<u8>,
    /// A fresh connection, closed after (invalid requests: the server may close after answering them).
    close: bool,
    model: Option<usize>,
    heavy: bool,
    check: Check,
}

/// What one client saw.
#[derive(Default)]
struct Stats {
    sent: u64,
    ok: u64,
    rejected: u64,
    rejected_429: u64,
    lost_timeout: u64,
    lost_transport: u64,
    unexpected: u64,
    mismatched: u64,
    statuses: BTreeMap<u16, u64>,
    /// (route, model) → latencies in ms of answered requests.
    latency: HashMap<(String, String), Vec<f64>>,
    /// model → (vectors and scores checked, min cosine, vectors comparable bit for bit, bit-identical).
    vectors: HashMap<String, VecStats>,
    inputs_by_model: HashMap<String, u64>,
    batch_sizes: Vec<usize>,
    failures: Vec<String>,
    /// Vectors within `min_cosine` of their reference but not bit-identical: a few examples.
    not_identical: Vec<String>,
}

impl Stats {
    fn fail(&mut self, msg: String) {
        if self.failures.len() < 20 {
            self.failures.push(msg);
        }
    }

    fn merge(&mut self, o: Stats) {
        self.sent += o.sent;
        self.ok += o.ok;
        self.rejected += o.rejected;
        self.rejected_429 += o.rejected_429;
        self.lost_timeout += o.lost_timeout;
        self.lost_transport += o.lost_transport;
        self.unexpected += o.unexpected;
        self.mismatched += o.mismatched;
        for (k, v) in o.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in o.latency {
            self.latency.entry(k).or_default().extend(v);
        }
        for (k, v) in o.vectors {
            let s = self.vectors.entry(k).or_default();
            s.checked += v.checked;
            s.comparable += v.comparable;
            s.identical += v.identical;
            s.min_cosine = s.min_cosine.min(v.min_cosine);
        }
        for (k, v) in o.inputs_by_model {
            *self.inputs_by_model.entry(k).or_default() += v;
        }
        self.batch_sizes.extend(o.batch_sizes);
        for f in o.failures {
            self.fail(f);
        }
        for e in o.not_identical {
            if self.not_identical.len() < 20 {
                self.not_identical.push(e);
            }
        }
    }

    fn lost(&self) -> u64 {
        self.lost_timeout + self.lost_transport
    }
}

#[derive(Clone, Copy)]
struct VecStats {
    checked: u64,
    min_cosine: f64,
    comparable: u64,
    identical: u64,
}

impl Default for VecStats {
    fn default() -> Self {
        VecStats { checked: 0, min_cosine: 1.0, comparable: 0, identical: 0 }
    }
}

/// Live counters for progress lines.
#[derive(Default)]
struct Live {
    sent: AtomicU64,
    ok: AtomicU64,
    bad: AtomicU64,
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[soak] {}", msg.as_ref());
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

fn push_check(report: &mut Value, name: &str, pass: bool, detail: String) {
    if !report["checks"].is_array() {
        report["checks"] = json!([]);
    }
    report["checks"].as_array_mut().unwrap().push(json!({ "name": name, "pass": pass, "detail": detail }));
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

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
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

/// Pick texts for one request: `n` wanted, within a token budget for transformer models (at least one).
fn pick_texts(work: &Workload, m: usize, n: usize, rng: &mut Rng) -> Vec<usize> {
    let md = &work.models[m];
    let mut out = Vec::with_capacity(n);
    let mut tokens = 0;
    let mut tries = 0;
    while out.len() < n && tries < n * 4 {
        tries += 1;
        let t = rng.below(md.n_texts);
        let cost = md.tokens[t] + 8;
        if md.heavy && !out.is_empty() && tokens + cost > work.cfg.heavy_request_tokens {
            continue;
        }
        tokens += cost;
        out.push(t);
    }
    out
}

/// The next request: route, model, texts, options, and what its answer must be.
fn plan(work: &Workload, rng: &mut Rng, heavy_inflight: &AtomicUsize) -> Planned {
    let cfg = &work.cfg;
    if rng.chance(cfg.bad_share) {
        return plan_invalid(work, rng);
    }
    // A model; transformer models only while fewer than `heavy_clients` requests are on them.
    let mut m = rng.below(work.models.len());
    let mut heavy = work.models[m].heavy;
    if heavy && heavy_inflight.fetch_add(1, Ordering::Relaxed) >= cfg.heavy_clients {
        heavy_inflight.fetch_sub(1, Ordering::Relaxed);
        if let Some(light) = work.models.iter().position(|d| !d.heavy) {
            m = light;
            heavy = false;
        } else {
            heavy_inflight.fetch_add(1, Ordering::Relaxed);
        }
    }
    let md = &work.models[m];
    let name = md.name.as_str();
    let n = rng.log_uniform(1, cfg.max_batch);
    let doc_prompt = |rng: &mut Rng| {
        if md.has_document && rng.chance(0.5) {
            P_DOCUMENT
        } else {
            P_NONE
        }
    };
    let dims = |rng: &mut Rng| -> Option<usize> {
        let choices: Vec<usize> = md.matryoshka.iter().copied().filter(|&d| d < md.dim).collect();
        if !choices.is_empty() && rng.chance(0.2) {
            Some(*rng.pick(&choices))
        } else {
            None
        }
    };
    let strs = |items: &[usize]| -> Vec<&str> { items.iter().map(|&t| work.texts[t].as_str()).collect() };
    // `input`: one text as a bare string half the time, else a list.
    let input = |items: &[usize], rng: &mut Rng| -> Value {
        if items.len() == 1 && rng.chance(0.5) {
            json!(work.texts[items[0]])
        } else {
            json!(strs(items))
        }
    };
    let set_options = |body: &mut Value, p: u8, d: Option<usize>| {
        if let Some(pn) = prompt_name(p) {
            body["prompt_name"] = json!(pn);
        }
        if let Some(d) = d {
            body["dimensions"] = json!(d);
        }
    };
    let r = rng.unit();
    let (route, path, body, check) = if r < 0.19 {
        let items = pick_texts(work, m, n, rng);
        let p = doc_prompt(rng);
        let d = dims(rng);
        let mut body = json!({ "model": name, "input": input(&items, rng) });
        set_options(&mut body, p, d);
        let items = items.into_iter().map(|t| (t, p)).collect();
        (
            "/api/embed",
            "/api/embed",
            body,
            Check::Vectors { shape: Shape::OllamaEmbed, model: m, items, dims: d, normalized: true },
        )
    } else if r < 0.26 {
        let items = pick_texts(work, m, 1, rng);
        let p = doc_prompt(rng);
        let mut body = json!({ "model": name, "prompt": work.texts[items[0]] });
        set_options(&mut body, p, None);
        let items = items.into_iter().map(|t| (t, p)).collect();
        (
            "/api/embeddings (prompt)",
            "/api/embeddings",
            body,
            Check::Vectors { shape: Shape::LegacySingle, model: m, items, dims: None, normalized: true },
        )
    } else if r < 0.34 {
        let items = pick_texts(work, m, n, rng);
        let body = json!({ "model": name, "input": strs(&items) });
        let items = items.into_iter().map(|t| (t, P_NONE)).collect();
        (
            "/api/embeddings (input)",
            "/api/embeddings",
            body,
            Check::Vectors { shape: Shape::LegacyList, model: m, items, dims: None, normalized: true },
        )
    } else if r < 0.62 {
        let base64 = r >= 0.48;
        let items = pick_texts(work, m, n, rng);
        let p = doc_prompt(rng);
        let d = dims(rng);
        let mut body = json!({ "model": name, "input": input(&items, rng) });
        body["encoding_format"] = json!(if base64 { "base64" } else { "float" });
        set_options(&mut body, p, d);
        let items = items.into_iter().map(|t| (t, p)).collect();
        let (route, shape) = if base64 {
            ("/v1/embeddings (base64)", Shape::OpenAiBase64)
        } else {
            ("/v1/embeddings (float)", Shape::OpenAiFloat)
        };
        (route, "/v1/embeddings", body, Check::Vectors { shape, model: m, items, dims: d, normalized: true })
    } else if r < 0.80 {
        let items = pick_texts(work, m, n, rng);
        let p = doc_prompt(rng);
        let d = dims(rng);
        let normalize = !rng.chance(0.2);
        let mut body = json!({ "model": name, "inputs": strs(&items) });
        set_options(&mut body, p, d);
        if !normalize {
            body["normalize"] = json!(false);
        }
        let items = items.into_iter().map(|t| (t, p)).collect();
        (
            "/embed",
            "/embed",
            body,
            Check::Vectors { shape: Shape::Tei, model: m, items, dims: d, normalized: normalize },
        )
    } else {
        let tei = r < 0.90;
        let query = *rng.pick(&md.queries);
        let docs = pick_texts(work, m, n, rng);
        let top_k = if rng.chance(0.3) { Some(rng.log_uniform(1, docs.len())) } else { None };
        let with_text = rng.chance(0.5);
        let (route, path, mut body) = if tei {
            (
                "/rerank",
                "/rerank",
                json!({ "model": name, "query": work.texts[query], "texts": strs(&docs), "return_text": with_text }),
            )
        } else {
            (
                "/api/rerank",
                "/api/rerank",
                json!({ "model": name, "query": work.texts[query], "documents": strs(&docs) }),
            )
        };
        if let Some(k) = top_k {
            body[if tei { "top_n" } else { "top_k" }] = json!(k);
        }
        (route, path, body, Check::Rerank { tei, model: m, query, docs, top_k, with_text: with_text || !tei })
    };
    Planned {
        route,
        method: "POST",
        path,
        body: body.to_string().into_bytes(),
        close: false,
        model: Some(m),
        heavy,
        check,
    }
}

/// A deliberately invalid request and the status it must get.
fn plan_invalid(work: &Workload, rng: &mut Rng) -> Planned {
    let light = work.models.iter().position(|m| !m.heavy).unwrap_or(0);
    let md = &work.models[light];
    let name = md.name.clone();
    let kind = rng.below(10);
    let (path, method, body, status): (&'static str, &'static str, Vec<u8>, u16) = match kind {
        0 => ("/api/embed", "POST", json!({"model": "no-such-model", "input": "x"}).to_string().into(), 404),
        1 => ("/v1/embeddings", "POST", json!({"model": "no-such-model", "input": "x"}).to_string().into(), 404),
        2 => ("/embed", "POST", br#"{"inputs": ["unterminated"#.to_vec(), 400),
        3 => (
            "/api/embed",
            "POST",
            json!({"model": name, "input": "x", "prompt_name": "no-such-prompt"}).to_string().into(),
            400,
        ),
        4 => {
            let long = "word ".repeat(md.max_tokens + 64);
            ("/v1/embeddings", "POST", json!({"model": name, "input": long, "truncate": false}).to_string().into(), 400)
        }
        5 => {
            let many = vec!["x"; work.max_inputs + 1];
            ("/api/embed", "POST", json!({"model": name, "input": many}).to_string().into(), 413)
        }
        6 if rng.chance(0.25) => ("/api/embed", "POST", work.oversized.clone(), 413),
        7 => ("/api/embed", "GET", Vec::new(), 405),
        8 => ("/api/rerank", "POST", Vec::new(), 400),
        _ => ("/v1/embeddings", "POST", json!({"model": name, "input": []}).to_string().into(), 400),
    };
    let _ = work.max_body_bytes;
    Planned {
        route: "invalid",
        method,
        path,
        body,
        close: true,
        model: None,
        heavy: false,
        check: Check::Status(status),
    }
}

enum Verdict {
    Ok,
    Rejected,
    Unexpected(String),
    Mismatch(String),
}

fn check(work: &Workload, plan: &Planned, resp: &Resp, stats: &mut Stats) -> Verdict {
    if let Check::Status(want) = plan.check {
        if resp.status == want && resp.is_json_error() {
            return Verdict::Rejected;
        }
        return Verdict::Unexpected(format!(
            "{} {}: wanted {want} with a JSON error, got {} {}",
            plan.method,
            plan.path,
            resp.status,
            snippet(resp)
        ));
    }
    if resp.status == 429 && resp.is_json_error() {
        return Verdict::Rejected;
    }
    if resp.status != 200 {
        return Verdict::Unexpected(format!("status {} {}", resp.status, snippet(resp)));
    }
    let Some(v) = resp.json() else {
        return Verdict::Mismatch(format!("not JSON: {}", snippet(resp)));
    };
    match &plan.check {
        Check::Vectors { shape, model, items, dims, normalized } => {
            let got: Option<Vec<Vec<f32>>> = match shape {
                Shape::OllamaEmbed | Shape::LegacyList => {
                    v["embeddings"].as_array().and_then(|a| a.iter().map(floats).collect())
                }
                Shape::LegacySingle => floats(&v["embedding"]).map(|e| vec![e]),
                Shape::Tei => v.as_array().and_then(|a| a.iter().map(floats).collect()),
                Shape::OpenAiFloat | Shape::OpenAiBase64 => v["data"].as_array().and_then(|a| {
                    a.iter()
                        .enumerate()
                        .map(|(i, d)| {
                            if d["index"].as_u64() != Some(i as u64) {
                                return None;
                            }
                            if *shape == Shape::OpenAiBase64 {
                                d["embedding"].as_str().and_then(base64_floats)
                            } else {
                                floats(&d["embedding"])
                            }
                        })
                        .collect()
                }),
            };
            let Some(got) = got else {
                return Verdict::Mismatch(format!("unexpected response shape: {}", snippet(resp)));
            };
            let md = &work.models[*model];
            if got.len() != items.len() {
                return Verdict::Mismatch(format!("{} vectors for {} inputs", got.len(), items.len()));
            }
            let want_dim = dims.unwrap_or(md.dim);
            let entry = stats.vectors.entry(md.name.clone()).or_default();
            *stats.inputs_by_model.entry(md.name.clone()).or_default() += items.len() as u64;
            stats.batch_sizes.push(items.len());
            for (i, (g, &(t, p))) in got.iter().zip(items).enumerate() {
                let Some(r) = work.refs.get(&(*model, p, t)) else {
                    return Verdict::Mismatch(format!("no reference for text {t} prompt {p}"));
                };
                if g.len() != want_dim {
                    return Verdict::Mismatch(format!("input {i}: {} dims, wanted {want_dim}", g.len()));
                }
                let c = cosine(g, &r[..want_dim]);
                entry.checked += 1;
                entry.min_cosine = entry.min_cosine.min(c);
                if dims.is_none() && *normalized {
                    entry.comparable += 1;
                    entry.identical += u64::from(g == r);
                    if g != r && stats.not_identical.len() < 10 {
                        let max_diff = g.iter().zip(r.iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                        let example = format!(
                            "{} {} text {t} ({} tokens, prompt {:?}) in a request of {}: max |diff| {max_diff:e}, cosine {c:.9}",
                            md.name, plan.route, md.tokens[t], prompt_name(p), items.len()
                        );
                        stats.not_identical.push(example);
                    }
                }
                if c.is_nan() || c < work.cfg.min_cosine {
                    return Verdict::Mismatch(format!(
                        "input {i} (text {t}, {} tokens, prompt {:?}, dims {dims:?}): cosine {c:.7} to its single-request reference",
                        md.tokens[t],
                        prompt_name(p)
                    ));
                }
            }
            Verdict::Ok
        }
        Check::Rerank { tei, model, query, docs, top_k, with_text } => {
            let md = &work.models[*model];
            let results = if *tei { v.as_array() } else { v["results"].as_array() };
            let Some(results) = results else {
                return Verdict::Mismatch(format!("unexpected rerank shape: {}", snippet(resp)));
            };
            let want_len = top_k.unwrap_or(docs.len()).min(docs.len());
            if results.len() != want_len {
                return Verdict::Mismatch(format!("{} results, wanted {want_len}", results.len()));
            }
            let (qp, dp) =
                (if md.has_query { P_QUERY } else { P_NONE }, if md.has_document { P_DOCUMENT } else { P_NONE });
            let Some(qv) = work.refs.get(&(*model, qp, *query)) else {
                return Verdict::Mismatch(format!("no reference for query {query}"));
            };
            let mut all: Vec<(usize, f64)> =
                docs.iter().enumerate().map(|(i, &t)| (i, cosine(qv, &work.refs[&(*model, dp, t)]))).collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            let kth = all[want_len - 1].1;
            let mut seen = HashSet::new();
            let mut prev = f64::INFINITY;
            let entry = stats.vectors.entry(md.name.clone()).or_default();
            *stats.inputs_by_model.entry(md.name.clone()).or_default() += docs.len() as u64 + 1;
            stats.batch_sizes.push(docs.len() + 1);
            for r in results {
                let (score_key, text_key) = if *tei { ("score", "text") } else { ("relevance_score", "document") };
                let (Some(index), Some(score)) = (r["index"].as_u64(), r[score_key].as_f64()) else {
                    return Verdict::Mismatch(format!("bad result {r}"));
                };
                let index = index as usize;
                if index >= docs.len() || !seen.insert(index) {
                    return Verdict::Mismatch(format!("bad or repeated index {index}"));
                }
                let want = all.iter().find(|(i, _)| *i == index).map(|x| x.1).unwrap_or(f64::NAN);
                entry.checked += 1;
                if want.is_nan() || (score - want).abs() > 1e-4 {
                    return Verdict::Mismatch(format!(
                        "document {index}: score {score} but the references give {want}"
                    ));
                }
                if score > prev + 1e-6 {
                    return Verdict::Mismatch(format!("results not sorted: {score} after {prev}"));
                }
                // Anything returned under top_k must be among the best (ties within rounding allowed).
                if score < kth - 1e-4 {
                    return Verdict::Mismatch(format!("document {index} (score {score}) is not in the top {want_len}"));
                }
                prev = score;
                if *with_text && r[text_key].as_str() != Some(work.texts[docs[index]].as_str()) {
                    return Verdict::Mismatch(format!("document {index}: wrong text returned"));
                }
            }
            Verdict::Ok
        }
        Check::Status(_) => unreachable!(),
    }
}

fn snippet(r: &Resp) -> String {
    let t = r.text();
    if t.len() > 300 {
        format!("{}…", &t[..t.floor_char_boundary(300)])
    } else {
        t
    }
}

/// Median of the samples with `t` in `[from, to)`.
fn window_median(samples: &[(f64, u64)], from: f64, to: f64) -> Option<u64> {
    let mut v: Vec<u64> = samples.iter().filter(|s| s.0 >= from && s.0 < to).map(|s| s.1).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

#[allow(clippy::too_many_arguments)]
fn build_report(
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

fn write_report(cfg: &Config, report: &Value) -> anyhow::Result<()> {
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

fn num(v: &Value, digits: usize) -> String {
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
