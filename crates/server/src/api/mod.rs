//! The API dialects. Each owns its DTOs, conversions, stream encoding and error body.

mod fuzzing;
pub mod ollama;
pub mod openai;

use axum::response::Response;

use crate::ApiError;

/// What the shared extractor needs from a dialect: how to render an error.
pub trait Dialect: Send + Sync + 'static {
    fn error_response(err: &ApiError) -> Response;
}

#[doc(hidden)]
pub use fuzzing::decode_for_fuzzing;
