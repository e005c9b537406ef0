//! OpenAI's Responses API: `POST /v1/responses` (streamed or not), `GET` and `DELETE
//! /v1/responses/{id}`. Input items (messages, function calls and their outputs) become the
//! one service request; output items are a reasoning item, a message and function calls, in
//! that order. Responses are stored (unless `store: false`) with the conversation they end,
//! so that `previous_response_id` continues it.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::{Extension, Path, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyperllama_core::{FinishReason, Message, OutputFormat, Role, ToolCall, ToolSpec, Usage};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Json, Result};
use crate::api::common::new_id;
use crate::context::RequestContext;
use crate::error::{ApiError, ErrorKind};
use crate::extract::DialectJson;
use crate::response_store::StoredResponse;
use crate::service::{Collected, Final, Input, Knobs, Piece, ServiceRequest, Think, ToolChoice};
use crate::AppState;

#[derive(Debug, Deserialize)]
pub struct ResponsesBody {
    pub model: Option<String>,
    #[serde(default)]
    pub input: Value,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    #[serde(default)]
    pub tools: Vec<Value>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub text: Option<Value>,
    pub reasoning: Option<Value>,
    #[serde(default)]
    pub stream: bool,
    pub store: Option<bool>,
    pub previous_response_id: Option<String>,
    pub truncation: Option<String>,
    pub metadata: Option<Value>,
    /// Extensions, as in chat completions.
    pub seed: Option<i64>,
    pub top_k: Option<i64>,
    pub options: Option<super::types::LoadOptionsDto>,
}

fn bad(msg: impl Into<String>, param: &'static str) -> ApiError {
    ApiError::bad_request(msg).with_param(param)
}

/// The text of a content value: a string, or text-ish parts.
fn content_text(v: &Value, at: &str) -> std::result::Result<String, ApiError> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for (k, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text" | "summary_text" | "reasoning_text") => {
                        out.push_str(p.get("text").and_then(Value::as_str).unwrap_or(""))
                    }
                    Some("refusal") => out.push_str(p.get("refusal").and_then(Value::as_str).unwrap_or("")),
                    Some(kind @ ("input_image" | "input_file" | "input_audio")) => {
                        return Err(bad(
                            format!("{at}.content[{k}]: {kind} is not supported: this model reads text only"),
                            "input",
                        ))
                    }
                    Some(other) => {
                        return Err(bad(format!("{at}.content[{k}]: unknown content type {other:?}"), "input"))
                    }
                    None => return Err(bad(format!("{at}.content[{k}]: every part needs a type"), "input")),
                }
            }
            Ok(out)
        }
        _ => Err(bad(format!("{at}.content: must be a string or a list of parts"), "input")),
    }
}

/// Items (normalised to objects) into messages.
fn items_to_messages(items: &[Value]) -> std::result::Result<Vec<Message>, ApiError> {
    let mut out: Vec<Message> = Vec::new();
    let mut names: HashMap<String, String> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{i}]");
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("message");
        match kind {
            "message" => {
                let role = match item.get("role").and_then(Value::as_str) {
                    Some("user") => Role::User,
                    Some("assistant") => Role::Assistant,
                    Some("system" | "developer") => Role::System,
                    Some(other) => {
                        return Err(bad(
                            format!("{at}.role: {other:?} is not user, assistant, system or developer"),
                            "input",
                        ))
                    }
                    None => return Err(bad(format!("{at}.role: required"), "input")),
                };
                let text = content_text(item.get("content").unwrap_or(&Value::Null), &at)?;
                out.push(Message::new(role, text));
            }
            "function_call" => {
                let name = item
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("{at}.name: required"), "input"))?;
                let call_id = item.get("call_id").and_then(Value::as_str).map(str::to_string);
                let args = item.get("arguments").and_then(Value::as_str).unwrap_or("{}");
                let arguments = serde_json::from_str(args).unwrap_or_else(|_| Value::String(args.to_string()));
                if let Some(id) = &call_id {
                    names.insert(id.clone(), name.to_string());
                }
                let call = ToolCall { id: call_id, name: name.to_string(), arguments };
                // Calls in a row belong to one assistant turn.
                match out.last_mut() {
                    Some(m) if m.role == Role::Assistant && (m.content.is_empty() || !m.tool_calls.is_empty()) => {
                        m.tool_calls.push(call)
                    }
                    _ => {
                        let mut m = Message::new(Role::Assistant, String::new());
                        m.tool_calls.push(call);
                        out.push(m);
                    }
                }
            }
            "function_call_output" => {
                let call_id = item.get("call_id").and_then(Value::as_str).map(str::to_string);
                let output = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => content_text(v, &at)?,
                    None => String::new(),
                };
                let mut m = Message::new(Role::Tool, output);
                m.tool_name = call_id.as_ref().and_then(|id| names.get(id).cloned());
                m.tool_call_id = call_id;
                out.push(m);
            }
            "reasoning" => {
                // Earlier reasoning, echoed back: not shown to the model again (as chat templates
                // drop past reasoning).
            }
            "item_reference" => {
                return Err(bad(format!("{at}: item_reference is not supported; send the item itself"), "input"))
            }
            other => return Err(bad(format!("{at}.type: unknown item type {other:?}"), "input")),
        }
    }
    Ok(out)
}

