//! Reranking by embedding cosine, shared by the TEI-style `/rerank` and the seed's `/api/rerank`.
//!
//! The query gets the model's `query` prompt and the documents its `document` prompt when the model defines them
//! (EmbeddingGemma does); a `prompt_name` or `prompt` in the request overrides both. A `NAME@PROMPT` selector naming
//! one side of a query/document pair (`@query`, `@document`, `@Retrieval-query`...) keeps the pair, one side each;
//! any other selector (`@STS`) applies to both sides.
use std::sync::Arc;

use deposium_engine::{cosine, Prompt};
use serde_json::Value;

use crate::body;
use crate::embed::{self, Options};
use crate::error::ApiError;
use crate::state::{AppState, Served, Target};

/// Fields both rerank routes accept.
pub struct Query {
    pub query: Option<String>,
    /// `documents` or `texts`: strings, or objects with a `text` field.
    pub documents: Option<Value>,
    /// `top_k` or `top_n`.
    pub top_k: Option<usize>,
    pub prompt: Prompt,
    pub truncate: bool,
}

/// A scored document, best first after [`rank`].
pub struct Ranked {
    pub index: usize,
    pub score: f32,
    pub text: String,
}

/// `documents` as texts.
fn documents(v: Option<Value>) -> Result<Vec<String>, ApiError> {
    let Some(Value::Array(items)) = v else {
        return match v {
            None | Some(Value::Null) => Err(ApiError::bad_request("`documents` is required").param("documents")),
            Some(Value::String(s)) => Ok(vec![s]),
            Some(other) => Err(ApiError::bad_request(format!(
                "`documents` must be an array of strings, got {}",
                body::kind(&other)
            ))
            .param("documents")),
        };
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s),
            Value::Object(mut o) => match o.remove("text") {
                Some(Value::String(s)) => Ok(s),
                _ => Err(ApiError::bad_request(format!("`documents[{i}]` is an object without a string `text`"))
                    .param("documents")),
            },
            other => {
                Err(ApiError::bad_request(format!("`documents[{i}]` must be a string, got {}", body::kind(&other)))
                    .param("documents"))
            }
        })
        .collect()
}

/// The model's own prompt by that name when it has one, else `fallback`.
fn model_prompt(served: &Served, name: &str, fallback: &Prompt) -> Prompt {
    if served.model.info().prompts.contains_key(name) {
        Prompt::Named(name.to_string())
    } else {
        fallback.clone()
    }
}

/// The query/document pair a selector belongs to (`query` ↔ `document`, `Retrieval-query` ↔ `Retrieval-document`),
/// when the model defines both sides.
fn pair_of(served: &Served, selector: &str) -> Option<(String, String)> {
    let prompts = &served.model.info().prompts;
    let pair = if let Some(stem) = selector.strip_suffix("query") {
        (selector.to_string(), format!("{stem}document"))
    } else if let Some(stem) = selector.strip_suffix("document") {
        (format!("{stem}query"), selector.to_string())
    } else {
        return None;
    };
    (prompts.contains_key(&pair.0) && prompts.contains_key(&pair.1)).then_some(pair)
}

/// Score every document against the query; best first (ties keep input order), cut to `top_k`.
/// Returns the ranking and the tokens used (query and documents, prompts and special tokens included).
pub async fn rank(state: &AppState, target: &Target, q: Query) -> Result<(Vec<Ranked>, usize), ApiError> {
    let served: &Arc<Served> = &target.served;
    let query = match q.query {
        None => return Err(ApiError::bad_request("`query` is required").param("query")),
        Some(s) if s.is_empty() => return Err(ApiError::bad_request("`query` must not be empty").param("query")),
        Some(s) => s,
    };
    let docs = documents(q.documents)?;
    if docs.is_empty() {
        return Err(ApiError::bad_request("`documents` must not be empty").param("documents").code("empty"));
    }
    embed::check_count(state, docs.len(), "documents")?;
    if q.top_k == Some(0) {
        return Err(ApiError::bad_request("`top_k` must be at least 1").param("top_k"));
    }
    let (query_prompt, doc_prompt) = match (q.prompt, &target.selector) {
        (Prompt::Default, Some(sel)) => match pair_of(served, sel) {
            Some((qn, dn)) => (Prompt::Named(qn), Prompt::Named(dn)),
            None => (Prompt::Named(sel.clone()), Prompt::Named(sel.clone())),
        },
        (Prompt::Default, None) => {
            let fallback = target.prompt(Prompt::Default);
            (model_prompt(served, "query", &fallback), model_prompt(served, "document", &fallback))
        }
        (p, _) => (p.clone(), p),
    };
    let base = Options { truncate: q.truncate, ..Options::default() };
    let mut tokens = embed::tokenize(served, vec![query], &Options { prompt: query_prompt, ..base.clone() }).await?;
    tokens.extend(embed::tokenize(served, docs.clone(), &Options { prompt: doc_prompt, ..base.clone() }).await?);
    // Query and documents go through the batcher as one request.
    let out = embed::run(served, tokens, &base).await?;
    let vectors = out.embeddings;
    let (qv, dvs) = vectors.split_first().expect("query vector");
    let mut ranked: Vec<Ranked> = dvs
        .iter()
        .zip(docs)
        .enumerate()
        .map(|(index, (dv, text))| Ranked { index, score: cosine(qv, dv), text })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    if let Some(k) = q.top_k {
        ranked.truncate(k);
    }
    Ok((ranked, out.tokens))
}
