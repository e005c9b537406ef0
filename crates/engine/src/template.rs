use hyperllama_core::{Message, Role, ToolSpec};
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;

use crate::pyfmt;

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
/// Hugging Face's `apply_chat_template` (transformers 5) does: `trim_blocks` and
/// `lstrip_blocks` on, Python string methods, `raise_exception`, `strftime_now`, `namespace`,
/// `{% break %}`/`{% continue %}`, `{% generation %}` blocks, HF's `tojson` (Python's
/// `json.dumps`: `indent`, `separators`, `sort_keys`, `ensure_ascii`), Python's `str()` for
/// the `string` filter and for printed dicts, lists, `None` and bools, and the variables HF
/// passes (`messages`, `tools`, `documents`, `add_generation_prompt`, `bos_token`,
/// `eos_token`, and what the request adds: `enable_thinking`, `reasoning_effort`). The
/// conformance test renders real templates of a dozen families both here and with Python's
/// `jinja2` under HF's settings and compares them byte for byte.
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
    /// HF sets both reasoning names when either is given (`_alias_reasoning_fields`): Qwen3
    /// reads `reasoning_content`, gpt-oss `thinking`.
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a str>,
    role: &'a str,
    content: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
}

/// `{% generation %}...{% endgeneration %}` (HF's marker of assistant text for training
/// masks) renders its body unchanged; minijinja has no such tag, so it becomes an `if true`
/// with the same whitespace control, which trims exactly as the original tag does.
fn without_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let (open, body) = match inner.strip_prefix(['-', '+']) {
            Some(b) => (&inner[..1], b),
            None => ("", inner),
        };
        let (body, close) = match body.strip_suffix(['-', '+']) {
            Some(b) => (b, &body[body.len() - 1..]),
            None => (body, ""),
        };
        match body.trim() {
            "generation" => out.push_str(&format!("{{%{open} if true {close}%}}")),
            "endgeneration" => out.push_str(&format!("{{%{open} endif {close}%}}")),
            _ => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

/// HF's `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) if v.kind() == ValueKind::Number => Some(" ".repeat(i64::try_from(v)?.max(0) as usize)),
        Some(v) => Some(v.as_str().unwrap_or_default().to_string()),
    };
    let mut opts = pyfmt::JsonOptions::new(indent);
    if let Some(seps) = kwargs.get::<Option<Vec<String>>>("separators")? {
        if let [item, key] = &seps[..] {
            opts.item_separator = item.clone();
            opts.key_separator = key.clone();
        }
    }
    opts.sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    opts.ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    Ok(Value::from_safe_string(pyfmt::json_dumps(value, &opts)?))
}

/// `{{ value }}` as Jinja2 in Python prints it: `None`, `True`, `{'a': 1}`.
fn python_formatter(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &Value,
) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Map | ValueKind::Seq => {
            out.write_str(&pyfmt::py_str(value)).map_err(Error::from)
        }
        ValueKind::Number if !value.is_integer() => out.write_str(&pyfmt::py_str(value)).map_err(Error::from),
        _ => minijinja::escape_formatter(out, state, value),
    }
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
        env.set_formatter(python_formatter);
        env.add_filter("tojson", tojson);
        env.add_filter("string", |v: &Value| -> Value { Value::from(pyfmt::py_str(v)) });
        // Jinja2's tests, which differ from minijinja's at the edges templates probe:
        // `none is iterable` is false (Qwen3-Coder: `tools is iterable and tools | length`),
        // an undefined value is iterable (empty), and strings and dicts are sequences.
        env.add_test("iterable", |v: &Value| {
            matches!(
                v.kind(),
                ValueKind::Undefined
                    | ValueKind::String
                    | ValueKind::Seq
                    | ValueKind::Map
                    | ValueKind::Iterable
                    | ValueKind::Bytes
            )
        });
        env.add_test("sequence", |v: &Value| {
            matches!(v.kind(), ValueKind::String | ValueKind::Seq | ValueKind::Map | ValueKind::Bytes)
        });
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        let mut template =
            Self { env, bos_token: bos_token.into(), eos_token: eos_token.into(), source: source.to_string() };
        template.set_clock(None);
        template
            .env
            .add_template_owned("chat", without_generation_tags(source))
            .map_err(|e| TemplateError::Syntax(e.to_string()))?;
        Ok(template)
    }

    /// What `strftime_now` reads (Llama 3.x and gpt-oss print today's date): the local clock,
    /// or a fixed time (reproducible renders, tests).
    pub fn set_clock(&mut self, fixed: Option<chrono::NaiveDateTime>) {
        self.env.add_function("strftime_now", move |fmt: String| -> Result<String, Error> {
            let now = fixed.unwrap_or_else(|| chrono::Local::now().naive_local());
            let mut out = String::new();
            std::fmt::Write::write_fmt(&mut out, format_args!("{}", now.format(&fmt))).map_err(|_| {
                Error::new(ErrorKind::InvalidOperation, format!("strftime_now: invalid format {fmt:?}"))
            })?;
            Ok(out)
        });
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
        // Only what the request set: a template's `is defined` tests see the rest as undefined.
        let mut vars = Vec::new();
        if let Some(r) = reasoning {
            if let Some(on) = r.enabled {
                vars.push(("enable_thinking".to_string(), serde_json::Value::from(on)));
            }
            if let Some(effort) = &r.effort {
                vars.push(("reasoning_effort".to_string(), serde_json::Value::from(effort.clone())));
            }
        }
        self.render_with_vars(messages, tools, add_generation_prompt, &vars)
    }

    /// Renders with extra template variables (`enable_thinking`, `reasoning_effort`,
    /// `builtin_tools`, ...), as `apply_chat_template(**kwargs)` passes them.
    pub fn render_with_vars(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        add_generation_prompt: bool,
        extra: &[(String, serde_json::Value)],
    ) -> Result<String, TemplateError> {
        let injected;
        let messages = if !tools.is_empty() && !self.supports_tools() {
            injected = crate::tools::with_tool_instructions(messages, tools);
            &injected[..]
        } else if !self.supports_tools() && crate::tools::has_tool_turns(messages) {
            injected = crate::tools::as_plain_history(messages);
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
                        // OpenAI's order: `{id, type, function}`, as clients send it back.
                        let mut v = serde_json::Map::new();
                        if let Some(id) = &c.id {
                            v.insert("id".into(), id.clone().into());
                        }
                        let f = hf_function(&c.name, serde_json::json!({ "arguments": c.arguments }));
                        if let serde_json::Value::Object(f) = f {
                            v.extend(f);
                        }
                        serde_json::Value::Object(v)
                    })
                    .collect(),
                name: if m.role == Role::Tool { m.tool_name.as_deref() } else { None },
                tool_call_id: if m.role == Role::Tool { m.tool_call_id.as_deref() } else { None },
                thinking: m.thinking.as_deref(),
                reasoning_content: m.thinking.as_deref(),
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
        let mut vars: std::collections::BTreeMap<String, Value> = [
            ("messages", Value::from_serialize(&msgs)),
            ("tools", Value::from_serialize(&tools_value)),
            ("documents", Value::from(())),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("bos_token", Value::from(self.bos_token.clone())),
            ("eos_token", Value::from(self.eos_token.clone())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in extra {
            vars.insert(k.clone(), Value::from_serialize(v));
        }
        tmpl.render(Value::from_serialize(&vars)).map_err(|e| {
            // Prefer the template's own words (raise_exception) over minijinja's wrapper.
            let detail = e.detail().map(str::to_string).unwrap_or_else(|| e.to_string());
            TemplateError::Render(detail)
        })
    }
}

