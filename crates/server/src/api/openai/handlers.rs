use std::convert::Infallible;
use std::time::Instant;

use axum::extract::{Extension, Path, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyperllama_core::{FinishReason, Message, OutputFormat, Prompt, Role, ToolCall};
use serde_json::{json, Value};

use super::types::{
    ChatCompletionBody, ChatMessage, CompletionBody, Content, EmbeddingInput, EmbeddingsBody, PromptField,
    ResponseFormat,
};
use super::{Json, OpenAiError};
use crate::extract::DialectJson;
use crate::generation::{tool_specs, Final, Generation, Options, Piece};
use crate::middleware::RequestContext;
use crate::{ApiError, AppState};

type Result<T> = std::result::Result<T, OpenAiError>;

fn new_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}-{:x}{:04x}", nanos, N.fetch_add(1, Ordering::Relaxed) & 0xffff)
}

fn created() -> i64 {
    chrono::Utc::now().timestamp()
}

fn finish_reason(fin: &Final) -> &'static str {
    if !fin.tool_calls.is_empty() {
        return "tool_calls";
    }
    match fin.finish_reason {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

fn usage(fin: &Final) -> Value {
    let u = fin.usage;
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": { "cached_tokens": u.cached_tokens },
    })
}

fn tool_calls(calls: &[ToolCall], with_index: bool) -> Vec<Value> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut v = json!({
                "id": new_id("call"),
                "type": "function",
                "function": { "name": c.name, "arguments": c.arguments.to_string() },
            });
            if with_index {
                v["index"] = i.into();
            }
            v
        })
        .collect()
}

fn max_tokens(v: Option<i64>, field: &'static str) -> std::result::Result<Option<i64>, ApiError> {
    match v {
        Some(n) if n < 1 => {
            Err(ApiError::bad_request(format!("`{field}` must be at least 1, got {n}")).with_param(field))
        }
        other => Ok(other),
    }
}

fn check_n(n: Option<u32>) -> std::result::Result<(), ApiError> {
    match n {
        None | Some(1) => Ok(()),
        Some(n) => {
            Err(ApiError::bad_request(format!("`n` must be 1 (one choice per request), got {n}")).with_param("n"))
        }
    }
}

fn content_text(c: Option<Content>) -> std::result::Result<String, ApiError> {
    match c {
        None => Ok(String::new()),
        Some(Content::Text(s)) => Ok(s),
        Some(Content::Parts(parts)) => {
            let mut out = String::new();
            for p in parts {
                if p.kind != "text" {
                    return Err(ApiError::bad_request(format!(
                        "content part type {:?} is not supported; only \"text\"",
                        p.kind
                    ))
                    .with_param("messages"));
                }
                out.push_str(&p.text);
            }
            Ok(out)
        }
    }
}

pub(super) fn convert_messages(messages: Vec<ChatMessage>) -> std::result::Result<Vec<Message>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request("`messages` must not be empty").with_param("messages"));
    }
    let mut call_names = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            other => {
                return Err(ApiError::bad_request(format!(
                    "invalid role {other:?}: expected system, developer, user, assistant or tool"
                ))
                .with_param("messages"))
            }
        };
        let mut msg = Message::new(role, content_text(m.content)?);
        for c in m.tool_calls {
            if let Some(id) = &c.id {
                call_names.insert(id.clone(), c.function.name.clone());
            }
            let arguments = serde_json::from_str(&c.function.arguments).unwrap_or(Value::String(c.function.arguments));
            msg.tool_calls.push(ToolCall { name: c.function.name, arguments });
        }
        if role == Role::Tool {
            msg.tool_name = m.name.or_else(|| m.tool_call_id.and_then(|id| call_names.get(&id).cloned()));
        }
        out.push(msg);
    }
    Ok(out)
}

fn options_for(state: &AppState, model: &str, over: Options) -> std::result::Result<Options, ApiError> {
    if model.trim().is_empty() {
        return Err(ApiError::bad_request("`model` is required").with_param("model"));
    }
    let (_, manifest) = state.registry.manifest(model)?;
    Ok(Options::from_parameters(&manifest.parameters).merged(over))
}

fn sse(events: impl futures::Stream<Item = Value> + Send + 'static) -> Response {
    let stream = events
        .map(|v| Ok::<_, Infallible>(Event::default().data(v.to_string())))
        .chain(futures::stream::once(async { Ok(Event::default().data("[DONE]")) }));
    Sse::new(stream).into_response()
}

fn stream_error(e: &ApiError) -> Value {
    json!({ "error": { "message": e.message, "type": "server_error", "param": null, "code": e.code } })
}

pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    DialectJson(body, _): Json<ChatCompletionBody>,
) -> Result<Response> {
    let started = Instant::now();
    check_n(body.n)?;
    if body.logprobs == Some(true) || body.top_logprobs.is_some() {
        return Err(ApiError::bad_request("logprobs are not supported").with_param("logprobs").into());
    }
    let limit = max_tokens(body.max_completion_tokens.or(body.max_tokens), "max_tokens")?;
    let options = options_for(&state, &body.model, body.sampling.into_options(limit))?;
    let messages = convert_messages(body.messages)?;
    let mut tools = tool_specs(&body.tools)?;
    match &body.tool_choice {
        None => {}
        Some(Value::String(s)) if s == "none" => tools.clear(),
        Some(Value::String(s)) if s == "auto" || s == "required" => {}
        Some(v) => {
            let name = v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request(format!("invalid tool_choice {v}")).with_param("tool_choice"))?;
            tools.retain(|t| t.name == name);
            if tools.is_empty() {
                return Err(ApiError::bad_request(format!("tool_choice names {name:?}, which is not in `tools`"))
                    .with_param("tool_choice")
                    .into());
            }
        }
    }
    let load = options.load_request(None)?;
    let mut request = options.into_request(Prompt::Chat(messages))?;
    request.tools = tools;
    request.format = match body.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => Some(OutputFormat::Json),
        Some(ResponseFormat::JsonSchema { json_schema }) => match json_schema.schema {
            Some(schema) => Some(OutputFormat::JsonSchema(schema)),
            None => Some(OutputFormat::Json),
        },
    };
    let generation = Generation::start(&state, &ctx, &body.model, load, request, started).await?;
    let (id, model, created) = (new_id("chatcmpl"), body.model.clone(), created());

    if !body.stream {
        let (text, fin) = generation.collect().await?;
        let mut message = json!({ "role": "assistant", "content": if fin.tool_calls.is_empty() { Value::from(text) } else { Value::Null } });
        if !fin.tool_calls.is_empty() {
            message["tool_calls"] = tool_calls(&fin.tool_calls, false).into();
        }
        return Ok(axum::Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "system_fingerprint": "hyperllama",
            "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(&fin) }],
            "usage": usage(&fin),
        }))
        .into_response());
    }

    let include_usage = body.stream_options.is_some_and(|o| o.include_usage);
    let chunk = move |choices: Value, usage: Option<Value>| {
        let mut v = json!({ "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                            "system_fingerprint": "hyperllama", "choices": choices });
        if let Some(u) = usage {
            v["usage"] = u;
        }
        v
    };
    let first = chunk(
        json!([{ "index": 0, "delta": { "role": "assistant", "content": "" }, "logprobs": null, "finish_reason": null }]),
        None,
    );
    let events = generation.pieces().flat_map(move |p| {
        let out: Vec<Value> = match p {
            Ok(Piece::Text(t)) => {
                vec![chunk(json!([{ "index": 0, "delta": { "content": t }, "logprobs": null, "finish_reason": null }]), None)]
            }
            Ok(Piece::Done(fin)) => {
                let mut out = Vec::new();
                if !fin.tool_calls.is_empty() {
                    out.push(chunk(
                        json!([{ "index": 0, "delta": { "tool_calls": tool_calls(&fin.tool_calls, true) }, "logprobs": null, "finish_reason": null }]),
                        None,
                    ));
                }
                out.push(chunk(json!([{ "index": 0, "delta": {}, "logprobs": null, "finish_reason": finish_reason(&fin) }]), None));
                if include_usage {
                    out.push(chunk(json!([]), Some(usage(&fin))));
                }
                out
            }
            Err(e) => vec![stream_error(&e)],
        };
        futures::stream::iter(out)
    });
    Ok(sse(futures::stream::once(async move { first }).chain(events)))
}

pub async fn completions(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    DialectJson(body, _): Json<CompletionBody>,
) -> Result<Response> {
    let started = Instant::now();
    check_n(body.n)?;
    if body.best_of.is_some_and(|b| b != 1) {
        return Err(ApiError::bad_request("`best_of` must be 1").with_param("best_of").into());
    }
    if body.echo {
        return Err(ApiError::bad_request("`echo` is not supported").with_param("echo").into());
    }
    if body.logprobs.is_some() {
        return Err(ApiError::bad_request("logprobs are not supported").with_param("logprobs").into());
    }
    if body.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request("`suffix` is not supported").with_param("suffix").into());
    }
    let prompt = match body.prompt {
        PromptField::One(s) => s,
        PromptField::Many(mut v) if v.len() == 1 => v.remove(0),
        PromptField::Many(v) => {
            return Err(ApiError::bad_request(format!("one prompt per request, got {}", v.len()))
                .with_param("prompt")
                .into())
        }
    };
    if prompt.is_empty() {
        return Err(ApiError::bad_request("`prompt` must not be empty").with_param("prompt").into());
    }
    // OpenAI's default for completions is 16 tokens.
    let limit = max_tokens(body.max_tokens, "max_tokens")?.or(Some(16));
    let options = options_for(&state, &body.model, body.sampling.into_options(limit))?;
    let load = options.load_request(None)?;
    let request = options.into_request(Prompt::Raw(prompt))?;
    let generation = Generation::start(&state, &ctx, &body.model, load, request, started).await?;
    let (id, model, created) = (new_id("cmpl"), body.model.clone(), created());
    if !body.stream {
        let (text, fin) = generation.collect().await?;
        return Ok(axum::Json(json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{ "index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason(&fin) }],
            "usage": usage(&fin),
        }))
        .into_response());
    }
    let include_usage = body.stream_options.is_some_and(|o| o.include_usage);
    let chunk = move |choices: Value, usage: Option<Value>| {
        let mut v =
            json!({ "id": id, "object": "text_completion", "created": created, "model": model, "choices": choices });
        if let Some(u) = usage {
            v["usage"] = u;
        }
        v
    };
    let events = generation.pieces().flat_map(move |p| {
        let out: Vec<Value> = match p {
            Ok(Piece::Text(t)) => {
                vec![chunk(json!([{ "index": 0, "text": t, "logprobs": null, "finish_reason": null }]), None)]
            }
            Ok(Piece::Done(fin)) => {
                let mut out = vec![chunk(
                    json!([{ "index": 0, "text": "", "logprobs": null, "finish_reason": finish_reason(&fin) }]),
                    None,
                )];
                if include_usage {
                    out.push(chunk(json!([]), Some(usage(&fin))));
                }
                out
            }
            Err(e) => vec![stream_error(&e)],
        };
        futures::stream::iter(out)
    });
    Ok(sse(events))
}

