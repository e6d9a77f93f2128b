//! deposium-server: Ollama, OpenAI and TEI-style HTTP APIs over one batched embed path.
//!
//! Every embedding route is a thin adapter: it parses its own request shape, then calls [`embed`] (tokenize →
//! per-model [`batcher`] → finish) and writes its own response shape. Errors are rendered in each route family's
//! shape ([`error`]).
pub mod batcher;
mod body;
mod compat;
pub mod embed;
pub mod error;
pub mod metrics;
mod ollama;
mod openai;
mod ops;
mod rerank;
pub mod state;
mod tei;
mod util;

use std::time::Duration;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{middleware, Router};
use tower_http::catch_panic::CatchPanicLayer;

pub use batcher::BatchConfig;
pub use state::{AppState, Config};

/// `deposium-embed serve` flags (each also read from an environment variable).
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Models to serve: NAME or NAME=PATH (repeatable, or comma-separated). The first is the default model.
    #[arg(long = "model", env = "DEPOSIUM_MODELS", value_delimiter = ',', default_value = "embeddinggemma")]
    pub models: Vec<String>,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one; the log says which).
    #[arg(long, env = "PORT", default_value_t = 11435)]
    pub port: u16,
    /// Padded tokens per backend step (sequences × longest sequence).
    #[arg(long, env = "DEPOSIUM_MAX_BATCH_TOKENS", default_value_t = 8192)]
    pub max_batch_tokens: usize,
    /// Sequences per backend step.
    #[arg(long, env = "DEPOSIUM_MAX_BATCH_SIZE", default_value_t = 32)]
    pub max_batch_size: usize,
    /// Batcher threads per model (each runs one backend step at a time).
    #[arg(long, env = "DEPOSIUM_WORKERS_PER_MODEL", default_value_t = 1)]
    pub workers_per_model: usize,
    /// Requests answered at once; more are refused with 429.
    #[arg(long, env = "DEPOSIUM_MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,
    /// Request body bytes answered at once (a chunked body counts as --max-body-bytes); beyond it a request gets
    /// 429, and one that can never fit 413. 0: no budget.
    #[arg(long, env = "DEPOSIUM_MAX_INFLIGHT_BYTES", default_value_t = 768 << 20)]
    pub max_inflight_bytes: usize,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, env = "DEPOSIUM_MAX_BODY_BYTES", default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Most inputs (texts, token sequences, rerank documents) in one request; more get 413.
    #[arg(long, env = "DEPOSIUM_MAX_INPUTS", default_value_t = 2048)]
    pub max_inputs: usize,
    /// Seconds a client may take to send its request body; a slower one gets 408 and frees its slot.
    #[arg(long, env = "DEPOSIUM_BODY_TIMEOUT_SECS", default_value_t = 60)]
    pub body_timeout_secs: u64,
    /// Require `Authorization: Bearer KEY` on every route but /health and /.
    #[arg(long, env = "DEPOSIUM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Prompt used when a request names none (no `prompt_name`/`prompt`, no NAME@PROMPT), for every model that
    /// defines it (e.g. `query`, `STS`); start-up fails when no served model defines it.
    #[arg(long, env = "DEPOSIUM_DEFAULT_PROMPT_NAME")]
    pub default_prompt_name: Option<String>,
    /// Accept token-id arrays on /v1/embeddings as this model's own ids (refused by default: clients such as
    /// LangChain send another tokenizer's ids).
    #[arg(long, env = "DEPOSIUM_ALLOW_TOKEN_IDS")]
    pub allow_token_ids: bool,
    /// Origins allowed by CORS (repeatable or comma-separated; `*` for any). Default: no CORS headers.
    #[arg(long, env = "DEPOSIUM_CORS_ALLOW_ORIGIN", value_delimiter = ',')]
    pub cors_allow_origin: Vec<String>,
    /// Log as JSON lines (one object per event, access log included) instead of text.
    #[arg(long, env = "DEPOSIUM_JSON_LOGS")]
    pub json_logs: bool,
}

impl ServeArgs {
    pub fn config(&self) -> Config {
        Config {
            max_inputs: self.max_inputs,
            max_body_bytes: self.max_body_bytes,
            body_timeout: Duration::from_secs(self.body_timeout_secs.max(1)),
            max_concurrent_requests: self.max_concurrent_requests,
            max_inflight_bytes: self.max_inflight_bytes,
            batch: BatchConfig {
                max_batch_tokens: self.max_batch_tokens,
                max_batch_size: self.max_batch_size,
                workers: self.workers_per_model,
            },
            api_key: self.api_key.clone().filter(|k| !k.is_empty()),
            default_prompt_name: self.default_prompt_name.clone().filter(|p| !p.is_empty()),
            allow_token_ids: self.allow_token_ids,
        }
    }
}

