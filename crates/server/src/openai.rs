//! OpenAI-compatible routes: `POST /v1/embeddings`, `GET /v1/models`, `GET /v1/models/{id}`.
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::body::{self, JsonBody};
use crate::embed::{self, Options};
use crate::error::{ApiError, OpenAiError};
use crate::state::{AppState, Served};
use crate::util::unix_seconds;

#[derive(Deserialize)]
pub struct EmbeddingsRequest {
    input: Option<Value>,
    model: Option<String>,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
    #[allow(dead_code)]
    user: Option<String>,
    /// Extensions: prompts, and refusing over-long inputs instead of cutting them.
    prompt_name: Option<String>,
    prompt: Option<String>,
    truncate: Option<bool>,
}

/// OpenAI `input`: texts, or token ids fed to the model as they are.
enum Input {
    Texts(Vec<String>),
    Tokens(Vec<Vec<u32>>),
}

fn invalid_input(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg).param("input")
}

fn token_id(v: &Value, at: &str) -> Result<u32, ApiError> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| invalid_input(format!("`input{at}` must be a token id (an integer ≥ 0), got {v}")))
}

fn parse_input(v: Option<Value>) -> Result<Input, ApiError> {
    let items = match v {
        None | Some(Value::Null) => return Err(invalid_input("`input` is required")),
        Some(Value::String(s)) if s.is_empty() => return Err(invalid_input("`input` must not be an empty string")),
        Some(Value::String(s)) => return Ok(Input::Texts(vec![s])),
        Some(Value::Array(items)) if items.is_empty() => return Err(invalid_input("`input` must not be empty")),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(invalid_input(format!(
                "`input` must be a string, an array of strings, an array of token ids or an array of arrays of token ids; got {}",
                body::kind(&other)
            )))
        }
    };
    match &items[0] {
        Value::String(_) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) if s.is_empty() => Err(invalid_input(format!("`input[{i}]` is an empty string"))),
                Value::String(s) => Ok(s),
                other => Err(invalid_input(format!("`input[{i}]` must be a string, got {}", body::kind(&other)))),
            })
            .collect::<Result<_, _>>()
            .map(Input::Texts),
        Value::Number(_) => {
            let ids =
                items.iter().enumerate().map(|(i, v)| token_id(v, &format!("[{i}]"))).collect::<Result<_, _>>()?;
            Ok(Input::Tokens(vec![ids]))
        }
        Value::Array(_) => items
            .iter()
            .enumerate()
            .map(|(i, seq)| match seq {
                Value::Array(ids) if ids.is_empty() => {
                    Err(invalid_input(format!("`input[{i}]` is an empty token list")))
                }
                Value::Array(ids) => {
                    ids.iter().enumerate().map(|(j, v)| token_id(v, &format!("[{i}][{j}]"))).collect::<Result<_, _>>()
                }
                other => {
                    Err(invalid_input(format!("`input[{i}]` must be an array of token ids, got {}", body::kind(other))))
                }
            })
            .collect::<Result<_, _>>()
            .map(Input::Tokens),
        other => Err(invalid_input(format!("`input[0]` must be a string or a token id, got {}", body::kind(other)))),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Float,
    Base64,
}

/// Little-endian f32 bytes, base64 (what the official SDKs ask for by default).
fn to_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub async fn embeddings(
    State(state): State<AppState>,
    body: Result<JsonBody<EmbeddingsRequest>, ApiError>,
) -> Result<Json<EmbeddingsResponse>, OpenAiError> {
    let JsonBody(req) = body?;
    let encoding = match req.encoding_format.as_deref() {
        None | Some("float") => Encoding::Float,
        Some("base64") => Encoding::Base64,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unsupported encoding_format '{other}'; use 'float' or 'base64'"
            ))
            .param("encoding_format")
            .into())
        }
    };
    let target = state.target(req.model.as_deref())?;
    let served = target.served.clone();
    let body_prompt = embed::prompt_choice(req.prompt_name, req.prompt)?;
    let opts = Options {
        prompt: target.prompt(body_prompt.clone()),
        truncate: req.truncate.unwrap_or(true),
        dimensions: req.dimensions,
        ..Options::default()
    };
    let out = match parse_input(req.input)? {
        Input::Texts(texts) => embed::texts(&state, &served, texts, &opts, "input").await?,
        Input::Tokens(_) if !state.config().allow_token_ids => return Err(ApiError::bad_request(
            "token-id input is refused: ids from another tokenizer (LangChain's OpenAIEmbeddings sends tiktoken ids \
                 by default) would silently give wrong vectors. Send the texts instead (LangChain: \
                 OpenAIEmbeddings(check_embedding_ctx_length=False)); a server started with --allow-token-ids accepts \
                 this model's own token ids",
        )
        .param("input")
        .code("token_ids_not_allowed")
        .into()),
        Input::Tokens(seqs) => {
            if body_prompt != deposium_engine::Prompt::Default || target.selector.is_some() {
                return Err(
                    ApiError::bad_request("a prompt (`prompt_name`, `prompt` or a NAME@PROMPT model name) cannot be applied to token-id input")
                        .param("input")
                        .into(),
                );
            }
            embed::check_count(&state, seqs.len(), "input")?;
            served.model.check_dimensions(opts.dimensions).map_err(ApiError::from)?;
            let tokens = embed::token_inputs(&served, seqs, opts.truncate)?;
            embed::run(&served, tokens, &opts).await?
        }
    };
    let data = out
        .embeddings
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingData {
            object: "embedding",
            index,
            embedding: match encoding {
                Encoding::Float => Vector::Float(v),
                Encoding::Base64 => Vector::Base64(to_base64(&v)),
            },
        })
        .collect();
    Ok(Json(EmbeddingsResponse {
        object: "list",
        data,
        model: req.model.unwrap_or_else(|| served.name.clone()),
        usage: Usage { prompt_tokens: out.tokens, total_tokens: out.tokens },
    }))
}

