use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model emitted an end-of-generation token or a stop string matched.
    Stop,
    /// `max_tokens` was reached, or the context filled up.
    Length,
    /// The consumer went away; the engine stopped early.
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Token counts for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    /// Of the prompt tokens, how many were served from cached KV instead of being computed.
    pub cached_tokens: u32,
    pub completion_tokens: u32,
}

/// Where the time of one request went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Waiting for the engine to take the request.
    pub queue: Duration,
    /// Prompt evaluation (prefill), up to the first sampled token.
    pub prompt_eval: Duration,
    /// Decoding of every token after the first.
    pub eval: Duration,
}

impl Timings {
    pub fn total(&self) -> Duration {
        self.queue + self.prompt_eval + self.eval
    }
}

/// What an engine's generation stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenEvent {
    /// One generated token. `text` is what became safe to show with it: it may be empty (half
    /// a UTF-8 character, or text held back because it may start a stop string) or hold text
    /// of earlier tokens released now.
    /// `id` is the vocabulary id, or [`UNKNOWN_TOKEN_ID`] from an engine that streams text
    /// without ids (a remote OpenAI-compatible server). `logprobs` when the request asked.
    Token { id: u32, text: String, logprobs: Option<Box<Logprobs>> },
    /// A tool call an engine parsed itself (a remote server with a tool parser).
    ToolCall(crate::ToolCall),
    /// Text released without a new token: what was held back (a partial stop string, a
    /// dangling byte) when generation ended for another reason. Append it like a token's text.
    Text(String),
    /// Always the last event of a stream that was not cut short by an error.
    /// `stop_sequence`: the stop string that ended the output, when one did.
    Done { finish_reason: FinishReason, usage: Usage, timings: Timings, stop_sequence: Option<String> },
}

/// One token's log-probability, and its text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub id: u32,
    /// The token's own text (its bytes, lossily decoded; a piece of a character shows as U+FFFD).
    pub text: String,
    pub bytes: Vec<u8>,
    /// Natural log of its probability under the distribution the token was sampled from.
    pub logprob: f32,
}

/// The log-probabilities reported with one generated token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logprobs {
    pub token: TokenLogprob,
    /// The most likely alternatives, most likely first (as many as the request asked for).
    pub top: Vec<TokenLogprob>,
}

impl TokenEvent {
    /// A token without log-probabilities.
    pub fn token(id: u32, text: impl Into<String>) -> Self {
        TokenEvent::Token { id, text: text.into(), logprobs: None }
    }
}

/// The `id` of a [`TokenEvent::Token`] whose vocabulary id the engine does not know.
pub const UNKNOWN_TOKEN_ID: u32 = u32::MAX;
