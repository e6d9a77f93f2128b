//! TEI-style routes (text-embeddings-inference): `POST /` (embed, or similarity for `{"inputs": {"source_sentence",
//! "sentences"}}`, as huggingface_hub's InferenceClient posts them), `/embed`, `/rerank`, `/similarity`, `/tokenize`,
//! `/decode`, `/info`. A `model` field (extension) picks among the served models; without it the default model
//! answers. Errors use TEI's status codes and `error_type` ([`crate::error`]).
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use deposium_engine::cosine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::body::{self, JsonBody};
use crate::embed::{self, Options};
use crate::error::{ApiError, TeiError};
use crate::rerank;
use crate::state::{AppState, Served};

type Body<T> = Result<JsonBody<T>, ApiError>;

fn non_empty(texts: Vec<String>, field: &'static str) -> Result<Vec<String>, ApiError> {
    if texts.is_empty() {
        return Err(ApiError::bad_request(format!("`{field}` cannot be empty")).param(field).code("empty"));
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
        Some(d) => Err(ApiError::bad_request(format!("truncation_direction '{d}' is not supported; only 'Right'"))
            .param("truncation_direction")),
    }
}

pub async fn embed(State(state): State<AppState>, body: Body<EmbedRequest>) -> Result<Json<Vec<Vec<f32>>>, TeiError> {
    let JsonBody(req) = body?;
    Ok(Json(embed_inner(&state, req).await?))
}

async fn embed_inner(state: &AppState, req: EmbedRequest) -> Result<Vec<Vec<f32>>, ApiError> {
    check_direction(req.truncation_direction.as_deref())?;
    let target = state.target(req.model.as_deref())?;
    let served = &target.served;
    let texts = non_empty(body::texts(req.inputs, "inputs")?, "inputs")?;
    let opts = Options {
        prompt: target.prompt(embed::prompt_choice(req.prompt_name, req.prompt)?),
        truncate: req.truncate.unwrap_or(true),
        normalize: req.normalize.unwrap_or(true),
        dimensions: req.dimensions,
    };
    Ok(embed::texts(state, served, texts, &opts, "inputs").await?.embeddings)
}

/// `POST /`: TEI serves its model's task at the root; huggingface_hub's `InferenceClient(model=URL)` posts
/// `feature_extraction` (`{"inputs": text(s), ...}`) and `sentence_similarity` (`{"inputs": {"source_sentence",
/// "sentences"}}`) there. Dispatched by the shape of `inputs`.
pub async fn root(State(state): State<AppState>, body: Body<Value>) -> Result<Json<RootResponse>, TeiError> {
    let JsonBody(v) = body?;
    let parse_err = |e: serde_json::Error| ApiError::bad_request(format!("invalid request: {e}"));
    if v.get("inputs").is_some_and(Value::is_object) {
        let req: SimilarityRequest = serde_json::from_value(v).map_err(parse_err)?;
        Ok(Json(RootResponse::Scores(similarity_inner(&state, req).await?)))
    } else {
        let req: EmbedRequest = serde_json::from_value(v).map_err(parse_err)?;
        Ok(Json(RootResponse::Vectors(embed_inner(&state, req).await?)))
    }
}

/// What `POST /` answers: vectors (as `/embed`) or scores (as `/similarity`), as f32.
#[derive(Serialize)]
#[serde(untagged)]
pub enum RootResponse {
    Vectors(Vec<Vec<f32>>),
    Scores(Vec<f32>),
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
    /// TEI: logits instead of sigmoid scores. Our scores are cosines, already raw: true and false give the same.
    #[allow(dead_code)]
    raw_scores: Option<bool>,
}

