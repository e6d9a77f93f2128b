//! Model2Vec throughput: texts/s for potion-base-8M over the STSBenchmark test sentences ×10.
//!
//! `cargo bench -p deposium-engine --bench model2vec` (release profile). Needs `scripts/fetch.sh small` and the
//! STS data (`../shared/data/sts` beside the repository, `$DEPOSIUM_STS_DATA`, or a path as first argument).
//! Measures 1 and 2 threads (rayon chunks of 1024 texts), best of 15 runs:
//! - `tokenize`: ids only, the fast WordPiece path vs the `tokenizers` crate;
//! - `backend`: `tokenize` + `embed_tokens` per text (the static tier's own cost);
//! - `Model::embed`: the full engine path every API uses (prompt, sort, batch, finish).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use deposium_engine::model2vec::StaticModel;
use deposium_engine::{paths, Backend, EmbedRequest, Model};
use rayon::prelude::*;

const CHUNK: usize = 1024;
const RUNS: usize = 15;

fn sts_file() -> PathBuf {
    let arg = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let dir = if let Some(a) = arg {
        PathBuf::from(a)
    } else if let Some(d) = std::env::var_os("DEPOSIUM_STS_DATA") {
        PathBuf::from(d)
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/sts")
    };
    if dir.is_file() {
        dir
    } else {
        dir.join("STSBenchmark_test.tsv")
    }
}

/// Nanoseconds this thread has run on a CPU (Linux `/proc/thread-self/schedstat`), to see through a machine
/// shared with other work.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}

/// Best-of-`RUNS` texts/s of `f` over `n` texts: wall clock, and (for work on the calling thread alone) per
/// thread CPU time.
fn rate(n: usize, cpu: bool, mut f: impl FnMut()) -> (f64, Option<f64>) {
    f(); // warm-up
    let (mut wall, mut on_cpu) = (0f64, None::<f64>);
    for _ in 0..RUNS {
        let c0 = if cpu { thread_cpu_ns() } else { None };
        let t = Instant::now();
        f();
        wall = wall.max(n as f64 / t.elapsed().as_secs_f64());
        if let (Some(c0), Some(c1)) = (c0, thread_cpu_ns()) {
            let r = n as f64 / ((c1 - c0).max(1) as f64 * 1e-9);
            on_cpu = Some(on_cpu.map_or(r, |x: f64| x.max(r)));
        }
    }
    (wall, on_cpu)
}

fn show((wall, cpu): (f64, Option<f64>)) -> String {
    match cpu {
        Some(c) => format!("{wall:>9.0}/s (CPU time: {c:>9.0}/s)"),
        None => format!("{wall:>9.0}/s"),
    }
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: skip the measurement there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("model2vec bench: run with `cargo bench -p deposium-engine --bench model2vec`");
        return;
    }
    let file = sts_file();
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let base: Vec<String> = text
        .lines()
        .skip(1)
        .flat_map(|l| l.split('\t').skip(1).take(2).map(str::to_string).collect::<Vec<_>>())
        .collect();
    let texts: Vec<String> = (0..10).flat_map(|_| base.iter().cloned()).collect();
    let n = texts.len();

    let dir = paths::models_dir().join("potion-base-8M");
    let t = Instant::now();
    let backend = Arc::new(
        StaticModel::load(&dir, "potion-base-8M")
            .unwrap_or_else(|e| panic!("{} (run `scripts/fetch.sh small`)", e.report())),
    );
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let model = Model::new(backend.clone());
    let tokens: usize = texts.iter().map(|t| backend.tokenize(t).unwrap().len()).sum();
    println!(
        "potion-base-8M: {n} texts ({} STS sentences x10), {:.1} tokens/text, load {load_ms:.0} ms",
        base.len(),
        tokens as f64 / n as f64
    );

    let one = |s: &str| -> Vec<f32> {
        let ids = backend.tokenize(s).unwrap();
        backend.embed_tokens(std::slice::from_ref(&ids)).unwrap().pop().unwrap()
    };
    let requests: Vec<EmbedRequest> = texts.chunks(CHUNK).map(|c| EmbedRequest::new(c.to_vec())).collect();

    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let fast = rate(n, threads == 1, || {
                texts.par_chunks(CHUNK).for_each(|c| {
                    for s in c {
                        std::hint::black_box(backend.tokenize(s).unwrap());
                    }
                })
            });
            let slow = rate(n, threads == 1, || {
                texts.par_chunks(CHUNK).for_each(|c| {
                    for s in c {
                        std::hint::black_box(backend.tokenize_reference(s).unwrap());
                    }
                })
            });
            let direct = rate(n, threads == 1, || {
                texts.par_chunks(CHUNK).for_each(|c| {
                    for s in c {
                        std::hint::black_box(one(s));
                    }
                })
            });
            let full = rate(n, threads == 1, || {
                requests.par_iter().for_each(|r| {
                    std::hint::black_box(model.embed(r).unwrap());
                })
            });
            println!("{threads} thread(s):");
            println!("  tokenize, fast WordPiece      {}", show(fast));
            println!("  tokenize, tokenizers crate    {}", show(slow));
            println!("  backend tokenize+embed_tokens {}", show(direct));
            println!("  Model::embed (chunks of {CHUNK})  {}", show(full));
        });
    }
}
