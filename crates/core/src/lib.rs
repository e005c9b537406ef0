//! HyperLlama's domain types.
//!
//! Every API dialect (the CLI, Ollama's REST API, OpenAI's) converts its own input into one
//! [`GenerateRequest`], and every engine (llama.cpp in-process, MAX, vLLM, remote OpenAI
//! servers) answers with a stream of [`TokenEvent`]s. Keeping these types here, free of any
//! runtime or HTTP dependency, is what lets the dialects stay thin and the engines swappable.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod error;
mod keep_alive;
mod message;
mod request;
mod sampling;
pub mod units;
mod usage;

pub use error::ValidationError;
pub use keep_alive::KeepAlive;
pub use message::{Message, Role, ToolCall, ToolSpec};
pub use request::{
    GenerateRequest, OutputFormat, Prompt, Reasoning, StopConditions, ToolRequirement, ValidRequest, MAX_TOP_LOGPROBS,
};
pub use sampling::{Penalties, Sampling, SamplingParams};
pub use usage::{FinishReason, Logprobs, Timings, TokenEvent, TokenLogprob, Usage, UNKNOWN_TOKEN_ID};
