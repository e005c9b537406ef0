//! `hyperllama template`: renders a chat template exactly as the server does, for checking
//! what a model is shown. The template comes from a model (its GGUF's
//! `tokenizer.chat_template`, with its BOS/EOS tokens) or a `.jinja` file; the conversation
//! is JSON in the Hugging Face / OpenAI shape.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use hyperllama_core::{Message, Role, ToolCall, ToolSpec};
use hyperllama_engine::ChatTemplate;
use serde::Deserialize;

#[derive(Args, Debug)]
pub struct TemplateArgs {
    /// A model whose template to use: a store name or a GGUF file.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    model: Option<String>,
    /// A Jinja chat template file instead of a model's.
    #[arg(long, value_name = "TEMPLATE.jinja")]
    file: Option<PathBuf>,
    /// The messages: a JSON array (`[{"role": "user", "content": "Hi"}]`), `@FILE`, or `-` for
    /// stdin. Messages may carry `tool_calls`, `tool_call_id`, `name` and `reasoning_content`.
    #[arg(long, default_value = "-")]
    messages: String,
    /// Tools: a JSON array in OpenAI's shape (`[{"type": "function", "function": {...}}]`),
    /// or `@FILE`.
    #[arg(long)]
    tools: Option<String>,
    /// Leave out the assistant's turn opener (`add_generation_prompt=False`).
    #[arg(long)]
    no_generation_prompt: bool,
    /// The BOS token text (default: the model's; empty for a file).
    #[arg(long)]
    bos: Option<String>,
    /// The EOS token text (default: the model's; empty for a file).
    #[arg(long)]
    eos: Option<String>,
    /// A template variable, `NAME=JSON` (`enable_thinking=false`, `reasoning_effort="low"`);
    /// repeatable.
    #[arg(long = "var", value_name = "NAME=JSON")]
    vars: Vec<String>,
    /// The time `strftime_now` reads (`2024-07-26` or `2024-07-26T10:00:00`) instead of the
    /// clock.
    #[arg(long, value_name = "DATE")]
    now: Option<String>,
}

/// A message as Hugging Face's `apply_chat_template` takes it.
#[derive(Deserialize)]
struct HfMessage {
    role: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<HfToolCall>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, alias = "thinking", alias = "reasoning")]
    reasoning_content: Option<String>,
}

#[derive(Deserialize)]
struct HfToolCall {
    #[serde(default)]
    id: Option<String>,
    function: HfFunction,
}

#[derive(Deserialize)]
struct HfFunction {
    name: String,
    #[serde(default)]
    arguments: serde_json::Value,
}

#[derive(Deserialize)]
struct HfTool {
    function: HfToolFunction,
}

#[derive(Deserialize)]
struct HfToolFunction {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    parameters: serde_json::Value,
}

fn read_json(arg: &str, what: &str) -> anyhow::Result<String> {
    if arg == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).with_context(|| format!("reading the {what} from stdin"))?;
        Ok(s)
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path).with_context(|| format!("reading the {what} from {path}"))
    } else {
        Ok(arg.to_string())
    }
}

fn message(m: HfMessage) -> anyhow::Result<Message> {
    let role = match m.role.as_str() {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        other => anyhow::bail!("unknown message role {other:?} (system, user, assistant, tool)"),
    };
    Ok(Message {
        role,
        content: m.content.unwrap_or_default(),
        tool_calls: m
            .tool_calls
            .into_iter()
            .map(|c| {
                // Arguments as a JSON string (OpenAI's wire form) become the object they spell.
                let arguments = match c.function.arguments {
                    serde_json::Value::String(s) => serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s)),
                    v => v,
                };
                ToolCall { id: c.id, name: c.function.name, arguments }
            })
            .collect(),
        tool_name: m.name,
        tool_call_id: m.tool_call_id,
        thinking: m.reasoning_content,
    })
}

fn clock(now: &str) -> anyhow::Result<chrono::NaiveDateTime> {
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(now, "%Y-%m-%dT%H:%M:%S") {
        return Ok(t);
    }
    chrono::NaiveDate::parse_from_str(now, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .with_context(|| format!("--now {now:?}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS"))
}

pub async fn run(args: TemplateArgs) -> anyhow::Result<()> {
    let (source, bos, eos) = match (&args.file, &args.model) {
        (Some(file), _) => (
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?,
            String::new(),
            String::new(),
        ),
        (None, Some(model)) => {
            let path = if model.to_ascii_lowercase().ends_with(".gguf") && std::path::Path::new(model).exists() {
                PathBuf::from(model)
            } else {
                let dir = crate::commands::serve::models_dir(None)?;
                let store = hyperllama_store::Store::open(&dir)
                    .with_context(|| format!("opening the model store {}", dir.display()))?;
                let name = hyperllama_store::ModelName::parse(model)?;
                let (_, manifest) = store.resolve(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
                store.blob_path(&manifest.model)
            };
            let gguf = hyperllama_gguf::GgufFile::open(&path).with_context(|| format!("reading {}", path.display()))?;
            let Some(source) = gguf.chat_template() else {
                anyhow::bail!(
                    "{model} has no chat template: prompts pass through as they are, and chats are rendered as a \
                     plain transcript (`hyperllama show {model}`)"
                );
            };
            (
                source.to_string(),
                gguf.bos_token().unwrap_or_default().to_string(),
                gguf.eos_token().unwrap_or_default().to_string(),
            )
        }
        (None, None) => anyhow::bail!("give a model or --file TEMPLATE.jinja"),
    };
    let mut template = ChatTemplate::new(&source, args.bos.unwrap_or(bos), args.eos.unwrap_or(eos))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(now) = &args.now {
        template.set_clock(Some(clock(now)?));
    }
    let messages: Vec<HfMessage> = serde_json::from_str(&read_json(&args.messages, "messages")?)
        .context("the messages are not a JSON array of {role, content, ...}")?;
    let messages = messages.into_iter().map(message).collect::<anyhow::Result<Vec<_>>>()?;
    let tools: Vec<ToolSpec> = match &args.tools {
        None => Vec::new(),
        Some(t) => {
            let tools: Vec<HfTool> = serde_json::from_str(&read_json(t, "tools")?)
                .context("the tools are not a JSON array of {type: \"function\", function: {name, ...}}")?;
            tools
                .into_iter()
                .map(|t| ToolSpec {
                    name: t.function.name,
                    description: t.function.description,
                    parameters: t.function.parameters,
                })
                .collect()
        }
    };
    let vars = args
        .vars
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').with_context(|| format!("--var {kv:?}: expected NAME=JSON"))?;
            let v = serde_json::from_str(v).with_context(|| format!("--var {k}: {v:?} is not JSON"))?;
            Ok((k.to_string(), v))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let text = template
        .render_with_vars(&messages, &tools, !args.no_generation_prompt, &vars)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}