pub async fn rerank(State(state): State<AppState>, body: Body<RerankRequest>) -> Result<Json<Vec<Value>>, TeiError> {
    let JsonBody(req) = body?;
    check_direction(req.truncation_direction.as_deref())?;
    let target = state.target(req.model.as_deref())?;
    let with_text = req.return_text.or(req.return_documents).unwrap_or(false);
    let (ranked, _) = rerank::rank(
        &state,
        &target,
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

/// TEI's `parameters` of `/similarity`.
#[derive(Deserialize, Default)]
pub struct SimilarityParameters {
    truncate: Option<bool>,
    truncation_direction: Option<String>,
    prompt_name: Option<String>,
    prompt: Option<String>,
}

#[derive(Deserialize)]
pub struct SimilarityRequest {
    inputs: Option<SimilarityInputs>,
    parameters: Option<SimilarityParameters>,
    // The same fields at the top level (extension).
    truncate: Option<bool>,
    truncation_direction: Option<String>,
    prompt_name: Option<String>,
    prompt: Option<String>,
    model: Option<String>,
}

pub async fn similarity(
    State(state): State<AppState>,
    body: Body<SimilarityRequest>,
) -> Result<Json<Vec<f32>>, TeiError> {
    let JsonBody(req) = body?;
    Ok(Json(similarity_inner(&state, req).await?))
}

async fn similarity_inner(state: &AppState, req: SimilarityRequest) -> Result<Vec<f32>, ApiError> {
    let params = req.parameters.unwrap_or_default();
    check_direction(params.truncation_direction.or(req.truncation_direction).as_deref())?;
    let target = state.target(req.model.as_deref())?;
    let served = &target.served;
    let inputs = req.inputs.ok_or_else(|| {
        ApiError::bad_request("`inputs` is required: {\"source_sentence\": ..., \"sentences\": [...]}").param("inputs")
    })?;
    let source = inputs
        .source_sentence
        .ok_or_else(|| ApiError::bad_request("`inputs.source_sentence` is required").param("inputs"))?;
    let sentences = non_empty(body::texts(inputs.sentences, "inputs.sentences")?, "inputs.sentences")?;
    let body_prompt = embed::prompt_choice(params.prompt_name.or(req.prompt_name), params.prompt.or(req.prompt))?;
    let opts = Options {
        prompt: target.prompt(body_prompt),
        truncate: params.truncate.or(req.truncate).unwrap_or(true),
        ..Options::default()
    };
    let mut texts = Vec::with_capacity(sentences.len() + 1);
    texts.push(source);
    texts.extend(sentences);
    let vectors = embed::texts(state, served, texts, &opts, "inputs.sentences").await?.embeddings;
    let (src, rest) = vectors.split_first().expect("source vector");
    Ok(rest.iter().map(|v| cosine(src, v)).collect())
}

#[derive(Deserialize)]
pub struct TokenizeRequest {
    inputs: Option<Value>,
    prompt_name: Option<String>,
    prompt: Option<String>,
    model: Option<String>,
    add_special_tokens: Option<bool>,
}

/// One token as TEI's `/tokenize` returns it; `start`/`stop` are character offsets into the prompt + input
/// (null for special tokens).
#[derive(Serialize)]
pub struct SimpleToken {
    id: u32,
    text: String,
    special: bool,
    start: Option<usize>,
    stop: Option<usize>,
}

fn tokenizer_of(served: &Served) -> Result<&deposium_engine::Tokenizer, ApiError> {
    served
        .model
        .backend()
        .tokenizer()
        .ok_or_else(|| ApiError::bad_request(format!("model '{}' has no tokenizer to show", served.name)))
}

/// Tokens per input as TEI returns them: the model's prompt (when one applies) and its special tokens included
/// (`add_special_tokens`, default: as the model embeds them), not cut to the model's limit.
pub async fn tokenize(
    State(state): State<AppState>,
    body: Body<TokenizeRequest>,
) -> Result<Json<Vec<Vec<SimpleToken>>>, TeiError> {
    let JsonBody(req) = body?;
    let target = state.target(req.model.as_deref())?;
    let texts = non_empty(body::texts(req.inputs, "inputs")?, "inputs")?;
    embed::check_count(&state, texts.len(), "inputs")?;
    let prompt = target.prompt(embed::prompt_choice(req.prompt_name, req.prompt)?);
    let served: Arc<Served> = target.served.clone();
    // Default: the special tokens the model itself embeds, so that the ids round-trip.
    let add_special = req.add_special_tokens.unwrap_or(served.model.backend().adds_special_tokens());
    let tokens = tokio::task::spawn_blocking(move || {
        let prefix = served.model.resolve_prompt(&prompt)?;
        let tokenizer = tokenizer_of(&served)?;
        texts
            .into_iter()
            .map(|text| {
                let full = format!("{prefix}{text}");
                let enc = tokenizer
                    .encode_char_offsets(full.as_str(), add_special)
                    .map_err(|e| ApiError::bad_request(format!("tokenizer: {e}")))?;
                let chars: Vec<char> = full.chars().collect();
                Ok(enc
                    .get_ids()
                    .iter()
                    .zip(enc.get_offsets())
                    .zip(enc.get_special_tokens_mask())
                    .zip(enc.get_tokens())
                    .map(|(((&id, &(start, stop)), &special), token)| {
                        if special == 1 {
                            SimpleToken { id, text: token.clone(), special: true, start: None, stop: None }
                        } else {
                            let (a, b) = (start.min(chars.len()), stop.min(chars.len()));
                            SimpleToken {
                                id,
                                text: chars[a..b.max(a)].iter().collect(),
                                special: false,
                                start: Some(start),
                                stop: Some(stop),
                            }
                        }
                    })
                    .collect())
            })
            .collect::<Result<Vec<Vec<SimpleToken>>, ApiError>>()
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("tokenizer failed: {e}")))??;
    Ok(Json(tokens))
}

#[derive(Deserialize)]
pub struct DecodeRequest {
    ids: Option<Value>,
    skip_special_tokens: Option<bool>,
    model: Option<String>,
}

/// `ids` (one list or a list of lists) back to text: one string per list (TEI's `/decode`).
pub async fn decode(State(state): State<AppState>, body: Body<DecodeRequest>) -> Result<Json<Vec<String>>, TeiError> {
    let JsonBody(req) = body?;
    let served = state.lookup(req.model.as_deref())?;
    let bad = |what: String| ApiError::bad_request(what).param("ids");
    let id = |v: &Value, at: String| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad(format!("`ids{at}` must be a token id (an integer ≥ 0), got {v}")))
    };
    let seqs: Vec<Vec<u32>> = match req.ids {
        None | Some(Value::Null) => return Err(bad("`ids` is required".into()).into()),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(bad("`ids` cannot be empty".into()).code("empty").into())
        }
        Some(Value::Array(items)) if items[0].is_array() => items
            .iter()
            .enumerate()
            .map(|(i, seq)| match seq {
                Value::Array(ids) => ids.iter().enumerate().map(|(j, v)| id(v, format!("[{i}][{j}]"))).collect(),
                other => Err(bad(format!("`ids[{i}]` must be an array of token ids, got {}", body::kind(other)))),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Array(items)) => {
            vec![items.iter().enumerate().map(|(i, v)| id(v, format!("[{i}]"))).collect::<Result<_, _>>()?]
        }
        Some(other) => {
            return Err(
                bad(format!("`ids` must be an array of token ids or of arrays, got {}", body::kind(&other))).into()
            )
        }
    };
    embed::check_count(&state, seqs.len(), "ids")?;
    let skip = req.skip_special_tokens.unwrap_or(true);
    let texts = tokio::task::spawn_blocking(move || {
        let tokenizer = tokenizer_of(&served)?;
        let vocab = tokenizer.get_vocab_size(true);
        seqs.iter()
            .map(|ids| {
                if let Some(b) = ids.iter().find(|&&t| t as usize >= vocab) {
                    return Err(bad(format!("token id {b} is outside the vocabulary ({vocab} ids)")));
                }
                tokenizer.decode(ids, skip).map_err(|e| ApiError::bad_request(format!("tokenizer: {e}")))
            })
            .collect::<Result<Vec<String>, ApiError>>()
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("tokenizer failed: {e}")))??;
    Ok(Json(texts))
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
