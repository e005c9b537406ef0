//! A generation that passed validation and is producing tokens: the engine's token stream
//! turned into pieces (answer text, reasoning, tool calls whose arguments stream as they are
//! written: [`hyperllama_engine::parse`]), and every token observed for
//! the metrics (on the model's own atomics, no lock) and the key's budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hyperllama_core::{FinishReason, Logprobs, TokenEvent, ToolCall, Usage};
use hyperllama_engine::parse::{OutputParser, Parsed};
use hyperllama_engine::TokenStream;

use crate::api::common::new_id;
use crate::error::{ApiError, ErrorKind};
use crate::metrics::ModelMetrics;
use crate::registry::Acquired;

/// The end of a generation.
#[derive(Debug, Clone)]
pub struct Final {
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub prompt_eval: Duration,
    pub eval: Duration,
    pub load_duration: Duration,
    pub total_duration: Duration,
    /// The calls the model made (when the request offered tools), ids assigned.
    pub tool_calls: Vec<ToolCall>,
    /// The stop string that ended the output, when one did.
    pub stop_sequence: Option<String>,
    /// Oldest messages dropped so that the prompt fit the context (`truncate` asked for).
    pub truncated_messages: usize,
}

/// What a response stream carries.
#[derive(Debug, Clone)]
pub enum Piece {
    /// Answer text, with the log-probabilities of the tokens that produced it when asked for.
    Text {
        text: String,
        logprobs: Vec<Logprobs>,
    },
    /// The model's reasoning (only when the request shows it).
    Thinking(String),
    /// A tool call begins: its index among this answer's calls, its id and function name.
    ToolStart {
        index: usize,
        id: String,
        name: String,
    },
    /// More of a call's arguments (JSON text, concatenating to the whole).
    ToolArgs {
        index: usize,
        delta: String,
    },
    Done(Final),
}

/// How the output is read: tools recognised, reasoning split out.
#[derive(Debug, Clone)]
pub struct OutputPolicy {
    pub parser: OutputParser,
    /// Reasoning goes to the client (`Piece::Thinking`); else it is parsed out and dropped.
    pub show_reasoning: bool,
    pub truncated_messages: usize,
    /// The prompt's length, when it was counted before the engine started.
    pub prompt_tokens: Option<u32>,
}

impl Default for OutputPolicy {
    fn default() -> Self {
        Self {
            parser: OutputParser::new(false, None, false),
            show_reasoning: true,
            truncated_messages: 0,
            prompt_tokens: None,
        }
    }
}

/// A generation that has passed validation and is producing tokens.
pub struct Generation {
    pub acquired: Acquired,
    stream: TokenStream,
    started: Instant,
    policy: OutputPolicy,
    observer: Observer,
}

/// Where a generation's measurements go: the model's metrics, and the key's token budget.
pub(crate) struct Observer {
    pub(crate) metrics: Arc<ModelMetrics>,
    pub(crate) key: Option<Arc<crate::auth::Key>>,
    pub(crate) started: Instant,
    pub(crate) last_token: Option<Instant>,
    pub(crate) ended: bool,
}

impl Observer {
    fn token(&mut self) {
        let now = Instant::now();
        match self.last_token {
            None => self.metrics.observe_ttft(now - self.started),
            Some(last) => self.metrics.observe_itl(now - last),
        }
        self.last_token = Some(now);
    }

    fn done(&mut self, reason: FinishReason, usage: &Usage, queue: Duration) {
        self.ended = true;
        let reason = match reason {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "abort",
        };
        self.metrics.observe_finished(reason, self.started.elapsed(), queue, usage);
        if let Some(key) = &self.key {
            key.charge(u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens));
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        // The client went away (or an error ended it) before the end.
        if !self.ended {
            self.metrics.observe_aborted();
        }
    }
}

/// Turns the parser's events into pieces: ids for calls, reasoning shown or dropped, the
/// log-probabilities of held text released with it.
struct Assembler {
    policy: OutputPolicy,
    ids: Vec<String>,
    calls: Vec<ToolCall>,
    /// Log-probabilities of tokens whose text the parser still holds.
    logprobs: Vec<Logprobs>,
}

impl Assembler {
    fn new(policy: OutputPolicy) -> Self {
        Self { policy, ids: Vec::new(), calls: Vec::new(), logprobs: Vec::new() }
    }

    fn text(&mut self, text: &str, logprobs: Option<Logprobs>, out: &mut Vec<Result<Piece, ApiError>>) {
        self.logprobs.extend(logprobs);
        let parsed = self.policy.parser.push(text);
        self.emit(parsed, out);
    }

    fn call(&mut self, call: ToolCall, out: &mut Vec<Result<Piece, ApiError>>) {
        let index = self.ids.len();
        let id = call.id.clone().unwrap_or_else(|| new_id("call_"));
        self.ids.push(id.clone());
        out.push(Ok(Piece::ToolStart { index, id: id.clone(), name: call.name.clone() }));
        out.push(Ok(Piece::ToolArgs { index, delta: call.arguments.to_string() }));
        self.calls.push(ToolCall { id: Some(id), ..call });
    }

