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
    let mut out = as_plain_history(messages);
    match out.first_mut() {
        Some(m) if m.role == Role::System => m.content = format!("{}\n\n{instructions}", m.content),
        _ => out.insert(0, Message::system(instructions)),
    }
    out
}

/// A history with tool calls and results written in the same convention, for templates that
/// know neither: an assistant's calls become `<tool_call>{json}</tool_call>` lines of its
/// text, a tool's result a user turn `<tool_response>...</tool_response>`, and consecutive
/// user turns are joined, so templates that insist on alternating roles accept it.
pub fn as_plain_history(messages: &[Message]) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len());
    for m in messages {
        let mut m = m.clone();
        if !m.tool_calls.is_empty() {
            for c in std::mem::take(&mut m.tool_calls) {
                let call = serde_json::json!({ "name": c.name, "arguments": c.arguments });
                if !m.content.is_empty() {
                    m.content.push('\n');
                }
                m.content.push_str(&format!("<tool_call>{call}</tool_call>"));
            }
        }
        if m.role == Role::Tool {
            m = Message::user(format!("<tool_response>\n{}\n</tool_response>", m.content));
        }
        match out.last_mut() {
            Some(prev) if prev.role == Role::User && m.role == Role::User => {
                prev.content.push('\n');
                prev.content.push_str(&m.content);
            }
            _ => out.push(m),
        }
    }
    out
}

/// Whether a history carries tool calls or results (which a template without tool support
/// cannot show as they are).
pub fn has_tool_turns(messages: &[Message]) -> bool {
    messages.iter().any(|m| m.role == Role::Tool || !m.tool_calls.is_empty())
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
    fn tool_turns_become_plain_alternating_turns() {
        let mut call = Message::assistant("");
        call.tool_calls = vec![ToolCall::new("get_weather", serde_json::json!({"city": "Paris"}))];
        let mut result = Message::user("{\"temp\": 21}");
        result.role = Role::Tool;
        let plain = as_plain_history(&[Message::user("Weather?"), call, result, Message::user("Tomorrow?")]);
        let roles: Vec<Role> = plain.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::User]);
        assert_eq!(
            plain[1].content,
            "<tool_call>{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}</tool_call>"
        );
        assert_eq!(plain[2].content, "<tool_response>\n{\"temp\": 21}\n</tool_response>\nTomorrow?");
        assert!(plain.iter().all(|m| m.tool_calls.is_empty()));
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