/// Typed response: vectors serialize as f32 (shortest round-trip digits), not widened to f64.
#[derive(Serialize)]
pub struct EmbeddingsResponse {
    object: &'static str,
    data: Vec<EmbeddingData>,
    model: String,
    usage: Usage,
}

#[derive(Serialize)]
struct EmbeddingData {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

/// A model as OpenAI lists it; with a selector, its `NAME@PROMPT` entry (`parent`: the model, `prompt_name`).
fn model_entry(m: &Served, selector: Option<&str>) -> Value {
    let created = unix_seconds(m.loaded_at);
    match selector {
        None => json!({ "id": m.name, "object": "model", "created": created, "owned_by": "deposium" }),
        Some(p) => json!({
            "id": format!("{}@{p}", m.name), "object": "model", "created": created, "owned_by": "deposium",
            "parent": m.name, "prompt_name": p,
        }),
    }
}

/// Each model, followed by one `NAME@PROMPT` entry per prompt it defines.
pub async fn models(State(state): State<AppState>) -> Json<Value> {
    let mut data = Vec::new();
    for m in state.ready() {
        data.push(model_entry(&m, None));
        for p in deposium_engine::registry::prompt_names(m.model.info()) {
            data.push(model_entry(&m, Some(&p)));
        }
    }
    Json(json!({ "object": "list", "data": data }))
}

pub async fn model(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, OpenAiError> {
    // A model id that is not valid UTF-8 once percent-decoded: a JSON 400, not axum's plain-text rejection.
    let Path(id) = id.map_err(|rej| {
        ApiError::new(rej.status(), format!("invalid model id in the path: {}", rej.body_text())).param("model")
    })?;
    let t = state.target(Some(&id))?;
    Ok(Json(model_entry(&t.served, t.selector.as_deref())))
}

/// `/v1/rerank`, the Cohere/Jina shape: `{model, query, documents: [str | {text}], top_n, return_documents}` →
/// `{model, results: [{index, relevance_score, document?: {text}}], usage: {total_tokens}}`, best first.
#[derive(Deserialize)]
pub struct RerankRequest {
    model: Option<String>,
    query: Option<String>,
    documents: Option<Value>,
    top_n: Option<usize>,
    return_documents: Option<bool>,
    prompt_name: Option<String>,
    prompt: Option<String>,
    truncate: Option<bool>,
    // Cohere options that do not apply to embedding cosines.
    #[allow(dead_code)]
    max_chunks_per_doc: Option<Value>,
    #[allow(dead_code)]
    rank_fields: Option<Value>,
}

pub async fn rerank(
    State(state): State<AppState>,
    body: Result<JsonBody<RerankRequest>, ApiError>,
) -> Result<Json<Value>, OpenAiError> {
    let JsonBody(req) = body?;
    let target = state.target(req.model.as_deref())?;
    let (ranked, tokens) = crate::rerank::rank(
        &state,
        &target,
        crate::rerank::Query {
            query: req.query,
            documents: req.documents,
            top_k: req.top_n,
            prompt: embed::prompt_choice(req.prompt_name, req.prompt)?,
            truncate: req.truncate.unwrap_or(true),
        },
    )
    .await?;
    let with_docs = req.return_documents.unwrap_or(false);
    let results: Vec<Value> = ranked
        .into_iter()
        .map(|r| {
            let mut v = json!({ "index": r.index, "relevance_score": r.score });
            if with_docs {
                v["document"] = json!({ "text": r.text });
            }
            v
        })
        .collect();
    Ok(Json(json!({
        "model": req.model.unwrap_or_else(|| target.served.name.clone()),
        "results": results,
        "usage": { "total_tokens": tokens },
    })))
}