/// `input` as a list of item objects.
fn input_items(input: &Value) -> std::result::Result<Vec<Value>, ApiError> {
    match input {
        Value::String(s) => Ok(vec![json!({ "type": "message", "role": "user", "content": s })]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(_) => Ok(item.clone()),
                _ => Err(bad(format!("input[{i}]: must be an object"), "input")),
            })
            .collect(),
        Value::Null => Err(bad("`input` is required", "input")),
        _ => Err(bad("`input` must be a string or a list of items", "input")),
    }
}

fn tools(defs: &[Value]) -> std::result::Result<Vec<ToolSpec>, ApiError> {
    defs.iter()
        .enumerate()
        .map(|(i, t)| {
            let kind = t.get("type").and_then(Value::as_str).unwrap_or("");
            if kind != "function" {
                return Err(bad(
                    format!("tools[{i}]: tool type {kind:?} is not available; only \"function\""),
                    "tools",
                ));
            }
            let name = t.get("name").and_then(Value::as_str).filter(|n| !n.trim().is_empty());
            let name = name.ok_or_else(|| bad(format!("tools[{i}].name: required"), "tools"))?;
            Ok(ToolSpec {
                name: name.to_string(),
                description: t.get("description").and_then(Value::as_str).unwrap_or("").to_string(),
                parameters: t.get("parameters").cloned().unwrap_or(Value::Null),
            })
        })
        .collect()
}

fn tool_choice(v: Option<&Value>) -> std::result::Result<ToolChoice, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(ToolChoice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(bad(format!("tool_choice {other:?}: use auto, none, required or a function"), "tool_choice")),
        },
        Some(v) => match (v.get("type").and_then(Value::as_str), v.get("name").and_then(Value::as_str)) {
            (Some("function"), Some(name)) => Ok(ToolChoice::Named(name.to_string())),
            _ => Err(bad(format!("invalid tool_choice {v}"), "tool_choice")),
        },
    }
}

fn text_format(text: Option<&Value>) -> std::result::Result<Option<OutputFormat>, ApiError> {
    let Some(format) = text.and_then(|t| t.get("format")) else { return Ok(None) };
    match format.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(OutputFormat::Json)),
        Some("json_schema") => match format.get("schema") {
            Some(schema @ Value::Object(_)) => Ok(Some(OutputFormat::JsonSchema(schema.clone()))),
            _ => Err(bad("text.format.schema: a JSON Schema object is required", "text")),
        },
        Some(other) => Err(bad(format!("text.format.type {other:?}: use text, json_object or json_schema"), "text")),
    }
}

