//! Ollama-compatible routes: `/api/embed`, legacy `/api/embeddings`, `/api/tags`, `/api/show`, `/api/ps`,
//! `/api/version`, `/`.
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::body::{self, JsonBody};
use crate::embed::{self, Options};
use crate::error::ApiError;
use crate::state::{AppState, Served, Target};
use crate::util::{human_count, rfc3339};

/// The Ollama version we answer to `/api/version` (clients gate features such as `/api/embed` on it).
pub const OLLAMA_VERSION: &str = "0.12.0";

pub async fn root() -> &'static str {
    "Ollama is running"
}

pub async fn version() -> Json<Value> {
    Json(json!({ "version": OLLAMA_VERSION, "server": format!("deposium-embed {}", env!("CARGO_PKG_VERSION")) }))
}

#[derive(Deserialize)]
pub struct EmbedRequest {
    model: Option<String>,
    input: Option<Value>,
    truncate: Option<bool>,
    dimensions: Option<usize>,
    /// Extensions: a prompt from the model's config, or a raw prefix.
    prompt_name: Option<String>,
    prompt: Option<String>,
    // Accepted and ignored: models stay loaded; options do not apply to embeddings.
    #[allow(dead_code)]
    keep_alive: Option<Value>,
    #[allow(dead_code)]
    options: Option<Value>,
}

pub async fn embed(State(state): State<AppState>, JsonBody(req): JsonBody<EmbedRequest>) -> Result<Response, ApiError> {
    let t0 = Instant::now();
    let target = state.target(req.model.as_deref())?;
    let served = target.served.clone();
    // Ollama skips an empty string: `"input": ""` gives no embeddings.
    let inputs: Vec<String> = body::texts(req.input, "input")?;
    let inputs = if inputs.len() == 1 && inputs[0].is_empty() { Vec::new() } else { inputs };
    let opts = Options {
        prompt: target.prompt(embed::prompt_choice(req.prompt_name, req.prompt)?),
        truncate: req.truncate.unwrap_or(true),
        // Ollama treats `dimensions: 0` as unset.
        dimensions: req.dimensions.filter(|&d| d > 0),
        ..Options::default()
    };
    let out = embed::texts(&state, &served, inputs, &opts, "input").await?;
    Ok(Json(EmbedResponse {
        model: req.model.unwrap_or_else(|| served.name.clone()),
        embeddings: out.embeddings,
        total_duration: t0.elapsed().as_nanos() as u64,
        load_duration: 0,
        prompt_eval_count: out.tokens,
    })
    .into_response())
}

/// Typed responses: vectors serialize as f32 (shortest round-trip digits), not widened to f64.
#[derive(Serialize)]
struct EmbedResponse {
    model: String,
    embeddings: Vec<Vec<f32>>,
    total_duration: u64,
    load_duration: u64,
    prompt_eval_count: usize,
}

#[derive(Serialize)]
struct LegacyResponse {
    embedding: Vec<f32>,
}

