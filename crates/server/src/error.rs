//! API errors, rendered in the shape of the route family that produced them.
//!
//! Ollama and seed routes: `{"error": "..."}`. TEI routes: `{"error": "...", "error_type": "..."}` with TEI's status
//! codes (422 validation, 400 empty batch, 413 size, 424 backend, 429 overloaded, 503 unhealthy).
//! OpenAI routes: `{"error": {"message", "type", "param", "code"}}`.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use deposium_engine::EngineError;
use serde_json::json;

/// Which error body a route family speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Ollama,
    Tei,
    OpenAi,
}

impl Family {
    /// The family a request path belongs to (for errors raised before a handler runs).
    pub fn of_path(path: &str) -> Family {
        if path.starts_with("/v1/") || path == "/v1" {
            Family::OpenAi
        } else if matches!(path, "/embed" | "/rerank" | "/similarity" | "/tokenize" | "/decode" | "/info") {
            Family::Tei
        } else {
            Family::Ollama
        }
    }
}

/// An error a handler returns; the family decides the body.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault (OpenAI `param`).
    pub param: Option<&'static str>,
    /// A machine-readable code (OpenAI `code`), e.g. `model_not_found`.
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), param: None, code: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// OpenAI `type` for this status.
    fn openai_type(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::NOT_FOUND => "invalid_request_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// TEI's status and `error_type` (lowercase, as TEI serializes its `ErrorType`): a client error becomes 422
    /// `validation` (TEI answers malformed fields with 422), an over-long input 422 `tokenizer`, an empty batch 400
    /// `empty`, malformed JSON stays 400, sizes 413, a backend failure 424 `backend`.
    fn tei_status(&self) -> (StatusCode, &'static str) {
        match (self.status, self.code) {
            (_, Some("empty")) => (StatusCode::BAD_REQUEST, "empty"),
            (_, Some("context_length_exceeded")) => (StatusCode::UNPROCESSABLE_ENTITY, "tokenizer"),
            (StatusCode::BAD_REQUEST, Some("malformed_json")) => (StatusCode::BAD_REQUEST, "validation"),
            (StatusCode::BAD_REQUEST, _) => (StatusCode::UNPROCESSABLE_ENTITY, "validation"),
            (StatusCode::TOO_MANY_REQUESTS, _) => (self.status, "overloaded"),
            (StatusCode::SERVICE_UNAVAILABLE, _) => (self.status, "unhealthy"),
            (StatusCode::UNAUTHORIZED, _) => (self.status, "unauthorized"),
            (s, _) if s.is_server_error() => (StatusCode::FAILED_DEPENDENCY, "backend"),
            (s, _) => (s, "validation"),
        }
    }

    pub fn render(self, family: Family) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), "{}", self.message);
        }
        let mut status = self.status;
        let body = match family {
            Family::Ollama => json!({ "error": self.message }),
            Family::Tei => {
                let (tei_status, error_type) = self.tei_status();
                status = tei_status;
                json!({ "error": self.message, "error_type": error_type })
            }
            Family::OpenAi => json!({ "error": {
                "message": self.message,
                "type": self.openai_type(),
                "param": self.param,
                "code": self.code,
            }}),
        };
        (status, Json(body)).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::InvalidInput(_) | EngineError::TooLong { .. } => StatusCode::BAD_REQUEST,
            EngineError::UnknownModel { .. } => StatusCode::NOT_FOUND,
            EngineError::NonFinite(_) | EngineError::Load { .. } | EngineError::Ort(_) | EngineError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut err = ApiError::new(status, e.report());
        match e {
            EngineError::UnknownModel { .. } => err = err.param("model").code("model_not_found"),
            EngineError::TooLong { .. } => err = err.param("input").code("context_length_exceeded"),
            _ => {}
        }
        err
    }
}

/// Ollama- and seed-shaped errors are the default rendering.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.render(Family::Ollama)
    }
}

/// An error from an OpenAI route.
pub struct OpenAiError(pub ApiError);

impl<E: Into<ApiError>> From<E> for OpenAiError {
    fn from(e: E) -> Self {
        OpenAiError(e.into())
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        self.0.render(Family::OpenAi)
    }
}

/// An error from a TEI-style route.
pub struct TeiError(pub ApiError);

impl<E: Into<ApiError>> From<E> for TeiError {
    fn from(e: E) -> Self {
        TeiError(e.into())
    }
}

impl IntoResponse for TeiError {
    fn into_response(self) -> Response {
        self.0.render(Family::Tei)
    }
}