/// What the response echoes of the request.
#[derive(Clone)]
pub(crate) struct Echo {
    model: String,
    instructions: Option<String>,
    max_output_tokens: Option<i64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    tools: Vec<Value>,
    tool_choice: Value,
    parallel_tool_calls: bool,
    text: Value,
    reasoning: Value,
    store: bool,
    previous_response_id: Option<String>,
    truncation: String,
    metadata: Value,
}

/// The request as the service's, the conversation's input items (for the store) and the echo.
pub(crate) fn convert(
    lookup: impl Fn(&str) -> Option<StoredResponse>,
    body: ResponsesBody,
) -> std::result::Result<(ServiceRequest, Vec<Value>, Echo), ApiError> {
    let model = body.model.filter(|m| !m.trim().is_empty()).ok_or_else(|| bad("`model` is required", "model"))?;
    let mut conversation = Vec::new();
    if let Some(prev) = &body.previous_response_id {
        let stored = lookup(prev).ok_or_else(|| {
            ApiError::new(ErrorKind::NotFound, "response_not_found", format!("Response with id '{prev}' not found."))
                .with_param("previous_response_id")
        })?;
        conversation = stored.conversation;
    }
    conversation.extend(input_items(&body.input)?);
    let mut messages = Vec::new();
    if let Some(i) = body.instructions.as_ref().filter(|i| !i.is_empty()) {
        messages.push(Message::system(i.clone()));
    }
    messages.extend(items_to_messages(&conversation)?);
    if messages.iter().all(|m| m.role == Role::System) {
        return Err(bad("`input` must hold at least one message", "input"));
    }
    let max_tokens = match body.max_output_tokens {
        Some(n) if n < 1 => {
            return Err(bad(format!("max_output_tokens must be at least 1, got {n}"), "max_output_tokens"))
        }
        other => other,
    };
    let truncation = body.truncation.clone().unwrap_or_else(|| "disabled".into());
    let truncate = match truncation.as_str() {
        "auto" => true,
        "disabled" => false,
        other => return Err(bad(format!("truncation {other:?}: use auto or disabled"), "truncation")),
    };
    let mut req = ServiceRequest::new(model.clone(), Input::Chat(messages));
    let load = body.options.unwrap_or_default();
    req.knobs = Knobs {
        temperature: body.temperature,
        top_p: body.top_p,
        top_k: body.top_k,
        seed: body.seed,
        max_tokens,
        truncate: Some(truncate),
        num_ctx: load.num_ctx,
        num_thread: load.num_thread,
        num_gpu: load.num_gpu,
        engine: load.engine,
        ..Knobs::default()
    };
    req.tools = tools(&body.tools)?;
    req.tool_choice = tool_choice(body.tool_choice.as_ref())?;
    req.parallel_tool_calls = body.parallel_tool_calls.unwrap_or(true);
    req.format = text_format(body.text.as_ref())?;
    if let Some(effort) = body.reasoning.as_ref().and_then(|r| r.get("effort")).and_then(Value::as_str) {
        let level = match effort {
            "xhigh" | "max" => "high",
            other => other,
        };
        req.think = Think::effort(level).map_err(|e| e.with_param("reasoning"))?;
    }
    let echo = Echo {
        model,
        instructions: body.instructions,
        max_output_tokens: body.max_output_tokens,
        temperature: body.temperature,
        top_p: body.top_p,
        tools: body.tools,
        tool_choice: body.tool_choice.unwrap_or_else(|| json!("auto")),
        parallel_tool_calls: req.parallel_tool_calls,
        text: body.text.unwrap_or_else(|| json!({ "format": { "type": "text" } })),
        reasoning: body.reasoning.unwrap_or_else(|| json!({ "effort": null, "summary": null })),
        store: body.store.unwrap_or(true),
        previous_response_id: body.previous_response_id,
        truncation,
        metadata: body.metadata.unwrap_or_else(|| json!({})),
    };
    Ok((req, conversation, echo))
}

fn usage(u: &Usage, reasoning_tokens: u32) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": { "cached_tokens": u.cached_tokens, "cache_write_tokens": 0 },
        "output_tokens": u.completion_tokens,
        "output_tokens_details": { "reasoning_tokens": reasoning_tokens },
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

