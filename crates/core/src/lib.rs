//! HyperLlama's domain types.
//!
//! Every API dialect (the CLI, Ollama's REST API, OpenAI's) converts its own input into one
//! [`GenerateRequest`], and every engine (llama.cpp in-process, MAX, vLLM, remote OpenAI
//! servers) answers with a stream of [`TokenEvent`]s. Keeping these types here, free of any
//! runtime or HTTP dependency, is what lets the dialects stay thin and the engines swappable.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod error;
mod message;
mod request;
mod sampling;
mod usage;

pub use error::ValidationError;
pub use message::{Message, Role, ToolCall, ToolSpec};
pub use request::{GenerateRequest, OutputFormat, Prompt, StopConditions};
pub use sampling::{Penalties, Sampling, SamplingParams};
pub use usage::{FinishReason, Timings, TokenEvent, Usage, UNKNOWN_TOKEN_ID};
