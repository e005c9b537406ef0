use std::convert::Infallible;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use hyperllama_core::{FinishReason, Message, Prompt};
use serde_json::{json, Value};

use super::types::{ChatBody, EmbedBody, EmbedInput, GenerateBody, LegacyEmbeddingsBody};
use super::{go_template, Json};
use crate::extract::DialectJson;
use crate::generation::{nanos, parse_format, tool_specs, Final, Generation, Options, Piece};
use crate::middleware::RequestContext;
use crate::registry::Acquired;
use crate::{ApiError, AppState, KeepAlive};

pub async fn root() -> &'static str {
    "HyperLlama is running"
}

pub async fn version() -> axum::Json<Value> {
    axum::Json(json!({ "version": env!("CARGO_PKG_VERSION") }))
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn keep_alive(v: Option<&Value>) -> Result<Option<KeepAlive>, ApiError> {
    v.map(KeepAlive::parse).transpose()
}

/// SmolLM2-class models have no thinking mode; asking for one is an error, as in Ollama.
fn check_think(think: Option<&Value>, model: &str) -> Result<(), ApiError> {
    match think {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(()),
        Some(_) => Err(ApiError::bad_request(format!("\"{model}\" does not support thinking")).with_param("think")),
    }
}

fn require_model(model: &str) -> Result<(), ApiError> {
    if model.trim().is_empty() {
        return Err(ApiError::bad_request("model is required").with_param("model"));
    }
    Ok(())
}

/// Options: the model's stored parameters, overridden by the request's.
fn options_for(state: &AppState, model: &str, request: Options) -> Result<Options, ApiError> {
    let (_, manifest) = state.registry.manifest(model)?;
    request.warn_unknown();
    Ok(Options::from_parameters(&manifest.parameters).merged(request))
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
fn ndjson(lines: impl Stream<Item = Result<Value, ApiError>> + Send + 'static) -> Response {
    let body = lines.map(|line| {
        let v = line.unwrap_or_else(|e| json!({ "error": e.message }));
        let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
        bytes.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(bytes))
    });
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(body)).into_response()
}

/// `done_reason: "load"` / `"unload"` responses for an empty prompt.
async fn load_or_unload(
    state: &AppState,
    model: &str,
    options: &Options,
    ka: Option<KeepAlive>,
    chat: bool,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let reason = if ka.is_some_and(|k| k.is_zero()) {
        state.registry.manifest(model)?;
        state.registry.unload(model).await?;
        "unload"
    } else {
        state.registry.acquire(model, options.load_request(ka)?).await?;
        "load"
    };
    let mut v = json!({ "model": model, "created_at": now(), "done": true, "done_reason": reason,
                        "total_duration": nanos(started.elapsed()) });
    if chat {
        v["message"] = json!({ "role": "assistant", "content": "" });
    } else {
        v["response"] = json!("");
    }
    Ok(axum::Json(v).into_response())
}

pub async fn generate(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    DialectJson(body, _): Json<GenerateBody>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    require_model(&body.model)?;
    check_think(body.think.as_ref(), &body.model)?;
    if body.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request("suffix (fill-in-the-middle) is not supported by this model's template")
            .with_param("suffix"));
    }
    if !body.images.is_empty() {
        return Err(ApiError::bad_request("images are not supported: this model has no vision projector"));
    }
    let ka = keep_alive(body.keep_alive.as_ref())?;
    let options = options_for(&state, &body.model, body.options)?;
    if body.prompt.is_empty() {
        return load_or_unload(&state, &body.model, &options, ka, false).await;
    }
    let (_, manifest) = state.registry.manifest(&body.model)?;
    let system = body.system.clone().or(manifest.system.clone());
    let template = body.template.clone().filter(|t| !t.is_empty()).or(manifest.template.clone());
    let prompt = if body.raw {
        Prompt::Raw(body.prompt)
    } else if let Some(t) = template {
        let vars = go_template::Vars { system: system.as_deref().unwrap_or(""), prompt: &body.prompt };
        Prompt::Raw(go_template::render(&t, &vars)?)
    } else {
        let mut messages = manifest.messages.clone();
        if let Some(s) = system {
            messages.insert(0, Message::system(s));
        }
        messages.push(Message::user(body.prompt));
        Prompt::Chat(messages)
    };
    let load = options.load_request(ka)?;
    let mut request = options.into_request(prompt)?;
    request.format = parse_format(body.format.as_ref())?;
    let generation = Generation::start(&state, &ctx, &body.model, load, request, started).await?;
    let model = body.model.clone();
    if body.stream == Some(false) {
        let (text, fin) = generation.collect().await?;
        let mut v = stats(&model, &fin);
        v.insert("response".into(), text.into());
        return Ok(axum::Json(Value::Object(v)).into_response());
    }
    let lines = generation.pieces().map(move |p| {
        p.map(|piece| match piece {
            Piece::Text(t) => json!({ "model": model, "created_at": now(), "response": t, "done": false }),
            Piece::Done(fin) => {
                let mut v = stats(&model, &fin);
                v.insert("response".into(), "".into());
                Value::Object(v)
            }
        })
    });
    Ok(ndjson(lines))
}

