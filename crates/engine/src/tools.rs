//! Tool calling for models whose chat template has no tool support of its own.
//!
//! Templates that present tools (Llama 3.1+, Qwen 2.5+, Mistral, Hermes) get them through
//! the `tools` variable. For the others (SmolLM2 among them) the tools are described in the
//! system message using the Hermes convention that many open models were trained on:
//! `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`. [`parse_tool_calls`] reads
//! that convention, and also a bare JSON object with `name` and `arguments`, back out of the
//! generated text.

use hyperllama_core::{Message, Role, ToolCall, ToolSpec};

/// `messages` with the tool instructions added to the system message (or a new one first).
pub fn with_tool_instructions(messages: &[Message], tools: &[ToolSpec]) -> Vec<Message> {
    let specs: Vec<serde_json::Value> = tools
        .iter()
        .map(|t| serde_json::json!({"name": t.name, "description": t.description, "parameters": t.parameters}))
        .collect();
    let instructions = format!(
        "You can call functions. The available functions are:\n<tools>\n{}\n</tools>\n\
         To call a function, reply with only <tool_call>{{\"name\": \"function name\", \"arguments\": {{...}}}}</tool_call>. \
         Otherwise, answer normally.",
        serde_json::to_string(&specs).unwrap_or_default()
    );
    let mut out = messages.to_vec();
    match out.first_mut() {
        Some(m) if m.role == Role::System => m.content = format!("{}\n\n{instructions}", m.content),
        _ => out.insert(0, Message::system(instructions)),
    }
    out
}

/// The tool calls in `text`, or `None` when it is an ordinary answer.
pub fn parse_tool_calls(text: &str) -> Option<Vec<ToolCall>> {
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<tool_call>") {
        let after = &rest[start + "<tool_call>".len()..];
        let end = after.find("</tool_call>").unwrap_or(after.len());
        if let Some(call) = call_from_json(after[..end].trim()) {
            calls.push(call);
        }
        rest = &after[end..];
    }
    if calls.is_empty() {
        let t = text.trim();
        let t = t.strip_prefix("```json").or_else(|| t.strip_prefix("```")).unwrap_or(t);
        let t = t.strip_suffix("```").unwrap_or(t).trim();
        if let Some(call) = call_from_json(t) {
            calls.push(call);
        }
    }
    (!calls.is_empty()).then_some(calls)
}

fn call_from_json(s: &str) -> Option<ToolCall> {
    let v: serde_json::Value = serde_json::from_str(s).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let arguments = v.get("arguments").or_else(|| v.get("parameters")).cloned().unwrap_or(serde_json::json!({}));
    // Some models write the arguments as a JSON string.
    let arguments = match arguments {
        serde_json::Value::String(s) => serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s)),
        v => v,
    };
    Some(ToolCall::new(name, arguments))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hermes_tags_and_bare_json() {
        let calls = parse_tool_calls(
            "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}</tool_call>\n\
             <tool_call>{\"name\": \"time\", \"arguments\": \"{}\"}</tool_call>",
        )
        .expect("calls");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments["city"], "Paris");
        assert_eq!(calls[1].arguments, serde_json::json!({}));
        let bare = parse_tool_calls("```json\n{\"name\": \"f\", \"parameters\": {\"x\": 1}}\n```").expect("bare");
        assert_eq!(bare[0].arguments["x"], 1);
        assert!(parse_tool_calls("The weather in Paris is sunny.").is_none());
        assert!(parse_tool_calls("{\"answer\": 42}").is_none());
    }

    #[test]
    fn instructions_join_the_system_message() {
        let tools =
            vec![ToolSpec { name: "f".into(), description: "does f".into(), parameters: serde_json::json!({}) }];
        let m = with_tool_instructions(&[Message::system("Be brief."), Message::user("hi")], &tools);
        assert_eq!(m.len(), 2);
        assert!(m[0].content.starts_with("Be brief.") && m[0].content.contains("<tools>"));
        let m = with_tool_instructions(&[Message::user("hi")], &tools);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].role, Role::System);
    }
}
