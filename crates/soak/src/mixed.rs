//! Scenarios of issue 22 on the real server (loopback only).
//!
//! - **mixed** ([`run_mixed`]): `--flood-clients` clients send potion-base-8M 1,000-text requests
//!   (`/v1/embeddings`, base64) while `--single-clients` send EmbeddingGemma single texts and `--doc-clients` send
//!   SciFact documents (real lengths, a `--long-share` of them past the 2,048-token limit, cut by the server), in
//!   three phases of `--phase` each: EmbeddingGemma alone, potion alone, both. Per phase and kind: p50/p95/p99,
//!   potion texts/s, lost requests, vectors not bit-identical to their single-request reference, RSS (1 Hz).
//! - **memory** ([`run_memory`]): `--clients` clients each send one request of 2,048-token documents, as many as
//!   `--max-inputs` and `--max-body-bytes` allow, all at once; reports the peak RSS (`VmHWM`) against a limit.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use crate::http::{self, Client};
use crate::server::{self, Server};
use deposium_test_support::{base64_floats, floats, Rng};

use crate::percentile;

#[derive(Debug, Clone)]
pub struct MixedConfig {
    pub url: Option<String>,
    pub pid: Option<u32>,
    pub bin: Option<PathBuf>,
    pub server_args: Vec<String>,
    pub gemma: String,
    pub potion: String,
    /// Length of each phase.
    pub phase: Duration,
    pub flood_clients: usize,
    /// Texts per flood request.
    pub flood_batch: usize,
    pub single_clients: usize,
    pub doc_clients: usize,
    /// Distinct SciFact documents.
    pub docs: usize,
    /// Share of documents made long enough to reach the 2,048-token limit.
    pub long_share: f64,
    pub timeout: Duration,
    pub seed: u64,
    pub out: PathBuf,
    pub sts: Option<PathBuf>,
    pub scifact: Option<PathBuf>,
}

/// The SciFact corpus: `../shared/data/retrieval/SciFact/corpus.jsonl` from the workspace root (or a parent).
pub fn find_scifact() -> Option<PathBuf> {
    crate::workspace_root()
        .ancestors()
        .map(|d| d.join("shared/data/retrieval/SciFact/corpus.jsonl"))
        .find(|p| p.is_file())
}

/// `n` documents (`title. text`), every `1/long_share`-th made of 12 consecutive ones (over 2,048 tokens).
pub fn scifact_docs(path: &Path, n: usize, long_share: f64) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut all = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        let (title, body) = (v["title"].as_str().unwrap_or(""), v["text"].as_str().unwrap_or(""));
        if !body.is_empty() {
            all.push(format!("{title}. {body}"));
        }
    }
    anyhow::ensure!(all.len() >= n + 12, "{}: only {} documents", path.display(), all.len());
    let every = if long_share > 0.0 { (1.0 / long_share).round().max(1.0) as usize } else { usize::MAX };
    Ok((0..n).map(|i| if i % every == every - 1 { all[i..i + 12].join("\n\n") } else { all[i].clone() }).collect())
}

/// Start the server (or connect to `--url`) and wait for `/health`.
fn server_for(
    url: &Option<String>,
    pid: Option<u32>,
    bin: &Option<PathBuf>,
    models: &[&str],
    server_args: &[String],
) -> anyhow::Result<(Option<Server>, String, Option<u32>)> {
    if let Some(url) = url {
        let addr = url.trim_start_matches("http://").trim_end_matches('/').to_string();
        http::loopback(&addr)?;
        return Ok((None, addr, pid));
    }
    let bin = bin
        .clone()
        .or_else(|| crate::find_server_binary(std::env::current_exe().ok().as_deref()))
        .context("deposium-embed not found: pass --bin")?;
    let mut args: Vec<String> = vec!["--model".into(), models.join(",")];
    args.extend(server_args.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    eprintln!("[soak] starting {} serve {}", bin.display(), args.join(" "));
    let s = Server::start(&bin, &args, Duration::from_secs(900))?;
    let (addr, pid) = (s.addr.clone(), s.pid);
    Ok((Some(s), addr, Some(pid)))
}

fn vm_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Embeddings of a response: Ollama `embeddings`, or OpenAI `data[].embedding` (floats or base64).
fn vectors(v: &Value) -> Option<Vec<Vec<f32>>> {
    if let Some(e) = v.get("embeddings") {
        return e.as_array()?.iter().map(floats).collect();
    }
    v.get("data")?
        .as_array()?
        .iter()
        .map(|d| match &d["embedding"] {
            Value::String(s) => base64_floats(s),
            other => floats(other),
        })
        .collect()
}

/// A vector matches its single-request reference at this cosine or above (as the soak's `--min-cosine`).
pub const MIN_COSINE: f64 = 0.99999;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Single,
    Doc,
    Flood,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Single => "embeddinggemma single text",
            Kind::Doc => "embeddinggemma SciFact document",
            Kind::Flood => "potion-base-8M 1,000 texts",
        }
    }
}

