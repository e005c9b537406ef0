use axum::http::StatusCode;
use hyperllama_core::ValidationError;
use hyperllama_engine::EngineError;
use hyperllama_store::StoreError;

/// What went wrong, classified once; each dialect renders it in its own error shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    NotFound,
    PayloadTooLarge,
    /// No or a wrong API key.
    Unauthorized,
    /// A key's rate limit: 429 in both dialects, with `Retry-After`.
    RateLimited,
    /// Too many requests waiting: Ollama answers 503, OpenAI 429; both with `Retry-After`.
    Overloaded,
    Unavailable,
    BadGateway,
    Internal,
    NotImplemented,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ErrorKind,
    /// A stable code (`model_not_found`, `prompt_too_long`, …) for metrics and OpenAI's `code`.
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, when known (OpenAI's `param`).
    pub param: Option<&'static str>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self { kind, code, message: message.into(), param: None }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, "invalid_request", message)
    }
    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }
    pub fn model_not_found(name: &str) -> Self {
        // Ollama's wording, which its clients and users recognise.
        Self::new(ErrorKind::NotFound, "model_not_found", format!("model '{name}' not found"))
    }
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable | ErrorKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        }
    }
}

/// Seconds a refused client should wait before retrying (`Retry-After`).
pub const RETRY_AFTER_SECS: u32 = 1;

/// What every dialect adds to its error body: `Retry-After` on an overload refusal, and the
/// error code for the metrics.
pub(crate) fn finish_error(err: &ApiError, mut response: axum::response::Response) -> axum::response::Response {
    if err.kind == ErrorKind::Overloaded {
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(RETRY_AFTER_SECS));
    }
    response.extensions_mut().insert(crate::middleware::ErrorCode(err.code));
    response
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::new(ErrorKind::BadRequest, e.kind(), e.to_string())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let kind = if e.is_client_error() {
            ErrorKind::BadRequest
        } else {
            match e {
                EngineError::Unavailable(_) => ErrorKind::Unavailable,
                EngineError::Overloaded { .. } => ErrorKind::Overloaded,
                EngineError::Load(_) | EngineError::UnsupportedArchitecture { .. } => ErrorKind::BadRequest,
                _ => ErrorKind::Internal,
            }
        };
        if kind == ErrorKind::Internal {
            tracing::error!(error = %e, "engine failure");
        }
        Self::new(kind, e.kind(), e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let kind = match &e {
            StoreError::NotFound(_) | StoreError::BlobNotFound(_) => ErrorKind::NotFound,
            StoreError::InvalidName { .. } | StoreError::InvalidDigest(_) | StoreError::DigestMismatch { .. } => {
                ErrorKind::BadRequest
            }
            StoreError::Io { .. } => ErrorKind::Internal,
        };
        if let StoreError::NotFound(name) = &e {
            return Self::model_not_found(name);
        }
        if kind == ErrorKind::Internal {
            tracing::error!(error = %e, "store failure");
            return Self::new(kind, e.kind(), "the model store could not be read or written; see the server log");
        }
        Self::new(kind, e.kind(), e.to_string())
    }
}
