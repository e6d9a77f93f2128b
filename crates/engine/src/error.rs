use thiserror::Error;

/// Errors a caller can act on. `InvalidInput`/`TooLong`/`UnknownModel` are the client's fault (4xx).
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("{0}")]
    InvalidInput(String),
    #[error("input has {tokens} tokens, over the model's limit of {max}; set truncate=true to cut it")]
    TooLong { tokens: usize, max: usize },
    #[error("unknown model '{name}'; available: {available}")]
    UnknownModel { name: String, available: String },
    #[error("model '{0}' produced NaN or Inf in its output")]
    NonFinite(String),
    #[error("failed to load model: {0}")]
    Load(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// A model-loading failure from any displayable error.
pub(crate) fn load_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Load(e.to_string())
}

impl From<anyhow::Error> for EngineError {
    fn from(e: anyhow::Error) -> Self {
        EngineError::Internal(format!("{e:#}"))
    }
}

impl From<ort::Error> for EngineError {
    fn from(e: ort::Error) -> Self {
        EngineError::Internal(format!("onnxruntime: {e}"))
    }
}
