//! Server state: the configured models (loading, ready or failed), their batchers, limits and metrics.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;
use deposium_engine::registry::{self, ModelSpec, Registry};
use deposium_engine::{EngineError, Model, Prompt};
use tokio::sync::Semaphore;

use crate::batcher::{BatchConfig, Batcher};
use crate::error::ApiError;
use crate::metrics::{Metrics, ModelMetrics};

/// Limits and behaviour, from the `serve` flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// Inputs (texts, token sequences, rerank documents) in one request.
    pub max_inputs: usize,
    pub max_body_bytes: usize,
    /// Time a client may take to send its request body (a stalled one would hold a concurrency slot forever).
    pub body_timeout: Duration,
    /// Requests answered at once; more get 429.
    pub max_concurrent_requests: usize,
    /// Request body bytes answered at once (each request counts its Content-Length, or `max_body_bytes` when
    /// chunked); a request that does not fit now gets 429, one that never can 413. 0: no budget.
    pub max_inflight_bytes: usize,
    pub batch: BatchConfig,
    /// Bearer token required on every route but `/health` and `/`.
    pub api_key: Option<String>,
    /// `--default-prompt-name`: the prompt used when a request names none, for models that define it.
    pub default_prompt_name: Option<String>,
    /// `--allow-token-ids`: embed OpenAI token-id input as this model's own ids (refused by default).
    pub allow_token_ids: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_inputs: 2048,
            max_body_bytes: 8 << 20,
            body_timeout: Duration::from_secs(60),
            max_concurrent_requests: 512,
            max_inflight_bytes: 768 << 20,
            batch: BatchConfig { max_batch_tokens: 8192, max_batch_size: 64, workers: 1 },
            api_key: None,
            default_prompt_name: None,
            allow_token_ids: false,
        }
    }
}

/// A model a request names, with the prompt its name selects (`NAME@PROMPT`) and the server's default prompt.
#[derive(Clone)]
pub struct Target {
    pub served: Arc<Served>,
    /// The prompt the name's `@PROMPT` selector picked (a prompt name of the model).
    pub selector: Option<String>,
    /// `--default-prompt-name`, when this model defines that prompt.
    pub server_default: Option<String>,
}

impl Target {
    /// `prompt_name`/`prompt` in the body win, then the selector, then `--default-prompt-name`, then the model's own
    /// `default_prompt_name`.
    pub fn prompt(&self, body: Prompt) -> Prompt {
        if body != Prompt::Default {
            return body;
        }
        match (&self.selector, &self.server_default) {
            (Some(s), _) | (None, Some(s)) => Prompt::Named(s.clone()),
            (None, None) => Prompt::Default,
        }
    }
}

/// A model ready to serve.
pub struct Served {
    pub name: String,
    pub spec: ModelSpec,
    pub model: Arc<Model>,
    pub batcher: Batcher,
    pub metrics: Arc<ModelMetrics>,
    pub load_seconds: f64,
    pub loaded_at: SystemTime,
}

#[derive(Clone)]
pub enum SlotState {
    Loading,
    Ready(Arc<Served>),
    Failed(String),
}

/// One `--model` as configured, in command-line order.
pub struct Slot {
    /// The spec as given (`potion-base-8M`, `name=/path`).
    pub spec_text: String,
    /// Resolved spec; `None` when the name could not be resolved.
    pub spec: Option<ModelSpec>,
    state: RwLock<SlotState>,
}

impl Slot {
    /// The name the model is (or would be) served under.
    pub fn name(&self) -> &str {
        self.spec.as_ref().map(|s| s.name.as_str()).unwrap_or(&self.spec_text)
    }

    pub fn state(&self) -> SlotState {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn answers_to(&self, name: &str) -> bool {
        let plain = name.strip_suffix(":latest").unwrap_or(name);
        match &self.spec {
            Some(s) => {
                s.name.eq_ignore_ascii_case(plain)
                    || s.aliases.iter().any(|a| a.eq_ignore_ascii_case(plain))
                    || registry::resolve(plain).is_ok_and(|r| r.name == s.name)
            }
            None => self.spec_text.eq_ignore_ascii_case(name),
        }
    }
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    config: Config,
    slots: Vec<Slot>,
    /// Ready models, for lookup by name, alias or tag.
    registry: RwLock<Registry>,
    metrics: Metrics,
    limiter: Arc<Semaphore>,
    /// Body bytes of the requests admitted and not yet answered.
    inflight_bytes: AtomicUsize,
    started: Instant,
    started_at: SystemTime,
}

impl AppState {
    /// State for these model specs, all still to load (see [`AppState::load_all`]).
    pub fn new(config: Config, specs: &[String]) -> Self {
        let mut slots: Vec<Slot> = Vec::new();
        for text in specs.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let (spec, state) = match registry::resolve(text) {
                Ok(spec) => (Some(spec), SlotState::Loading),
                Err(e) => {
                    let e = e.report();
                    tracing::error!(model = %text, "cannot serve model: {e}");
                    (None, SlotState::Failed(e))
                }
            };
            let slot = Slot { spec_text: text.to_string(), spec, state: RwLock::new(state) };
            if slots.iter().any(|s| s.name() == slot.name()) {
                tracing::warn!(model = %text, "model given twice; serving it once");
                continue;
            }
            slots.push(slot);
        }
        Self::from_slots(config, slots)
    }

