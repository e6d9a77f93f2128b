//! Helpers for the server integration tests: start the real binary on a loopback port, a minimal HTTP/1.1 client
//! (std only, so a partial body can be held open), and the CLI's own vectors for comparison.
#![allow(dead_code, unused_imports)]
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use deposium_soak::http;
pub use deposium_test_support::{base64_floats, cosine, matrix, vector};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_deposium-embed");

/// Models every parity test runs on (the static tier and EmbeddingGemma int8).
pub const MODELS: &[&str] = &["potion-base-8M", "embeddinggemma"];

pub fn require_model(name: &str) {
    let p = deposium_engine::registry::resolve(name).expect("known model").dir;
    assert!(p.is_dir(), "model {} missing: run `scripts/fetch.sh` (make fetch) first", p.display());
}

/// A running `deposium-embed serve` (the soak harness's server, with panicking test helpers), killed on drop.
pub struct Server {
    inner: deposium_soak::server::Server,
    pub addr: String,
}

impl Server {
    /// Start `serve --port 0 ARGS...` and wait until `/health` answers 200.
    pub fn start(args: &[&str]) -> Server {
        let s = Self::spawn(args);
        s.wait_healthy(Duration::from_secs(120));
        s
    }

    /// Start without waiting for the models.
    pub fn spawn(args: &[&str]) -> Server {
        let inner = deposium_soak::server::Server::spawn(Path::new(BIN), args).unwrap_or_else(|e| panic!("{e:#}"));
        Server { addr: inner.addr.clone(), inner }
    }

    pub fn wait_healthy(&self, timeout: Duration) {
        self.inner.wait_healthy(timeout).unwrap_or_else(|e| panic!("{e:#}"));
    }

    pub fn log(&self) -> String {
        self.inner.log()
    }

    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    pub fn signal(&self, sig: &str) {
        self.inner.signal(sig).unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Wait for the process to exit (after a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.inner.wait_exit(timeout).expect("server did not exit")
    }

    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Resp> {
        let mut c = Conn::open(&self.addr)?;
        c.send_head(method, path, headers, body.len())?;
        c.write(body)?;
        c.read_response()
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        self.try_request(method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.request("POST", path, &[("content-type", "application/json")], body.to_string().as_bytes())
    }

    pub fn post_raw(&self, path: &str, body: &str) -> Resp {
        self.request("POST", path, &[("content-type", "application/json")], body.as_bytes())
    }
}

/// How long a test waits for an answer before calling it a hang. The slowest real request, 1,000 documents reranked
/// in one call, took 22 s alone on a 2-core AVX2 machine and over 120 s beside a parallel test.
const READ_TIMEOUT: Duration = Duration::from_secs(360);

/// One HTTP/1.1 connection (`Connection: close`), so a test can send a body in parts.
pub struct Conn(http::Conn);

impl Conn {
    pub fn open(addr: &str) -> std::io::Result<Conn> {
        Ok(Conn(http::Conn::open(http::loopback(addr)?, READ_TIMEOUT)?))
    }

    pub fn send_head(&mut self, method: &str, path: &str, headers: &[(&str, &str)], len: usize) -> std::io::Result<()> {
        self.0.send_head(method, path, headers, len, true)
    }

    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write(bytes)
    }

    pub fn read_response(mut self) -> std::io::Result<Resp> {
        self.0.read_response().map(Resp)
    }
}

/// A response; `json()` panics on a body that is not JSON.
pub struct Resp(http::Resp);

impl std::ops::Deref for Resp {
    type Target = http::Resp;

    fn deref(&self) -> &http::Resp {
        &self.0
    }
}

impl Resp {
    pub fn json(&self) -> Value {
        self.0.json().unwrap_or_else(|| panic!("not JSON: {}", self.text()))
    }
}

/// Vectors from `deposium-embed embed` (one JSON array per line).
pub fn cli_vectors(model: &str, texts: &[&str], extra: &[&str]) -> Vec<Vec<f32>> {
    let out = Command::new(BIN)
        .args(["embed", "--model", model])
        .args(extra)
        .arg("--")
        .args(texts)
        .env("NO_COLOR", "1")
        .output()
        .expect("running deposium-embed embed");
    assert!(out.status.success(), "embed failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON array per line"))
        .collect()
}

pub fn assert_same_vectors(what: &str, got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(got.len(), want.len(), "{what}: count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}[{i}]: dimension");
        let c = cosine(g, w);
        assert!(c >= 0.99999, "{what}[{i}]: cosine {c} to the CLI's vector");
    }
}

/// This status, with `{"error": "..."}` (Ollama, seed) or `{"error": "...", "error_type"}` (TEI).
pub fn assert_plain_error(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "{}", r.text());
    deposium_test_support::assert_plain_error(&r.json());
}

/// This status, with `{"error": {"message", "type", "param", "code"}}`.
pub fn assert_openai_error(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "{}", r.text());
    deposium_test_support::assert_openai_error(&r.json());
}
