//! OpenAI's chat and completion protocol: what HyperLlama sends to an OpenAI-compatible
//! server (vLLM, llama-server, the MAX sidecar, another HyperLlama), and the chunks, responses
//! and errors that go both ways.
//!
//! Decoding is lenient the way clients must be: unknown fields are ignored and missing ones
//! take their defaults, so the same types read vLLM, llama-server and OpenAI itself.

use hyperllama_core::{GenerateRequest, Message, OutputFormat, Prompt, Role, Sampling, ToolSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Requests (client side: the `openai` and `max` engines)

/// The sampling and stopping fields chat and completion requests share, with the extensions
/// vLLM and llama-server both accept (`top_k`, `min_p`, `repetition_penalty`/`repeat_penalty`,
/// `ignore_eos`, `cache_prompt`), sent only when a request needs them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplingWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    /// vLLM's name for the multiplicative repeat penalty...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
    /// ...and llama-server's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_eos: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_prompt: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// A chat message as OpenAI writes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<WireToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

/// A complete tool call (request history, non-streamed responses).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireToolCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: WireFunction,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireFunction {
    pub name: String,
    /// JSON text, as OpenAI sends it.
    #[serde(default)]
    pub arguments: String,
}

fn function_type() -> String {
    "function".into()
}

/// A function the model may call, as OpenAI writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireTool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: WireToolFunction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireToolFunction {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub parameters: Value,
}

impl From<&ToolSpec> for WireTool {
    fn from(t: &ToolSpec) -> Self {
        WireTool {
            kind: "function".into(),
            function: WireToolFunction {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: t.parameters.clone(),
            },
        }
    }
}

impl From<&Message> for WireMessage {
    fn from(m: &Message) -> Self {
        WireMessage {
            role: m.role.as_str().to_string(),
            content: Some(m.content.clone()),
            tool_calls: m
                .tool_calls
                .iter()
                .enumerate()
                .map(|(i, c)| WireToolCall {
                    // Servers that validate history want an id on every call.
                    id: Some(c.id.clone().unwrap_or_else(|| format!("call_{i}"))),
                    kind: "function".into(),
                    function: WireFunction { name: c.name.clone(), arguments: c.arguments.to_string() },
                })
                .collect(),
            tool_call_id: if m.role == Role::Tool { m.tool_call_id.clone() } else { None },
            name: if m.role == Role::Tool { m.tool_name.clone() } else { None },
            reasoning_content: m.thinking.clone(),
        }
    }
}

/// `POST /chat/completions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<WireMessage>,
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<WireTool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u8>,
    #[serde(flatten)]
    pub sampling: SamplingWire,
}

/// `POST /completions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: String,
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u8>,
    #[serde(flatten)]
    pub sampling: SamplingWire,
}

/// A request body and the path it goes to.
#[derive(Debug, Clone, PartialEq)]
pub enum WireRequest {
    Chat(ChatRequest),
    Completion(CompletionRequest),
}

impl WireRequest {
    /// The path under the API root (`/v1`).
    pub fn path(&self) -> &'static str {
        match self {
            WireRequest::Chat(_) => "/chat/completions",
            WireRequest::Completion(_) => "/completions",
        }
    }

    pub fn sampling_mut(&mut self) -> &mut SamplingWire {
        match self {
            WireRequest::Chat(c) => &mut c.sampling,
            WireRequest::Completion(c) => &mut c.sampling,
        }
    }

    /// The body as JSON.
    pub fn to_json(&self) -> Value {
        match self {
            WireRequest::Chat(c) => serde_json::to_value(c),
            WireRequest::Completion(c) => serde_json::to_value(c),
        }
        .unwrap_or(Value::Null)
    }
}

