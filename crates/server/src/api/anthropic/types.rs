//! Anthropic's request bodies. Content stays JSON here and is read block by block in
//! `convert`, so that an unknown or malformed block is named precisely in the 400.

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
pub struct MessagesBody {
    pub model: String,
    /// Required by Anthropic; checked in `convert` for a message in its words.
    pub max_tokens: Option<i64>,
    pub messages: Vec<InputMessage>,
    pub system: Option<Value>,
    #[serde(default)]
    pub stop_sequences: Vec<String>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub tools: Vec<ToolDef>,
    pub tool_choice: Option<ToolChoiceDef>,
    /// Accepted and ignored (`user_id`).
    #[allow(dead_code)]
    pub metadata: Option<Value>,
    pub thinking: Option<ThinkingDef>,
    /// Extensions HyperLlama reads as it does in every dialect.
    pub seed: Option<i64>,
    pub truncate: Option<bool>,
    pub options: Option<crate::api::openai::types::LoadOptionsDto>,
}

/// `/v1/messages/count_tokens`: the prompt side of a messages request.
#[derive(Debug, Deserialize)]
pub struct CountTokensBody {
    pub model: String,
    pub messages: Vec<InputMessage>,
    pub system: Option<Value>,
    #[serde(default)]
    pub tools: Vec<ToolDef>,
    pub tool_choice: Option<ToolChoiceDef>,
    pub thinking: Option<ThinkingDef>,
}

#[derive(Debug, Deserialize)]
pub struct InputMessage {
    pub role: String,
    /// A string, or a list of content blocks.
    pub content: Value,
}

#[derive(Debug, Deserialize)]
pub struct ToolDef {
    /// Absent or "custom" for a client tool; Anthropic's server tools (web search, ...) are
    /// refused.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub input_schema: Value,
}

#[derive(Debug, Deserialize)]
pub struct ToolChoiceDef {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    #[serde(default)]
    pub disable_parallel_tool_use: bool,
}

#[derive(Debug, Deserialize)]
pub struct ThinkingDef {
    #[serde(rename = "type")]
    pub kind: String,
    pub budget_tokens: Option<u32>,
}
