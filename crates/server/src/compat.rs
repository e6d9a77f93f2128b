//! The seed service's own routes: `POST /api/rerank` and `GET /api/status`.
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::JsonBody;
use crate::embed;
use crate::error::ApiError;
use crate::rerank;
use crate::state::{AppState, SlotState};
use crate::util::{rfc3339, rss_bytes};

#[derive(Deserialize)]
pub struct RerankRequest {
    model: Option<String>,
    query: Option<String>,
    documents: Option<Value>,
    texts: Option<Value>,
    top_k: Option<usize>,
    top_n: Option<usize>,
    prompt_name: Option<String>,
    prompt: Option<String>,
    truncate: Option<bool>,
}

/// `{"model", "results": [{"index", "document", "relevance_score"}]}`, best first.
pub async fn rerank(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<RerankRequest>,
) -> Result<Json<Value>, ApiError> {
    let target = state.target(req.model.as_deref())?;
    let (ranked, _) = rerank::rank(
        &state,
        &target,
        rerank::Query {
            query: req.query,
            documents: req.documents.or(req.texts),
            top_k: req.top_k.or(req.top_n),
            prompt: embed::prompt_choice(req.prompt_name, req.prompt)?,
            truncate: req.truncate.unwrap_or(true),
        },
    )
    .await?;
    let results: Vec<Value> = ranked
        .into_iter()
        .map(|r| json!({ "index": r.index, "document": r.text, "relevance_score": r.score }))
        .collect();
    Ok(Json(json!({ "model": req.model.unwrap_or_else(|| target.served.name.clone()), "results": results })))
}

/// Models, their memory, uptime and request counts (the seed's dashboard read this).
pub async fn status(State(state): State<AppState>) -> Json<Value> {
    let models: Vec<Value> = state
        .slots()
        .iter()
        .map(|slot| match slot.state() {
            SlotState::Ready(m) => {
                let info = m.model.info();
                json!({
                    "name": m.name,
                    "status": "ready",
                    "aliases": m.spec.aliases,
                    "family": info.family,
                    "dim": info.dim,
                    "max_tokens": info.max_tokens,
                    "quantization": info.quantization,
                    "memory_bytes": info.size_bytes,
                    "load_seconds": m.load_seconds,
                    "requests": m.metrics.requests.load(std::sync::atomic::Ordering::Relaxed),
                    "queue_depth": m.batcher.queue_depth(),
                })
            }
            SlotState::Loading => json!({ "name": slot.name(), "status": "loading" }),
            SlotState::Failed(reason) => {
                json!({ "name": slot.name(), "status": "failed", "error": reason })
            }
        })
        .collect();
    let metrics = state.metrics();
    Json(json!({
        "status": state.overall_status(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.uptime_seconds(),
        "started_at": rfc3339(state.started_at()),
        "models": models,
        "process_rss_bytes": rss_bytes(),
        "requests": {
            "total": metrics.requests_total(),
            "in_flight": metrics.in_flight.load(std::sync::atomic::Ordering::Relaxed),
            "by_route": metrics.requests_by_route(),
        },
    }))
}
