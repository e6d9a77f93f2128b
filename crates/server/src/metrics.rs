//! Prometheus metrics, kept by hand: request counts by route and status, request/tokenize/inference time
//! histograms, batch sizes, queue depth, queue wait and compute time per model.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const SECONDS_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0];
const TOKEN_BUCKETS: &[f64] = &[16.0, 64.0, 256.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0, 65536.0];

/// A cumulative histogram with fixed upper bounds.
pub struct Histogram {
    bounds: &'static [f64],
    inner: Mutex<HistogramData>,
}

#[derive(Default)]
struct HistogramData {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, inner: Mutex::new(HistogramData { counts: vec![0; bounds.len()], ..Default::default() }) }
    }

    pub fn observe(&self, v: f64) {
        let mut d = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            d.counts[i] += 1;
        }
        d.sum += v;
        d.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let d = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&d.counts) {
            cumulative += c;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", d.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", d.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", d.count);
    }
}

/// Per-model figures, shared with that model's batcher.
pub struct ModelMetrics {
    pub model: String,
    /// Inputs waiting in the batcher, not yet handed to the backend.
    pub queue_depth: AtomicI64,
    pub requests: AtomicU64,
    pub inputs: AtomicU64,
    /// Inputs run through the backend (including those of requests that later failed or were dropped).
    pub backend_inputs: AtomicU64,
    /// Inputs dropped from the queue because their client went away.
    pub cancelled_inputs: AtomicU64,
    pub tokens: AtomicU64,
    pub tokenize_seconds: Histogram,
    pub inference_seconds: Histogram,
    /// Sequences per backend step.
    pub batch_size: Histogram,
    /// Tokens (unpadded) per backend step.
    pub batch_tokens: Histogram,
    /// Time from a request joining the queue to its first step (waiting for the model's turn included).
    pub queue_wait_seconds: Histogram,
    /// Backend step time, in microseconds (the compute-gate turns this model held).
    compute_micros: AtomicU64,
}

impl ModelMetrics {
    fn new(model: &str) -> Self {
        Self {
            model: model.to_string(),
            queue_depth: AtomicI64::new(0),
            requests: AtomicU64::new(0),
            inputs: AtomicU64::new(0),
            backend_inputs: AtomicU64::new(0),
            cancelled_inputs: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            tokenize_seconds: Histogram::new(SECONDS_BUCKETS),
            inference_seconds: Histogram::new(SECONDS_BUCKETS),
            batch_size: Histogram::new(SIZE_BUCKETS),
            batch_tokens: Histogram::new(TOKEN_BUCKETS),
            queue_wait_seconds: Histogram::new(SECONDS_BUCKETS),
            compute_micros: AtomicU64::new(0),
        }
    }

    pub fn add_compute_seconds(&self, seconds: f64) {
        self.compute_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn compute_seconds(&self) -> f64 {
        self.compute_micros.load(Ordering::Relaxed) as f64 / 1e6
    }
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    request_seconds: Mutex<BTreeMap<String, Arc<Histogram>>>,
    models: Mutex<Vec<Arc<ModelMetrics>>>,
    pub in_flight: AtomicI64,
    /// Request body bytes admitted and not yet answered (`--max-inflight-bytes`).
    pub inflight_bytes: AtomicI64,
}

impl Metrics {
    pub fn record_request(&self, route: &str, status: u16, seconds: f64) {
        *self.requests.lock().unwrap_or_else(|p| p.into_inner()).entry((route.to_string(), status)).or_default() += 1;
        let h = self
            .request_seconds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(route.to_string())
            .or_insert_with(|| Arc::new(Histogram::new(SECONDS_BUCKETS)))
            .clone();
        h.observe(seconds);
    }

    /// The metrics of a model, created on first use.
    pub fn model(&self, name: &str) -> Arc<ModelMetrics> {
        let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = models.iter().find(|m| m.model == name) {
            return m.clone();
        }
        let m = Arc::new(ModelMetrics::new(name));
        models.push(m.clone());
        m
    }

