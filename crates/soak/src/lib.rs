//! deposium-soak: a load/soak harness and fault-test helpers for `deposium-embed serve`.
//!
//! Everything here talks to loopback addresses only (127.0.0.0/8, `localhost`, `[::1]`); [`http::Client`] refuses
//! any other address. The pieces:
//!
//! - [`server`]: start the real binary (`serve --port 0`), parse its `listening on http://ADDR` line, wait for
//!   `/health`, sample its RSS from `/proc/<pid>/status`, signal it, collect its log.
//! - [`http`]: a small HTTP/1.1 client on std sockets (keep-alive, timeouts, a body sent in parts).
//! - [`texts`]: a pool of distinct texts of 1 … ~2048 tokens built from the STS Benchmark sentences.
//! - [`soak`]: the mixed-route, mixed-length, mixed-batch load run with its checks and report.
//! - [`mixed`]: issue 22's scenarios: a potion-base-8M flood beside EmbeddingGemma traffic, and the memory ceiling.
pub mod http;
pub mod mixed;
pub mod server;
pub mod soak;
pub mod texts;

pub use deposium_test_support::cosine;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// `600s`, `10m`, `1h`, `250ms`, or plain seconds (`30`, `1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("not a duration: '{s}' (try 30s, 10m, 600)"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("not a duration: '{s}'"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

/// Latency percentile (nearest rank) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The workspace root (where `target/` and `results/` live), from this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `deposium-embed` next to an executable (`target/<profile>/`), else `target/release/`, else `target/debug/`.
pub fn find_server_binary(next_to: Option<&Path>) -> Option<PathBuf> {
    if let Ok(p) = std::env::var("DEPOSIUM_EMBED_BIN") {
        return Some(PathBuf::from(p));
    }
    let name = "deposium-embed";
    let mut candidates = Vec::new();
    if let Some(dir) = next_to.and_then(Path::parent) {
        candidates.push(dir.join(name));
        // Test executables live in target/<profile>/deps/.
        if let Some(up) = dir.parent() {
            candidates.push(up.join(name));
        }
    }
    let root = workspace_root();
    candidates.push(root.join("target/release").join(name));
    candidates.push(root.join("target/debug").join(name));
    candidates.into_iter().find(|p| p.is_file())
}

/// The STS Benchmark test split: `../shared/data/sts/STSBenchmark_test.tsv` from the workspace root (or a parent).
pub fn find_sts_file() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("DEPOSIUM_STS_TSV") {
        return Some(PathBuf::from(p));
    }
    workspace_root()
        .ancestors()
        .flat_map(|d| [d.join("shared/data/sts/STSBenchmark_test.tsv"), d.join("data/sts/STSBenchmark_test.tsv")])
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("600s").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(|x| x as f64).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
