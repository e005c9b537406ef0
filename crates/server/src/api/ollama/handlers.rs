//! Generation and embedding endpoints: extract, convert, call the service, encode.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use hyperllama_core::FinishReason;
use serde_json::{json, Value};

use super::convert::{keep_alive, require_model};
use super::types::{ChatBody, EmbedBody, EmbedInput, GenerateBody, LegacyEmbeddingsBody};
use super::{Json, Result};
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::extract::DialectJson;
use crate::service::{nanos, EmbedRequest, Final, Knobs, Piece, ServiceRequest};
use crate::AppState;

/// Liveness for Ollama's clients ("... is running"); a browser is sent to the web UI.
pub async fn root(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if state.http.webui && crate::webui::wants_html(&headers) {
        return axum::response::Redirect::to("/ui/").into_response();
    }
    "HyperLlama is running".into_response()
}

pub async fn version() -> axum::Json<Value> {
    axum::Json(json!({ "version": env!("CARGO_PKG_VERSION") }))
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// The final line's statistics, as Ollama names them.
fn stats(model: &str, fin: &Final) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("model".into(), model.into());
    m.insert("created_at".into(), now().into());
    m.insert("done".into(), true.into());
    m.insert(
        "done_reason".into(),
        match fin.finish_reason {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "stop",
        }
        .into(),
    );
    m.insert("total_duration".into(), nanos(fin.total_duration).into());
    m.insert("load_duration".into(), nanos(fin.load_duration).into());
    m.insert("prompt_eval_count".into(), fin.usage.prompt_tokens.into());
    m.insert("prompt_eval_duration".into(), nanos(fin.prompt_eval).into());
    m.insert("eval_count".into(), fin.usage.completion_tokens.into());
    m.insert("eval_duration".into(), nanos(fin.eval).into());
    m.insert("prompt_cache_count".into(), fin.usage.cached_tokens.into());
    m
}

/// NDJSON: one JSON object per line. An error after the stream began is one more line.
fn ndjson(lines: impl Stream<Item = std::result::Result<Value, ApiError>> + Send + 'static) -> Response {
    let body = lines.map(|line| {
        let v = line.unwrap_or_else(|e| json!({ "error": e.message }));
        Ok::<_, Infallible>(Bytes::from(hyperllama_protocol::ndjson::encode(&v)))
    });
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(body)).into_response()
}

/// `done_reason: "load"` / `"unload"` responses for an empty prompt.
async fn load_or_unload(
    state: &AppState,
    ctx: &RequestContext,
    model: &str,
    options: &Knobs,
    ka: Option<&Value>,
    chat: bool,
) -> Result<Response> {
    let ka = keep_alive(ka)?;
    let reason = if ka.is_some_and(|k| k.is_zero()) {
        state.service.unload(model).await?;
        "unload"
    } else {
        state.service.load(model, options, ka).await?;
        "load"
    };
    let mut v = json!({ "model": model, "created_at": now(), "done": true, "done_reason": reason,
                        "total_duration": nanos(ctx.started.elapsed()) });
    if chat {
        v["message"] = json!({ "role": "assistant", "content": "" });
    } else {
        v["response"] = json!("");
    }
    Ok(axum::Json(v).into_response())
}

/// Ollama's logprobs entries.
fn logprobs_json(l: &[hyperllama_core::Logprobs]) -> Vec<Value> {
    let one = |t: &hyperllama_core::TokenLogprob| json!({ "token": t.text, "logprob": t.logprob, "bytes": t.bytes });
    l.iter()
        .map(|x| {
            let mut v = one(&x.token);
            v["top_logprobs"] = x.top.iter().map(one).collect::<Vec<_>>().into();
            v
        })
        .collect()
}

fn with_header(mut resp: Response, truncated: usize) -> Response {
    crate::api::openai::truncation_header(&mut resp, truncated);
    resp
}

pub async fn generate(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    DialectJson(body, _): Json<GenerateBody>,
) -> Result<Response> {
    require_model(&body.model)?;
    if body.prompt.is_empty() && body.images.is_empty() {
        return load_or_unload(&state, &ctx, &body.model, &body.options, body.keep_alive.as_ref(), false).await;
    }
    let stream = body.stream != Some(false);
    let req = ServiceRequest::try_from(body)?;
    let model = req.model.clone();
    let want_logprobs = req.logprobs.is_some();
    let generation = state.service.generate(req, &ctx).await?;
    let truncated = generation.truncated_messages();
    if !stream {
        let c = generation.collect().await?;
        let mut v = stats(&model, &c.fin);
        v.insert("response".into(), c.text.into());
        if !c.thinking.is_empty() {
            v.insert("thinking".into(), c.thinking.into());
        }
        if want_logprobs {
            v.insert("logprobs".into(), logprobs_json(&c.logprobs).into());
        }
        return Ok(with_header(axum::Json(Value::Object(v)).into_response(), truncated));
    }
    let lines = generation.pieces().filter_map(move |p| {
        let line = p.map(|piece| match piece {
            Piece::Text { text, logprobs } => {
                let mut v = json!({ "model": model, "created_at": now(), "response": text, "done": false });
                if want_logprobs {
                    v["logprobs"] = logprobs_json(&logprobs).into();
                }
                Some(v)
            }
            Piece::Thinking(t) => {
                Some(json!({ "model": model, "created_at": now(), "response": "", "thinking": t, "done": false }))
            }
            Piece::ToolStart { .. } | Piece::ToolArgs { .. } => None,
            Piece::Done(fin) => {
                let mut v = stats(&model, &fin);
                v.insert("response".into(), "".into());
                Some(Value::Object(v))
            }
        });
        futures::future::ready(line.transpose())
    });
    Ok(with_header(ndjson(lines), truncated))
}

