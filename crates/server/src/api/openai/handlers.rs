//! `/v1` endpoints: extract, convert, call the service, encode (typed chunks, no per-token
//! JSON trees).

use std::convert::Infallible;

use axum::extract::{Extension, Path, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyperllama_core::{FinishReason, ToolCall};
use hyperllama_protocol::openai::{
    ChatChoice, ChatChunk, ChatCompletion, ChatLogprobs, ChunkChoice, CompletionChoice, CompletionChunk,
    CompletionLogprobs, Delta, FunctionDelta, ModelList, ModelObject, ResponseMessage, ToolCallDelta, WireFunction,
    WireTokenLogprob, WireToolCall, WireUsage,
};
use serde_json::{json, Value};

use super::types::{ChatCompletionBody, CompletionBody, EmbeddingInput, EmbeddingsBody};
use super::{Json, Result};
use crate::api::common::new_id;
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::extract::DialectJson;
use crate::service::{EmbedRequest, Final, Knobs, Piece, ServiceRequest};
use crate::AppState;

fn created() -> i64 {
    chrono::Utc::now().timestamp()
}

fn finish_reason(fin: &Final) -> String {
    if !fin.tool_calls.is_empty() {
        return "tool_calls".into();
    }
    match fin.finish_reason {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
    .into()
}

fn wire_calls(calls: &[ToolCall]) -> Vec<WireToolCall> {
    calls
        .iter()
        .map(|c| WireToolCall {
            id: Some(c.id.clone().unwrap_or_else(|| new_id("call_"))),
            kind: "function".into(),
            function: WireFunction { name: c.name.clone(), arguments: c.arguments.to_string() },
        })
        .collect()
}

fn sse<S>(events: S) -> Response
where
    S: futures::Stream<Item = String> + Send + 'static,
{
    let stream = events
        .map(|data| Ok::<_, Infallible>(Event::default().data(data)))
        .chain(futures::stream::once(async { Ok(Event::default().data("[DONE]")) }));
    Sse::new(stream).into_response()
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":{{\"message\":\"{e}\"}}}}"))
}

/// An error after the stream began: OpenAI's error object as one more event.
fn stream_error(e: &ApiError) -> String {
    to_json(&json!({ "error": { "message": e.message, "type": "server_error", "param": null, "code": e.code } }))
}

/// `x-hyperllama-truncated: N` when the oldest N messages were dropped to fit the context.
pub(crate) fn truncation_header(resp: &mut Response, dropped: usize) {
    if dropped > 0 {
        resp.headers_mut().insert("x-hyperllama-truncated", axum::http::HeaderValue::from(dropped));
    }
}

/// Several choices' usage as one: the prompt once, the outputs summed.
fn sum_usage(usages: &[hyperllama_core::Usage]) -> WireUsage {
    let mut u = usages.first().copied().unwrap_or_default();
    u.completion_tokens = usages.iter().map(|x| x.completion_tokens).sum();
    u.into()
}

fn chat_logprobs(l: &[hyperllama_core::Logprobs]) -> ChatLogprobs {
    ChatLogprobs { content: Some(l.iter().map(WireTokenLogprob::from).collect()) }
}

pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    DialectJson(body, _): Json<ChatCompletionBody>,
) -> Result<Response> {
    let stream = body.stream;
    let include_usage = body.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let req = ServiceRequest::try_from(body)?;
    let model = req.model.clone();
    let want_logprobs = req.logprobs.is_some();
    let generations = state.service.generate_choices(req, &ctx).await?;
    let truncated = generations[0].truncated_messages();
    let (id, created) = (new_id("chatcmpl-"), created());

    if !stream {
        let collected = futures::future::try_join_all(generations.into_iter().map(|g| g.collect())).await?;
        let usage = sum_usage(&collected.iter().map(|c| c.fin.usage).collect::<Vec<_>>());
        let choices = collected
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let calls = wire_calls(&c.fin.tool_calls);
                let message = ResponseMessage {
                    role: "assistant".into(),
                    content: if calls.is_empty() || !c.text.is_empty() { Some(c.text) } else { None },
                    reasoning_content: (!c.thinking.is_empty()).then_some(c.thinking),
                    tool_calls: calls,
                };
                let logprobs = want_logprobs.then(|| chat_logprobs(&c.logprobs));
                ChatChoice { index: i as u32, message, logprobs, finish_reason: Some(finish_reason(&c.fin)) }
            })
            .collect();
        let body = ChatCompletion {
            id,
            object: "chat.completion".into(),
            created,
            model,
            system_fingerprint: Some("hyperllama".into()),
            choices,
            usage,
        };
        let mut resp = axum::Json(body).into_response();
        truncation_header(&mut resp, truncated);
        return Ok(resp);
    }

    let n = generations.len();
    let chunk = move |choices: Vec<ChunkChoice>, usage: Option<WireUsage>| {
        to_json(&ChatChunk {
            id: id.clone(),
            object: "chat.completion.chunk".into(),
            created,
            model: model.clone(),
            system_fingerprint: Some("hyperllama".into()),
            choices,
            usage,
        })
    };
    let delta =
        |index: usize, d: Delta| ChunkChoice { index: index as u32, delta: d, logprobs: None, finish_reason: None };
    let first: Vec<String> = (0..n)
        .map(|i| {
            chunk(
                vec![delta(
                    i,
                    Delta { role: Some("assistant".into()), content: Some(String::new()), ..Delta::default() },
                )],
                None,
            )
        })
        .collect();
    let merged = futures::stream::select_all(
        generations.into_iter().enumerate().map(|(i, g)| g.pieces().map(move |p| (i, p)).boxed()),
    );
    let mut usages = Vec::new();
    let mut any_call = vec![false; n];
    let events = merged.flat_map(move |(i, p)| {
        let out: Vec<String> = match p {
            Ok(Piece::Text { text, logprobs }) => {
                let mut c = delta(i, Delta { content: Some(text), ..Delta::default() });
                if want_logprobs {
                    c.logprobs = Some(chat_logprobs(&logprobs));
                }
                vec![chunk(vec![c], None)]
            }
            Ok(Piece::Thinking(t)) => {
                vec![chunk(vec![delta(i, Delta { reasoning_content: Some(t), ..Delta::default() })], None)]
            }
            Ok(Piece::ToolStart { index, id, name }) => {
                any_call[i] = true;
                let d = ToolCallDelta {
                    index: index as u32,
                    id: Some(id),
                    kind: Some("function".into()),
                    function: Some(FunctionDelta { name: Some(name), arguments: Some(String::new()) }),
                };
                vec![chunk(vec![delta(i, Delta { tool_calls: Some(vec![d]), ..Delta::default() })], None)]
            }
            Ok(Piece::ToolArgs { index, delta: args }) => {
                let d = ToolCallDelta {
                    index: index as u32,
                    function: Some(FunctionDelta { name: None, arguments: Some(args) }),
                    ..ToolCallDelta::default()
                };
                vec![chunk(vec![delta(i, Delta { tool_calls: Some(vec![d]), ..Delta::default() })], None)]
            }
            Ok(Piece::Done(fin)) => {
                usages.push(fin.usage);
                let last = ChunkChoice { finish_reason: Some(finish_reason(&fin)), ..delta(i, Delta::default()) };
                let mut out = vec![chunk(vec![last], None)];
                if include_usage && usages.len() == n {
                    out.push(chunk(vec![], Some(sum_usage(&usages))));
                }
                out
            }
            Err(e) => vec![stream_error(&e)],
        };
        futures::stream::iter(out)
    });
    let mut resp = sse(futures::stream::iter(first).chain(events));
    truncation_header(&mut resp, truncated);
    Ok(resp)
}

/// Completions' legacy logprobs for `pieces`, whose text starts at byte `offset` of the answer.
fn completion_logprobs(l: &[hyperllama_core::Logprobs], mut offset: u32) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    for t in l {
        out.tokens.push(t.token.text.clone());
        out.token_logprobs.push(t.token.logprob);
        out.top_logprobs.push(t.top.iter().map(|a| (a.text.clone(), a.logprob)).collect());
        out.text_offset.push(offset);
        offset += t.token.bytes.len() as u32;
    }
    out
}