fn tool_calls_json(fin: &Final) -> Vec<Value> {
    fin.tool_calls.iter().map(|c| json!({ "function": { "name": c.name, "arguments": c.arguments } })).collect()
}

pub async fn chat(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    DialectJson(body, _): Json<ChatBody>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    require_model(&body.model)?;
    check_think(body.think.as_ref(), &body.model)?;
    let ka = keep_alive(body.keep_alive.as_ref())?;
    let options = options_for(&state, &body.model, body.options)?;
    if body.messages.is_empty() {
        // Ollama: a chat with no messages loads (or, with keep_alive 0, unloads) the model.
        return load_or_unload(&state, &body.model, &options, ka, true).await;
    }
    let (_, manifest) = state.registry.manifest(&body.model)?;
    let mut messages: Vec<Message> = manifest.messages.clone();
    for m in body.messages {
        messages.push(Message::try_from(m)?);
    }
    if let Some(system) = &manifest.system {
        if messages.first().is_none_or(|m| m.role != hyperllama_core::Role::System) {
            messages.insert(0, Message::system(system.clone()));
        }
    }
    let load = options.load_request(ka)?;
    let mut request = options.into_request(Prompt::Chat(messages))?;
    request.format = parse_format(body.format.as_ref())?;
    request.tools = tool_specs(&body.tools)?;
    let generation = Generation::start(&state, &ctx, &body.model, load, request, started).await?;
    let model = body.model.clone();
    if body.stream == Some(false) {
        let (text, fin) = generation.collect().await?;
        let mut v = stats(&model, &fin);
        let mut message = json!({ "role": "assistant", "content": text });
        if !fin.tool_calls.is_empty() {
            message["tool_calls"] = tool_calls_json(&fin).into();
        }
        v.insert("message".into(), message);
        return Ok(axum::Json(Value::Object(v)).into_response());
    }
    let lines = generation.pieces().map(move |p| {
        p.map(|piece| match piece {
            Piece::Text(t) => json!({ "model": model, "created_at": now(),
                                       "message": { "role": "assistant", "content": t }, "done": false }),
            Piece::Done(fin) => {
                let mut v = stats(&model, &fin);
                let mut message = json!({ "role": "assistant", "content": "" });
                if !fin.tool_calls.is_empty() {
                    message["tool_calls"] = tool_calls_json(&fin).into();
                }
                v.insert("message".into(), message);
                Value::Object(v)
            }
        })
    });
    Ok(ndjson(lines))
}

async fn embed_inputs(
    state: &AppState,
    ctx: &RequestContext,
    model: &str,
    inputs: Vec<String>,
    truncate: bool,
    options: Options,
    ka: Option<KeepAlive>,
) -> Result<(Acquired, hyperllama_engine::Embeddings), ApiError> {
    require_model(model)?;
    let options = options_for(state, model, options)?;
    let acquired = state.registry.acquire(model, options.load_request(ka)?).await?;
    let e = acquired.model.embed(inputs, truncate).await?;
    crate::generation::account_embedding(state, ctx, &acquired.name, e.prompt_tokens);
    Ok((acquired, e))
}

pub async fn embed(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    DialectJson(body, _): Json<EmbedBody>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let inputs = match body.input {
        EmbedInput::One(s) => vec![s],
        EmbedInput::Many(v) => v,
    };
    if inputs.is_empty() {
        return Err(ApiError::bad_request("input must not be empty").with_param("input"));
    }
    let ka = keep_alive(body.keep_alive.as_ref())?;
    let (acquired, mut e) =
        embed_inputs(&state, &ctx, &body.model, inputs, body.truncate.unwrap_or(true), body.options, ka).await?;
    if let Some(d) = body.dimensions {
        crate::generation::truncate_dimensions(&mut e.vectors, d, acquired.model.info().embedding_length)?;
    }
    Ok(axum::Json(json!({
        "model": body.model,
        "embeddings": e.vectors,
        "total_duration": nanos(started.elapsed()),
        "load_duration": nanos(acquired.load_duration),
        "prompt_eval_count": e.prompt_tokens,
    }))
    .into_response())
}

pub async fn embeddings(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    DialectJson(body, _): Json<LegacyEmbeddingsBody>,
) -> Result<Response, ApiError> {
    if body.prompt.is_empty() {
        // The legacy endpoint answers an empty prompt with an empty embedding.
        require_model(&body.model)?;
        state.registry.manifest(&body.model)?;
        return Ok(axum::Json(json!({ "embedding": [] })).into_response());
    }
    let ka = keep_alive(body.keep_alive.as_ref())?;
    let (_, e) = embed_inputs(&state, &ctx, &body.model, vec![body.prompt], true, body.options, ka).await?;
    Ok(axum::Json(json!({ "embedding": e.vectors.into_iter().next().unwrap_or_default() })).into_response())
}
