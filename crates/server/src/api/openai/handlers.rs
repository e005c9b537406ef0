//! `/v1` endpoints: extract, convert, call the service, encode (typed chunks, no per-token
//! JSON trees).

use std::convert::Infallible;

use axum::extract::{Extension, Path, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyperllama_core::{FinishReason, ToolCall};
use hyperllama_protocol::openai::{
    ChatChoice, ChatChunk, ChatCompletion, ChunkChoice, CompletionChoice, CompletionChunk, Delta, FunctionDelta,
    ModelList, ModelObject, ResponseMessage, ToolCallDelta, WireFunction, WireToolCall, WireUsage,
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

pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    DialectJson(body, _): Json<ChatCompletionBody>,
) -> Result<Response> {
    let stream = body.stream;
    let include_usage = body.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let req = ServiceRequest::try_from(body)?;
    let model = req.model.clone();
    let generation = state.service.generate(req, &ctx).await?;
    let (id, created) = (new_id("chatcmpl-"), created());

    if !stream {
        let c = generation.collect().await?;
        let calls = wire_calls(&c.fin.tool_calls);
        let message = ResponseMessage {
            role: "assistant".into(),
            content: if calls.is_empty() { Some(c.text) } else { None },
            reasoning_content: None,
            tool_calls: calls,
        };
        let body = ChatCompletion {
            id,
            object: "chat.completion".into(),
            created,
            model,
            system_fingerprint: Some("hyperllama".into()),
            choices: vec![ChatChoice { index: 0, message, logprobs: None, finish_reason: Some(finish_reason(&c.fin)) }],
            usage: WireUsage::from(c.fin.usage),
        };
        return Ok(axum::Json(body).into_response());
    }

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
    let delta = |d: Delta| ChunkChoice { index: 0, delta: d, logprobs: None, finish_reason: None };
    let first = chunk(
        vec![delta(Delta { role: Some("assistant".into()), content: Some(String::new()), ..Delta::default() })],
        None,
    );
    let events = generation.pieces().flat_map(move |p| {
        let out: Vec<String> = match p {
            Ok(Piece::Text { text, .. }) => {
                vec![chunk(vec![delta(Delta { content: Some(text), ..Delta::default() })], None)]
            }
            Ok(Piece::Done(fin)) => {
                let mut out = Vec::new();
                for (i, call) in wire_calls(&fin.tool_calls).into_iter().enumerate() {
                    let d = ToolCallDelta {
                        index: i as u32,
                        id: call.id,
                        kind: Some("function".into()),
                        function: Some(FunctionDelta {
                            name: Some(call.function.name),
                            arguments: Some(call.function.arguments),
                        }),
                    };
                    out.push(chunk(vec![delta(Delta { tool_calls: Some(vec![d]), ..Delta::default() })], None));
                }
                let last = ChunkChoice { finish_reason: Some(finish_reason(&fin)), ..delta(Delta::default()) };
                out.push(chunk(vec![last], None));
                if include_usage {
                    out.push(chunk(vec![], Some(fin.usage.into())));
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
    let stream = body.stream;
    let include_usage = body.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let req = ServiceRequest::try_from(body)?;
    let model = req.model.clone();
    let generation = state.service.generate(req, &ctx).await?;
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
        let c = generation.collect().await?;
        let choice =
            CompletionChoice { index: 0, text: c.text, logprobs: None, finish_reason: Some(finish_reason(&c.fin)) };
        return Ok(axum::Json(chunk(vec![choice], Some(c.fin.usage.into()))).into_response());
    }
    let events = generation.pieces().flat_map(move |p| {
        let out: Vec<String> = match p {
            Ok(Piece::Text { text, .. }) => {
                vec![to_json(&chunk(vec![CompletionChoice { text, ..CompletionChoice::default() }], None))]
            }
            Ok(Piece::Done(fin)) => {
                let last = CompletionChoice { finish_reason: Some(finish_reason(&fin)), ..CompletionChoice::default() };
                let mut out = vec![to_json(&chunk(vec![last], None))];
                if include_usage {
                    out.push(to_json(&chunk(vec![], Some(fin.usage.into()))));
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
