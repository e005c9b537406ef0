//! The API dialects. Each is a folder of its own: DTOs (`types`), conversion into the one
//! [`crate::service::ServiceRequest`] (`convert`), handlers that extract, convert, call and
//! encode, and its error body (a [`crate::error::Dialect`]).

pub mod anthropic;
pub mod common;
mod fuzzing;
pub mod ollama;
pub mod openai;

#[doc(hidden)]
pub use fuzzing::decode_for_fuzzing;