/// What `show` calls the transcript format of models without a chat template.
pub const FALLBACK_TEMPLATE_NAME: &str = "plain transcript (the model has no chat template)";

/// A conversation for a model without a chat template (a base model): a plain transcript,
/// `System:`, `User:`, `Assistant:` and `Tool:` lines, ending with `Assistant:` for the model
/// to continue. Tools, if any, are described first, in the same convention as for templates
/// without tool support.
pub fn fallback_chat(messages: &[Message], tools: &[ToolSpec]) -> String {
    let with_tools;
    let messages = if tools.is_empty() {
        messages
    } else {
        with_tools = crate::tools::with_tool_instructions(messages, tools);
        &with_tools[..]
    };
    let mut out = String::new();
    for m in messages {
        let who = match m.role {
            Role::System => "System".to_string(),
            Role::User => "User".to_string(),
            Role::Assistant => "Assistant".to_string(),
            Role::Tool => match &m.tool_name {
                Some(name) => format!("Tool ({name})"),
                None => "Tool".to_string(),
            },
        };
        out.push_str(&who);
        out.push_str(": ");
        out.push_str(m.content.trim());
        for c in &m.tool_calls {
            out.push_str(&format!(
                "\n<tool_call>{}</tool_call>",
                serde_json::json!({ "name": c.name, "arguments": c.arguments })
            ));
        }
        out.push('\n');
    }
    out.push_str("Assistant:");
    out
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
    fn strftime_now_formats_the_clock() {
        let mut t = ChatTemplate::new("{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d') }}", "", "")
            .expect("compiles");
        let today = t.render(&[], false).expect("renders");
        assert_eq!(today.len(), 22, "{today}");
        t.set_clock(chrono::NaiveDate::from_ymd_opt(2024, 7, 26).and_then(|d| d.and_hms_opt(0, 0, 0)));
        assert_eq!(t.render(&[], false).expect("renders"), "26 Jul 2024|2024-07-26");
    }

    #[test]
    fn python_spellings() {
        let t = ChatTemplate::new(
            "{{ {'a': 1, 'b': [true, none]} | tojson }}|{{ {'b': 1, 'a': 2} | tojson(indent=2, sort_keys=true) }}|\
             {{ {'k': 'v'} | string }}|{{ none }}|{{ true }}|{{ 1.0 }}|{{ [1, 'x'] }}",
            "",
            "",
        )
        .expect("compiles");
        assert_eq!(
            t.render(&[], false).expect("renders"),
            "{\"a\": 1, \"b\": [true, null]}|{\n  \"a\": 2,\n  \"b\": 1\n}|{'k': 'v'}|None|True|1.0|[1, 'x']"
        );
    }

    #[test]
    fn generation_blocks_render_their_body() {
        let src = "{% for m in messages %}{%- generation -%}\n[{{ m.content }}]\n{%- endgeneration %}\n{% endfor %}";
        assert_eq!(
            without_generation_tags(src),
            "{% for m in messages %}{%- if true -%}\n[{{ m.content }}]\n{%- endif %}\n{% endfor %}"
        );
        let t = ChatTemplate::new(src, "", "").expect("compiles");
        assert_eq!(t.render(&[Message::user("a"), Message::user("b")], false).expect("renders"), "[a][b]");
    }
}