pub async fn completions(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    DialectJson(body, _): Json<CompletionBody>,
) -> Result<Response> {
    let stream = body.stream;
    let include_usage = body.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let req = ServiceRequest::try_from(body)?;
    let model = req.model.clone();
    let want_logprobs = req.logprobs.is_some();
    let generations = state.service.generate_choices(req, &ctx).await?;
    let (id, created) = (new_id("cmpl-"), created());
    let chunk = move |choices: Vec<CompletionChoice>, usage: Option<WireUsage>| CompletionChunk {
        id: id.clone(),
        object: "text_completion".into(),
        created,
        model: model.clone(),
        choices,
        usage,
    };
    if !stream {
        let collected = futures::future::try_join_all(generations.into_iter().map(|g| g.collect())).await?;
        let usage = sum_usage(&collected.iter().map(|c| c.fin.usage).collect::<Vec<_>>());
        let choices = collected
            .into_iter()
            .enumerate()
            .map(|(i, c)| CompletionChoice {
                index: i as u32,
                logprobs: want_logprobs.then(|| completion_logprobs(&c.logprobs, 0)),
                finish_reason: Some(finish_reason(&c.fin)),
                text: c.text,
            })
            .collect();
        return Ok(axum::Json(chunk(choices, Some(usage))).into_response());
    }
    let n = generations.len();
    let merged = futures::stream::select_all(
        generations.into_iter().enumerate().map(|(i, g)| g.pieces().map(move |p| (i, p)).boxed()),
    );
    let mut offsets = vec![0u32; n];
    let mut usages = Vec::new();
    let events = merged.flat_map(move |(i, p)| {
        let out: Vec<String> = match p {
            Ok(Piece::Text { text, logprobs }) => {
                let lp = want_logprobs.then(|| completion_logprobs(&logprobs, offsets[i]));
                offsets[i] += logprobs.iter().map(|l| l.token.bytes.len() as u32).sum::<u32>();
                let c = CompletionChoice { index: i as u32, text, logprobs: lp, ..CompletionChoice::default() };
                vec![to_json(&chunk(vec![c], None))]
            }
            Ok(Piece::Done(fin)) => {
                usages.push(fin.usage);
                let last = CompletionChoice {
                    index: i as u32,
                    finish_reason: Some(finish_reason(&fin)),
                    ..CompletionChoice::default()
                };
                let mut out = vec![to_json(&chunk(vec![last], None))];
                if include_usage && usages.len() == n {
                    out.push(to_json(&chunk(vec![], Some(sum_usage(&usages)))));
                }
                out
            }
            // Completions offer no tools and no reasoning.
            Ok(_) => vec![],
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
    if body.model.trim().is_empty() {
        return Err(ApiError::bad_request("`model` is required").with_param("model").into());
    }
    let inputs = match body.input {
        EmbeddingInput::One(s) => vec![s],
        EmbeddingInput::Many(v) => v,
        EmbeddingInput::Tokens(_) => {
            return Err(ApiError::bad_request("token-id input is not supported; send text").with_param("input").into())
        }
    };
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!("encoding_format {other:?}: use \"float\" or \"base64\""))
                .with_param("encoding_format")
                .into())
        }
    };
    let req = EmbedRequest {
        model: body.model.clone(),
        inputs,
        truncate: true,
        dimensions: body.dimensions,
        knobs: Knobs::default(),
        keep_alive: None,
    };
    let e = state.service.embed(req, &ctx).await?;
    let data: Vec<Value> = e
        .embeddings
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 { Value::from(base64_f32(v)) } else { json!(v) };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    let tokens = e.embeddings.prompt_tokens;
    Ok(axum::Json(json!({
        "object": "list", "data": data, "model": body.model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    }))
    .into_response())
}

fn model_object(m: &hyperllama_store::Manifest) -> ModelObject {
    let created = chrono::DateTime::parse_from_rfc3339(&m.modified_at).map(|t| t.timestamp()).unwrap_or(0);
    let owner = match m.name.split('/').collect::<Vec<_>>()[..] {
        [_, ns, _] | [ns, _] => ns.to_string(),
        _ => "library".into(),
    };
    ModelObject { id: m.name.clone(), object: "model".into(), created, owned_by: owner, ..ModelObject::default() }
}

pub async fn list_models(State(state): State<AppState>) -> Result<Response> {
    let store = state.service.registry().store().clone();
    let manifests = tokio::task::spawn_blocking(move || store.list()).await.map_err(ApiError::from)??;
    let mut data: Vec<ModelObject> = manifests.iter().map(model_object).collect();
    for r in state.service.registry().remotes().list() {
        let owner = if r.served.owned_by.is_empty() { r.url.clone() } else { r.served.owned_by.clone() };
        data.push(ModelObject {
            id: r.served.id,
            object: "model".into(),
            created: r.served.created,
            owned_by: owner,
            ..ModelObject::default()
        });
    }
    Ok(axum::Json(ModelList { object: "list".into(), data }).into_response())
}

pub async fn get_model(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    let r = state.service.registry().resolve(&id).await?;
    Ok(axum::Json(model_object(&r.manifest)).into_response())
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
