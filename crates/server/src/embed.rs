//! The one embed path every route uses: check → tokenize (blocking pool) → model batcher → finish
//! (Matryoshka truncation, normalisation, NaN/Inf guard).
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use deposium_engine::{Prompt, Tokenized};

use crate::error::ApiError;
use crate::state::{AppState, Served};

/// How to turn inputs into vectors; every route fills this from its own field names.
#[derive(Debug, Clone)]
pub struct Options {
    pub prompt: Prompt,
    pub truncate: bool,
    pub dimensions: Option<usize>,
    pub normalize: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { prompt: Prompt::Default, truncate: true, normalize: true, dimensions: None }
    }
}

/// What an embed call returns.
pub struct Embedded {
    pub embeddings: Vec<Vec<f32>>,
    /// Tokens used, over all inputs (prompt and special tokens included).
    pub tokens: usize,
}

/// The prompt a request asks for with `prompt_name` (from the model's config) or a raw `prompt` prefix.
/// An empty string asks for no prompt at all.
pub fn prompt_choice(prompt_name: Option<String>, raw: Option<String>) -> Result<Prompt, ApiError> {
    match (prompt_name, raw) {
        (Some(_), Some(_)) => {
            Err(ApiError::bad_request("give either `prompt_name` or `prompt`, not both").param("prompt_name"))
        }
        (Some(n), None) if n.is_empty() => Ok(Prompt::None),
        (Some(n), None) => Ok(Prompt::Named(n)),
        (None, Some(p)) if p.is_empty() => Ok(Prompt::None),
        (None, Some(p)) => Ok(Prompt::Raw(p)),
        (None, None) => Ok(Prompt::Default),
    }
}

/// Refuse a request with more inputs than `--max-inputs`.
pub fn check_count(state: &AppState, n: usize, field: &'static str) -> Result<(), ApiError> {
    let max = state.config().max_inputs;
    if n > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{n} inputs in `{field}`, over the limit of {max} per request (--max-inputs); split the request"),
        )
        .param(field)
        .code("too_many_inputs"));
    }
    Ok(())
}

/// Tokenize texts with a prompt on the blocking pool (prompt and truncation policy applied).
pub async fn tokenize(served: &Arc<Served>, texts: Vec<String>, opts: &Options) -> Result<Vec<Tokenized>, ApiError> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let served2 = served.clone();
    let (prompt, truncate) = (opts.prompt.clone(), opts.truncate);
    let t0 = Instant::now();
    let tokens = tokio::task::spawn_blocking(move || {
        // Tokenizing is this model's compute too: it takes the model's turn (batcher::Scheduler).
        let _turn = served2.batcher.turn();
        let model = &served2.model;
        let prefix = model.resolve_prompt(&prompt)?;
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                model.tokenize_one(&prefix, t, truncate).map_err(|e| {
                    let mut err = ApiError::from(e);
                    if texts.len() > 1 {
                        err.message = format!("input {i}: {}", err.message);
                    }
                    err
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("tokenizer failed: {e}")))??;
    served.metrics.tokenize_seconds.observe(t0.elapsed().as_secs_f64());
    Ok(tokens)
}

/// Token ids a client sent directly (OpenAI): checked against the model's limits, truncated when allowed.
pub fn token_inputs(served: &Served, seqs: Vec<Vec<u32>>, truncate: bool) -> Result<Vec<Tokenized>, ApiError> {
    let max = served.model.info().max_tokens;
    seqs.into_iter()
        .enumerate()
        .map(|(i, mut ids)| {
            if ids.is_empty() {
                return Err(ApiError::bad_request(format!("input {i} is an empty token list")).param("input"));
            }
            if ids.len() > max {
                if !truncate {
                    return Err(ApiError::from(deposium_engine::EngineError::TooLong { tokens: ids.len(), max }));
                }
                served.model.backend().truncate_tokens(&mut ids);
            }
            Ok(Tokenized { ids })
        })
        .collect()
}

/// Embed tokenized inputs through the model's batcher, then finish each vector.
pub async fn run(served: &Served, tokens: Vec<Tokenized>, opts: &Options) -> Result<Embedded, ApiError> {
    served.model.check_dimensions(opts.dimensions)?;
    let token_count: usize = tokens.iter().map(|t| t.ids.len()).sum();
    let n = tokens.len();
    let raw = served.batcher.embed(tokens).await?;
    let embeddings = raw
        .into_iter()
        .map(|v| served.model.finish(v, opts.dimensions, opts.normalize))
        .collect::<Result<Vec<_>, _>>()?;
    served.metrics.requests.fetch_add(1, Ordering::Relaxed);
    served.metrics.inputs.fetch_add(n as u64, Ordering::Relaxed);
    served.metrics.tokens.fetch_add(token_count as u64, Ordering::Relaxed);
    Ok(Embedded { embeddings, tokens: token_count })
}

/// The whole path for texts.
pub async fn texts(
    state: &AppState,
    served: &Arc<Served>,
    texts: Vec<String>,
    opts: &Options,
    field: &'static str,
) -> Result<Embedded, ApiError> {
    check_count(state, texts.len(), field)?;
    served.model.check_dimensions(opts.dimensions)?;
    let tokens = tokenize(served, texts, opts).await?;
    run(served, tokens, opts).await
}