/// Little-endian f32s, base64-encoded: what `encoding_format: "base64"` asks for (and what the
/// official Python client asks for by default).
fn base64_f32(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub async fn embeddings(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    DialectJson(body, _): Json<EmbeddingsBody>,
) -> Result<Response> {
    let inputs = match body.input {
        EmbeddingInput::One(s) => vec![s],
        EmbeddingInput::Many(v) => v,
        EmbeddingInput::Tokens(_) => {
            return Err(ApiError::bad_request("token-id input is not supported; send text").with_param("input").into())
        }
    };
    if inputs.is_empty() || inputs.iter().any(String::is_empty) {
        return Err(ApiError::bad_request("`input` must be non-empty text").with_param("input").into());
    }
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!("encoding_format {other:?}: use \"float\" or \"base64\""))
                .with_param("encoding_format")
                .into())
        }
    };
    let options = options_for(&state, &body.model, Options::default())?;
    let acquired = state.registry.acquire(&body.model, options.load_request(None)?).await?;
    let mut e = acquired.model.embed(inputs, true).await?;
    crate::generation::account_embedding(&state, &ctx, &acquired.name, e.prompt_tokens);
    if let Some(d) = body.dimensions {
        crate::generation::truncate_dimensions(&mut e.vectors, d, acquired.model.info().embedding_length)?;
    }
    let data: Vec<Value> = e
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 { Value::from(base64_f32(v)) } else { json!(v) };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    Ok(axum::Json(json!({
        "object": "list", "data": data, "model": body.model,
        "usage": { "prompt_tokens": e.prompt_tokens, "total_tokens": e.prompt_tokens },
    }))
    .into_response())
}

fn model_json(m: &hyperllama_store::Manifest) -> Value {
    let created = chrono::DateTime::parse_from_rfc3339(&m.modified_at).map(|t| t.timestamp()).unwrap_or(0);
    let owner = m.name.split_once('/').map(|(ns, _)| ns).unwrap_or("library");
    json!({ "id": m.name, "object": "model", "created": created, "owned_by": owner })
}

pub async fn list_models(State(state): State<AppState>) -> Result<Response> {
    let mut data: Vec<Value> = state.registry.store().list()?.iter().map(model_json).collect();
    for r in state.registry.remotes().list() {
        let owner = if r.served.owned_by.is_empty() { r.url.clone() } else { r.served.owned_by.clone() };
        data.push(json!({ "id": r.served.id, "object": "model", "created": r.served.created, "owned_by": owner }));
    }
    Ok(axum::Json(json!({ "object": "list", "data": data })).into_response())
}

pub async fn get_model(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    let (_, m) = state.registry.manifest(&id)?;
    Ok(axum::Json(model_json(&m)).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard_alphabet() {
        // 1.0f32 = 00 00 80 3f
        assert_eq!(super::base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(super::base64_f32(&[1.0, 1.0, 1.0]), "AACAPwAAgD8AAIA/");
    }
}
