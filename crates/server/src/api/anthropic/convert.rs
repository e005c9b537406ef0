//! Anthropic's bodies into the one service request.

use std::collections::HashMap;

use hyperllama_core::{Message, Role, ToolCall, ToolSpec};
use serde_json::Value;

use super::types::{CountTokensBody, InputMessage, MessagesBody, ThinkingDef, ToolChoiceDef, ToolDef};
use crate::error::ApiError;
use crate::service::{Input, Knobs, Overflow, ServiceRequest, Think, ToolChoice};

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// `system`: a string or a list of text blocks.
fn system_text(v: Option<&Value>) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(blocks)) => {
            let mut out = Vec::new();
            for (i, b) in blocks.iter().enumerate() {
                match (b.get("type").and_then(Value::as_str), b.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => out.push(t.to_string()),
                    _ => return Err(bad(format!("system.{i}: system blocks must be text blocks")).with_param("system")),
                }
            }
            Ok(Some(out.join("\n")))
        }
        Some(_) => Err(bad("system: must be a string or a list of text blocks").with_param("system")),
    }
}

/// A `tool_result`'s content: a string or text blocks.
fn result_text(v: Option<&Value>, at: &str) -> Result<String, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(blocks)) => {
            let mut out = Vec::new();
            for b in blocks {
                match (b.get("type").and_then(Value::as_str), b.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => out.push(t.to_string()),
                    (Some(kind), _) => {
                        return Err(bad(format!("{at}.content: {kind} blocks in tool results are not supported"))
                            .with_param("messages"))
                    }
                    _ => return Err(bad(format!("{at}.content: every block needs a type")).with_param("messages")),
                }
            }
            Ok(out.join("\n"))
        }
        Some(_) => Err(bad(format!("{at}.content: must be a string or a list of blocks")).with_param("messages")),
    }
}

/// The conversation: each Anthropic message becomes one message, except that a user
/// message's `tool_result` blocks become tool messages of their own (before its text).
pub fn convert_messages(messages: &[InputMessage], system: Option<&Value>) -> Result<Vec<Message>, ApiError> {
    if messages.is_empty() {
        return Err(bad("messages: at least one message is required").with_param("messages"));
    }
    let mut out = Vec::new();
    if let Some(s) = system_text(system)? {
        out.push(Message::system(s));
    }
    let mut call_names: HashMap<String, String> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "system" => Role::System,
            other => {
                return Err(
                    bad(format!("messages.{i}.role: {other:?} is not one of user, assistant")).with_param("messages")
                )
            }
        };
        let blocks: Vec<Value> = match &m.content {
            Value::String(s) => vec![serde_json::json!({ "type": "text", "text": s })],
            Value::Array(b) => b.clone(),
            _ => {
                return Err(bad(format!("messages.{i}.content: must be a string or a list of content blocks"))
                    .with_param("messages"))
            }
        };
        let mut msg = Message::new(role, String::new());
        let mut texts = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            let kind = b.get("type").and_then(Value::as_str).unwrap_or("");
            let str_field = |name: &str| -> Result<String, ApiError> {
                b.get(name)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("{at}.{name}: Field required")).with_param("messages"))
            };
            match (kind, role) {
                ("text", _) => texts.push(str_field("text")?),
                ("image" | "document", _) => {
                    return Err(bad(format!("{at}: {kind} blocks are not supported: this model reads text only"))
                        .with_param("messages"))
                }
                ("tool_use", Role::Assistant) => {
                    let id = str_field("id")?;
                    let name = str_field("name")?;
                    let input = b.get("input").cloned().unwrap_or_else(|| serde_json::json!({}));
                    if !input.is_object() {
                        return Err(bad(format!("{at}.input: must be an object")).with_param("messages"));
                    }
                    call_names.insert(id.clone(), name.clone());
                    msg.tool_calls.push(ToolCall { id: Some(id), name, arguments: input });
                }
                ("tool_result", Role::User) => {
                    let id = str_field("tool_use_id")?;
                    let mut content = result_text(b.get("content"), &at)?;
                    if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                        content = format!("Error: {content}");
                    }
                    let mut tool = Message::new(Role::Tool, content);
                    tool.tool_name = call_names.get(&id).cloned();
                    tool.tool_call_id = Some(id);
                    out.push(tool);
                }
                ("thinking", Role::Assistant) => msg.thinking = Some(str_field("thinking")?),
                // Opaque, and nothing this server can read back: dropped.
                ("redacted_thinking", Role::Assistant) => {}
                ("tool_use" | "thinking" | "redacted_thinking", _) => {
                    return Err(bad(format!("{at}: {kind} blocks belong in assistant messages")).with_param("messages"))
                }
                ("tool_result", _) => {
                    return Err(bad(format!("{at}: tool_result blocks belong in user messages")).with_param("messages"))
                }
                ("", _) => return Err(bad(format!("{at}.type: Field required")).with_param("messages")),
                (other, _) => {
                    return Err(bad(format!(
                    "{at}.type: unknown content block type {other:?}; supported: text, tool_use, tool_result, thinking"
                ))
                    .with_param("messages"))
                }
            }
        }
        msg.content = texts.join("\n");
        // A user message of tool results only adds no empty user turn.
        if !(role == Role::User && msg.content.is_empty() && blocks.iter().all(|b| b["type"] == "tool_result")) {
            out.push(msg);
        }
    }
    Ok(out)
}

