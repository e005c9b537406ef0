use serde::Deserialize;

use crate::generation::{Options, StopField, ToolDto};

/// The sampling fields chat completions and completions share.
#[derive(Debug, Default, Deserialize)]
pub struct SamplingFields {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<StopField>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// vLLM's and llama-server's extensions (`extra_body` in the openai client).
    pub ignore_eos: Option<bool>,
    pub cache_prompt: Option<bool>,
}

impl SamplingFields {
    /// As the internal options, with `num_predict` from the dialect's token limit.
    pub fn into_options(self, num_predict: Option<i64>) -> Options {
        let SamplingFields {
            temperature,
            top_p,
            seed,
            stop,
            presence_penalty,
            frequency_penalty,
            ignore_eos,
            cache_prompt,
        } = self;
        Options {
            temperature,
            top_p,
            seed,
            num_predict,
            stop,
            presence_penalty,
            frequency_penalty,
            ignore_eos,
            cache_prompt,
            ..Options::default()
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ChatCompletionBody {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    #[serde(flatten)]
    pub sampling: SamplingFields,
    pub n: Option<u32>,
    pub response_format: Option<ResponseFormat>,
    #[serde(default)]
    pub tools: Vec<ToolDto>,
    pub tool_choice: Option<serde_json::Value>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Vec<ToolCallDto>,
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: String,
}

#[derive(Debug, Deserialize)]
pub struct ToolCallDto {
    pub id: Option<String>,
    pub function: FunctionCall,
}

#[derive(Debug, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// A JSON-encoded string, as OpenAI sends it.
    #[serde(default)]
    pub arguments: String,
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaSpec },
}

#[derive(Debug, Deserialize)]
pub struct JsonSchemaSpec {
    pub schema: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionBody {
    pub model: String,
    pub prompt: PromptField,
    pub max_tokens: Option<i64>,
    #[serde(flatten)]
    pub sampling: SamplingFields,
    pub n: Option<u32>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub suffix: Option<String>,
    #[serde(default)]
    pub echo: bool,
    pub logprobs: Option<u32>,
    pub best_of: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct EmbeddingsBody {
    pub model: String,
    pub input: EmbeddingInput,
    pub encoding_format: Option<String>,
    pub dimensions: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    Tokens(#[allow(dead_code)] Vec<serde_json::Value>),
}
