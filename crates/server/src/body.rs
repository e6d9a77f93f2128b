//! Request bodies: JSON whatever the Content-Type (Ollama clients and curl often send none), with clear 400/413
//! errors instead of axum's plain-text rejections.
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body. Use `Result<JsonBody<T>, ApiError>` in OpenAI/TEI handlers to render the error in their shape.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        // A client that stalls mid-body would otherwise hold its concurrency slot for as long as it stays connected.
        let timeout = state.config().body_timeout;
        let read = tokio::time::timeout(timeout, Bytes::from_request(req, state)).await.map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {} s (--body-timeout-secs)", timeout.as_secs()),
            )
            .code("body_timeout")
        })?;
        let bytes = read.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "request body is over the limit of {} bytes (--max-body-bytes)",
                        state.config().max_body_bytes
                    ),
                )
                .code("body_too_large")
            } else {
                ApiError::new(rej.status(), format!("could not read the request body: {}", rej.body_text()))
            }
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parse JSON into `T`, with messages that name the problem.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad_request("request body is empty; expected a JSON object").code("malformed_json"));
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::bad_request(format!("invalid request: {e}")),
        _ => ApiError::bad_request(format!("malformed JSON: {e}")).code("malformed_json"),
    })
}

/// A list of texts from a JSON value that may be one string or an array of strings.
pub fn texts(v: Option<Value>, field: &'static str) -> Result<Vec<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s),
                other => Err(ApiError::bad_request(format!("`{field}[{i}]` must be a string, got {}", kind(&other)))
                    .param(field)),
            })
            .collect(),
        Some(other) => Err(ApiError::bad_request(format!(
            "`{field}` must be a string or an array of strings, got {}",
            kind(&other)
        ))
        .param(field)),
    }
}

/// The JSON type name of a value, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