    /// Request counts by route (all statuses).
    pub fn requests_by_route(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for ((route, _), n) in self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            *out.entry(route.clone()).or_default() += n;
        }
        out
    }

    pub fn requests_total(&self) -> u64 {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).values().sum()
    }

    /// The Prometheus text exposition.
    pub fn render(&self, uptime_seconds: f64) -> String {
        let mut out = String::new();
        out.push_str("# HELP deposium_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE deposium_requests_total counter\n");
        for ((route, status), n) in self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "deposium_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        out.push_str("# HELP deposium_request_duration_seconds Time to answer a request, by route.\n");
        out.push_str("# TYPE deposium_request_duration_seconds histogram\n");
        for (route, h) in self.request_seconds.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            h.render(&mut out, "deposium_request_duration_seconds", &format!("route=\"{route}\""));
        }
        out.push_str("# HELP deposium_requests_in_flight Requests being answered now.\n");
        out.push_str("# TYPE deposium_requests_in_flight gauge\n");
        let _ = writeln!(out, "deposium_requests_in_flight {}", self.in_flight.load(Ordering::Relaxed));
        out.push_str("# HELP deposium_admission_inflight_bytes Request body bytes being answered now.\n");
        out.push_str("# TYPE deposium_admission_inflight_bytes gauge\n");
        let _ = writeln!(out, "deposium_admission_inflight_bytes {}", self.inflight_bytes.load(Ordering::Relaxed));
        out.push_str("# HELP deposium_uptime_seconds Seconds since the server started.\n");
        out.push_str("# TYPE deposium_uptime_seconds gauge\n");
        let _ = writeln!(out, "deposium_uptime_seconds {uptime_seconds}");

        let models = self.models.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, f: &dyn Fn(&ModelMetrics) -> String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for m in &models {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", escape(&m.model), f(m));
            }
        };
        gauge(&mut out, "deposium_queue_depth", "Inputs waiting for the backend, by model.", "gauge", &|m| {
            m.queue_depth.load(Ordering::Relaxed).to_string()
        });
        gauge(&mut out, "deposium_model_requests_total", "Embedding requests served, by model.", "counter", &|m| {
            m.requests.load(Ordering::Relaxed).to_string()
        });
        gauge(
            &mut out,
            "deposium_model_inputs_total",
            "Texts or token sequences embedded, by model.",
            "counter",
            &|m| m.inputs.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "deposium_backend_inputs_total",
            "Inputs run through the backend, by model.",
            "counter",
            &|m| m.backend_inputs.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "deposium_cancelled_inputs_total",
            "Queued inputs dropped because their client went away, by model.",
            "counter",
            &|m| m.cancelled_inputs.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "deposium_compute_seconds_total",
            "Backend step time (turns held on the shared compute gate), by model.",
            "counter",
            &|m| m.compute_seconds().to_string(),
        );
        gauge(&mut out, "deposium_model_tokens_total", "Tokens embedded, by model.", "counter", &|m| {
            m.tokens.load(Ordering::Relaxed).to_string()
        });
        let hist = |out: &mut String, name: &str, help: &str, f: &dyn Fn(&ModelMetrics) -> &Histogram| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for m in &models {
                f(m).render(out, name, &format!("model=\"{}\"", escape(&m.model)));
            }
        };
        hist(&mut out, "deposium_tokenize_seconds", "Time to tokenize one request.", &|m| &m.tokenize_seconds);
        hist(&mut out, "deposium_inference_seconds", "Time of one backend step.", &|m| &m.inference_seconds);
        hist(
            &mut out,
            "deposium_queue_wait_seconds",
            "Time from a request joining its model's queue to its first backend step.",
            &|m| &m.queue_wait_seconds,
        );
        hist(&mut out, "deposium_batch_size", "Sequences per backend step.", &|m| &m.batch_size);
        hist(&mut out, "deposium_batch_tokens", "Tokens per backend step.", &|m| &m.batch_tokens);
        out
    }
}

/// A Prometheus label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
