//! OpenAI's bodies into the one service request.

use std::collections::HashMap;

use hyperllama_core::{Message, OutputFormat, Role, ToolCall};
use serde_json::Value;

use super::types::{ChatCompletionBody, ChatMessage, CompletionBody, Content, PromptField, ResponseFormat};
use crate::api::common::tool_specs;
use crate::error::ApiError;
use crate::service::{Input, PromptInput, ServiceRequest, Think, ToolChoice};

pub fn max_tokens(v: Option<i64>, field: &'static str) -> Result<Option<i64>, ApiError> {
    match v {
        Some(n) if n < 1 => {
            Err(ApiError::bad_request(format!("`{field}` must be at least 1, got {n}")).with_param(field))
        }
        other => Ok(other),
    }
}

fn require_model(model: &str) -> Result<(), ApiError> {
    if model.trim().is_empty() {
        return Err(ApiError::bad_request("`model` is required").with_param("model"));
    }
    Ok(())
}

/// `logprobs`/`top_logprobs` as the service's count of alternatives.
fn chat_logprobs(logprobs: Option<bool>, top: Option<u32>) -> Result<Option<u8>, ApiError> {
    match (logprobs.unwrap_or(false), top) {
        (false, None) => Ok(None),
        (false, Some(_)) => {
            Err(ApiError::bad_request("`top_logprobs` needs `logprobs: true`").with_param("top_logprobs"))
        }
        (true, top) => top_count(top.unwrap_or(0), "top_logprobs").map(Some),
    }
}

pub fn top_count(n: u32, field: &'static str) -> Result<u8, ApiError> {
    if n > u32::from(hyperllama_core::MAX_TOP_LOGPROBS) {
        return Err(ApiError::bad_request(format!(
            "`{field}` must be between 0 and {}, got {n}",
            hyperllama_core::MAX_TOP_LOGPROBS
        ))
        .with_param(field));
    }
    Ok(n as u8)
}

fn content_text(c: Option<Content>) -> Result<String, ApiError> {
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

pub fn convert_messages(messages: Vec<ChatMessage>) -> Result<Vec<Message>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request("`messages` must not be empty").with_param("messages"));
    }
    let mut call_names = HashMap::new();
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
            msg.tool_calls.push(ToolCall { id: c.id, name: c.function.name, arguments });
        }
        if role == Role::Tool {
            msg.tool_name = m.name.or_else(|| m.tool_call_id.as_ref().and_then(|id| call_names.get(id).cloned()));
            msg.tool_call_id = m.tool_call_id;
        }
        msg.thinking = m.reasoning_content.filter(|t| !t.is_empty());
        out.push(msg);
    }
    Ok(out)
}

fn tool_choice(v: Option<&Value>) -> Result<ToolChoice, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(ToolChoice::Auto),
        Some(Value::String(s)) if s == "none" => Ok(ToolChoice::None),
        Some(Value::String(s)) if s == "auto" => Ok(ToolChoice::Auto),
        Some(Value::String(s)) if s == "required" => Ok(ToolChoice::Required),
        Some(v) => v
            .pointer("/function/name")
            .and_then(Value::as_str)
            .map(|n| ToolChoice::Named(n.to_string()))
            .ok_or_else(|| ApiError::bad_request(format!("invalid tool_choice {v}")).with_param("tool_choice")),
    }
}

impl TryFrom<ChatCompletionBody> for ServiceRequest {
    type Error = ApiError;
    fn try_from(body: ChatCompletionBody) -> Result<Self, ApiError> {
        require_model(&body.model)?;
        let logprobs = chat_logprobs(body.logprobs, body.top_logprobs)?;
        let limit = max_tokens(body.max_completion_tokens.or(body.max_tokens), "max_tokens")?;
        let messages = convert_messages(body.messages)?;
        let mut req = ServiceRequest::new(body.model, Input::Chat(messages));
        req.knobs = body.sampling.into_knobs(limit);
        req.logprobs = logprobs;
        req.n = body.n.unwrap_or(1);
        req.parallel_tool_calls = body.parallel_tool_calls.unwrap_or(true);
        if let Some(effort) = body.reasoning_effort.as_deref() {
            req.think = Think::effort(effort).map_err(|e| e.with_param("reasoning_effort"))?;
        }
        req.tools = tool_specs(&body.tools)?;
        req.tool_choice = tool_choice(body.tool_choice.as_ref())?;
        req.format = match body.response_format {
            None | Some(ResponseFormat::Text) => None,
            Some(ResponseFormat::JsonObject) => Some(OutputFormat::Json),
            Some(ResponseFormat::JsonSchema { json_schema }) => match json_schema.schema {
                Some(schema) => Some(OutputFormat::JsonSchema(schema)),
                None => Some(OutputFormat::Json),
            },
        };
        Ok(req)
    }
}

impl TryFrom<CompletionBody> for ServiceRequest {
    type Error = ApiError;
    fn try_from(body: CompletionBody) -> Result<Self, ApiError> {
        require_model(&body.model)?;
        if body.best_of.is_some_and(|b| b != body.n.unwrap_or(1)) {
            return Err(
                ApiError::bad_request("`best_of` must equal `n` (no server-side ranking)").with_param("best_of")
            );
        }
        if body.echo {
            return Err(ApiError::bad_request("`echo` is not supported").with_param("echo"));
        }
        let logprobs = body.logprobs.map(|n| top_count(n, "logprobs")).transpose()?;
        if body.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::bad_request("`suffix` is not supported").with_param("suffix"));
        }
        let prompt = match body.prompt {
            PromptField::One(s) => s,
            PromptField::Many(mut v) if v.len() == 1 => v.remove(0),
            PromptField::Many(v) => {
                return Err(
                    ApiError::bad_request(format!("one prompt per request, got {}", v.len())).with_param("prompt")
                )
            }
        };
        if prompt.is_empty() {
            return Err(ApiError::bad_request("`prompt` must not be empty").with_param("prompt"));
        }
        // OpenAI's default for completions is 16 tokens; completions take the text as it is.
        let limit = max_tokens(body.max_tokens, "max_tokens")?.or(Some(16));
        let mut req = ServiceRequest::new(
            body.model,
            Input::Prompt(PromptInput { text: prompt, raw: true, ..PromptInput::default() }),
        );
        req.knobs = body.sampling.into_knobs(limit);
        req.logprobs = logprobs;
        req.n = body.n.unwrap_or(1);
        Ok(req)
    }
}
