//! `deposium-soak`: start (or connect to) `deposium-embed serve` on loopback, drive every embedding route with
//! mixed lengths, batch sizes, prompts and both models for a bounded time, check every vector against
//! single-request references, sample RSS, and write `<out>.json` + `<out>.md`. Exits 1 when a check fails.
//!
//! ```sh
//! deposium-soak --duration 600s --concurrency 64            # make soak
//! deposium-soak --duration 30s --concurrency 8 --pool 64 --heavy-pool 12 --max-tokens 512
//! deposium-soak --url 127.0.0.1:11435 --pid $(pgrep -n deposium-embed) --duration 60s
//! deposium-soak --scenario mixed --phase 60s      # make soak-mixed: potion flood beside EmbeddingGemma
//! deposium-soak --scenario memory --clients 64    # peak RSS under 64 requests of 2,048-token documents
//! ```
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use deposium_soak::{mixed, parse_duration, soak};

#[derive(Parser, Debug)]
#[command(name = "deposium-soak", version, about = "Load/soak harness for deposium-embed serve (loopback only)")]
struct Args {
    /// What to run: `soak` (every route, both models), `mixed` (potion flood beside EmbeddingGemma: alone vs
    /// mixed latency and throughput) or `memory` (peak RSS under `--clients` requests of 2,048-token documents).
    #[arg(long, default_value = "soak", value_parser = ["soak", "mixed", "memory"])]
    scenario: String,
    /// mixed: length of each phase (EmbeddingGemma alone, potion alone, both).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    phase: Duration,
    /// mixed: clients flooding potion-base-8M.
    #[arg(long, default_value_t = 8)]
    flood_clients: usize,
    /// mixed: texts per flood request.
    #[arg(long, default_value_t = 1000)]
    flood_batch: usize,
    /// mixed: clients sending EmbeddingGemma one short text at a time.
    #[arg(long, default_value_t = 2)]
    single_clients: usize,
    /// mixed: clients sending EmbeddingGemma one SciFact document at a time.
    #[arg(long, default_value_t = 2)]
    doc_clients: usize,
    /// mixed: distinct SciFact documents.
    #[arg(long, default_value_t = 48)]
    docs: usize,
    /// mixed: share of documents over the 2,048-token limit (12 abstracts joined; the server cuts them).
    #[arg(long, default_value_t = 0.125)]
    long_share: f64,
    /// memory: concurrent clients, each with one request.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// memory: inputs per request (the server's --max-inputs), cut to what fits in --max-body-bytes.
    #[arg(long, default_value_t = 2048)]
    max_inputs: usize,
    /// memory: the server's --max-body-bytes.
    #[arg(long, default_value_t = 8 << 20)]
    max_body_bytes: usize,
    /// memory: how long the clients wait before hanging up.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    hold: Duration,
    /// memory: the limit the peak RSS is judged against, MiB (deploy/kubernetes: 2 Gi).
    #[arg(long, default_value_t = 2048.0)]
    limit_mib: f64,
    /// The SciFact corpus (default: ../shared/data/retrieval/SciFact/corpus.jsonl).
    #[arg(long)]
    scifact: Option<PathBuf>,
    /// Connect to a running server (127.0.0.1:PORT or http://127.0.0.1:PORT) instead of starting one.
    #[arg(long)]
    url: Option<String>,
    /// With --url: the server's pid, for RSS from /proc/<pid>/status (else from /api/status).
    #[arg(long)]
    pid: Option<u32>,
    /// The deposium-embed binary to start (default: next to this one, then target/release/).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Models to serve and drive (repeatable or comma-separated; default embeddinggemma and potion-base-8M, or
    /// with --url every model the server serves).
    #[arg(long = "model", value_delimiter = ',')]
    models: Vec<String>,
    /// Extra `serve` flag for a started server (repeatable), e.g. --server-arg=--max-batch-size=64.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// How long the load runs (600s, 10m, 30).
    #[arg(long, default_value = "600s", value_parser = parse_duration)]
    duration: Duration,
    /// Concurrent clients (each on its own keep-alive connection).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// At most this many requests in all.
    #[arg(long, default_value_t = 5_000_000)]
    max_requests: u64,
    /// Distinct texts in the pool (static models use all of them).
    #[arg(long, default_value_t = 320)]
    pool: usize,
    /// Texts transformer models are driven with (each needs reference vectors computed one at a time).
    #[arg(long, default_value_t = 96)]
    heavy_pool: usize,
    /// Longest text, in tokens (texts span 1 … this, log-uniformly).
    #[arg(long, default_value_t = 2048)]
    max_tokens: usize,
    /// Token budget of one request to a transformer model.
    #[arg(long, default_value_t = 4096)]
    heavy_request_tokens: usize,
    /// Requests to transformer models in flight at once (default: concurrency / 8, at least 1).
    #[arg(long)]
    heavy_clients: Option<usize>,
    /// Largest batch (inputs per request; sizes are drawn log-uniformly from 1 to this).
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Client-side timeout of one read or write (a request that times out counts as lost).
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    timeout: Duration,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of deliberately invalid requests (each must get its documented 4xx).
    #[arg(long, default_value_t = 0.05)]
    bad_share: f64,
    /// Warm-up share of the run excluded from the RSS growth check.
    #[arg(long, default_value_t = 0.2)]
    warmup: f64,
    /// Fail when RSS grows more than this (percent) after the warm-up.
    #[arg(long, default_value_t = 5.0)]
    max_rss_growth: f64,
    /// Least cosine between a returned vector and its single-request reference.
    #[arg(long, default_value_t = 0.99999)]
    min_cosine: f64,
    /// Report path without extension (writes OUT.json and OUT.md).
    #[arg(long, default_value = "results/soak")]
    out: PathBuf,
    /// The STS Benchmark TSV the texts come from (default: ../shared/data/sts/STSBenchmark_test.tsv).
    #[arg(long)]
    sts: Option<PathBuf>,
}

