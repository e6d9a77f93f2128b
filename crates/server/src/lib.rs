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
    #[arg(
        long = "model",
        env = "DEPOSIUM_MODELS",
        value_delimiter = ',',
        default_value = "embeddinggemma"
    )]
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
}

impl ServeArgs {
    pub fn config(&self) -> Config {
        Config {
            max_inputs: self.max_inputs,
            max_body_bytes: self.max_body_bytes,
            body_timeout: Duration::from_secs(self.body_timeout_secs.max(1)),
            max_concurrent_requests: self.max_concurrent_requests,
            batch: BatchConfig {
                max_batch_tokens: self.max_batch_tokens,
                max_batch_size: self.max_batch_size,
                workers: self.workers_per_model,
            },
            api_key: self.api_key.clone().filter(|k| !k.is_empty()),
        }
    }
}

/// Every route, with auth, back-pressure, body limit, panic guard and metrics.
pub fn router(state: AppState) -> Router {
    Router::new()
        // Ollama
        .route("/", get(ollama::root))
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
        // TEI-style
        .route("/embed", post(tei::embed))
        .route("/rerank", post(tei::rerank))
        .route("/similarity", post(tei::similarity))
        .route("/tokenize", post(tei::tokenize))
        .route("/info", get(tei::info))
        // Operations
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config().max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), ops::guard))
        .layer(CatchPanicLayer::custom(ops::panic_response))
        .layer(middleware::from_fn_with_state(state.clone(), ops::track))
        .with_state(state)
}

/// Serve until SIGINT/SIGTERM, then answer in-flight requests and return.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let state = AppState::new(args.config(), &args.models);
    if state.slots().is_empty() {
        anyhow::bail!("no model to serve: pass --model NAME[=PATH]");
    }
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
        tracing::info!(
            "models ready: {}",
            if ready.is_empty() {
                "none".into()
            } else {
                ready.join(", ")
            }
        );
    });
    // Small responses go out at once (no Nagle delay).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;
    tracing::info!("in-flight requests answered; stopping");
    let batchers = state.clone();
    let _ = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || batchers.shutdown()),
    )
    .await;
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
