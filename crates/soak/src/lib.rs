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

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Cosine similarity in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 && nb == 0.0 {
        // Two zero vectors (Model2Vec's empty text) are the same vector.
        return 1.0;
    }
    dot / (na.sqrt() * nb.sqrt()).max(f64::MIN_POSITIVE)
}

/// A JSON array of numbers as f32 (`None` when it is not one).
pub fn floats(v: &serde_json::Value) -> Option<Vec<f32>> {
    v.as_array()?.iter().map(|x| x.as_f64().map(|f| f as f32)).collect()
}

/// An OpenAI base64 embedding (little-endian f32) as floats.
pub fn base64_floats(s: &str) -> Option<Vec<f32>> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    if bytes.len() % 4 != 0 {
        return None;
    }
    Some(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

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

/// SplitMix64: a small, seedable generator (no dependency, same sequence everywhere).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Log-uniform integer in `lo..=hi` (many small values, some large).
    pub fn log_uniform(&mut self, lo: usize, hi: usize) -> usize {
        let (lo, hi) = (lo.max(1) as f64, hi.max(lo.max(1)) as f64);
        let v = (lo.ln() + self.unit() * ((hi + 1.0).ln() - lo.ln())).exp();
        (v.floor() as usize).clamp(lo as usize, hi as usize)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
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
    fn percentiles_and_rng() {
        let v: Vec<f64> = (1..=100).map(|x| x as f64).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        let mut r = Rng::new(7);
        for _ in 0..1000 {
            let x = r.log_uniform(1, 64);
            assert!((1..=64).contains(&x));
        }
        assert_eq!(Rng::new(1).next_u64(), Rng::new(1).next_u64());
    }

    #[test]
    fn base64_round_trip() {
        use base64::Engine as _;
        let v = [1.5f32, -2.0, 0.25];
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let s = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(base64_floats(&s).unwrap(), v);
        assert!((cosine(&v, &v) - 1.0).abs() < 1e-12);
    }
}