fn main() {
    let a = Args::parse();
    if a.scenario != "soak" {
        let gemma = a.models.first().cloned().unwrap_or_else(|| "embeddinggemma".into());
        let out = if a.out == Path::new("results/soak") {
            PathBuf::from(format!("results/soak-{}", a.scenario))
        } else {
            a.out.clone()
        };
        let result = if a.scenario == "mixed" {
            mixed::run_mixed(mixed::MixedConfig {
                url: a.url,
                pid: a.pid,
                bin: a.bin,
                server_args: a.server_args,
                potion: a.models.get(1).cloned().unwrap_or_else(|| "potion-base-8M".into()),
                gemma,
                phase: a.phase,
                flood_clients: a.flood_clients,
                flood_batch: a.flood_batch,
                single_clients: a.single_clients,
                doc_clients: a.doc_clients,
                docs: a.docs,
                long_share: a.long_share,
                timeout: a.timeout,
                seed: a.seed,
                out,
                sts: a.sts,
                scifact: a.scifact,
            })
        } else {
            mixed::run_memory(mixed::MemoryConfig {
                url: a.url,
                pid: a.pid,
                bin: a.bin,
                server_args: a.server_args,
                model: gemma,
                clients: a.clients,
                max_inputs: a.max_inputs,
                max_body_bytes: a.max_body_bytes,
                hold: a.hold,
                limit_mib: a.limit_mib,
                out,
                scifact: a.scifact,
            })
        };
        match result {
            Ok(r) if r["pass"] == true => return,
            Ok(_) => {
                eprintln!("[soak] FAIL: a check failed (see the report)");
                std::process::exit(1);
            }
            Err(e) => {
                eprintln!("[soak] error: {e:#}");
                std::process::exit(2);
            }
        }
    }
    let models = if a.models.is_empty() && a.url.is_none() {
        vec!["embeddinggemma".into(), "potion-base-8M".into()]
    } else {
        a.models
    };
    let cfg = soak::Config {
        url: a.url,
        pid: a.pid,
        bin: a.bin,
        models,
        server_args: a.server_args,
        duration: a.duration,
        concurrency: a.concurrency,
        max_requests: a.max_requests,
        pool: a.pool,
        heavy_pool: a.heavy_pool,
        max_tokens: a.max_tokens,
        heavy_request_tokens: a.heavy_request_tokens,
        heavy_clients: a.heavy_clients.unwrap_or((a.concurrency / 8).max(1)),
        max_batch: a.max_batch,
        timeout: a.timeout,
        seed: a.seed,
        bad_share: a.bad_share,
        warmup: a.warmup,
        max_rss_growth_pct: a.max_rss_growth,
        min_cosine: a.min_cosine,
        out: a.out,
        sts: a.sts,
    };
    match soak::run(cfg) {
        Ok(report) if report["pass"] == true => {}
        Ok(_) => {
            eprintln!("[soak] FAIL: a check failed (see the report)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("[soak] error: {e:#}");
            std::process::exit(2);
        }
    }
}