#[derive(Serialize)]
struct LegacyListResponse {
    model: String,
    embeddings: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
pub struct LegacyRequest {
    model: Option<String>,
    /// Ollama's shape: one text → `{"embedding": [...]}`.
    prompt: Option<Value>,
    /// The seed's shape: str or list → `{"model", "embeddings": [[...]]}`.
    input: Option<Value>,
    prompt_name: Option<String>,
    truncate: Option<bool>,
    dimensions: Option<usize>,
    #[allow(dead_code)]
    keep_alive: Option<Value>,
    #[allow(dead_code)]
    options: Option<Value>,
}

pub async fn embeddings(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<LegacyRequest>,
) -> Result<Response, ApiError> {
    let body_prompt = embed::prompt_choice(req.prompt_name, None)?;
    let opts = |target: &Target| Options {
        prompt: target.prompt(body_prompt.clone()),
        truncate: req.truncate.unwrap_or(true),
        dimensions: req.dimensions.filter(|&d| d > 0),
        ..Options::default()
    };
    match (req.prompt, req.input) {
        (Some(Value::String(text)), None) => {
            let target = state.target(req.model.as_deref())?;
            let (served, opts) = (&target.served, opts(&target));
            if text.is_empty() {
                return Ok(Json(LegacyResponse { embedding: Vec::new() }).into_response());
            }
            let mut out = embed::texts(&state, served, vec![text], &opts, "prompt").await?;
            let embedding = out.embeddings.pop().unwrap_or_default();
            Ok(Json(LegacyResponse { embedding }).into_response())
        }
        (Some(other), None) => Err(ApiError::bad_request(format!(
            "`prompt` must be a string, got {} (send a list as `input`)",
            body::kind(&other)
        ))),
        (None, Some(input)) => {
            let target = state.target(req.model.as_deref())?;
            let (served, opts) = (&target.served, opts(&target));
            let texts = body::texts(Some(input), "input")?;
            if texts.is_empty() {
                return Err(ApiError::bad_request("`input` is empty"));
            }
            let out = embed::texts(&state, served, texts, &opts, "input").await?;
            Ok(Json(LegacyListResponse {
                model: req.model.unwrap_or_else(|| served.name.clone()),
                embeddings: out.embeddings,
            })
            .into_response())
        }
        (Some(_), Some(_)) => Err(ApiError::bad_request("give either `prompt` (one text) or `input`, not both")),
        // Ollama answers a request without text with an empty embedding (clients use it to load a model).
        (None, None) => {
            state.target(req.model.as_deref())?;
            Ok(Json(LegacyResponse { embedding: Vec::new() }).into_response())
        }
    }
}

/// Ollama's `name:tag` for a model name.
fn tagged(name: &str) -> String {
    if name.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// `details` of `/api/tags`, `/api/show`, `/api/ps`.
fn details(m: &Served) -> Value {
    let info = m.model.info();
    json!({
        "parent_model": "",
        "format": if info.family == "model2vec" { "safetensors" } else { "onnx" },
        "family": info.family,
        "families": [info.family],
        "parameter_size": info.parameter_count.map(human_count).unwrap_or_default(),
        "quantization_level": quantization_level(&info.quantization),
    })
}

fn quantization_level(q: &str) -> String {
    match q.to_ascii_lowercase().as_str() {
        "fp32" | "f32" => "F32".into(),
        "fp16" | "f16" => "F16".into(),
        "bf16" => "BF16".into(),
        other => other.to_ascii_uppercase(),
    }
}

fn modified_at(m: &Served) -> String {
    let when = std::fs::metadata(&m.model.info().path).and_then(|md| md.modified()).unwrap_or(m.loaded_at);
    rfc3339(when)
}

/// An unknown-model error (not a bad `@PROMPT` selector).
fn target_is_plain(e: &ApiError) -> bool {
    e.message.contains("; available: ")
}

/// One model as `/api/tags` lists it; with a selector, the `NAME@PROMPT` entry for one of its prompts.
pub fn tag_entry(m: &Served, selector: Option<&str>) -> Value {
    let info = m.model.info();
    let name = match selector {
        Some(p) => tagged(&format!("{}@{p}", m.name)),
        None => tagged(&m.name),
    };
    let mut entry = json!({
        "name": name,
        "model": name,
        "modified_at": modified_at(m),
        "size": info.size_bytes,
        "digest": info.digest,
        "details": details(m),
        "capabilities": ["embedding"],
    });
    match selector {
        Some(p) => {
            entry["parent_model"] = json!(tagged(&m.name));
            entry["prompt_name"] = json!(p);
            entry["prompt"] = json!(info.prompts.get(p));
        }
        None => {
            entry["aliases"] = json!(aliases(m));
            entry["prompt_selectors"] = json!(selectors(m));
        }
    }
    entry
}

/// `NAME@PROMPT` for every prompt the model defines (`query` and `document` first).
pub fn selectors(m: &Served) -> Vec<String> {
    deposium_engine::registry::prompt_names(m.model.info()).into_iter().map(|p| format!("{}@{p}", m.name)).collect()
}

/// Every name the model answers to.
fn aliases(m: &Served) -> Vec<String> {
    let mut names = vec![m.name.clone()];
    names.extend(m.spec.aliases.iter().cloned());
    names
}

/// Each model, followed by one `NAME@PROMPT` entry per prompt it defines.
pub async fn tags(State(state): State<AppState>) -> Json<Value> {
    let mut models = Vec::new();
    for m in state.ready() {
        models.push(tag_entry(&m, None));
        for p in deposium_engine::registry::prompt_names(m.model.info()) {
            models.push(tag_entry(&m, Some(&p)));
        }
    }
    Json(json!({ "models": models }))
}

pub async fn ps(State(state): State<AppState>) -> Json<Value> {
    let models: Vec<Value> = state
        .ready()
        .iter()
        .map(|m| {
            let info = m.model.info();
            json!({
                "name": tagged(&m.name),
                "model": tagged(&m.name),
                "size": info.size_bytes,
                "digest": info.digest,
                "details": details(m),
                // Models stay loaded for the life of the server.
                "expires_at": "2318-01-01T00:00:00Z",
                "size_vram": 0,
                "context_length": info.max_tokens,
            })
        })
        .collect();
    Json(json!({ "models": models }))
}

#[derive(Deserialize)]
pub struct ShowRequest {
    model: Option<String>,
    /// Older clients send `name`.
    name: Option<String>,
    #[allow(dead_code)]
    verbose: Option<bool>,
}

pub async fn show(State(state): State<AppState>, JsonBody(req): JsonBody<ShowRequest>) -> Result<Response, ApiError> {
    let Some(name) = req.model.or(req.name) else {
        return Err(ApiError::bad_request("`model` is required").param("model"));
    };
    let target = state.target(Some(&name)).map_err(|e| {
        // Ollama's own wording for an unknown model; a bad prompt selector keeps the prompts it lists.
        if e.status == StatusCode::NOT_FOUND && target_is_plain(&e) {
            ApiError { message: format!("model '{name}' not found"), ..e }
        } else {
            e
        }
    })?;
    let m = &target.served;
    let info = m.model.info();
    let family = &info.family;
    Ok(Json(json!({
        "license": "",
        "modelfile": format!("# served by deposium-embed\nFROM {}\n", info.path.display()),
        "parameters": "",
        "template": "",
        "details": details(m),
        "model_info": {
            "general.architecture": family,
            "general.parameter_count": info.parameter_count,
            format!("{family}.embedding_length"): info.dim,
            format!("{family}.context_length"): info.max_tokens,
        },
        "capabilities": ["embedding"],
        "modified_at": modified_at(m),
        // Extensions: what the model answers to and what it can do.
        "aliases": aliases(m),
        "prompts": info.prompts,
        "prompt_selectors": selectors(m),
        // The prompt this name selects (`NAME@PROMPT`), else the one a request without prompt gets.
        "prompt_name": match target.prompt(deposium_engine::Prompt::Default) {
            deposium_engine::Prompt::Named(n) => Some(n),
            _ => info.default_prompt_name.clone(),
        },
        "default_prompt_name": info.default_prompt_name,
        "matryoshka_dims": info.matryoshka_dims,
    }))
    .into_response())
}
