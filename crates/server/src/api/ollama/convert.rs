//! Ollama's bodies into the one service request.

use hyperllama_core::{KeepAlive, Message};

use super::types::{ChatBody, GenerateBody};
use crate::api::common::{parse_format, tool_specs};
use crate::error::ApiError;
use crate::service::{Input, Knobs, Overflow, PromptInput, ServiceRequest, Think};

pub fn keep_alive(v: Option<&serde_json::Value>) -> Result<Option<KeepAlive>, ApiError> {
    v.map(KeepAlive::from_json).transpose().map_err(|e| ApiError::from(e).with_param("keep_alive"))
}

pub fn require_model(model: &str) -> Result<(), ApiError> {
    if model.trim().is_empty() {
        return Err(ApiError::bad_request("model is required").with_param("model"));
    }
    Ok(())
}

/// Ollama's `think`: `true`/`false`, or an effort level. Asking a model that does not reason
/// is a 400, as in Ollama (the service checks the model).
fn think(v: Option<&serde_json::Value>) -> Result<Think, ApiError> {
    let think = match v {
        None | Some(serde_json::Value::Null) => Think::default(),
        Some(serde_json::Value::Bool(on)) => Think { enabled: Some(*on), ..Think::default() },
        Some(serde_json::Value::String(level)) if level == "max" => Think { enabled: Some(true), ..Think::default() },
        Some(serde_json::Value::String(level)) => Think::effort(level).map_err(|e| e.with_param("think"))?,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid think value {other}: use true, false, \"low\", \"medium\" or \"high\""
            ))
            .with_param("think"))
        }
    };
    Ok(Think { strict: true, ..think })
}

fn logprobs(on: bool, top: Option<u32>) -> Result<Option<u8>, ApiError> {
    let top = top.map(|n| crate::api::openai::convert::top_count(n, "top_logprobs")).transpose()?;
    Ok((on || top.is_some()).then(|| top.unwrap_or(0)))
}

/// Ollama's knobs, with the request's `truncate` over the options'.
fn knobs(mut options: Knobs, truncate: Option<bool>) -> Knobs {
    options.truncate = truncate.or(options.truncate);
    options
}

impl TryFrom<GenerateBody> for ServiceRequest {
    type Error = ApiError;
    fn try_from(body: GenerateBody) -> Result<Self, ApiError> {
        require_model(&body.model)?;
        let think = think(body.think.as_ref())?;
        let logprobs = logprobs(body.logprobs, body.top_logprobs)?;
        if body.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::bad_request("suffix (fill-in-the-middle) is not supported by this model's template")
                .with_param("suffix"));
        }
        if !body.images.is_empty() {
            return Err(ApiError::bad_request("images are not supported: this model has no vision projector"));
        }
        let input = Input::Prompt(PromptInput {
            text: body.prompt,
            raw: body.raw,
            system: body.system,
            template: body.template.filter(|t| !t.is_empty()),
        });
        let mut req = ServiceRequest::new(body.model, input);
        req.knobs = knobs(body.options, body.truncate);
        req.format = parse_format(body.format.as_ref())?;
        req.keep_alive = keep_alive(body.keep_alive.as_ref())?;
        req.think = think;
        req.logprobs = logprobs;
        req.overflow = Overflow { clamp_output: true, truncate: true };
        Ok(req)
    }
}

impl TryFrom<ChatBody> for ServiceRequest {
    type Error = ApiError;
    fn try_from(body: ChatBody) -> Result<Self, ApiError> {
        require_model(&body.model)?;
        let think = think(body.think.as_ref())?;
        let logprobs = logprobs(body.logprobs, body.top_logprobs)?;
        let messages = body.messages.into_iter().map(Message::try_from).collect::<Result<Vec<_>, _>>()?;
        let mut req = ServiceRequest::new(body.model, Input::Chat(messages));
        req.knobs = knobs(body.options, body.truncate);
        req.format = parse_format(body.format.as_ref())?;
        req.tools = tool_specs(&body.tools)?;
        req.keep_alive = keep_alive(body.keep_alive.as_ref())?;
        req.think = think;
        req.logprobs = logprobs;
        req.overflow = Overflow { clamp_output: true, truncate: true };
        Ok(req)
    }
}