#[derive(Default)]
struct Tally {
    latencies: Vec<f64>,
    ok: u64,
    lost: u64,
    /// Vectors with cosine < [`MIN_COSINE`] to their reference.
    mismatched: u64,
    /// Vectors not bit-identical to their reference (reported: last-bit differences exist, see docs/production.md).
    not_bit_identical: u64,
    texts: u64,
    statuses: HashMap<u16, u64>,
    /// Least cosine between a returned vector and its reference.
    min_cosine: f64,
}

struct Shared {
    addr: String,
    timeout: Duration,
    singles: Vec<String>,
    docs: Vec<String>,
    pool: Vec<String>,
    /// References: single texts, documents (EmbeddingGemma), pool texts (potion), each embedded alone.
    ref_single: Vec<Vec<f32>>,
    ref_doc: Vec<Vec<f32>>,
    ref_pool: Vec<Vec<f32>>,
    gemma: String,
    potion: String,
    flood_batch: usize,
}

fn embed_alone(c: &mut Client, model: &str, text: &str) -> anyhow::Result<Vec<f32>> {
    let r = c.post_json("/api/embed", &json!({"model": model, "input": [text]}))?;
    anyhow::ensure!(r.status == 200, "reference for {model}: {} {}", r.status, r.text());
    let v = r.json().and_then(|v| vectors(&v)).context("reference: no embeddings")?;
    v.into_iter().next().context("reference: empty")
}

/// One client's loop until `stop`.
fn client(sh: &Shared, kind: Kind, seed: u64, stop: &AtomicBool, tally: &Mutex<Tally>) {
    let mut rng = Rng::new(seed);
    let mut c = match Client::new(&sh.addr, sh.timeout) {
        Ok(c) => c,
        Err(_) => return,
    };
    while !stop.load(Ordering::Relaxed) {
        let (route, body, expect): (&str, Value, Vec<&Vec<f32>>) = match kind {
            Kind::Single => {
                let i = rng.below(sh.singles.len());
                ("/api/embed", json!({"model": sh.gemma, "input": sh.singles[i]}), vec![&sh.ref_single[i]])
            }
            Kind::Doc => {
                let i = rng.below(sh.docs.len());
                ("/api/embed", json!({"model": sh.gemma, "input": sh.docs[i]}), vec![&sh.ref_doc[i]])
            }
            Kind::Flood => {
                let start = rng.below(sh.pool.len());
                let idx: Vec<usize> = (0..sh.flood_batch).map(|k| (start + k) % sh.pool.len()).collect();
                let input: Vec<&str> = idx.iter().map(|&i| sh.pool[i].as_str()).collect();
                (
                    "/v1/embeddings",
                    json!({"model": sh.potion, "input": input, "encoding_format": "base64"}),
                    idx.iter().map(|&i| &sh.ref_pool[i]).collect(),
                )
            }
        };
        let t0 = Instant::now();
        let resp = c.post_json(route, &body);
        let secs = t0.elapsed().as_secs_f64();
        let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
        match resp {
            Err(_) => {
                t.lost += 1;
                c = match Client::new(&sh.addr, sh.timeout) {
                    Ok(c) => c,
                    Err(_) => return,
                };
            }
            Ok(r) => {
                *t.statuses.entry(r.status).or_default() += 1;
                if r.status != 200 {
                    t.lost += 1;
                    continue;
                }
                drop(t);
                let got = r.json().and_then(|v| vectors(&v));
                let (bad, bits, cos) = match &got {
                    Some(got) if got.len() == expect.len() => {
                        let cos: Vec<f64> = got.iter().zip(&expect).map(|(a, b)| crate::cosine(a, b)).collect();
                        (
                            cos.iter().filter(|&&c| c < MIN_COSINE).count() as u64,
                            got.iter().zip(&expect).filter(|(a, b)| a != *b).count() as u64,
                            cos.iter().copied().fold(1.0, f64::min),
                        )
                    }
                    _ => (expect.len() as u64, expect.len() as u64, -1.0),
                };
                let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                t.min_cosine = t.min_cosine.min(cos);
                t.not_bit_identical += bits;
                t.ok += 1;
                t.mismatched += bad;
                t.texts += expect.len() as u64;
                t.latencies.push(secs);
            }
        }
    }
}

