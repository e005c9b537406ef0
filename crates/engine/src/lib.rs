//! The `Engine` trait and what every engine shares.
//!
//! An engine turns a [`hyperllama_core::GenerateRequest`] into a stream of [`TokenEvent`]s. The trait is kept
//! narrow on purpose (as text-generation-inference's `Backend` and vLLM's `EngineClient`):
//! load a model, generate, report health and facts. That shape fits an in-process engine
//! (llama.cpp) as well as one behind HTTP (the MAX sidecar, vLLM, any OpenAI-compatible server).
//!
//! Cancellation is by drop: when the consumer drops the [`TokenStream`], the engine notices at
//! its next token and frees the work. No cancel method to forget to call.
//!
//! The text plumbing that every tokenizer-owning engine needs lives here too, engine-neutral:
//! [`Utf8Decoder`] (never split a character), [`StopMatcher`] (stop strings are never
//! emitted), and [`ChatTemplate`] (the model's own Jinja chat template, rendered with minijinja).
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod detok;
mod error;
pub mod mock;
pub mod parse;
mod pyfmt;
mod stop;
mod template;
pub mod tools;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
pub use hyperllama_core as core;
use hyperllama_core::{TokenEvent, ValidRequest};
use serde::Serialize;

pub use detok::Utf8Decoder;
pub use error::EngineError;
pub use stop::StopMatcher;
pub use template::{fallback_chat, ChatTemplate, TemplateError, FALLBACK_TEMPLATE_NAME};

/// The tokens of one generation, ending with [`TokenEvent::Done`] unless an error cuts it short.
/// Dropping it cancels the generation.
pub type TokenStream = Pin<Box<dyn Stream<Item = Result<TokenEvent, EngineError>> + Send>>;

/// A channel receiver as a [`futures::Stream`]. Dropping the stream drops the receiver, which
/// is how producers learn that the consumer went away (`Sender::is_closed`).
pub fn receiver_stream<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// What a caller asks an engine to load.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadOptions {
    /// Where the weights are (a GGUF file for llama.cpp; a directory or hub id for others).
    pub path: std::path::PathBuf,
    /// Context length; `None` takes the engine's default (bounded by what the model was trained for).
    pub ctx_size: Option<u32>,
    /// CPU threads; `None` means the number of physical cores.
    pub threads: Option<u32>,
    /// Layers to offload to a GPU (ignored by CPU-only builds); `None` offloads all when a GPU is present.
    pub gpu_layers: Option<u32>,
    /// Sequences decoded together (continuous batching); each gets the full `ctx_size`.
    /// `None` means 1.
    pub parallel: Option<u32>,
    /// Requests that may wait for a free sequence before new ones are refused with
    /// [`EngineError::Overloaded`]; `None` means no limit.
    pub max_queue: Option<u32>,
    /// Tokens one batched decode step may hold (decode tokens + prefill chunks); `None`: 512.
    pub step_tokens: Option<u32>,
    /// Engine-specific settings as `key=value` (the llama.cpp engine's prompt cache and
    /// speculative decoding); an engine ignores keys it does not know.
    pub extra: Vec<(String, String)>,
}

impl LoadOptions {
    /// The value of an engine-specific setting.
    pub fn extra(&self, key: &str) -> Option<&str> {
        self.extra.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Facts about a loaded model, for `show`, `/api/show`, `info` and the CLI's `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ModelInfo {
    pub name: String,
    pub architecture: String,
    pub parameter_count: u64,
    pub quantization: String,
    /// The context the model was trained with.
    pub context_length: u32,
    /// The context this instance was loaded with.
    pub loaded_context: u32,
    pub embedding_length: u32,
    pub chat_template: Option<String>,
    /// Bytes of weights.
    pub size_bytes: u64,
}

/// Whether an engine can serve now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Health {
    Ready,
    Loading { detail: String },
    Unavailable { reason: String },
}