fn tools(defs: &[ToolDef]) -> Result<Vec<ToolSpec>, ApiError> {
    defs.iter()
        .enumerate()
        .map(|(i, t)| {
            if let Some(kind) = t.kind.as_deref().filter(|k| *k != "custom") {
                return Err(bad(format!("tools.{i}: server tool {kind:?} is not available; only client tools"))
                    .with_param("tools"));
            }
            if t.name.trim().is_empty() {
                return Err(bad(format!("tools.{i}.name: must not be empty")).with_param("tools"));
            }
            if !t.input_schema.is_object() {
                return Err(
                    bad(format!("tools.{i}.input_schema: Field required (a JSON Schema object)")).with_param("tools")
                );
            }
            Ok(ToolSpec {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: t.input_schema.clone(),
            })
        })
        .collect()
}

fn tool_choice(c: Option<&ToolChoiceDef>) -> Result<(ToolChoice, bool), ApiError> {
    let Some(c) = c else { return Ok((ToolChoice::Auto, true)) };
    let choice = match c.kind.as_str() {
        "auto" => ToolChoice::Auto,
        "any" => ToolChoice::Required,
        "none" => ToolChoice::None,
        "tool" => match &c.name {
            Some(n) => ToolChoice::Named(n.clone()),
            None => return Err(bad("tool_choice.name: Field required").with_param("tool_choice")),
        },
        other => {
            return Err(bad(format!("tool_choice.type: {other:?} is not one of auto, any, tool, none"))
                .with_param("tool_choice"))
        }
    };
    Ok((choice, !c.disable_parallel_tool_use))
}

fn thinking(t: Option<&ThinkingDef>) -> Result<Think, ApiError> {
    Ok(match t {
        None => Think::default(),
        Some(t) => match t.kind.as_str() {
            "enabled" => match t.budget_tokens {
                Some(b) if b >= 1 => Think { enabled: Some(true), budget: Some(b), ..Think::default() },
                _ => return Err(bad("thinking.budget_tokens: a positive number is required").with_param("thinking")),
            },
            "adaptive" => Think { enabled: Some(true), ..Think::default() },
            "disabled" => Think { enabled: Some(false), ..Think::default() },
            other => {
                return Err(bad(format!("thinking.type: {other:?} is not one of enabled, disabled, adaptive"))
                    .with_param("thinking"))
            }
        },
    })
}

