//! Errors, classified once ([`ErrorKind`]), rendered by each dialect in its own shape
//! ([`Dialect`]). Nothing here knows a dialect: `DialectError<D>` renders through `D`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyperllama_core::ValidationError;
use hyperllama_engine::EngineError;
use hyperllama_store::StoreError;

use crate::context::ErrorCode;

/// What went wrong, classified once; each dialect renders it in its own error shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    NotFound,
    PayloadTooLarge,
    /// No or a wrong API key.
    Unauthorized,
    /// Not allowed for this caller (a server path from a remote client).
    Forbidden,
    /// A key's rate limit: 429 in every dialect, with `Retry-After`.
    RateLimited,
    /// Too many requests waiting: Ollama answers 503, OpenAI 429, Anthropic 529; all with
    /// `Retry-After`.
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
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, "internal", message)
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
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable | ErrorKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        }
    }
    /// Whether the client is to blame (4xx).
    pub fn is_client_error(&self) -> bool {
        self.status().is_client_error()
    }
}

/// Seconds a refused client should wait before retrying (`Retry-After`).
pub const RETRY_AFTER_SECS: u32 = 1;

/// An API dialect's error rendering: its body shape and status choices.
pub trait Dialect: Send + Sync + 'static {
    fn error_response(err: &ApiError) -> Response;
}

/// What every dialect adds to its error response: `Retry-After` on an overload refusal, and
/// the error code for the metrics.
pub fn finish_error(err: &ApiError, mut response: Response) -> Response {
    if response.status().is_server_error() {
        // The server's own failure: the cause goes to the log (the client gets it too).
        tracing::error!(code = err.code, error = %err.message, "request failed");
    }
    if err.kind == ErrorKind::Overloaded {
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(RETRY_AFTER_SECS));
    }
    response.extensions_mut().insert(ErrorCode(err.code));
    response
}

/// An error rendered in dialect `D`'s shape: handlers return it so `?` works on anything
/// that converts into an [`ApiError`].
pub struct DialectError<D>(pub ApiError, std::marker::PhantomData<D>);

impl<D> DialectError<D> {
    pub fn new(err: ApiError) -> Self {
        Self(err, std::marker::PhantomData)
    }
}

impl<D, E: Into<ApiError>> From<E> for DialectError<D> {
    fn from(e: E) -> Self {
        Self(e.into(), std::marker::PhantomData)
    }
}

impl<D: Dialect> IntoResponse for DialectError<D> {
    fn into_response(self) -> Response {
        D::error_response(&self.0)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        let param = match &e {
            ValidationError::OutOfRange { field, .. } | ValidationError::Empty { field } => Some(*field),
            ValidationError::Invalid(_) => None,
        };
        Self { param, ..Self::new(ErrorKind::BadRequest, e.kind(), e.to_string()) }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let kind = match &e {
            EngineError::Validation(_) | EngineError::PromptTooLong { .. } | EngineError::Template(_) => {
                ErrorKind::BadRequest
            }
            EngineError::Overloaded { .. } => ErrorKind::Overloaded,
            EngineError::Unavailable(_) => ErrorKind::Unavailable,
            // The server could not load or run the model: its failure, not the client's.
            EngineError::UnsupportedArchitecture { .. } => ErrorKind::NotImplemented,
            EngineError::Load(_) | EngineError::Internal(_) => ErrorKind::Internal,
        };
        if let EngineError::Validation(v) = e {
            return v.into();
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

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        tracing::error!(error = %e, "a blocking task failed");
        Self::internal(format!("a background task failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_side_failures_are_5xx_with_their_cause() {
        let e = ApiError::from(EngineError::Load("out of memory allocating the KV cache".into()));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(e.message.contains("out of memory"), "{}", e.message);
        let e = ApiError::from(EngineError::Unavailable("the sidecar went away".into()));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        let e = ApiError::from(EngineError::UnsupportedArchitecture { arch: "mamba9".into() });
        assert_eq!(e.status(), StatusCode::NOT_IMPLEMENTED);
        let e = ApiError::from(EngineError::PromptTooLong { prompt_tokens: 9, ctx_size: 8 });
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e = ApiError::from(ValidationError::OutOfRange { field: "top_k", expected: ">= 0", got: "-3".into() });
        assert_eq!((e.status(), e.param), (StatusCode::BAD_REQUEST, Some("top_k")));
    }
}