/// The response object.
fn response_object(
    id: &str,
    created: i64,
    echo: &Echo,
    status: &str,
    output: &[Value],
    fin: Option<&Final>,
    error: Option<Value>,
) -> Value {
    let incomplete = fin.is_some_and(|f| f.finish_reason == FinishReason::Length && f.tool_calls.is_empty());
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "completed_at": fin.map(|_| chrono::Utc::now().timestamp()),
        "error": error,
        "incomplete_details": if incomplete { json!({ "reason": "max_output_tokens" }) } else { Value::Null },
        "instructions": echo.instructions,
        "max_output_tokens": echo.max_output_tokens,
        "model": echo.model,
        "output": output,
        "parallel_tool_calls": echo.parallel_tool_calls,
        "previous_response_id": echo.previous_response_id,
        "reasoning": echo.reasoning,
        "store": echo.store,
        "temperature": echo.temperature,
        "text": echo.text,
        "tool_choice": echo.tool_choice,
        "tools": echo.tools,
        "top_p": echo.top_p,
        "truncation": echo.truncation,
        "usage": fin.map(|f| usage(&f.usage, 0)),
        "user": null,
        "metadata": echo.metadata,
    })
}

fn status_of(fin: &Final) -> &'static str {
    if fin.finish_reason == FinishReason::Length && fin.tool_calls.is_empty() {
        "incomplete"
    } else {
        "completed"
    }
}

fn reasoning_item(id: &str, text: &str, status: &str) -> Value {
    json!({ "type": "reasoning", "id": id, "summary": [], "content": [{ "type": "reasoning_text", "text": text }], "status": status })
}

fn text_part(text: &str) -> Value {
    json!({ "type": "output_text", "text": text, "annotations": [], "logprobs": [] })
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({ "type": "message", "id": id, "status": status, "role": "assistant", "content": [text_part(text)] })
}

fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({ "type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": arguments, "status": status })
}

/// The output items of a whole answer.
fn output_items(c: &Collected) -> Vec<Value> {
    let mut out = Vec::new();
    if !c.thinking.is_empty() {
        out.push(reasoning_item(&new_id("rs_"), &c.thinking, "completed"));
    }
    if !c.text.is_empty() || c.fin.tool_calls.is_empty() {
        out.push(message_item(&new_id("msg_"), &c.text, status_of(&c.fin)));
    }
    for call in &c.fin.tool_calls {
        let call_id = call.id.clone().unwrap_or_else(|| new_id("call_"));
        out.push(call_item(&new_id("fc_"), &call_id, &call.name, &call.arguments.to_string(), "completed"));
    }
    out
}

fn store(state: &AppState, echo: &Echo, id: &str, response: &Value, mut conversation: Vec<Value>, output: &[Value]) {
    if echo.store {
        conversation.extend(output.iter().cloned());
        state.responses.put(id, StoredResponse { response: response.clone(), conversation });
    }
}

