use hyperllama_core::{Message, Role, ToolSpec};
use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;

/// Why a chat template could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the model's chat template does not compile: {0}")]
    Syntax(String),
    #[error("the model's chat template rejected the conversation: {0}")]
    Render(String),
    #[error("the model has no chat template (tokenizer.chat_template); send a raw prompt instead")]
    Missing,
}

/// A model's own chat template (the Jinja text in `tokenizer.chat_template`), rendered the way
/// Hugging Face's `apply_chat_template` does: `trim_blocks` and `lstrip_blocks` on, Python
/// string methods available, and `raise_exception` to let the template refuse a conversation.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    source: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("source", &self.source).finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct TemplateMessage<'a> {
    role: &'a str,
    content: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

/// Tools and tool calls in the shape Hugging Face chat templates expect.
fn hf_function(name: &str, body: serde_json::Value) -> serde_json::Value {
    let mut f = serde_json::Map::new();
    f.insert("name".into(), name.into());
    if let serde_json::Value::Object(m) = body {
        f.extend(m);
    }
    serde_json::json!({ "type": "function", "function": f })
}

impl ChatTemplate {
    pub fn new(
        source: &str,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        // Llama 3.1/3.2 templates print today's date.
        env.add_function("strftime_now", |_fmt: String| -> Result<String, Error> { Ok(today()) });
        env.add_template_owned("chat", source.to_string()).map_err(|e| TemplateError::Syntax(e.to_string()))?;
        Ok(Self { env, bos_token: bos_token.into(), eos_token: eos_token.into(), source: source.to_string() })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template itself knows how to present tools.
    pub fn supports_tools(&self) -> bool {
        self.source.contains("tools")
    }

    /// Renders `messages`, ending with the assistant's turn opener when `add_generation_prompt`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, TemplateError> {
        self.render_with_tools(messages, &[], add_generation_prompt)
    }

    /// Renders with tools. A template that presents tools itself gets them as `tools` (HF's
    /// format); for one that does not, they are described in the system message with the
    /// widely trained `<tool_call>{json}</tool_call>` convention (see [`crate::tools`]).
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_with_reasoning(messages, tools, add_generation_prompt, None)
    }

    /// Renders with tools and the request's reasoning switches (`enable_thinking`,
    /// `reasoning_effort`), which templates of reasoning models read.
    pub fn render_with_reasoning(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        add_generation_prompt: bool,
        reasoning: Option<&hyperllama_core::Reasoning>,
    ) -> Result<String, TemplateError> {
        let injected;
        let messages = if !tools.is_empty() && !self.supports_tools() {
            injected = crate::tools::with_tool_instructions(messages, tools);
            &injected[..]
        } else {
            messages
        };
        let msgs: Vec<TemplateMessage<'_>> = messages
            .iter()
            .map(|m| TemplateMessage {
                role: m.role.as_str(),
                content: &m.content,
                tool_calls: m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        let mut v = hf_function(&c.name, serde_json::json!({ "arguments": c.arguments }));
                        if let Some(id) = &c.id {
                            v["id"] = id.clone().into();
                        }
                        v
                    })
                    .collect(),
                name: if m.role == Role::Tool { m.tool_name.as_deref() } else { None },
                tool_call_id: if m.role == Role::Tool { m.tool_call_id.as_deref() } else { None },
            })
            .collect();
        let tools_value: Option<Vec<serde_json::Value>> = (!tools.is_empty() && self.supports_tools()).then(|| {
            tools
                .iter()
                .map(|t| {
                    hf_function(
                        &t.name,
                        serde_json::json!({ "description": t.description, "parameters": t.parameters }),
                    )
                })
                .collect()
        });
        let tmpl = self.env.get_template("chat").map_err(|e| TemplateError::Syntax(e.to_string()))?;
        let mut vars: std::collections::BTreeMap<&str, minijinja::Value> = [
            ("messages", minijinja::Value::from_serialize(&msgs)),
            ("tools", minijinja::Value::from_serialize(&tools_value)),
            ("add_generation_prompt", minijinja::Value::from(add_generation_prompt)),
            ("bos_token", minijinja::Value::from(self.bos_token.clone())),
            ("eos_token", minijinja::Value::from(self.eos_token.clone())),
        ]
        .into();
        // Only what the request set: a template's `is defined` tests see the rest as undefined.
        if let Some(r) = reasoning {
            if let Some(on) = r.enabled {
                vars.insert("enable_thinking", on.into());
            }
            if let Some(effort) = &r.effort {
                vars.insert("reasoning_effort", effort.clone().into());
            }
        }
        tmpl.render(minijinja::Value::from_serialize(&vars))
        .map_err(|e| {
            // Prefer the template's own words (raise_exception) over minijinja's wrapper.
            let detail = e.detail().map(str::to_string).unwrap_or_else(|| e.to_string());
            TemplateError::Render(detail)
        })
    }
}

fn today() -> String {
    // Days since the epoch -> civil date (Howard Hinnant's algorithm), formatted "%d %b %Y".
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!("{d:02} {} {y}", MONTHS[(m - 1) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}/{name}")).expect("fixture")
    }

    fn convo() -> Vec<Message> {
        vec![Message::system("Be brief."), Message::user("Hi!"), Message::assistant("Hello."), Message::user("2+2?")]
    }

    #[test]
    fn smollm2_chatml() {
        let t = ChatTemplate::new(&fixture("smollm2.jinja"), "<|im_start|>", "<|im_end|>").expect("compiles");
        let out = t.render(&convo(), true).expect("renders");
        assert_eq!(
            out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n\
             <|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
        // Without a system message SmolLM2's template inserts its default one.
        let out = t.render(&[Message::user("Hi!")], false).expect("renders");
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi!<|im_end|>\n"
        );
    }

    #[test]
    fn llama3_headers_and_bos() {
        let t = ChatTemplate::new(&fixture("llama3.jinja"), "<|begin_of_text|>", "<|eot_id|>").expect("compiles");
        let out = t.render(&[Message::system("S "), Message::user(" Q")], true).expect("renders");
        assert_eq!(
            out,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn mistral_inst_and_alternation_error() {
        let t = ChatTemplate::new(&fixture("mistral.jinja"), "<s>", "</s>").expect("compiles");
        let out =
            t.render(&[Message::user("Hi"), Message::assistant("Hey"), Message::user("Bye")], true).expect("renders");
        assert_eq!(out, "<s>[INST] Hi [/INST]Hey</s>[INST] Bye [/INST]");
        let err = t.render(&[Message::user("a"), Message::user("b")], true).unwrap_err();
        assert!(err.to_string().contains("alternate"), "{err}");
    }

    #[test]
    fn gemma_python_methods_and_role_rename() {
        let t = ChatTemplate::new(&fixture("gemma.jinja"), "<bos>", "<eos>").expect("compiles");
        let out = t.render(&[Message::user("  Hi  "), Message::assistant("Yo")], false).expect("renders");
        assert_eq!(out, "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nYo<end_of_turn>\n");
        let err = t.render(&[Message::system("x"), Message::user("y")], true).unwrap_err();
        assert!(err.to_string().contains("System role not supported"), "{err}");
    }

    #[test]
    fn syntax_error_is_reported() {
        let err = ChatTemplate::new("{% for m in messages %}", "", "").unwrap_err();
        assert!(matches!(err, TemplateError::Syntax(_)), "{err}");
    }

    #[test]
    fn today_is_a_date() {
        let d = today();
        assert_eq!(d.len(), 11, "{d}");
        assert!(d[7..].parse::<u32>().expect("year") >= 2024);
    }
}
