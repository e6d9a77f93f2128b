//! What the run's parts share: its settings, the served models and texts, the planned requests and what each
//! client counts.
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

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
pub(super) struct ModelDesc {
    pub(super) name: String,
    /// A transformer (real inference per token), as opposed to a static lookup model.
    pub(super) heavy: bool,
    pub(super) dim: usize,
    pub(super) max_tokens: usize,
    pub(super) has_query: bool,
    pub(super) has_document: bool,
    pub(super) matryoshka: Vec<usize>,
    /// Texts this model is driven with: pool indices `0..n_texts`.
    pub(super) n_texts: usize,
    /// Token count of each text (from `/tokenize`, cut to `max_tokens`).
    pub(super) tokens: Vec<usize>,
    /// Short texts used as rerank queries.
    pub(super) queries: Vec<usize>,
}

pub(super) const P_NONE: u8 = 0;
pub(super) const P_DOCUMENT: u8 = 1;
pub(super) const P_QUERY: u8 = 2;

pub(super) fn prompt_name(p: u8) -> Option<&'static str> {
    match p {
        P_DOCUMENT => Some("document"),
        P_QUERY => Some("query"),
        _ => None,
    }
}

/// The texts, the models and the reference vectors, shared read-only by the clients.
pub(super) struct Workload {
    pub(super) texts: Vec<String>,
    pub(super) models: Vec<ModelDesc>,
    /// (model, prompt, text) → normalised reference vector from a single request.
    pub(super) refs: HashMap<(usize, u8, usize), Vec<f32>>,
    pub(super) max_inputs: usize,
    pub(super) max_body_bytes: usize,
    /// A body just over `max_body_bytes`.
    pub(super) oversized: Vec<u8>,
    pub(super) cfg: Config,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Shape {
    OllamaEmbed,
    LegacySingle,
    LegacyList,
    OpenAiFloat,
    OpenAiBase64,
    Tei,
}

pub(super) enum Check {
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

pub(super) struct Planned {
    pub(super) route: &'static str,
    pub(super) method: &'static str,
    pub(super) path: &'static str,
    pub(super) body: Vec<u8>,
    /// A fresh connection, closed after (invalid requests: the server may close after answering them).
    pub(super) close: bool,
    pub(super) model: Option<usize>,
    pub(super) heavy: bool,
    pub(super) check: Check,
}

/// What one client saw.
#[derive(Default)]
pub(super) struct Stats {
    pub(super) sent: u64,
    pub(super) ok: u64,
    pub(super) rejected: u64,
    pub(super) rejected_429: u64,
    pub(super) lost_timeout: u64,
    pub(super) lost_transport: u64,
    pub(super) unexpected: u64,
    pub(super) mismatched: u64,
    pub(super) statuses: BTreeMap<u16, u64>,
    /// (route, model) → latencies in ms of answered requests.
    pub(super) latency: HashMap<(String, String), Vec<f64>>,
    /// model → (vectors and scores checked, min cosine, vectors comparable bit for bit, bit-identical).
    pub(super) vectors: HashMap<String, VecStats>,
    pub(super) inputs_by_model: HashMap<String, u64>,
    pub(super) batch_sizes: Vec<usize>,
    pub(super) failures: Vec<String>,
    /// Vectors within `min_cosine` of their reference but not bit-identical: a few examples.
    pub(super) not_identical: Vec<String>,
}

impl Stats {
    pub(super) fn fail(&mut self, msg: String) {
        if self.failures.len() < 20 {
            self.failures.push(msg);
        }
    }

    pub(super) fn merge(&mut self, o: Stats) {
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

    pub(super) fn lost(&self) -> u64 {
        self.lost_timeout + self.lost_transport
    }
}

#[derive(Clone, Copy)]
pub(super) struct VecStats {
    pub(super) checked: u64,
    pub(super) min_cosine: f64,
    pub(super) comparable: u64,
    pub(super) identical: u64,
}

impl Default for VecStats {
    fn default() -> Self {
        VecStats { checked: 0, min_cosine: 1.0, comparable: 0, identical: 0 }
    }
}

pub(super) fn log(msg: impl AsRef<str>) {
    eprintln!("[soak] {}", msg.as_ref());
}

pub(super) fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}