pub async fn create(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    DialectJson(body, _): Json<ResponsesBody>,
) -> Result<Response> {
    let stream = body.stream;
    let (req, conversation, echo) = convert(|id| state.responses.get(id), body)?;
    let generation = state.service.generate(req, &ctx).await?;
    let truncated = generation.truncated_messages();
    let id = new_id("resp_");
    let created = chrono::Utc::now().timestamp();
    if !stream {
        let c = generation.collect().await?;
        let output = output_items(&c);
        let response = response_object(&id, created, &echo, status_of(&c.fin), &output, Some(&c.fin), None);
        store(&state, &echo, &id, &response, conversation, &output);
        let mut resp = axum::Json(response).into_response();
        super::truncation_header(&mut resp, truncated);
        return Ok(resp);
    }
    let mut s = Streamer { seq: 0, id: id.clone(), created, echo: echo.clone(), items: Vec::new(), open: None };
    let head = vec![
        s.lifecycle("response.created", "in_progress", None, None),
        s.lifecycle("response.in_progress", "in_progress", None, None),
    ];
    let events = generation.pieces().flat_map(move |p| {
        let out = match p {
            Ok(Piece::Done(fin)) => {
                let mut out = Vec::new();
                if s.items.is_empty() {
                    // Nothing was written: an empty message, as the non-streamed answer has.
                    let item = json!({ "type": "message", "id": new_id("msg_"), "status": "in_progress", "role": "assistant", "content": [] });
                    out.extend(s.open_item(Open::Message, item));
                }
                out.extend(s.close_open());
                let status = status_of(&fin);
                let name = if status == "completed" { "response.completed" } else { "response.incomplete" };
                let output: Vec<Value> = s.items.iter().map(|i| i.item.clone()).collect();
                let (event, response) = s.lifecycle_with(name, status, Some(&fin), None);
                store(&state, &s.echo, &s.id, &response, conversation.clone(), &output);
                out.push(event);
                out
            }
            Ok(piece) => s.piece(piece),
            Err(e) => {
                let mut out = Vec::new();
                let code = if e.kind == ErrorKind::BadRequest { "invalid_prompt" } else { "server_error" };
                out.push(s.event("error", json!({ "code": code, "message": e.message, "param": null })));
                out.push(s.lifecycle("response.failed", "failed", None, Some(json!({ "code": code, "message": e.message }))));
                out
            }
        };
        futures::stream::iter(out)
    });
    let stream = futures::stream::iter(head).chain(events).map(Ok::<_, Infallible>);
    let mut resp = Sse::new(stream).into_response();
    super::truncation_header(&mut resp, truncated);
    Ok(resp)
}

#[derive(Clone, Copy, PartialEq)]
enum Open {
    Reasoning,
    Message,
    Call,
}

struct Item {
    item: Value,
    /// Text or arguments so far.
    text: String,
}

/// The Responses stream: lifecycle events around output items, one open at a time.
struct Streamer {
    seq: u64,
    id: String,
    created: i64,
    echo: Echo,
    items: Vec<Item>,
    open: Option<Open>,
}

impl Streamer {
    fn event(&mut self, kind: &str, mut data: Value) -> Event {
        data["type"] = kind.into();
        data["sequence_number"] = self.seq.into();
        self.seq += 1;
        Event::default().event(kind).data(data.to_string())
    }

    fn lifecycle(&mut self, kind: &str, status: &str, fin: Option<&Final>, error: Option<Value>) -> Event {
        self.lifecycle_with(kind, status, fin, error).0
    }

    fn lifecycle_with(
        &mut self,
        kind: &str,
        status: &str,
        fin: Option<&Final>,
        error: Option<Value>,
    ) -> (Event, Value) {
        let output: Vec<Value> =
            if fin.is_some() { self.items.iter().map(|i| i.item.clone()).collect() } else { vec![] };
        let response = response_object(&self.id, self.created, &self.echo, status, &output, fin, error);
        (self.event(kind, json!({ "response": response })), response)
    }

    fn index(&self) -> usize {
        self.items.len() - 1
    }

    fn item_id(&self) -> String {
        self.items.last().map(|i| i.item["id"].as_str().unwrap_or_default().to_string()).unwrap_or_default()
    }

    fn open_item(&mut self, kind: Open, item: Value) -> Vec<Event> {
        let mut out = self.close_open();
        self.items.push(Item { item: item.clone(), text: String::new() });
        self.open = Some(kind);
        let index = self.index();
        out.push(self.event("response.output_item.added", json!({ "output_index": index, "item": item })));
        let part = match kind {
            Open::Reasoning => Some(json!({ "type": "reasoning_text", "text": "" })),
            Open::Message => Some(text_part("")),
            Open::Call => None,
        };
        if let Some(part) = part {
            let item_id = self.item_id();
            out.push(self.event(
                "response.content_part.added",
                json!({ "item_id": item_id, "output_index": index, "content_index": 0, "part": part }),
            ));
        }
        out
    }