fn stats(t: &Tally, secs: f64) -> Value {
    let mut l = t.latencies.clone();
    l.sort_by(f64::total_cmp);
    let ms = |p: f64| (percentile(&l, p) * 1e4).round() / 10.0;
    json!({
        "requests": t.ok, "lost": t.lost, "mismatched_vectors": t.mismatched, "min_cosine": t.min_cosine,
        "not_bit_identical": t.not_bit_identical,
        "p50_ms": ms(50.0), "p95_ms": ms(95.0), "p99_ms": ms(99.0), "max_ms": ms(100.0),
        "texts_per_s": (t.texts as f64 / secs * 10.0).round() / 10.0,
        "statuses": t.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    })
}

/// The three phases; writes `OUT.json` and `OUT.md`. `pass` is false when a request was lost or a vector differed.
pub fn run_mixed(cfg: MixedConfig) -> anyhow::Result<Value> {
    let sts = cfg.sts.clone().or_else(crate::find_sts_file).context("STS Benchmark TSV not found: pass --sts")?;
    let scifact =
        cfg.scifact.clone().or_else(find_scifact).context("SciFact corpus.jsonl not found: pass --scifact")?;
    let sentences = crate::texts::load_sts(&sts)?;
    let docs = scifact_docs(&scifact, cfg.docs.max(1), cfg.long_share)?;
    let singles: Vec<String> = sentences.iter().take(64).cloned().collect();
    let pool: Vec<String> = sentences.iter().take(1500).cloned().collect();
    let (server, addr, pid) = server_for(&cfg.url, cfg.pid, &cfg.bin, &[&cfg.gemma, &cfg.potion], &cfg.server_args)?;

    // References, one text per request.
    let t0 = Instant::now();
    let mut c = Client::new(&addr, cfg.timeout)?;
    let ref_single = singles.iter().map(|t| embed_alone(&mut c, &cfg.gemma, t)).collect::<anyhow::Result<Vec<_>>>()?;
    let ref_doc = docs.iter().map(|t| embed_alone(&mut c, &cfg.gemma, t)).collect::<anyhow::Result<Vec<_>>>()?;
    let ref_pool = pool.iter().map(|t| embed_alone(&mut c, &cfg.potion, t)).collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!(
        "[soak] references: {} single texts, {} documents, {} potion texts in {:.1}s",
        singles.len(),
        docs.len(),
        pool.len(),
        t0.elapsed().as_secs_f64()
    );
    let sh = Arc::new(Shared {
        addr: addr.clone(),
        timeout: cfg.timeout,
        singles,
        docs,
        pool,
        ref_single,
        ref_doc,
        ref_pool,
        gemma: cfg.gemma.clone(),
        potion: cfg.potion.clone(),
        flood_batch: cfg.flood_batch.max(1),
    });

    let rss_of = |pid: Option<u32>| -> Option<u64> {
        match pid {
            Some(p) => server::rss_bytes(p),
            None => None,
        }
    };
    let mut phases = Vec::new();
    let mut rss_series: Vec<(String, f64, u64)> = Vec::new();
    let (mut lost, mut mismatched) = (0u64, 0u64);
    let t_run = Instant::now();
    for (name, gemma_on, flood_on) in
        [("alone: embeddinggemma", true, false), ("alone: potion-base-8M", false, true), ("mixed", true, true)]
    {
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients: Vec<(Kind, usize)> = Vec::new();
        if gemma_on {
            clients.extend((0..cfg.single_clients).map(|i| (Kind::Single, i)));
            clients.extend((0..cfg.doc_clients).map(|i| (Kind::Doc, i)));
        }
        if flood_on {
            clients.extend((0..cfg.flood_clients).map(|i| (Kind::Flood, i)));
        }
        let tallies: HashMap<Kind, Arc<Mutex<Tally>>> = [Kind::Single, Kind::Doc, Kind::Flood]
            .into_iter()
            .map(|k| (k, Arc::new(Mutex::new(Tally { min_cosine: 1.0, ..Tally::default() }))))
            .collect();
        let t_phase = Instant::now();
        let handles: Vec<_> = clients
            .iter()
            .map(|&(kind, i)| {
                let (sh, stop, tally) = (sh.clone(), stop.clone(), tallies[&kind].clone());
                let seed = cfg.seed ^ ((kind as u64) << 32) ^ i as u64 ^ (phases.len() as u64) << 40;
                std::thread::spawn(move || client(&sh, kind, seed, &stop, &tally))
            })
            .collect();
        let samples = AtomicU64::new(0);
        while t_phase.elapsed() < cfg.phase {
            if let Some(rss) = rss_of(pid) {
                rss_series.push((name.to_string(), t_run.elapsed().as_secs_f64(), rss));
                samples.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_secs(1).min(cfg.phase.saturating_sub(t_phase.elapsed())));
        }
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let _ = h.join();
        }
        let secs = t_phase.elapsed().as_secs_f64();
        let mut per_kind = serde_json::Map::new();
        for (kind, on) in [
            (Kind::Single, gemma_on && cfg.single_clients > 0),
            (Kind::Doc, gemma_on && cfg.doc_clients > 0),
            (Kind::Flood, flood_on),
        ] {
            if !on {
                continue;
            }
            let t = tallies[&kind].lock().unwrap_or_else(|p| p.into_inner());
            lost += t.lost;
            mismatched += t.mismatched;
            per_kind.insert(kind.name().to_string(), stats(&t, secs));
        }
        let phase_rss: Vec<u64> = rss_series.iter().filter(|(p, _, _)| p == name).map(|s| s.2).collect();
        eprintln!("[soak] phase {name}: {:.0}s, {}", secs, Value::Object(per_kind.clone()));
        phases.push(json!({
            "phase": name, "seconds": secs, "kinds": per_kind,
            "rss_max_mib": phase_rss.iter().max().map(|&b| b as f64 / 1048576.0),
        }));
    }
    let metrics =
        http::once(&addr, "GET", "/metrics", b"", Duration::from_secs(10)).map(|r| r.text()).unwrap_or_default();
    drop(server);

    // Goals (reported, not asserted).
    let get = |phase: usize, kind: Kind, key: &str| phases[phase]["kinds"][kind.name()][key].as_f64();
    let p95_ratio = match (get(2, Kind::Single, "p95_ms"), get(0, Kind::Single, "p95_ms")) {
        (Some(m), Some(a)) if a > 0.0 => Some(m / a),
        _ => None,
    };
    let tput_ratio = match (get(2, Kind::Flood, "texts_per_s"), get(1, Kind::Flood, "texts_per_s")) {
        (Some(m), Some(a)) if a > 0.0 => Some(m / a),
        _ => None,
    };
    // RSS flat after warm-up: the mixed phase's last third against its second third (medians).
    let mixed_rss: Vec<u64> = rss_series.iter().filter(|s| s.0 == "mixed").map(|s| s.2).collect();
    let median = |v: &[u64]| -> Option<f64> {
        let mut v = v.to_vec();
        v.sort_unstable();
        v.get(v.len() / 2).map(|&b| b as f64 / 1048576.0)
    };
    let n = mixed_rss.len();
    let (mid, last) = (median(&mixed_rss[n / 3..2 * n / 3]), median(&mixed_rss[2 * n / 3..]));
    let rss_growth_pct = match (mid, last) {
        (Some(a), Some(b)) if a > 0.0 => Some((b / a - 1.0) * 100.0),
        _ => None,
    };
    let report = json!({
        "scenario": "mixed",
        "config": {
            "phase_s": cfg.phase.as_secs_f64(), "flood_clients": cfg.flood_clients, "flood_batch": cfg.flood_batch,
            "single_clients": cfg.single_clients, "doc_clients": cfg.doc_clients, "docs": cfg.docs,
            "long_share": cfg.long_share, "server_args": cfg.server_args,
        },
        "phases": phases,
        "goals": {
            "gemma_single_p95_mixed_over_alone": p95_ratio, "gemma_single_p95_goal": 3.0,
            "potion_texts_per_s_mixed_over_alone": tput_ratio, "potion_throughput_goal": 0.5,
            "rss_mixed_last_third_vs_middle_pct": rss_growth_pct,
        },
        "lost": lost,
        "mismatched_vectors": mismatched,
        "rss_mib": rss_series.iter().map(|(p, t, b)| json!([p, (t * 10.0).round() / 10.0, b / 1048576])).collect::<Vec<_>>(),
        "queue_wait": metrics.lines().filter(|l| l.starts_with("deposium_queue_wait_seconds_sum") || l.starts_with("deposium_queue_wait_seconds_count") || l.starts_with("deposium_compute_seconds_total")).collect::<Vec<_>>(),
        "pass": lost == 0 && mismatched == 0,
    });
    write(&cfg.out, &report, &mixed_md(&report))?;
    Ok(report)
}

