//! A generation that passed validation and is producing tokens: the engine's token stream
//! turned into text pieces, tool calls parsed once at the end, and every token observed for
//! the metrics (on the model's own atomics, no lock) and the key's budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hyperllama_core::{FinishReason, Logprobs, TokenEvent, ToolCall, Usage};
use hyperllama_engine::TokenStream;

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
    /// Set when the request offered tools and the model called some.
    pub tool_calls: Vec<ToolCall>,
}

/// What a response stream carries.
#[derive(Debug, Clone)]
pub enum Piece {
    /// Text, with the log-probabilities of the tokens that produced it when asked for.
    Text {
        text: String,
        logprobs: Vec<Logprobs>,
    },
    Done(Final),
}

/// A generation that has passed validation and is producing tokens.
pub struct Generation {
    pub acquired: Acquired,
    stream: TokenStream,
    started: Instant,
    buffer_for_tools: bool,
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

impl Generation {
    pub(crate) fn new(
        acquired: Acquired,
        stream: TokenStream,
        started: Instant,
        buffer_for_tools: bool,
        observer: Observer,
    ) -> Self {
        Self { acquired, stream, started, buffer_for_tools, observer }
    }

    /// The output as text pieces, then one `Done`. When tools were offered, text is held to
    /// the end so that a tool call is never half-streamed as prose. Dropping the stream drops
    /// the engine's stream, which cancels the work.
    pub fn pieces(self) -> futures::stream::BoxStream<'static, Result<Piece, ApiError>> {
        let Generation { acquired, stream, started, buffer_for_tools, mut observer } = self;
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen_end = finished.clone();
        let mut held = String::new();
        let mut called: Vec<ToolCall> = Vec::new();
        let pieces = stream
            .map(move |event| -> Vec<Result<Piece, ApiError>> {
                let load_duration = acquired.load_duration;
                if let Ok(TokenEvent::Token { .. }) = &event {
                    observer.token();
                }
                match event {
                    Ok(TokenEvent::Token { text, logprobs, .. }) => {
                        let logprobs: Vec<Logprobs> = logprobs.map(|l| vec![*l]).unwrap_or_default();
                        if text.is_empty() && logprobs.is_empty() {
                            vec![]
                        } else if buffer_for_tools {
                            held.push_str(&text);
                            vec![]
                        } else {
                            vec![Ok(Piece::Text { text, logprobs })]
                        }
                    }
                    Ok(TokenEvent::Text(text)) => {
                        if text.is_empty() {
                            vec![]
                        } else if buffer_for_tools {
                            held.push_str(&text);
                            vec![]
                        } else {
                            vec![Ok(Piece::Text { text, logprobs: Vec::new() })]
                        }
                    }
                    // The engine parsed it (a remote server with a tool parser).
                    Ok(TokenEvent::ToolCall(call)) => {
                        called.push(call);
                        vec![]
                    }
                    Ok(TokenEvent::Done { finish_reason, usage, timings }) => {
                        seen_end.store(true, std::sync::atomic::Ordering::Relaxed);
                        observer.done(finish_reason, &usage, timings.queue);
                        let mut out = Vec::new();
                        let mut tool_calls = std::mem::take(&mut called);
                        match hyperllama_engine::tools::parse_tool_calls(&held) {
                            Some(calls) if buffer_for_tools => tool_calls.extend(calls),
                            _ => {
                                if !held.is_empty() {
                                    out.push(Ok(Piece::Text { text: std::mem::take(&mut held), logprobs: Vec::new() }));
                                }
                            }
                        }
                        out.push(Ok(Piece::Done(Final {
                            finish_reason,
                            usage,
                            prompt_eval: timings.prompt_eval,
                            eval: timings.eval,
                            load_duration,
                            total_duration: started.elapsed(),
                            tool_calls,
                        })));
                        out
                    }
                    Err(e) => {
                        seen_end.store(true, std::sync::atomic::Ordering::Relaxed);
                        vec![Err(ApiError::from(e))]
                    }
                }
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

    /// Runs to the end; returns all text, the log-probabilities and the final stats.
    pub async fn collect(self) -> Result<Collected, ApiError> {
        let mut text = String::new();
        let mut logprobs = Vec::new();
        let mut pieces = self.pieces();
        while let Some(p) = pieces.next().await {
            match p? {
                Piece::Text { text: t, logprobs: l } => {
                    text.push_str(&t);
                    logprobs.extend(l);
                }
                Piece::Done(fin) => return Ok(Collected { text, logprobs, fin }),
            }
        }
        Err(ApiError::new(ErrorKind::Internal, "stream_ended", "generation ended without a result"))
    }
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct Collected {
    pub text: String,
    pub logprobs: Vec<Logprobs>,
    pub fin: Final,
}
