use serde::Deserialize;

use crate::api::common::ToolDto;
use crate::service::Knobs;

/// `stop` as one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

impl StopField {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopField::One(s) => vec![s],
            StopField::Many(v) => v,
        }
    }
}

/// The load-time extensions `/v1` accepts (`extra_body` in the openai client), as Ollama users
/// ask: the context, threads and engine for the model.
#[derive(Debug, Default, Deserialize)]
pub struct LoadOptionsDto {
    pub num_ctx: Option<i64>,
    pub num_thread: Option<i64>,
    pub num_gpu: Option<i64>,
    pub engine: Option<String>,
}

/// The sampling fields chat completions and completions share, with vLLM's and
/// llama-server's extensions (`top_k`, `min_p`, `repetition_penalty`/`repeat_penalty`,
/// `ignore_eos`, `cache_prompt`; `extra_body` in the openai client).
#[derive(Debug, Default, Deserialize)]
pub struct SamplingFields {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<StopField>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    #[serde(alias = "repetition_penalty")]
    pub repeat_penalty: Option<f32>,
    pub ignore_eos: Option<bool>,
    pub cache_prompt: Option<bool>,
    pub speculative: Option<bool>,
    /// Drop the oldest messages when the prompt does not fit the context (an extension; the
    /// default refuses it with a 400).
    pub truncate: Option<bool>,
    /// Ollama-style load options (`{"options": {"num_ctx": 8192}}`).
    pub options: Option<LoadOptionsDto>,
}

impl SamplingFields {
    /// As the neutral knobs, with the dialect's token limit.
    pub fn into_knobs(self, max_tokens: Option<i64>) -> Knobs {
        let load = self.options.unwrap_or_default();
        Knobs {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            seed: self.seed,
            max_tokens,
            stop: self.stop.map(StopField::into_vec),
            repeat_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            ignore_eos: self.ignore_eos,
            cache_prompt: self.cache_prompt,
            speculative: self.speculative,
            truncate: self.truncate,
            num_ctx: load.num_ctx,
            num_thread: load.num_thread,
            num_gpu: load.num_gpu,
            engine: load.engine,
            ..Knobs::default()
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
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    pub reasoning_effort: Option<String>,
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
    #[serde(default)]
    pub reasoning_content: Option<String>,
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