fn mixed_md(r: &Value) -> String {
    let mut md = String::from("# Mixed load (issue 22)\n\n");
    md.push_str(&format!("Config: `{}`\n\n", r["config"]));
    md.push_str("| phase | requests | p50 ms | p95 ms | p99 ms | max ms | texts/s | lost | mismatched | not bit-identical | RSS max MiB |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for p in r["phases"].as_array().into_iter().flatten() {
        for (kind, s) in p["kinds"].as_object().into_iter().flatten() {
            md.push_str(&format!(
                "| {} — {kind} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
                p["phase"].as_str().unwrap_or(""),
                s["requests"],
                s["p50_ms"],
                s["p95_ms"],
                s["p99_ms"],
                s["max_ms"],
                s["texts_per_s"],
                s["lost"],
                s["mismatched_vectors"],
                s["not_bit_identical"],
                p["rss_max_mib"].as_f64().unwrap_or(f64::NAN)
            ));
        }
    }
    let g = &r["goals"];
    let f = |v: &Value| v.as_f64().map_or("n/a".into(), |x| format!("{x:.2}"));
    md.push_str(&format!(
        "\nGoals: EmbeddingGemma single-text p95 mixed / alone = **{}** (goal ≤ 3); potion texts/s mixed / alone = **{}** \
         (goal ≥ 0.5); RSS in the mixed phase, last third vs middle third: {} %; lost {}, mismatched vectors {} → {}.\n",
        f(&g["gemma_single_p95_mixed_over_alone"]),
        f(&g["potion_texts_per_s_mixed_over_alone"]),
        f(&g["rss_mixed_last_third_vs_middle_pct"]),
        r["lost"], r["mismatched_vectors"],
        if r["pass"] == true { "PASS" } else { "FAIL" }
    ));
    md
}