/// Facts about an engine, for `hyperllama info`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineInfo {
    /// Stable id: "llamacpp", "max", "vllm", "openai".
    pub id: &'static str,
    pub version: String,
    /// Model formats it loads, e.g. ["gguf"].
    pub formats: Vec<&'static str>,
    /// Compute devices this build can use, e.g. ["cpu"], ["cpu", "cuda"].
    pub devices: Vec<String>,
}

/// The result of [`LoadedModel::embed`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u32,
}

/// Counters a loaded model keeps, so that callers (and tests) can observe what it did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ModelStats {
    pub requests_finished: u64,
    pub requests_cancelled: u64,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    /// Tokens generated by the most recently cancelled request before it stopped.
    pub last_cancelled_tokens: u64,
    /// Prompt tokens served from cached KV instead of being computed.
    pub cached_prompt_tokens: u64,
    /// Sequences this model decodes together.
    pub parallel: u32,
    /// Sequences generating or prefilling now.
    pub active: u32,
    /// Requests waiting for a free sequence.
    pub waiting: u32,
    /// Tokens whose KV the sequences hold (a prefix shared by several counts for each).
    pub kv_tokens: u64,
    /// Batched decode steps run, and the tokens they held (their ratio is the mean batch size).
    pub decode_steps: u64,
    pub batched_tokens: u64,
    /// Micro-batches llama.cpp split the last step into, and over all steps.
    pub ubatches_last_step: u32,
    pub ubatches: u64,
    /// Prompt tokens restored from the prompt cache (RAM or disk), and computed for lack of it.
    pub cache_hit_tokens: u64,
    pub cache_miss_tokens: u64,
    /// Bytes of KV state in the host-RAM prompt cache and on disk; entries evicted.
    pub cache_ram_bytes: u64,
    pub cache_disk_bytes: u64,
    pub cache_evictions: u64,
    /// Speculative decoding: tokens drafted, and how many of them verification accepted.
    pub spec_drafted: u64,
    pub spec_accepted: u64,
}

/// Renders `prompt` as an engine that owns its chat template does: raw text as it is, a chat
/// through the model's template (with the tools), ending with the assistant's turn opened.
pub fn render_prompt(
    template: Option<&ChatTemplate>,
    prompt: &hyperllama_core::Prompt,
    tools: &[hyperllama_core::ToolSpec],
) -> Result<String, EngineError> {
    render_with_reasoning(template, prompt, tools, None)
}

/// Renders a request's prompt, with its reasoning switches.
pub fn render_request(
    template: Option<&ChatTemplate>,
    request: &hyperllama_core::GenerateRequest,
) -> Result<String, EngineError> {
    render_with_reasoning(template, &request.prompt, &request.tools, request.reasoning.as_ref())
}

fn render_with_reasoning(
    template: Option<&ChatTemplate>,
    prompt: &hyperllama_core::Prompt,
    tools: &[hyperllama_core::ToolSpec],
    reasoning: Option<&hyperllama_core::Reasoning>,
) -> Result<String, EngineError> {
    match prompt {
        hyperllama_core::Prompt::Raw(text) => Ok(text.clone()),
        hyperllama_core::Prompt::Chat(messages) => match template {
            Some(template) => Ok(template.render_with_reasoning(messages, tools, true, reasoning)?),
            // A base model: the plain transcript a base model continues best.
            None => Ok(template::fallback_chat(messages, tools)),
        },
    }
}

/// The memory a load needs, by part (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub kv_cache: u64,
    pub compute: u64,
    pub total: u64,
    /// The context per sequence the estimate is for.
    pub context: u64,
    /// Sequences decoded together.
    pub parallel: u64,
}