impl TryFrom<MessagesBody> for ServiceRequest {
    type Error = ApiError;
    fn try_from(body: MessagesBody) -> Result<Self, ApiError> {
        if body.model.trim().is_empty() {
            return Err(bad("model: Field required").with_param("model"));
        }
        let max_tokens = match body.max_tokens {
            None => return Err(bad("max_tokens: Field required").with_param("max_tokens")),
            Some(n) if n < 1 => {
                return Err(bad(format!("max_tokens: must be at least 1, got {n}")).with_param("max_tokens"))
            }
            Some(n) => n,
        };
        if body.stop_sequences.iter().any(String::is_empty) {
            return Err(bad("stop_sequences: must not contain empty strings").with_param("stop_sequences"));
        }
        if let Some(think) = &body.thinking {
            if think.kind == "enabled" && think.budget_tokens.is_some_and(|b| i64::from(b) >= max_tokens) {
                return Err(bad("max_tokens: must be greater than thinking.budget_tokens").with_param("max_tokens"));
            }
        }
        let messages = convert_messages(&body.messages, body.system.as_ref())?;
        let mut req = ServiceRequest::new(body.model, Input::Chat(messages));
        let load = body.options.unwrap_or_default();
        req.knobs = Knobs {
            temperature: body.temperature,
            top_p: body.top_p,
            top_k: body.top_k,
            seed: body.seed,
            max_tokens: Some(max_tokens),
            stop: (!body.stop_sequences.is_empty()).then_some(body.stop_sequences),
            truncate: body.truncate,
            num_ctx: load.num_ctx,
            num_thread: load.num_thread,
            num_gpu: load.num_gpu,
            engine: load.engine,
            ..Knobs::default()
        };
        req.tools = tools(&body.tools)?;
        (req.tool_choice, req.parallel_tool_calls) = tool_choice(body.tool_choice.as_ref())?;
        req.think = thinking(body.thinking.as_ref())?;
        req.overflow = Overflow { clamp_output: false, truncate: false };
        Ok(req)
    }
}

impl TryFrom<CountTokensBody> for ServiceRequest {
    type Error = ApiError;
    fn try_from(body: CountTokensBody) -> Result<Self, ApiError> {
        if body.model.trim().is_empty() {
            return Err(bad("model: Field required").with_param("model"));
        }
        let messages = convert_messages(&body.messages, body.system.as_ref())?;
        let mut req = ServiceRequest::new(body.model, Input::Chat(messages));
        req.tools = tools(&body.tools)?;
        (req.tool_choice, req.parallel_tool_calls) = tool_choice(body.tool_choice.as_ref())?;
        req.think = thinking(body.thinking.as_ref())?;
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(v: Value) -> Vec<InputMessage> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn blocks_become_messages_and_tool_results_name_their_call() {
        let m = msgs(serde_json::json!([
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "use the tool", "signature": ""},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]}]}
        ]));
        let out = convert_messages(&m, Some(&serde_json::json!([{"type": "text", "text": "Be brief."}]))).unwrap();
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!((out[0].role, out[0].content.as_str()), (Role::System, "Be brief."));
        assert_eq!(out[2].tool_calls[0].arguments["city"], "Paris");
        assert_eq!(out[2].thinking.as_deref(), Some("use the tool"));
        assert_eq!((out[3].role, out[3].content.as_str()), (Role::Tool, "sunny"));
        assert_eq!(out[3].tool_name.as_deref(), Some("get_weather"));
    }

    #[test]
    fn unknown_and_misplaced_blocks_are_named() {
        let e = convert_messages(&msgs(serde_json::json!([{"role": "user", "content": [{"type": "video"}]}])), None)
            .unwrap_err();
        assert!(e.message.contains("messages.0.content.0.type") && e.message.contains("video"), "{}", e.message);
        let e = convert_messages(
            &msgs(serde_json::json!([{"role": "user", "content": [{"type": "image", "source": {}}]}])),
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("image"), "{}", e.message);
        let e = convert_messages(
            &msgs(serde_json::json!([{"role": "user", "content": [{"type": "tool_use", "id": "x", "name": "f", "input": {}}]}])),
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("assistant"), "{}", e.message);
    }
}