fn tool_calls_json(fin: &Final) -> Vec<Value> {
    fin.tool_calls
        .iter()
        .enumerate()
        .map(|(i, c)| json!({ "id": c.id, "function": { "index": i, "name": c.name, "arguments": c.arguments } }))
        .collect()
}

pub async fn chat(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    DialectJson(body, _): Json<ChatBody>,
) -> Result<Response> {
    require_model(&body.model)?;
    if body.messages.is_empty() {
        // Ollama: a chat with no messages loads (or, with keep_alive 0, unloads) the model.
        return load_or_unload(&state, &ctx, &body.model, &body.options, body.keep_alive.as_ref(), true).await;
    }
    let stream = body.stream != Some(false);
    let req = ServiceRequest::try_from(body)?;
    let model = req.model.clone();
    let want_logprobs = req.logprobs.is_some();
    let generation = state.service.generate(req, &ctx).await?;
    let truncated = generation.truncated_messages();
    if !stream {
        let c = generation.collect().await?;
        let mut v = stats(&model, &c.fin);
        let mut message = json!({ "role": "assistant", "content": c.text });
        if !c.thinking.is_empty() {
            message["thinking"] = c.thinking.into();
        }
        if !c.fin.tool_calls.is_empty() {
            message["tool_calls"] = tool_calls_json(&c.fin).into();
        }
        v.insert("message".into(), message);
        if want_logprobs {
            v.insert("logprobs".into(), logprobs_json(&c.logprobs).into());
        }
        return Ok(with_header(axum::Json(Value::Object(v)).into_response(), truncated));
    }
    // Ollama streams a tool call whole, once it is complete: the final line carries them.
    let lines = generation.pieces().filter_map(move |p| {
        let line = p.map(|piece| match piece {
            Piece::Text { text, logprobs } => {
                let mut v = json!({ "model": model, "created_at": now(),
                                    "message": { "role": "assistant", "content": text }, "done": false });
                if want_logprobs {
                    v["logprobs"] = logprobs_json(&logprobs).into();
                }
                Some(v)
            }
            Piece::Thinking(t) => Some(json!({ "model": model, "created_at": now(),
                "message": { "role": "assistant", "content": "", "thinking": t }, "done": false })),
            Piece::ToolStart { .. } | Piece::ToolArgs { .. } => None,
            Piece::Done(fin) => {
                let mut v = stats(&model, &fin);
                let mut message = json!({ "role": "assistant", "content": "" });
                if !fin.tool_calls.is_empty() {
                    message["tool_calls"] = tool_calls_json(&fin).into();
                }
                v.insert("message".into(), message);
                Some(Value::Object(v))
            }
        });
        futures::future::ready(line.transpose())
    });
    Ok(with_header(ndjson(lines), truncated))
}

pub async fn embed(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    DialectJson(body, _): Json<EmbedBody>,
) -> Result<Response> {
    require_model(&body.model)?;
    let inputs = match body.input {
        EmbedInput::One(s) => vec![s],
        EmbedInput::Many(v) => v,
    };
    let req = EmbedRequest {
        model: body.model.clone(),
        inputs,
        truncate: body.truncate.unwrap_or(true),
        dimensions: body.dimensions,
        knobs: body.options,
        keep_alive: keep_alive(body.keep_alive.as_ref())?,
    };
    let e = state.service.embed(req, &ctx).await?;
    Ok(axum::Json(json!({
        "model": body.model,
        "embeddings": e.embeddings.vectors,
        "total_duration": nanos(ctx.started.elapsed()),
        "load_duration": nanos(e.acquired.load_duration),
        "prompt_eval_count": e.embeddings.prompt_tokens,
    }))
    .into_response())
}

pub async fn embeddings(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    DialectJson(body, _): Json<LegacyEmbeddingsBody>,
) -> Result<Response> {
    require_model(&body.model)?;
    if body.prompt.is_empty() {
        // The legacy endpoint answers an empty prompt with an empty embedding.
        state.service.registry().resolve(&body.model).await?;
        return Ok(axum::Json(json!({ "embedding": [] })).into_response());
    }
    let req = EmbedRequest {
        model: body.model,
        inputs: vec![body.prompt],
        truncate: true,
        dimensions: None,
        knobs: body.options,
        keep_alive: keep_alive(body.keep_alive.as_ref())?,
    };
    let e = state.service.embed(req, &ctx).await?;
    Ok(axum::Json(json!({ "embedding": e.embeddings.vectors.into_iter().next().unwrap_or_default() })).into_response())
}