fn write(out: &Path, report: &Value, md: &str) -> anyhow::Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out.with_extension("json"), serde_json::to_string_pretty(report)?)?;
    std::fs::write(out.with_extension("md"), md)?;
    println!("{md}");
    Ok(())
}

#[derive(Debug, Clone)]
pub struct MemoryConfig {
    pub url: Option<String>,
    pub pid: Option<u32>,
    pub bin: Option<PathBuf>,
    pub server_args: Vec<String>,
    pub model: String,
    pub clients: usize,
    /// Inputs per request (the server's `--max-inputs`), cut to what fits in `max_body_bytes`.
    pub max_inputs: usize,
    pub max_body_bytes: usize,
    /// How long to hold the load (requests still queued then are abandoned: the clients hang up).
    pub hold: Duration,
    /// The limit the peak is compared with (deploy/kubernetes: 2 Gi).
    pub limit_mib: f64,
    pub out: PathBuf,
    pub scifact: Option<PathBuf>,
}

/// `clients` requests of 2,048-token documents at once; the peak RSS against `limit_mib`.
pub fn run_memory(cfg: MemoryConfig) -> anyhow::Result<Value> {
    let scifact =
        cfg.scifact.clone().or_else(find_scifact).context("SciFact corpus.jsonl not found: pass --scifact")?;
    // Every document just over 2,048 tokens (scientific English: ~1.4 tokens per word), so that as many as possible
    // fit in one body.
    let docs: Vec<String> = scifact_docs(&scifact, 64, 1.0)?
        .into_iter()
        .map(|d| d.split_whitespace().take(1600).collect::<Vec<_>>().join(" "))
        .collect();
    let (server, addr, pid) = server_for(&cfg.url, cfg.pid, &cfg.bin, &[&cfg.model], &cfg.server_args)?;
    let pid = pid.context("memory scenario needs the server's pid (--pid with --url)")?;
    let mut input: Vec<&str> = Vec::new();
    let mut bytes = 200;
    for d in docs.iter().cycle().take(cfg.max_inputs) {
        let cost = serde_json::to_string(d)?.len() + 2;
        if bytes + cost > cfg.max_body_bytes {
            break;
        }
        bytes += cost;
        input.push(d);
    }
    let body = Arc::new(json!({"model": cfg.model, "input": input}).to_string());
    let rss0 = vm_kb(pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0;
    // The peak of loading the model (ONNX Runtime builds the session) is reported apart: reset VmHWM
    // (`clear_refs` 5, Linux 4.0+) so that the peak below is the load's.
    let hwm0 = vm_kb(pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0;
    let hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    eprintln!(
        "[soak] memory: {} clients x {} documents of >= 2,048 tokens ({:.1} MB bodies); RSS {rss0:.0} MiB",
        cfg.clients,
        input.len(),
        body.len() as f64 / 1e6
    );
    let statuses: Arc<Mutex<HashMap<u16, u64>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let addr2 = addr.clone();
    let handles: Vec<_> = (0..cfg.clients)
        .map(|_| {
            let (body, statuses, errors, addr, hold) =
                (body.clone(), statuses.clone(), errors.clone(), addr2.clone(), cfg.hold);
            std::thread::spawn(move || {
                // The read timeout ends the wait: the client hangs up and the server drops what is queued.
                match http::once(&addr, "POST", "/api/embed", body.as_bytes(), hold) {
                    Ok(r) => {
                        *statuses.lock().unwrap_or_else(|p| p.into_inner()).entry(r.status).or_default() += 1;
                        if r.status != 200 {
                            errors.lock().unwrap_or_else(|p| p.into_inner()).push(r.text());
                        }
                    }
                    Err(_) => *statuses.lock().unwrap_or_else(|p| p.into_inner()).entry(0).or_default() += 1,
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    let mut series = Vec::new();
    while t0.elapsed() < cfg.hold + Duration::from_secs(2) {
        if let Some(kb) = vm_kb(pid, "VmRSS:") {
            series.push(((t0.elapsed().as_secs_f64() * 10.0).round() / 10.0, kb / 1024));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    for h in handles {
        let _ = h.join();
    }
    let hwm = vm_kb(pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0;
    let peak_sampled = series.iter().map(|s| s.1).max().unwrap_or(0) as f64;
    let alive = Path::new(&format!("/proc/{pid}")).exists();
    let metrics =
        http::once(&addr, "GET", "/metrics", b"", Duration::from_secs(10)).map(|r| r.text()).unwrap_or_default();
    drop(server);
    let statuses = statuses.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut errs = errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    errs.dedup();
    let report = json!({
        "scenario": "memory",
        "config": {"clients": cfg.clients, "inputs_per_request": input.len(), "body_bytes": body.len(),
                   "hold_s": cfg.hold.as_secs_f64(), "server_args": cfg.server_args, "model": cfg.model},
        "rss_before_mib": rss0, "hwm_before_mib": hwm0, "hwm_reset_before_load": hwm_reset,
        "peak_rss_mib": hwm, "peak_rss_sampled_mib": peak_sampled, "limit_mib": cfg.limit_mib,
        "within_limit": hwm < cfg.limit_mib, "server_alive": alive,
        "statuses": statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "errors": errs.into_iter().take(3).collect::<Vec<_>>(),
        "rss_series_mib": series,
        "memory_metrics": metrics.lines().filter(|l| l.contains("queued_tokens") || l.contains("admission")).collect::<Vec<_>>(),
        "pass": hwm < cfg.limit_mib && alive,
    });
    let md = format!(
        "# Memory ceiling (issue 22)\n\n{} clients x {} documents of 2,048 tokens ({:.1} MB bodies) to {}: peak RSS \
         (VmHWM{}) **{hwm:.0} MiB** against the {:.0} MiB limit ({}); RSS before {rss0:.0} MiB (peak while loading \
         {hwm0:.0} MiB); statuses {:?}.\n",
        cfg.clients,
        input.len(),
        body.len() as f64 / 1e6,
        cfg.model,
        if hwm_reset { ", reset after loading" } else { ", loading included" },
        cfg.limit_mib,
        if hwm < cfg.limit_mib { "within" } else { "OVER" },
        report["statuses"]
    );
    write(&cfg.out, &report, &md)?;
    Ok(report)
}
