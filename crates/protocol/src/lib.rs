//! The wire formats HyperLlama speaks, in one place, typed.
//!
//! The same OpenAI chat/completion protocol is spoken in five places: the server's `/v1`
//! dialect (encoding chunks), the `openai` engine (encoding requests to a remote server and
//! decoding its chunks), the MAX engine (the same request body to its sidecar), the CLI's
//! client and `bench --url` (decoding streams). They all use these DTOs and codecs, so a
//! field added here reaches every one of them, and no per-token `serde_json::Value` tree is
//! built on the hot path.
//!
//! - [`openai`]: request bodies (from a [`hyperllama_core::GenerateRequest`]), chunk and
//!   response DTOs, usage, tool-call deltas, logprobs, model lists, error bodies;
//! - [`sse`]: a server-sent-events decoder (any chunking of the bytes) and encoder;
//! - [`ndjson`]: a newline-delimited JSON decoder;
//! - [`stream`]: both decoders over an async byte stream.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod ndjson;
pub mod openai;
pub mod sse;
pub mod stream;