/// The streaming request (with usage at the end) that serves `request` on a server that
/// owns tokenization and the chat template: chats go to `/chat/completions` (tools, their
/// calls and results included), raw prompts to `/completions`.
pub fn request_for(model: &str, request: &GenerateRequest) -> WireRequest {
    let mut sampling = SamplingWire::default();
    let s = &request.sampling;
    match s.sampling {
        Sampling::Greedy => sampling.temperature = Some(0.0),
        Sampling::Random { temperature, top_k, top_p, min_p } => {
            sampling.temperature = Some(temperature);
            sampling.top_k = top_k;
            sampling.top_p = top_p;
            sampling.min_p = min_p;
        }
    }
    sampling.seed = s.seed;
    let p = s.penalties;
    sampling.presence_penalty = (p.presence != 0.0).then_some(p.presence);
    sampling.frequency_penalty = (p.frequency != 0.0).then_some(p.frequency);
    if p.repeat != 1.0 {
        sampling.repetition_penalty = Some(p.repeat);
        sampling.repeat_penalty = Some(p.repeat);
    }
    sampling.max_tokens = request.stop.max_tokens;
    sampling.stop = request.stop.stop.clone();
    sampling.ignore_eos = request.stop.ignore_eos.then_some(true);
    sampling.cache_prompt = (!request.cache_prompt).then_some(false);
    sampling.response_format = match &request.format {
        Some(OutputFormat::Json) => Some(serde_json::json!({ "type": "json_object" })),
        Some(OutputFormat::JsonSchema(schema)) => {
            Some(serde_json::json!({ "type": "json_schema", "json_schema": { "name": "output", "schema": schema } }))
        }
        None => None,
    };
    let stream_options = Some(StreamOptions { include_usage: true });
    match &request.prompt {
        Prompt::Raw(text) => WireRequest::Completion(CompletionRequest {
            model: model.to_string(),
            prompt: text.clone(),
            stream: true,
            stream_options,
            logprobs: request.logprobs,
            sampling,
        }),
        Prompt::Chat(messages) => WireRequest::Chat(ChatRequest {
            model: model.to_string(),
            messages: messages.iter().map(WireMessage::from).collect(),
            stream: true,
            stream_options,
            tools: request.tools.iter().map(WireTool::from).collect(),
            tool_choice: match &request.tool_requirement {
                _ if request.tools.is_empty() => None,
                hyperllama_core::ToolRequirement::Auto => None,
                hyperllama_core::ToolRequirement::Required => Some(Value::from("required")),
                hyperllama_core::ToolRequirement::Named(name) => {
                    Some(serde_json::json!({ "type": "function", "function": { "name": name } }))
                }
            },
            parallel_tool_calls: (!request.tools.is_empty() && !request.parallel_tool_calls).then_some(false),
            reasoning_effort: request.reasoning.as_ref().and_then(|r| match r.enabled {
                Some(false) => Some("none".to_string()),
                _ => r.effort.clone(),
            }),
            logprobs: request.logprobs.map(|_| true),
            top_logprobs: request.logprobs.filter(|n| *n > 0),
            sampling,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Responses and chunks (both sides)

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireUsage {
    #[serde(default)]
    pub prompt_tokens: u32,
    #[serde(default)]
    pub completion_tokens: u32,
    #[serde(default)]
    pub total_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

impl From<hyperllama_core::Usage> for WireUsage {
    fn from(u: hyperllama_core::Usage) -> Self {
        WireUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
            prompt_tokens_details: Some(PromptTokensDetails { cached_tokens: u.cached_tokens }),
        }
    }
}

impl From<WireUsage> for hyperllama_core::Usage {
    fn from(u: WireUsage) -> Self {
        hyperllama_core::Usage {
            prompt_tokens: u.prompt_tokens,
            cached_tokens: u.prompt_tokens_details.map(|d| d.cached_tokens).unwrap_or(0),
            completion_tokens: u.completion_tokens,
        }
    }
}

/// A streamed piece of a tool call: the first piece of a call carries its `id` and name, the
/// rest carry pieces of its `arguments`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    #[serde(default)]
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDelta>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Reasoning text (DeepSeek's and vLLM's `reasoning_content`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// One token's log-probability in OpenAI's chat shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireTopLogprob {
    pub token: String,
    pub logprob: f32,
    #[serde(default)]
    pub bytes: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireTokenLogprob {
    pub token: String,
    pub logprob: f32,
    #[serde(default)]
    pub bytes: Option<Vec<u8>>,
    #[serde(default)]
    pub top_logprobs: Vec<WireTopLogprob>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatLogprobs {
    #[serde(default)]
    pub content: Option<Vec<WireTokenLogprob>>,
}

impl From<&hyperllama_core::Logprobs> for WireTokenLogprob {
    fn from(l: &hyperllama_core::Logprobs) -> Self {
        WireTokenLogprob {
            token: l.token.text.clone(),
            logprob: l.token.logprob,
            bytes: Some(l.token.bytes.clone()),
            top_logprobs: l
                .top
                .iter()
                .map(|t| WireTopLogprob { token: t.text.clone(), logprob: t.logprob, bytes: Some(t.bytes.clone()) })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Delta,
    #[serde(default)]
    pub logprobs: Option<ChatLogprobs>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// `chat.completion.chunk`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    #[serde(default)]
    pub id: String,
    #[serde(default = "chunk_object")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
}

fn chunk_object() -> String {
    "chat.completion.chunk".into()
}

/// Completions' logprobs (the legacy shape).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionLogprobs {
    #[serde(default)]
    pub tokens: Vec<String>,
    #[serde(default)]
    pub token_logprobs: Vec<f32>,
    #[serde(default)]
    pub top_logprobs: Vec<std::collections::BTreeMap<String, f32>>,
    #[serde(default)]
    pub text_offset: Vec<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub logprobs: Option<CompletionLogprobs>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// `text_completion` (a chunk when streaming, the whole answer otherwise).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionChunk {
    #[serde(default)]
    pub id: String,
    #[serde(default = "completion_object")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<CompletionChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
}

fn completion_object() -> String {
    "text_completion".into()
}

/// A complete assistant message (non-streamed chat responses).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage {
    pub role: String,
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<WireToolCall>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: ResponseMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<String>,
}

/// `chat.completion`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    pub choices: Vec<ChatChoice>,
    pub usage: WireUsage,
}

/// One entry of `/v1/models`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelObject {
    pub id: String,
    #[serde(default = "model_object")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub owned_by: String,
    /// vLLM's context length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_model_len: Option<u64>,
    /// llama-server's model facts (`n_ctx_train`, `n_params`, `n_embd`, `size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
}

fn model_object() -> String {
    "model".into()
}

impl ModelObject {
    /// The context it is served with: vLLM says `max_model_len`, llama-server `meta.n_ctx_train`.
    pub fn context_length(&self) -> u64 {
        self.max_model_len.or_else(|| self.meta.as_ref().and_then(|m| m["n_ctx_train"].as_u64())).unwrap_or(0)
    }

    pub fn meta_u64(&self, key: &str) -> Option<u64> {
        self.meta.as_ref().and_then(|m| m[key].as_u64())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    #[serde(default = "list_object")]
    pub object: String,
    #[serde(default)]
    pub data: Vec<ModelObject>,
}

fn list_object() -> String {
    "list".into()
}

/// `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The message of an error body, whatever shape a server uses: OpenAI's `{"error": {...}}`,
/// Ollama's `{"error": "..."}`, or `{"message": "..."}`; else the start of the text.
pub fn error_message(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| {
            v["error"]["message"]
                .as_str()
                .or_else(|| v["error"].as_str())
                .or_else(|| v["message"].as_str())
                .map(String::from)
        })
        .unwrap_or_else(|| text.chars().take(300).collect())
}

/// Tool-call deltas of a stream, put back together by their `index`.
#[derive(Debug, Default)]
pub struct ToolCallAssembler {
    calls: Vec<(u32, WireToolCall)>,
}

impl ToolCallAssembler {
    pub fn push(&mut self, deltas: &[ToolCallDelta]) {
        for d in deltas {
            let pos = match self.calls.iter().position(|(i, _)| *i == d.index) {
                Some(p) => p,
                None => {
                    self.calls.push((d.index, WireToolCall { kind: "function".into(), ..WireToolCall::default() }));
                    self.calls.len() - 1
                }
            };
            let call = &mut self.calls[pos].1;
            if let Some(id) = &d.id {
                call.id = Some(id.clone());
            }
            if let Some(f) = &d.function {
                if let Some(name) = &f.name {
                    call.function.name.push_str(name);
                }
                if let Some(args) = &f.arguments {
                    call.function.arguments.push_str(args);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The calls, in index order, with their arguments parsed (a string when they are not JSON).
    pub fn finish(self) -> Vec<hyperllama_core::ToolCall> {
        let mut calls = self.calls;
        calls.sort_by_key(|(i, _)| *i);
        calls
            .into_iter()
            .map(|(_, c)| {
                let arguments = if c.function.arguments.trim().is_empty() {
                    Value::Object(Default::default())
                } else {
                    serde_json::from_str(&c.function.arguments).unwrap_or(Value::String(c.function.arguments))
                };
                hyperllama_core::ToolCall { id: c.id, name: c.function.name, arguments }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperllama_core::{Message, Prompt, SamplingParams, ToolCall};

    #[test]
    fn chat_requests_carry_tools_calls_and_results() {
        let mut assistant = Message::assistant("");
        assistant
            .tool_calls
            .push(ToolCall { id: Some("call_7".into()), ..ToolCall::new("f", serde_json::json!({"x": 1})) });
        let mut result = Message::new(Role::Tool, "42");
        result.tool_call_id = Some("call_7".into());
        result.tool_name = Some("f".into());
        let mut req = GenerateRequest::new(Prompt::Chat(vec![Message::user("hi"), assistant, result]));
        req.sampling = SamplingParams::greedy();
        req.stop.max_tokens = Some(5);
        req.tools.push(ToolSpec { name: "f".into(), description: "d".into(), parameters: serde_json::json!({}) });
        let wire = request_for("m", &req);
        assert_eq!(wire.path(), "/chat/completions");
        let v = wire.to_json();
        assert_eq!(v["messages"][1]["tool_calls"][0]["id"], "call_7");
        assert_eq!(v["messages"][1]["tool_calls"][0]["function"]["arguments"], "{\"x\":1}");
        assert_eq!(v["messages"][2]["tool_call_id"], "call_7");
        assert_eq!(v["tools"][0]["function"]["name"], "f");
        assert_eq!(v["temperature"], 0.0);
        assert_eq!(v["max_tokens"], 5);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert!(v.get("top_k").is_none() && v.get("cache_prompt").is_none());
        let raw = request_for("m", &GenerateRequest::new(Prompt::Raw("x".into())));
        assert_eq!(raw.path(), "/completions");
        assert_eq!(raw.to_json()["top_k"], 40);
    }

    #[test]
    fn chunks_decode_leniently_and_tool_calls_reassemble() {
        let c: ChatChunk = serde_json::from_str(
            r#"{"id":"x","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"ci"}}]},"finish_reason":null}],"extra":1}"#,
        )
        .unwrap();
        let c2: ChatChunk = serde_json::from_str(
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\":\"Paris\"}"}},{"index":1,"id":"call_2","function":{"name":"time","arguments":""}}]},"finish_reason":"tool_calls"}]}"#,
        )
        .unwrap();
        let mut a = ToolCallAssembler::default();
        for chunk in [&c, &c2] {
            a.push(chunk.choices[0].delta.tool_calls.as_deref().unwrap_or_default());
        }
        let calls = a.finish();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].id.as_deref(), Some("call_1"));
        assert_eq!(calls[0].arguments["city"], "Paris");
        assert_eq!(calls[1].name, "time");
        assert_eq!(calls[1].arguments, serde_json::json!({}));
        assert_eq!(c2.choices[0].finish_reason.as_deref(), Some("tool_calls"));
    }

    #[test]
    fn error_messages_of_every_shape() {
        assert_eq!(error_message(r#"{"error":{"message":"bad"}}"#), "bad");
        assert_eq!(error_message(r#"{"error":"gone"}"#), "gone");
        assert_eq!(error_message("plain"), "plain");
    }
}
