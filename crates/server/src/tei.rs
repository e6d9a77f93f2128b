//! TEI-style routes (text-embeddings-inference): `/embed`, `/rerank`, `/similarity`, `/tokenize`, `/info`.
//! A `model` field (extension) picks among the served models; without it the default model answers.
use axum::extract::State;
use axum::Json;
use deposium_engine::cosine;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::{self, JsonBody};
use crate::embed::{self, Options};
use crate::error::{ApiError, TeiError};
use crate::rerank;
use crate::state::AppState;

type Body<T> = Result<JsonBody<T>, ApiError>;

fn non_empty(texts: Vec<String>, field: &'static str) -> Result<Vec<String>, ApiError> {
    if texts.is_empty() {
        return Err(ApiError::bad_request(format!("`{field}` cannot be empty")).param(field));
    }
    Ok(texts)
}

#[derive(Deserialize)]
pub struct EmbedRequest {
    inputs: Option<Value>,
    normalize: Option<bool>,
    truncate: Option<bool>,
    truncation_direction: Option<String>,
    prompt_name: Option<String>,
    prompt: Option<String>,
    dimensions: Option<usize>,
    model: Option<String>,
}

fn check_direction(d: Option<&str>) -> Result<(), ApiError> {
    match d {
        None => Ok(()),
        Some(d) if d.eq_ignore_ascii_case("right") => Ok(()),
        Some(d) => Err(ApiError::bad_request(format!(
            "truncation_direction '{d}' is not supported; only 'Right'"
        ))
        .param("truncation_direction")),
    }
}

pub async fn embed(
    State(state): State<AppState>,
    body: Body<EmbedRequest>,
) -> Result<Json<Vec<Vec<f32>>>, TeiError> {
    let JsonBody(req) = body?;
    check_direction(req.truncation_direction.as_deref())?;
    let served = state.lookup(req.model.as_deref())?;
    let texts = non_empty(body::texts(req.inputs, "inputs")?, "inputs")?;
    let opts = Options {
        prompt: embed::prompt_choice(req.prompt_name, req.prompt)?,
        truncate: req.truncate.unwrap_or(true),
        normalize: req.normalize.unwrap_or(true),
        dimensions: req.dimensions,
    };
    Ok(Json(
        embed::texts(&state, &served, texts, &opts, "inputs")
            .await?
            .embeddings,
    ))
}

#[derive(Deserialize)]
pub struct RerankRequest {
    query: Option<String>,
    texts: Option<Value>,
    documents: Option<Value>,
    top_n: Option<usize>,
    top_k: Option<usize>,
    return_text: Option<bool>,
    return_documents: Option<bool>,
    truncate: Option<bool>,
    truncation_direction: Option<String>,
    prompt_name: Option<String>,
    prompt: Option<String>,
    model: Option<String>,
    #[allow(dead_code)]
    raw_scores: Option<bool>,
}