    fn emit(&mut self, parsed: Vec<Parsed>, out: &mut Vec<Result<Piece, ApiError>>) {
        // Calls the engine parsed itself come first in `ids`; the parser counts its own.
        let base = self.calls.len().saturating_sub(self.policy.parser.calls()).min(self.ids.len());
        for p in parsed {
            match p {
                Parsed::Content(text) => {
                    out.push(Ok(Piece::Text { text, logprobs: std::mem::take(&mut self.logprobs) }));
                }
                Parsed::Reasoning(text) => {
                    // Its tokens' log-probabilities belong to the reasoning.
                    self.logprobs.clear();
                    if self.policy.show_reasoning {
                        out.push(Ok(Piece::Thinking(text)));
                    }
                }
                Parsed::ToolStart { index, name } => {
                    let id = new_id("call_");
                    self.ids.push(id.clone());
                    out.push(Ok(Piece::ToolStart { index: base + index, id, name }));
                }
                Parsed::ToolArgs { index, delta } => out.push(Ok(Piece::ToolArgs { index: base + index, delta })),
                Parsed::ToolEnd { index, call } => {
                    let id = self.ids.get(base + index).cloned();
                    self.calls.push(ToolCall { id, ..call });
                }
            }
        }
    }
}

impl Generation {
    pub(crate) fn new(
        acquired: Acquired,
        stream: TokenStream,
        started: Instant,
        policy: OutputPolicy,
        observer: Observer,
    ) -> Self {
        Self { acquired, stream, started, policy, observer }
    }

    /// The prompt's length in tokens, when it was counted before generation started.
    pub fn prompt_tokens(&self) -> Option<u32> {
        self.policy.prompt_tokens
    }

    /// Oldest messages dropped so that the prompt fit the context.
    pub fn truncated_messages(&self) -> usize {
        self.policy.truncated_messages
    }

    /// Waits for the engine's first event (the prompt is computed then) and keeps it for
    /// [`Generation::pieces`].
    pub(crate) async fn prime(&mut self) {
        let rest = std::mem::replace(&mut self.stream, Box::pin(futures::stream::empty()));
        let mut rest = rest;
        if let Some(first) = rest.next().await {
            self.stream = Box::pin(futures::stream::once(async move { first }).chain(rest));
        } else {
            self.stream = rest;
        }
    }

    /// The output as pieces (text, reasoning, tool calls as they are written), then one
    /// `Done`. Dropping the stream drops the engine's stream, which cancels the work.
    pub fn pieces(self) -> futures::stream::BoxStream<'static, Result<Piece, ApiError>> {
        let Generation { acquired, stream, started, policy, mut observer } = self;
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen_end = finished.clone();
        let truncated_messages = policy.truncated_messages;
        let mut asm = Assembler::new(policy);
        let pieces = stream
            .map(move |event| -> Vec<Result<Piece, ApiError>> {
                let load_duration = acquired.load_duration;
                let mut out = Vec::new();
                match event {
                    Ok(TokenEvent::Token { text, logprobs, .. }) => {
                        observer.token();
                        asm.text(&text, logprobs.map(|l| *l), &mut out);
                    }
                    Ok(TokenEvent::Text(text)) => {
                        asm.text(&text, None, &mut out);
                    }
                    // The engine parsed it (a remote server with a tool parser).
                    Ok(TokenEvent::ToolCall(call)) => asm.call(call, &mut out),
                    Ok(TokenEvent::Done { finish_reason, usage, timings, stop_sequence }) => {
                        seen_end.store(true, std::sync::atomic::Ordering::Relaxed);
                        observer.done(finish_reason, &usage, timings.queue);
                        let rest = asm.policy.parser.finish();
                        asm.emit(rest, &mut out);
                        if !asm.logprobs.is_empty() {
                            out.push(Ok(Piece::Text {
                                text: String::new(),
                                logprobs: std::mem::take(&mut asm.logprobs),
                            }));
                        }
                        out.push(Ok(Piece::Done(Final {
                            finish_reason,
                            usage,
                            prompt_eval: timings.prompt_eval,
                            eval: timings.eval,
                            load_duration,
                            total_duration: started.elapsed(),
                            tool_calls: std::mem::take(&mut asm.calls),
                            stop_sequence,
                            truncated_messages,
                        })));
                    }
                    Err(e) => {
                        seen_end.store(true, std::sync::atomic::Ordering::Relaxed);
                        out.push(Err(ApiError::from(e)));
                    }
                }
                out
            })
            .flat_map(futures::stream::iter);
        let tail = futures::stream::once(async move {
            if finished.load(std::sync::atomic::Ordering::Relaxed) {
                None
            } else {
                Some(Err(ApiError::new(ErrorKind::Internal, "stream_ended", "generation ended without a result")))
            }
        })
        .filter_map(futures::future::ready);
        // `acquired` lives as long as the stream: the model counts as busy (never unloaded)
        // while it streams. (Captured whole: a closure that only read a field of it would
        // capture just that field, and the model would count as idle.)
        pieces
            .chain(tail)
            .map(move |piece| {
                let _busy = &acquired;
                piece
            })
            .boxed()
    }

    /// Runs to the end; returns all text, the reasoning, the log-probabilities and the end.
    pub async fn collect(self) -> Result<Collected, ApiError> {
        let (mut text, mut thinking, mut logprobs) = (String::new(), String::new(), Vec::new());
        let mut pieces = self.pieces();
        while let Some(p) = pieces.next().await {
            match p? {
                Piece::Text { text: t, logprobs: l } => {
                    text.push_str(&t);
                    logprobs.extend(l);
                }
                Piece::Thinking(t) => thinking.push_str(&t),
                Piece::ToolStart { .. } | Piece::ToolArgs { .. } => {}
                Piece::Done(fin) => return Ok(Collected { text, thinking, logprobs, fin }),
            }
        }
        Err(ApiError::new(ErrorKind::Internal, "stream_ended", "generation ended without a result"))
    }
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct Collected {
    pub text: String,
    pub thinking: String,
    pub logprobs: Vec<Logprobs>,
    pub fin: Final,
}
