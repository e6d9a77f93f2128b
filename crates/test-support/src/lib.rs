//! What the workspace's tests and its soak harness share, so that each exists once: comparing vectors, reading
//! embeddings out of API answers, a seedable generator and the error shapes of the API families.
//!
//! `floats` and `base64_floats` return `None` on a malformed answer (the soak harness counts it); `vector` and
//! `matrix` panic with the value (tests).
use base64::Engine as _;
use serde_json::Value;

/// Cosine similarity in f64. Two zero vectors (Model2Vec's empty text) are the same vector: 1.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 && nb == 0.0 {
        return 1.0;
    }
    dot / (na.sqrt() * nb.sqrt()).max(f64::MIN_POSITIVE)
}

/// A JSON array of numbers as f32.
pub fn floats(v: &Value) -> Option<Vec<f32>> {
    v.as_array()?.iter().map(|x| x.as_f64().map(|f| f as f32)).collect()
}

/// An OpenAI base64 embedding (little-endian f32) as floats.
pub fn base64_floats(s: &str) -> Option<Vec<f32>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    if bytes.len() % 4 != 0 {
        return None;
    }
    Some(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// A JSON array of numbers (panics on anything else).
pub fn vector(v: &Value) -> Vec<f32> {
    floats(v).unwrap_or_else(|| panic!("not an array of numbers: {v}"))
}

/// A JSON array of arrays of numbers.
pub fn matrix(v: &Value) -> Vec<Vec<f32>> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}")).iter().map(vector).collect()
}

/// `{"error": "..."}` (Ollama, seed routes; TEI adds `error_type`).
pub fn assert_plain_error(v: &Value) {
    assert!(v["error"].is_string(), "{v}");
}

/// `{"error": "...", "error_type": "..."}`.
pub fn assert_tei_error(v: &Value) {
    assert!(v["error"].is_string() && v["error_type"].is_string(), "{v}");
}

/// `{"error": {"message", "type", "param", "code"}}`.
pub fn assert_openai_error(v: &Value) {
    let e = &v["error"];
    assert!(e["message"].is_string() && e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
}

/// SplitMix64: a small, seedable generator (no dependency, the same sequence everywhere).
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

    /// Uniform in `[-0.5, 0.5)`, as f32 (test weights and activations).
    pub fn centered(&mut self) -> f32 {
        (self.unit() - 0.5) as f32
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine(&[1.0, 0.0], &[0.0, 2.0])).abs() < 1e-12);
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
        assert!((cosine(&[1.0, 0.0], &[-3.0, 0.0]) + 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[0.0; 3], &[0.0; 3]), 1.0);
        assert_eq!(cosine(&[0.0; 3], &[1.0, 0.0, 0.0]), 0.0);
    }

    #[test]
    fn base64_round_trip() {
        let v = [0.5f32, -1.25, 3.0e-8, f32::MAX];
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let s = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(base64_floats(&s).unwrap(), v);
        assert_eq!(base64_floats("AAAA"), None, "3 bytes are no f32");
        assert_eq!(base64_floats("not base64!"), None);
    }

    #[test]
    fn json_readers() {
        assert_eq!(matrix(&json!([[1, 2.5], []])), vec![vec![1.0, 2.5], vec![]]);
        assert_eq!(floats(&json!([1, "x"])), None);
        assert_eq!(floats(&json!({"a": 1})), None);
    }

    #[test]
    fn rng_is_seeded_and_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        assert_eq!(xs, (0..8).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(xs, (0..8).map(|_| Rng::new(8).next_u64()).collect::<Vec<_>>());
        let mut r = Rng::new(1);
        for _ in 0..10_000 {
            assert!(r.below(5) < 5);
            let c = r.centered();
            assert!((-0.5..0.5).contains(&c));
            let l = r.log_uniform(3, 40);
            assert!((3..=40).contains(&l));
        }
    }
}