    fn close_open(&mut self) -> Vec<Event> {
        let Some(kind) = self.open.take() else { return vec![] };
        let index = self.index();
        let item_id = self.item_id();
        let text = self.items[index].text.clone();
        let mut out = Vec::new();
        let done = match kind {
            Open::Reasoning => {
                out.push(self.event(
                    "response.reasoning_text.done",
                    json!({ "item_id": item_id, "output_index": index, "content_index": 0, "text": text }),
                ));
                let part = json!({ "type": "reasoning_text", "text": text });
                out.push(self.event(
                    "response.content_part.done",
                    json!({ "item_id": item_id, "output_index": index, "content_index": 0, "part": part }),
                ));
                reasoning_item(&item_id, &text, "completed")
            }
            Open::Message => {
                out.push(self.event(
                    "response.output_text.done",
                    json!({ "item_id": item_id, "output_index": index, "content_index": 0, "text": text, "logprobs": [] }),
                ));
                out.push(self.event(
                    "response.content_part.done",
                    json!({ "item_id": item_id, "output_index": index, "content_index": 0, "part": text_part(&text) }),
                ));
                message_item(&item_id, &text, "completed")
            }
            Open::Call => {
                let item = &self.items[index].item;
                let (call_id, name) = (
                    item["call_id"].as_str().unwrap_or("").to_string(),
                    item["name"].as_str().unwrap_or("").to_string(),
                );
                out.push(self.event(
                    "response.function_call_arguments.done",
                    json!({ "item_id": item_id, "output_index": index, "name": name, "arguments": text }),
                ));
                call_item(&item_id, &call_id, &name, &text, "completed")
            }
        };
        self.items[index].item = done.clone();
        out.push(self.event("response.output_item.done", json!({ "output_index": index, "item": done })));
        out
    }

    fn piece(&mut self, piece: Piece) -> Vec<Event> {
        let mut out = Vec::new();
        match piece {
            Piece::Thinking(t) => {
                if self.open != Some(Open::Reasoning) {
                    out.extend(self.open_item(Open::Reasoning, json!({ "type": "reasoning", "id": new_id("rs_"), "summary": [], "content": [], "status": "in_progress" })));
                }
                let (index, item_id) = (self.index(), self.item_id());
                self.items[index].text.push_str(&t);
                out.push(self.event(
                    "response.reasoning_text.delta",
                    json!({ "item_id": item_id, "output_index": index, "content_index": 0, "delta": t }),
                ));
            }
            Piece::Text { text, .. } if text.is_empty() => {}
            Piece::Text { text, .. } => {
                if self.open != Some(Open::Message) {
                    out.extend(self.open_item(Open::Message, json!({ "type": "message", "id": new_id("msg_"), "status": "in_progress", "role": "assistant", "content": [] })));
                }
                let (index, item_id) = (self.index(), self.item_id());
                self.items[index].text.push_str(&text);
                out.push(self.event(
                    "response.output_text.delta",
                    json!({ "item_id": item_id, "output_index": index, "content_index": 0, "delta": text, "logprobs": [] }),
                ));
            }
            Piece::ToolStart { id, name, .. } => {
                out.extend(self.open_item(Open::Call, call_item(&new_id("fc_"), &id, &name, "", "in_progress")));
            }
            Piece::ToolArgs { delta, .. } => {
                if self.open == Some(Open::Call) {
                    let (index, item_id) = (self.index(), self.item_id());
                    self.items[index].text.push_str(&delta);
                    out.push(self.event(
                        "response.function_call_arguments.delta",
                        json!({ "item_id": item_id, "output_index": index, "delta": delta }),
                    ));
                }
            }
            Piece::Done(_) => {}
        }
        out
    }
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    match state.responses.get(&id) {
        Some(s) => Ok(axum::Json(s.response).into_response()),
        None => Err(not_found(&id).into()),
    }
}

pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    if state.responses.delete(&id) {
        Ok(axum::Json(json!({ "id": id, "object": "response.deleted", "deleted": true })).into_response())
    } else {
        Err(not_found(&id).into())
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(ErrorKind::NotFound, "response_not_found", format!("Response with id '{id}' not found."))
}
