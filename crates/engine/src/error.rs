use thiserror::Error;

/// Any error, as a cause kept behind an [`EngineError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors a caller can act on. `InvalidInput`/`TooLong`/`UnknownModel` are the client's fault (4xx).
///
/// `Display` is this error's own message; the cause, where there is one, is its `source()`. [`EngineError::report`]
/// gives both, as users see them.
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
    /// A model could not be loaded: `what` says what was being loaded or done, `source` why.
    #[error("failed to load model: {what}")]
    Load {
        what: String,
        #[source]
        source: Option<BoxError>,
    },
    /// ONNX Runtime failed while running a graph.
    #[error("onnxruntime")]
    Ort(#[from] ort::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    /// A loading failure with no underlying error.
    pub fn load(what: impl Into<String>) -> Self {
        EngineError::Load { what: what.into(), source: None }
    }

    /// The message and its causes, joined by `: ` (what the CLI and the HTTP API show).
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }
}

/// Turns any error into an [`EngineError::Load`] that keeps it as its source, in place of a `map_err` per call.
pub trait LoadContext<T> {
    /// `what`: what was being loaded or done (computed only on failure).
    fn context_load<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<BoxError>> LoadContext<T> for std::result::Result<T, E> {
    fn context_load<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| EngineError::Load { what: what().into(), source: Some(e.into()) })
    }
}
