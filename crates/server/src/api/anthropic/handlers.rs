//! `/v1/messages` and `/v1/messages/count_tokens`: extract, convert, call the service, encode.

use std::convert::Infallible;

use axum::extract::{Extension, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyperllama_core::{FinishReason, ToolCall, Usage};
use serde_json::{json, Value};

use super::types::{CountTokensBody, MessagesBody};
use super::{Json, Result};
use crate::api::common::new_id;
use crate::context::RequestContext;
use crate::extract::DialectJson;
use crate::service::{Final, Piece, ServiceRequest};
use crate::AppState;

fn stop_reason(fin: &Final) -> &'static str {
    if !fin.tool_calls.is_empty() {
        "tool_use"
    } else if fin.stop_sequence.is_some() {
        "stop_sequence"
    } else if fin.finish_reason == FinishReason::Length {
        "max_tokens"
    } else {
        "end_turn"
    }
}

/// Anthropic's usage: `input_tokens` are the prompt tokens computed, `cache_read_input_tokens`
/// those restored from the prompt cache (their sum is the prompt).
fn usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens.saturating_sub(u.cached_tokens),
        "output_tokens": u.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": u.cached_tokens,
    })
}

/// Tool-use ids in Anthropic's style.
fn tool_id(id: Option<&str>) -> String {
    match id {
        Some(id) => match id.strip_prefix("call_") {
            Some(rest) => format!("toolu_{rest}"),
            None => id.to_string(),
        },
        None => new_id("toolu_"),
    }
}

/// A call's input must be an object: arguments that did not parse as one are wrapped.
fn input(call: &ToolCall) -> Value {
    match &call.arguments {
        v @ Value::Object(_) => v.clone(),
        other => json!({ "arguments": other }),
    }
}

pub async fn messages(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    DialectJson(body, _): Json<MessagesBody>,
) -> Result<Response> {
    let stream = body.stream;
    let req = ServiceRequest::try_from(body)?;
    let model = req.model.clone();
    let generation = state.service.generate(req, &ctx).await?;
    let truncated = generation.truncated_messages();
    let prompt_tokens = generation.prompt_tokens();
    let id = new_id("msg_");

    if !stream {
        let c = generation.collect().await?;
        let mut content = Vec::new();
        if !c.thinking.is_empty() {
            content.push(json!({ "type": "thinking", "thinking": c.thinking, "signature": "" }));
        }
        if !c.text.is_empty() || c.fin.tool_calls.is_empty() {
            content.push(json!({ "type": "text", "text": c.text }));
        }
        for call in &c.fin.tool_calls {
            content.push(json!({ "type": "tool_use", "id": tool_id(call.id.as_deref()), "name": call.name, "input": input(call) }));
        }
        let body = json!({
            "id": id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason(&c.fin), "stop_sequence": c.fin.stop_sequence, "usage": usage(&c.fin.usage),
        });
        let mut resp = axum::Json(body).into_response();
        crate::api::openai::truncation_header(&mut resp, truncated);
        return Ok(resp);
    }

    let start = json!({
        "type": "message_start",
        "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": { "input_tokens": prompt_tokens.unwrap_or(0), "output_tokens": 0,
                       "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0 },
        },
    });
    let head = vec![event("message_start", &start), event("ping", &json!({ "type": "ping" }))];
    let mut blocks = Blocks::default();
    let events = generation.pieces().flat_map(move |p| {
        let out = match p {
            Ok(piece) => blocks.piece(piece),
            Err(e) => vec![event(
                "error",
                &json!({ "type": "error", "error": { "type": super::error_type(&e), "message": e.message } }),
            )],
        };
        futures::stream::iter(out)
    });
    let stream = futures::stream::iter(head).chain(events).map(Ok::<_, Infallible>);
    let mut resp = Sse::new(stream).into_response();
    crate::api::openai::truncation_header(&mut resp, truncated);
    Ok(resp)
}

fn event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

#[derive(Clone, Copy, PartialEq)]
enum Open {
    Thinking,
    Text,
    Tool,
}

/// The content blocks of a streamed message: one open at a time, indices counting up.
#[derive(Default)]
struct Blocks {
    open: Option<Open>,
    next: usize,
}

impl Blocks {
    fn close(&mut self, out: &mut Vec<Event>) {
        if self.open.take().is_some() {
            out.push(event("content_block_stop", &json!({ "type": "content_block_stop", "index": self.next - 1 })));
        }
    }

    fn start(&mut self, kind: Open, block: Value, out: &mut Vec<Event>) {
        self.close(out);
        out.push(event(
            "content_block_start",
            &json!({ "type": "content_block_start", "index": self.next, "content_block": block }),
        ));
        self.open = Some(kind);
        self.next += 1;
    }

    fn delta(&self, delta: Value) -> Event {
        event("content_block_delta", &json!({ "type": "content_block_delta", "index": self.next - 1, "delta": delta }))
    }

    fn piece(&mut self, piece: Piece) -> Vec<Event> {
        let mut out = Vec::new();
        match piece {
            Piece::Thinking(t) => {
                if self.open != Some(Open::Thinking) {
                    self.start(
                        Open::Thinking,
                        json!({ "type": "thinking", "thinking": "", "signature": "" }),
                        &mut out,
                    );
                }
                out.push(self.delta(json!({ "type": "thinking_delta", "thinking": t })));
            }
            Piece::Text { text, .. } if text.is_empty() => {}
            Piece::Text { text, .. } => {
                if self.open != Some(Open::Text) {
                    self.start(Open::Text, json!({ "type": "text", "text": "" }), &mut out);
                }
                out.push(self.delta(json!({ "type": "text_delta", "text": text })));
            }
            Piece::ToolStart { id, name, .. } => {
                let block = json!({ "type": "tool_use", "id": tool_id(Some(&id)), "name": name, "input": {} });
                self.start(Open::Tool, block, &mut out);
            }
            Piece::ToolArgs { delta, .. } => {
                if self.open == Some(Open::Tool) {
                    out.push(self.delta(json!({ "type": "input_json_delta", "partial_json": delta })));
                }
            }
            Piece::Done(fin) => {
                if self.next == 0 {
                    // Nothing was written: one empty text block, as Anthropic sends.
                    self.start(Open::Text, json!({ "type": "text", "text": "" }), &mut out);
                }
                self.close(&mut out);
                out.push(event(
                    "message_delta",
                    &json!({
                        "type": "message_delta",
                        "delta": { "stop_reason": stop_reason(&fin), "stop_sequence": fin.stop_sequence },
                        "usage": usage(&fin.usage),
                    }),
                ));
                out.push(event("message_stop", &json!({ "type": "message_stop" })));
            }
        }
        out
    }
}

pub async fn count_tokens(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    DialectJson(body, _): Json<CountTokensBody>,
) -> Result<Response> {
    let req = ServiceRequest::try_from(body)?;
    let n = state.service.count_prompt_tokens(req, &ctx).await?;
    Ok(axum::Json(json!({ "input_tokens": n })).into_response())
}