    /// State with models already loaded (tests, embedding the server in another program).
    pub fn with_models(config: Config, models: Vec<(ModelSpec, Model)>) -> Self {
        let state = Self::from_slots(
            config,
            models
                .iter()
                .map(|(spec, _)| Slot {
                    spec_text: spec.name.clone(),
                    spec: Some(spec.clone()),
                    state: RwLock::new(SlotState::Loading),
                })
                .collect(),
        );
        for (i, (_, model)) in models.into_iter().enumerate() {
            state.install(i, Ok(model), 0.0);
        }
        state
    }

    fn from_slots(config: Config, slots: Vec<Slot>) -> Self {
        let limiter = Arc::new(Semaphore::new(config.max_concurrent_requests.max(1)));
        AppState(Arc::new(Inner {
            config,
            slots,
            registry: RwLock::new(Registry::default()),
            metrics: Metrics::default(),
            limiter,
            inflight_bytes: AtomicUsize::new(0),
            started: Instant::now(),
            started_at: SystemTime::now(),
        }))
    }

    /// Load every pending model in the background, each on the blocking pool; returns when all are settled.
    pub async fn load_all(&self) {
        if self.0.slots.len() > 1 {
            // Several models share the cores: ONNX Runtime's idle threads must not spin through the others' turns.
            deposium_engine::runtime::set_intra_op_spinning(false);
        }
        let mut tasks = Vec::new();
        for (i, slot) in self.0.slots.iter().enumerate() {
            let Some(spec) = slot.spec.clone() else {
                continue;
            };
            if !matches!(slot.state(), SlotState::Loading) {
                continue;
            }
            let state = self.clone();
            tasks.push(tokio::spawn(async move {
                tracing::info!(model = %spec.name, dir = %spec.dir.display(), "loading");
                let t0 = Instant::now();
                let loaded = tokio::task::spawn_blocking(move || registry::load_spec(&spec))
                    .await
                    .unwrap_or_else(|e| Err(EngineError::load(format!("loader crashed: {e}"))));
                state.install(i, loaded, t0.elapsed().as_secs_f64());
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    fn install(&self, index: usize, loaded: deposium_engine::Result<Model>, load_seconds: f64) {
        let slot = &self.0.slots[index];
        let spec = slot.spec.clone().expect("only resolved specs load");
        match loaded {
            Ok(mut model) => {
                let batch = self.0.config.batch;
                model.max_batch = batch.max_batch_size.max(1);
                model.max_batch_tokens = batch.max_batch_tokens.max(1);
                let model = Arc::new(model);
                let metrics = self.0.metrics.model(&spec.name);
                let info = model.info();
                tracing::info!(
                    model = %spec.name, family = %info.family, dim = info.dim, max_tokens = info.max_tokens,
                    secs = format!("{load_seconds:.2}"), "ready"
                );
                let served = Arc::new(Served {
                    name: spec.name.clone(),
                    spec: spec.clone(),
                    batcher: Batcher::new(model.clone(), batch, metrics.clone()),
                    model: model.clone(),
                    metrics,
                    load_seconds,
                    loaded_at: SystemTime::now(),
                });
                // Ready in its slot first, then findable by name: a lookup never sees one without the other.
                *slot.state.write().unwrap_or_else(|p| p.into_inner()) = SlotState::Ready(served);
                self.0.registry.write().unwrap_or_else(|p| p.into_inner()).insert(spec, model);
            }
            Err(e) => {
                let e = e.report();
                tracing::error!(model = %spec.name, "failed to load, not served: {e}");
                *slot.state.write().unwrap_or_else(|p| p.into_inner()) = SlotState::Failed(e);
            }
        }
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn slots(&self) -> &[Slot] {
        &self.0.slots
    }

    pub fn limiter(&self) -> &Arc<Semaphore> {
        &self.0.limiter
    }

    /// Reserve `bytes` of the in-flight budget until the returned guard drops; `None` when they do not fit now.
    pub fn admit(&self, bytes: usize) -> Option<Admitted> {
        let max = self.0.config.max_inflight_bytes;
        let fits = |used: usize| used.checked_add(bytes).filter(|&u| max == 0 || u <= max);
        self.0.inflight_bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, fits).ok()?;
        self.0.metrics.inflight_bytes.fetch_add(bytes as i64, std::sync::atomic::Ordering::Relaxed);
        Some(Admitted { state: self.clone(), bytes })
    }

    pub fn uptime_seconds(&self) -> f64 {
        self.0.started.elapsed().as_secs_f64()
    }

    pub fn started_at(&self) -> SystemTime {
        self.0.started_at
    }

    /// Ready models, in command-line order.
    pub fn ready(&self) -> Vec<Arc<Served>> {
        self.0
            .slots
            .iter()
            .filter_map(|s| match s.state() {
                SlotState::Ready(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// `loading` while any model loads, `failed` when none could load, `degraded` when some failed, else `ok`.
    pub fn overall_status(&self) -> &'static str {
        let ready = self.ready().len();
        if self.loading() {
            "loading"
        } else if ready == 0 {
            "failed"
        } else if ready < self.0.slots.len() {
            "degraded"
        } else {
            "ok"
        }
    }

    /// True while any model is still loading.
    pub fn loading(&self) -> bool {
        self.0.slots.iter().any(|s| matches!(s.state(), SlotState::Loading))
    }

    /// The model a request names (name, alias or `name:tag`), or the default (first configured) model.
    pub fn lookup(&self, name: Option<&str>) -> Result<Arc<Served>, ApiError> {
        self.target(name).map(|t| t.served)
    }

    /// The model a request names, with its prompt selector: `NAME@PROMPT` (`embeddinggemma@query`,
    /// `embeddinggemma:int4@document`, `gemma-int8@STS`, `embeddinggemma@query:latest`).
    pub fn target(&self, name: Option<&str>) -> Result<Target, ApiError> {
        let name = name.map(str::trim).filter(|n| !n.is_empty());
        let (served, selector) = match name {
            None => (self.default_model()?, None),
            Some(name) => match self.find(name) {
                Ok(served) => (served, None),
                Err(not_found) => {
                    let Some((base, selector)) = registry::split_prompt_selector(name) else {
                        return Err(not_found);
                    };
                    let served = self.find(base.trim())?;
                    let selector = registry::prompt_selector(served.model.info(), selector.trim()).map_err(|e| {
                        ApiError::new(StatusCode::NOT_FOUND, format!("model '{name}' not found: {e}"))
                            .param("model")
                            .code("model_not_found")
                    })?;
                    (served, Some(selector))
                }
            },
        };
        let server_default =
            self.0.config.default_prompt_name.clone().filter(|p| served.model.info().prompts.contains_key(p));
        Ok(Target { served, selector, server_default })
    }

    /// A served model by name, alias or tag (no selector).
    fn find(&self, name: &str) -> Result<Arc<Served>, ApiError> {
        let found = self.0.registry.read().unwrap_or_else(|p| p.into_inner()).get(name);
        match found {
            Ok(model) => self
                .ready()
                .into_iter()
                .find(|s| Arc::ptr_eq(&s.model, &model))
                .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "model registry out of sync")),
            Err(_) => {
                if let Some(slot) = self.0.slots.iter().find(|s| s.answers_to(name)) {
                    if let Some(e) = unavailable(slot) {
                        return Err(e);
                    }
                }
                let available: Vec<String> = self.ready().iter().map(|s| s.name.clone()).collect();
                let available = if available.is_empty() { "none".to_string() } else { available.join(", ") };
                Err(ApiError::new(StatusCode::NOT_FOUND, format!("model '{name}' not found; available: {available}"))
                    .param("model")
                    .code("model_not_found"))
            }
        }
    }

    fn default_model(&self) -> Result<Arc<Served>, ApiError> {
        let mut first_failure = None;
        for slot in &self.0.slots {
            match slot.state() {
                SlotState::Ready(m) => return Ok(m),
                SlotState::Loading => return Err(unavailable(slot).expect("loading")),
                SlotState::Failed(_) => first_failure = first_failure.or_else(|| unavailable(slot)),
            }
        }
        Err(first_failure.unwrap_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no model is configured")))
    }

    /// Stop every batcher once its queue is drained.
    pub fn shutdown(&self) {
        for m in self.ready() {
            m.batcher.shutdown();
        }
    }
}

/// A request's share of `--max-inflight-bytes`, given back when dropped.
pub struct Admitted {
    state: AppState,
    bytes: usize,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.state.0.inflight_bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.state.0.metrics.inflight_bytes.fetch_sub(self.bytes as i64, Ordering::Relaxed);
    }
}

/// The 503 for a model that is loading or failed to load (`None` when it is ready).
fn unavailable(slot: &Slot) -> Option<ApiError> {
    match slot.state() {
        SlotState::Ready(_) => None,
        SlotState::Loading => Some(
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("model '{}' is still loading", slot.name()))
                .code("model_loading"),
        ),
        SlotState::Failed(reason) => Some(
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("model '{}' failed to load: {reason}", slot.name()))
                .code("model_unavailable"),
        ),
    }
}
