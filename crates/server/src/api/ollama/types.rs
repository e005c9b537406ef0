use hyperllama_core::{Message, Role, ToolCall};
use serde::Deserialize;

use crate::api::common::ToolDto;
use crate::error::ApiError;
use crate::service::Knobs;

/// Ollama's `options`: the knobs by Ollama's names (unknown keys are kept, reported, ignored).
pub type Options = Knobs;

#[derive(Debug, Deserialize)]
pub struct GenerateBody {
    pub model: String,
    #[serde(default)]
    pub prompt: String,
    pub suffix: Option<String>,
    pub system: Option<String>,
    pub template: Option<String>,
    #[serde(default)]
    pub raw: bool,
    pub format: Option<serde_json::Value>,
    #[serde(default)]
    pub options: Options,
    pub stream: Option<bool>,
    pub keep_alive: Option<serde_json::Value>,
    #[serde(default)]
    pub images: Vec<String>,
    #[serde(default)]
    pub think: Option<serde_json::Value>,
    /// Drop the oldest messages when the prompt does not fit (default: refuse with a 400).
    pub truncate: Option<bool>,
    #[serde(default)]
    pub logprobs: bool,
    pub top_logprobs: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct ChatBody {
    pub model: String,
    #[serde(default)]
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub tools: Vec<ToolDto>,
    pub format: Option<serde_json::Value>,
    #[serde(default)]
    pub options: Options,
    pub stream: Option<bool>,
    pub keep_alive: Option<serde_json::Value>,
    #[serde(default)]
    pub think: Option<serde_json::Value>,
    pub truncate: Option<bool>,
    #[serde(default)]
    pub logprobs: bool,
    pub top_logprobs: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub images: Vec<String>,
    #[serde(default)]
    pub tool_calls: Vec<ToolCallDto>,
    #[serde(default)]
    pub tool_name: Option<String>,
    #[serde(default)]
    pub thinking: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ToolCallDto {
    #[serde(default)]
    pub id: Option<String>,
    pub function: FunctionCallDto,
}

#[derive(Debug, Deserialize)]
pub struct FunctionCallDto {
    pub name: String,
    #[serde(default)]
    pub arguments: serde_json::Value,
}

pub fn role(s: &str) -> Result<Role, ApiError> {
    match s {
        "system" => Ok(Role::System),
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        "tool" => Ok(Role::Tool),
        other => {
            Err(ApiError::bad_request(format!("invalid role {other:?}: expected system, user, assistant or tool")))
        }
    }
}

impl TryFrom<ChatMessage> for Message {
    type Error = ApiError;
    fn try_from(m: ChatMessage) -> Result<Self, ApiError> {
        if !m.images.is_empty() {
            return Err(ApiError::bad_request("images are not supported: this model has no vision projector"));
        }
        let mut out = Message::new(role(&m.role)?, m.content);
        out.tool_calls = m
            .tool_calls
            .into_iter()
            .map(|c| ToolCall { id: c.id, name: c.function.name, arguments: c.function.arguments })
            .collect();
        out.tool_name = m.tool_name;
        out.thinking = m.thinking.filter(|t| !t.is_empty());
        Ok(out)
    }
}

#[derive(Debug, Deserialize)]
pub struct EmbedBody {
    pub model: String,
    pub input: EmbedInput,
    pub truncate: Option<bool>,
    pub dimensions: Option<u32>,
    #[serde(default)]
    pub options: Options,
    pub keep_alive: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbedInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct LegacyEmbeddingsBody {
    pub model: String,
    #[serde(default)]
    pub prompt: String,
    #[serde(default)]
    pub options: Options,
    pub keep_alive: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct ModelBody {
    #[serde(alias = "name")]
    pub model: String,
    /// For `/api/show`: the context the memory estimate is for.
    #[serde(default)]
    pub options: Options,
    pub stream: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct CopyBody {
    pub source: String,
    pub destination: String,
}

#[derive(Debug, Deserialize)]
pub struct CreateBody {
    #[serde(alias = "name")]
    pub model: String,
    pub from: Option<String>,
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub adapters: std::collections::BTreeMap<String, String>,
    pub template: Option<String>,
    pub license: Option<LicenseField>,
    pub system: Option<String>,
    #[serde(default)]
    pub parameters: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub messages: Vec<ChatMessage>,
    pub quantize: Option<String>,
    pub stream: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum LicenseField {
    One(String),
    Many(Vec<String>),
}