/// Every route, with auth, back-pressure, body limit, panic guard and metrics.
pub fn router(state: AppState) -> Router {
    Router::new()
        // Ollama
        .route("/", get(ollama::root).post(tei::root))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .route("/api/tags", get(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/ps", get(ollama::ps))
        .route("/api/version", get(ollama::version))
        // The seed's own routes
        .route("/api/rerank", post(compat::rerank))
        .route("/api/status", get(compat::status))
        // OpenAI
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{id}", get(openai::model))
        .route("/v1/rerank", post(openai::rerank))
        // TEI-style
        .route("/embed", post(tei::embed))
        .route("/rerank", post(tei::rerank))
        .route("/similarity", post(tei::similarity))
        .route("/tokenize", post(tei::tokenize))
        .route("/decode", post(tei::decode))
        .route("/info", get(tei::info))
        // Operations
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        // Swagger UI over /openapi.json, assets served from the binary.
        .merge(Router::from(
            utoipa_swagger_ui::SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/openapi.json")),
        ))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config().max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), ops::guard))
        .layer(CatchPanicLayer::custom(ops::panic_response))
        .layer(middleware::from_fn_with_state(state.clone(), ops::track))
        .layer(middleware::from_fn(ops::access_log))
        .with_state(state)
}

/// [`router`] with CORS for these origins (`*`: any), as `--cors-allow-origin` asks; none: no CORS headers.
pub fn router_with_cors(state: AppState, origins: &[String]) -> anyhow::Result<Router> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let app = router(state);
    let origins: Vec<&str> = origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()).collect();
    if origins.is_empty() {
        return Ok(app);
    }
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .map(|o| o.parse().with_context(|| format!("--cors-allow-origin: invalid origin '{o}'")))
                .collect::<anyhow::Result<Vec<_>>>()?,
        )
    };
    Ok(app.layer(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([axum::http::header::CONTENT_TYPE, axum::http::header::AUTHORIZATION]),
    ))
}

/// Serve until SIGINT/SIGTERM, then answer in-flight requests and return.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let state = AppState::new(args.config(), &args.models);
    if state.slots().is_empty() {
        anyhow::bail!("no model to serve: pass --model NAME[=PATH]");
    }
    if let Some(name) = &state.config().default_prompt_name {
        check_default_prompt(&state, name)?;
    }
    let c = state.config();
    if c.max_inflight_bytes > 0 && c.max_inflight_bytes < c.max_body_bytes {
        tracing::warn!(
            "--max-inflight-bytes {} is below --max-body-bytes {}: larger bodies, and chunked ones, get 413",
            c.max_inflight_bytes,
            c.max_body_bytes
        );
    }
    let app = router_with_cors(state.clone(), &args.cors_allow_origin)?;
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    tracing::info!("listening on http://{addr}");
    // Models load in the background; /health says 503 until they are settled.
    let loader = state.clone();
    tokio::spawn(async move {
        loader.load_all().await;
        let ready: Vec<String> = loader.ready().iter().map(|m| m.name.clone()).collect();
        tracing::info!("models ready: {}", if ready.is_empty() { "none".into() } else { ready.join(", ") });
    });
    // Small responses go out at once (no Nagle delay).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.context("server failed")?;
    tracing::info!("in-flight requests answered; stopping");
    let batchers = state.clone();
    let _ =
        tokio::time::timeout(Duration::from_secs(30), tokio::task::spawn_blocking(move || batchers.shutdown())).await;
    Ok(())
}

/// `--default-prompt-name` must name a prompt of at least one served model (TEI refuses to start otherwise); models
/// without it are served without a default prompt (logged).
fn check_default_prompt(state: &AppState, name: &str) -> anyhow::Result<()> {
    let (mut found, mut without) = (false, Vec::new());
    let mut listing = Vec::new();
    for slot in state.slots() {
        let Some(spec) = &slot.spec else { continue };
        let prompts = deposium_engine::st_config::StConfig::load(&spec.dir).map(|c| c.prompts).unwrap_or_default();
        if prompts.contains_key(name) {
            found = true;
        } else {
            without.push(spec.name.clone());
        }
        let names: Vec<&str> = prompts.keys().map(String::as_str).collect();
        listing.push(format!(
            "{}: {}",
            spec.name,
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        ));
    }
    if !found {
        anyhow::bail!(
            "--default-prompt-name '{name}' is not a prompt of any served model (prompts: {})",
            listing.join("; ")
        );
    }
    for model in without {
        tracing::warn!(%model, "--default-prompt-name {name}: this model has no such prompt; served without one");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal: no new connections, draining in-flight requests");
}
