//! Ollama's bodies into the one service request.

use hyperllama_core::{KeepAlive, Message};

use super::types::{ChatBody, GenerateBody};
use crate::api::common::{parse_format, tool_specs};
use crate::error::ApiError;
use crate::service::{Input, PromptInput, ServiceRequest};

pub fn keep_alive(v: Option<&serde_json::Value>) -> Result<Option<KeepAlive>, ApiError> {
    v.map(KeepAlive::from_json).transpose().map_err(|e| ApiError::from(e).with_param("keep_alive"))
}

pub fn require_model(model: &str) -> Result<(), ApiError> {
    if model.trim().is_empty() {
        return Err(ApiError::bad_request("model is required").with_param("model"));
    }
    Ok(())
}

/// Models without a thinking mode refuse `think`, as in Ollama.
fn check_think(think: Option<&serde_json::Value>, model: &str) -> Result<(), ApiError> {
    match think {
        None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => Ok(()),
        Some(_) => Err(ApiError::bad_request(format!("\"{model}\" does not support thinking")).with_param("think")),
    }
}

impl TryFrom<GenerateBody> for ServiceRequest {
    type Error = ApiError;
    fn try_from(body: GenerateBody) -> Result<Self, ApiError> {
        require_model(&body.model)?;
        check_think(body.think.as_ref(), &body.model)?;
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
        req.knobs = body.options;
        req.format = parse_format(body.format.as_ref())?;
        req.keep_alive = keep_alive(body.keep_alive.as_ref())?;
        Ok(req)
    }
}

impl TryFrom<ChatBody> for ServiceRequest {
    type Error = ApiError;
    fn try_from(body: ChatBody) -> Result<Self, ApiError> {
        require_model(&body.model)?;
        check_think(body.think.as_ref(), &body.model)?;
        let messages = body.messages.into_iter().map(Message::try_from).collect::<Result<Vec<_>, _>>()?;
        let mut req = ServiceRequest::new(body.model, Input::Chat(messages));
        req.knobs = body.options;
        req.format = parse_format(body.format.as_ref())?;
        req.tools = tool_specs(&body.tools)?;
        req.keep_alive = keep_alive(body.keep_alive.as_ref())?;
        Ok(req)
    }
}
