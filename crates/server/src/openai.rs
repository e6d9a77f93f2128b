//! OpenAI-compatible routes: `POST /v1/embeddings`, `GET /v1/models`, `GET /v1/models/{id}`.
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
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

/// The response body for `encoding_format: base64` (little-endian f32 bytes, what the official SDKs ask for by
/// default), written by hand: the same bytes serde would write, without running the base64 strings through JSON
/// string escaping (the alphabet needs none) and without a `String` per vector; the encoder is `base64-simd`'s
/// (SIMD chosen at run time), the largest cost of this path with the scalar `base64` crate.
fn base64_response(vectors: &[Vec<f32>], model: &str, tokens: usize) -> Response {
    use std::fmt::Write;
    let per_vector = vectors.first().map_or(0, |v| (v.len() * 4).div_ceil(3) * 4) + 48;
    let mut out = String::with_capacity(vectors.len() * per_vector + model.len() + 128);
    out.push_str(r#"{"object":"list","data":["#);
    let mut bytes = Vec::new();
    for (index, v) in vectors.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        let _ = write!(out, r#"{{"object":"embedding","index":{index},"embedding":""#);
        bytes.resize(v.len() * 4, 0);
        for (b, x) in bytes.chunks_exact_mut(4).zip(v) {
            b.copy_from_slice(&x.to_le_bytes());
        }
        base64_simd::STANDARD.encode_append(&bytes, &mut out);
        out.push_str("\"}");
    }
    out.push_str(r#"],"model":"#);
    out.push_str(&serde_json::to_string(model).unwrap_or_else(|_| "\"\"".into()));
    let _ = write!(out, r#","usage":{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}}}"#);
    ([(header::CONTENT_TYPE, "application/json")], out).into_response()
}

pub async fn embeddings(
    State(state): State<AppState>,
    body: Result<JsonBody<EmbeddingsRequest>, ApiError>,
) -> Result<Response, OpenAiError> {
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
    let model = req.model.unwrap_or_else(|| served.name.clone());
    if encoding == Encoding::Base64 {
        return Ok(base64_response(&out.embeddings, &model, out.tokens));
    }
    let data = out
        .embeddings
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingData { object: "embedding", index, embedding: v })
        .collect();
    Ok(Json(EmbeddingsResponse {
        object: "list",
        data,
        model,
        usage: Usage { prompt_tokens: out.tokens, total_tokens: out.tokens },
    })
    .into_response())
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
    embedding: Vec<f32>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_base64_body_is_what_serde_writes() {
        #[derive(Serialize)]
        struct Data {
            object: &'static str,
            index: usize,
            embedding: String,
        }
        #[derive(Serialize)]
        struct Body {
            object: &'static str,
            data: Vec<Data>,
            model: String,
            usage: Usage,
        }
        let vectors = vec![vec![0.25f32, -1.5, f32::MIN_POSITIVE, 3.0e-7, 1.0], vec![], vec![f32::MAX; 3]];
        let model = "potion \"8M\"\n";
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let want = serde_json::to_string(&Body {
            object: "list",
            data: vectors
                .iter()
                .enumerate()
                .map(|(index, v)| Data {
                    object: "embedding",
                    index,
                    embedding: b64.encode(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()),
                })
                .collect(),
            model: model.into(),
            usage: Usage { prompt_tokens: 7, total_tokens: 7 },
        })
        .unwrap();
        let resp = base64_response(&vectors, model, 7);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let got = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        assert_eq!(std::str::from_utf8(&got).unwrap(), want);
    }
}