/// A backend that can load models.
#[async_trait::async_trait]
pub trait Engine: Send + Sync {
    /// Stable, cheap id: "llamacpp", "max", "vllm", "openai".
    fn id(&self) -> &'static str;
    fn info(&self) -> EngineInfo;
    async fn health(&self) -> Health;
    /// What loading with `options` would take in this process's machine, or `None` when the
    /// model lives elsewhere (a remote server). Reads only the file's header.
    async fn estimate_memory(&self, options: &LoadOptions) -> Result<Option<MemoryEstimate>, EngineError>;
    /// Loads a model; the returned handle serves it until it is unloaded or dropped.
    async fn load(&self, options: LoadOptions) -> Result<Arc<dyn LoadedModel>, EngineError>;
    /// Stops what the engine runs beside this process (a sidecar, a launched server); engines
    /// that run nothing beside it say so with an empty body.
    async fn shutdown(&self);
    /// The catalog of an engine that serves models from elsewhere (a remote server).
    fn catalog(&self) -> Option<&dyn RemoteCatalog> {
        None
    }
}

/// The models an engine serves from elsewhere (a remote or launched server); loading one
/// takes its id as [`LoadOptions::path`].
#[async_trait::async_trait]
pub trait RemoteCatalog: Send + Sync {
    /// The server's API URL now (`http://host:port/v1`), or what will be launched.
    fn url(&self) -> String;
    async fn served_models(&self) -> Result<Vec<ServedModel>, EngineError>;
}

/// One model of a remote engine's catalog.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServedModel {
    pub id: String,
    pub owned_by: String,
    /// Unix seconds (0 when the server does not say).
    pub created: i64,
    /// The context the server serves it with (0 when it does not say).
    pub context_length: u64,
}

/// One model, loaded and ready.
#[async_trait::async_trait]
pub trait LoadedModel: Send + Sync {
    fn info(&self) -> &ModelInfo;
    fn stats(&self) -> ModelStats;
    /// Starts a generation. Errors the request can be blamed for (a prompt longer than the
    /// context) come back here, before the first token, so servers can answer 4xx.
    async fn generate(&self, request: ValidRequest) -> Result<TokenStream, EngineError>;
    /// Pooled, L2-normalised embeddings of each input. With `truncate`, inputs longer than the
    /// context are cut to fit; without it they are an error.
    async fn embed(&self, inputs: Vec<String>, truncate: bool) -> Result<Embeddings, EngineError>;
    /// Frees the model's memory now; later calls fail with [`EngineError::Unavailable`].
    async fn unload(&self) -> Result<(), EngineError>;
    /// False once the model cannot serve any more (its compute thread died, the process that
    /// held it restarted): load it again.
    fn is_healthy(&self) -> bool;
    /// The model's tokenizer, when this process has it.
    fn tokenizer(&self) -> Option<&dyn Tokenizer> {
        None
    }
    /// How the model's prompts are rendered, when this process renders them.
    fn renderer(&self) -> Option<&dyn PromptRenderer> {
        None
    }
}

/// Tokenization as the engine does it (`/tokenize`, counting, truncation).
pub trait Tokenizer: Send + Sync {
    /// `text` as token ids; `special`: parse special tokens and add BOS as generation would.
    fn tokenize(&self, text: &str, special: bool) -> Result<Vec<u32>, EngineError>;
    /// The text of one token (its bytes; a piece of a character is returned as is).
    fn token_bytes(&self, id: u32) -> Result<Vec<u8>, EngineError>;
    /// The text of `ids`, with pieces of characters joined before decoding.
    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError> {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend(self.token_bytes(id)?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Prompt rendering as `generate` does it (for `--verbose`, `/apply-template`, tests).
pub trait PromptRenderer: Send + Sync {
    fn render_prompt(
        &self,
        prompt: &hyperllama_core::Prompt,
        tools: &[hyperllama_core::ToolSpec],
    ) -> Result<String, EngineError>;
    /// The model's chat template, when it has one.
    fn template(&self) -> Option<&ChatTemplate>;
    /// A request's prompt as `generate` renders it (reasoning switches included).
    fn render_request(&self, request: &hyperllama_core::GenerateRequest) -> Result<String, EngineError> {
        render_request(self.template(), request)
    }
}
