//! llama-server's token utilities, with a `model` field (HyperLlama serves many): `/tokenize`,
//! `/detokenize`, `/apply-template`. Errors are in OpenAI's shape, as llama-server's are.

use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::types::ChatMessage;
use super::{Json, Result};
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::extract::DialectJson;
use crate::service::{Input, ServiceRequest};
use crate::AppState;

#[derive(Debug, Deserialize)]
pub struct TokenizeBody {
    pub model: Option<String>,
    pub content: String,
    /// Add the BOS token (and parse special tokens) as generation does.
    #[serde(default)]
    pub add_special: bool,
    /// Each token with its text (`piece`: a string, or its bytes when they are not UTF-8).
    #[serde(default)]
    pub with_pieces: bool,
}

#[derive(Debug, Deserialize)]
pub struct DetokenizeBody {
    pub model: Option<String>,
    pub tokens: Vec<i64>,
}

#[derive(Debug, Deserialize)]
pub struct ApplyTemplateBody {
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub tools: Vec<crate::api::common::ToolDto>,
}

/// The model asked for, else the one model loaded (as llama-server, which has one).
fn model_for(state: &AppState, model: Option<String>) -> std::result::Result<String, ApiError> {
    if let Some(m) = model.filter(|m| !m.trim().is_empty()) {
        return Ok(m);
    }
    let running = state.service.registry().running();
    match running.as_slice() {
        [one] => Ok(one.name.clone()),
        _ => Err(ApiError::bad_request("`model` is required (no single model is loaded)").with_param("model")),
    }
}

pub async fn tokenize(State(state): State<AppState>, DialectJson(body, _): Json<TokenizeBody>) -> Result<Response> {
    let model = model_for(&state, body.model)?;
    let tokens = state.service.tokenize(&model, body.content, body.add_special).await?;
    let tokens: Vec<Value> = if body.with_pieces {
        tokens
            .into_iter()
            .map(|(id, bytes)| match String::from_utf8(bytes) {
                Ok(piece) => json!({ "id": id, "piece": piece }),
                Err(e) => json!({ "id": id, "piece": e.into_bytes() }),
            })
            .collect()
    } else {
        tokens.into_iter().map(|(id, _)| json!(id)).collect()
    };
    Ok(axum::Json(json!({ "tokens": tokens })).into_response())
}

pub async fn detokenize(State(state): State<AppState>, DialectJson(body, _): Json<DetokenizeBody>) -> Result<Response> {
    let model = model_for(&state, body.model)?;
    let ids = body
        .tokens
        .iter()
        .map(|&t| {
            u32::try_from(t).map_err(|_| ApiError::bad_request(format!("invalid token id {t}")).with_param("tokens"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let content = state.service.detokenize(&model, ids).await?;
    Ok(axum::Json(json!({ "content": content })).into_response())
}

pub async fn apply_template(
    State(state): State<AppState>,
    Extension(_ctx): Extension<RequestContext>,
    DialectJson(body, _): Json<ApplyTemplateBody>,
) -> Result<Response> {
    let model = model_for(&state, body.model)?;
    let messages = super::convert::convert_messages(body.messages)?;
    let mut req = ServiceRequest::new(model, Input::Chat(messages));
    req.tools = crate::api::common::tool_specs(&body.tools)?;
    let (prompt, n) = state.service.render(req).await?;
    Ok(axum::Json(json!({ "prompt": prompt, "tokens": n })).into_response())
}