pub async fn rerank(
    State(state): State<AppState>,
    body: Body<RerankRequest>,
) -> Result<Json<Vec<Value>>, TeiError> {
    let JsonBody(req) = body?;
    check_direction(req.truncation_direction.as_deref())?;
    let served = state.lookup(req.model.as_deref())?;
    let with_text = req.return_text.or(req.return_documents).unwrap_or(false);
    let ranked = rerank::rank(
        &state,
        &served,
        rerank::Query {
            query: req.query,
            documents: req.texts.or(req.documents),
            top_k: req.top_n.or(req.top_k),
            prompt: embed::prompt_choice(req.prompt_name, req.prompt)?,
            truncate: req.truncate.unwrap_or(true),
        },
    )
    .await?;
    Ok(Json(
        ranked
            .into_iter()
            .map(|r| {
                if with_text {
                    json!({ "index": r.index, "score": r.score, "text": r.text })
                } else {
                    json!({ "index": r.index, "score": r.score })
                }
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
pub struct SimilarityInputs {
    source_sentence: Option<String>,
    sentences: Option<Value>,
}

#[derive(Deserialize)]
pub struct SimilarityRequest {
    inputs: Option<SimilarityInputs>,
    truncate: Option<bool>,
    prompt_name: Option<String>,
    prompt: Option<String>,
    model: Option<String>,
}

pub async fn similarity(
    State(state): State<AppState>,
    body: Body<SimilarityRequest>,
) -> Result<Json<Vec<f32>>, TeiError> {
    let JsonBody(req) = body?;
    let served = state.lookup(req.model.as_deref())?;
    let inputs = req.inputs.ok_or_else(|| {
        ApiError::bad_request(
            "`inputs` is required: {\"source_sentence\": ..., \"sentences\": [...]}",
        )
        .param("inputs")
    })?;
    let source = inputs.source_sentence.ok_or_else(|| {
        ApiError::bad_request("`inputs.source_sentence` is required").param("inputs")
    })?;
    let sentences = non_empty(
        body::texts(inputs.sentences, "inputs.sentences")?,
        "inputs.sentences",
    )?;
    let opts = Options {
        prompt: embed::prompt_choice(req.prompt_name, req.prompt)?,
        truncate: req.truncate.unwrap_or(true),
        ..Options::default()
    };
    let mut texts = Vec::with_capacity(sentences.len() + 1);
    texts.push(source);
    texts.extend(sentences);
    let vectors = embed::texts(&state, &served, texts, &opts, "inputs.sentences")
        .await?
        .embeddings;
    let (src, rest) = vectors.split_first().expect("source vector");
    Ok(Json(rest.iter().map(|v| cosine(src, v)).collect()))
}

#[derive(Deserialize)]
pub struct TokenizeRequest {
    inputs: Option<Value>,
    prompt_name: Option<String>,
    prompt: Option<String>,
    model: Option<String>,
    #[allow(dead_code)]
    add_special_tokens: Option<bool>,
}

/// Token ids per input, exactly as the model would consume them (prompt and special tokens included, not cut).
pub async fn tokenize(
    State(state): State<AppState>,
    body: Body<TokenizeRequest>,
) -> Result<Json<Vec<Vec<u32>>>, TeiError> {
    let JsonBody(req) = body?;
    let served = state.lookup(req.model.as_deref())?;
    let texts = non_empty(body::texts(req.inputs, "inputs")?, "inputs")?;
    embed::check_count(&state, texts.len(), "inputs")?;
    let opts = Options {
        prompt: embed::prompt_choice(req.prompt_name, req.prompt)?,
        ..Options::default()
    };
    let tokens = embed::tokenize(&served, texts, &opts).await?;
    Ok(Json(tokens.into_iter().map(|t| t.ids).collect()))
}

pub async fn info(State(state): State<AppState>) -> Result<Json<Value>, TeiError> {
    let served = state.lookup(None)?;
    let info = served.model.info();
    let cfg = state.config();
    let models: Vec<Value> = state
        .ready()
        .iter()
        .map(|m| {
            let i = m.model.info();
            json!({
                "model_id": m.name, "family": i.family, "dim": i.dim, "max_input_length": i.max_tokens,
                "quantization": i.quantization, "prompts": i.prompts, "default_prompt_name": i.default_prompt_name,
                "matryoshka_dims": i.matryoshka_dims, "aliases": m.spec.aliases,
            })
        })
        .collect();
    Ok(Json(json!({
        "model_id": served.name,
        "model_sha": info.digest,
        "model_dtype": info.quantization,
        "model_type": { "embedding": { "pooling": "mean" } },
        "max_concurrent_requests": cfg.max_concurrent_requests,
        "max_input_length": info.max_tokens,
        "max_batch_tokens": cfg.batch.max_batch_tokens,
        "max_batch_requests": cfg.batch.max_batch_size,
        "max_client_batch_size": cfg.max_inputs,
        "tokenization_workers": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "version": env!("CARGO_PKG_VERSION"),
        "models": models,
    })))
}
