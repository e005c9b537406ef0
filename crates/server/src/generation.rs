//! What both dialects share between "a request arrived" and "tokens go out": request options
//! (Ollama's `options`, Modelfile `PARAMETER`s, OpenAI's fields) merged into one
//! [`GenerateRequest`], the model acquired and validated before the first byte, and the
//! token stream turned into text pieces with tool calls parsed once at the end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hyperllama_core::{
    FinishReason, GenerateRequest, OutputFormat, Penalties, Prompt, Sampling, SamplingParams, TokenEvent, ToolCall,
    ToolSpec, Usage,
};
use hyperllama_engine::{EngineError, TokenStream};
use serde::Deserialize;

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::middleware::RequestContext;
use crate::registry::{Acquired, LoadRequest};
use crate::{ApiError, AppState, KeepAlive};

/// Ollama's `options` (and Modelfile parameters). Unknown keys are kept so they can be
/// reported, then ignored, as Ollama does.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Options {
    pub temperature: Option<f32>,
    pub top_k: Option<i64>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub num_predict: Option<i64>,
    pub stop: Option<StopField>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub num_ctx: Option<i64>,
    pub num_thread: Option<i64>,
    /// Extensions shared with llama-server and vLLM: reuse cached KV for a shared prompt
    /// prefix (default true), and keep generating past end-of-sequence (benchmarks).
    pub cache_prompt: Option<bool>,
    pub ignore_eos: Option<bool>,
    /// The engine to serve the model with ("llamacpp", "max", ...); see `Engines::choose`.
    pub engine: Option<String>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

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

/// Load-time option keys that are not sampling knobs; not reported as unknown.
const KNOWN_LOAD_KEYS: &[&str] =
    &["num_gpu", "main_gpu", "use_mmap", "use_mlock", "num_batch", "num_keep", "numa", "low_vram"];

impl Options {
    /// Options from a model's stored parameters (Modelfile `PARAMETER`s).
    pub fn from_parameters(params: &BTreeMap<String, serde_json::Value>) -> Self {
        let obj: serde_json::Map<String, serde_json::Value> = params.clone().into_iter().collect();
        serde_json::from_value(serde_json::Value::Object(obj)).unwrap_or_default()
    }

    /// `self` with every field that `over` sets replaced.
    pub fn merged(self, over: Options) -> Options {
        Options {
            temperature: over.temperature.or(self.temperature),
            top_k: over.top_k.or(self.top_k),
            top_p: over.top_p.or(self.top_p),
            min_p: over.min_p.or(self.min_p),
            seed: over.seed.or(self.seed),
            num_predict: over.num_predict.or(self.num_predict),
            stop: over.stop.or(self.stop),
            repeat_penalty: over.repeat_penalty.or(self.repeat_penalty),
            repeat_last_n: over.repeat_last_n.or(self.repeat_last_n),
            presence_penalty: over.presence_penalty.or(self.presence_penalty),
            frequency_penalty: over.frequency_penalty.or(self.frequency_penalty),
            num_ctx: over.num_ctx.or(self.num_ctx),
            num_thread: over.num_thread.or(self.num_thread),
            cache_prompt: over.cache_prompt.or(self.cache_prompt),
            ignore_eos: over.ignore_eos.or(self.ignore_eos),
            engine: over.engine.or(self.engine),
            unknown: over.unknown,
        }
    }

    pub fn warn_unknown(&self) {
        for k in self.unknown.keys().filter(|k| !KNOWN_LOAD_KEYS.contains(&k.as_str())) {
            tracing::warn!(option = %k, "invalid option provided; ignoring it");
        }
    }

    pub fn load_request(&self, keep_alive: Option<KeepAlive>) -> Result<LoadRequest, ApiError> {
        let positive = |v: Option<i64>, field: &'static str| -> Result<Option<u32>, ApiError> {
            match v {
                None => Ok(None),
                Some(n) if (1..=1 << 20).contains(&n) => Ok(Some(n as u32)),
                Some(n) => Err(ApiError::bad_request(format!("`{field}` must be between 1 and 1048576, got {n}"))
                    .with_param(field)),
            }
        };
        Ok(LoadRequest {
            num_ctx: positive(self.num_ctx, "num_ctx")?,
            num_thread: positive(self.num_thread, "num_thread")?,
            keep_alive,
            engine: self.engine.clone(),
        })
    }

    /// The internal request for `prompt` with these options.
    pub fn into_request(self, prompt: Prompt) -> Result<GenerateRequest, ApiError> {
        let sampling =
            Sampling::from_knobs(self.temperature, self.top_k.or(Some(40)), self.top_p.or(Some(0.9)), self.min_p)?;
        let penalties =
            Penalties::new(self.repeat_penalty, self.presence_penalty, self.frequency_penalty, self.repeat_last_n)?;
        let mut req = GenerateRequest::new(prompt);
        // A negative seed means "random", as in Ollama and llama.cpp.
        req.sampling = SamplingParams { sampling, penalties, seed: self.seed.and_then(|s| u64::try_from(s).ok()) };
        req.stop.max_tokens = match self.num_predict {
            None => None,
            Some(n) if n < 0 => None, // -1: until done; -2: until the context is full
            Some(0) => return Err(ApiError::bad_request("`num_predict` must not be 0").with_param("num_predict")),
            Some(n) if n > i64::from(i32::MAX) => {
                return Err(ApiError::bad_request(format!("`num_predict` must be at most {}, got {n}", i32::MAX))
                    .with_param("num_predict"))
            }
            Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        };
        req.stop.stop = self.stop.map(StopField::into_vec).unwrap_or_default();
        req.stop.ignore_eos = self.ignore_eos.unwrap_or(false);
        req.cache_prompt = self.cache_prompt.unwrap_or(true);
        Ok(req)
    }
}

/// Parses Ollama's `format`: `"json"`, a JSON Schema object, or absent/empty.
pub fn parse_format(v: Option<&serde_json::Value>) -> Result<Option<OutputFormat>, ApiError> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) if s == "json" => Ok(Some(OutputFormat::Json)),
        Some(schema @ serde_json::Value::Object(_)) => Ok(Some(OutputFormat::JsonSchema(schema.clone()))),
        Some(other) => {
            Err(ApiError::bad_request(format!("invalid format {other}: use \"json\" or a JSON Schema object"))
                .with_param("format"))
        }
    }
}

/// The end of a generation.
#[derive(Debug, Clone)]
pub struct Final {
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub prompt_eval: Duration,
    pub eval: Duration,
    pub load_duration: Duration,
    pub total_duration: Duration,
    /// Set when the request offered tools and the model called some.
    pub tool_calls: Vec<ToolCall>,
}

/// What a response stream carries.
#[derive(Debug, Clone)]
pub enum Piece {
    Text(String),
    Done(Final),
}

/// A generation that has passed validation and is producing tokens.
pub struct Generation {
    pub acquired: Acquired,
    stream: TokenStream,
    started: Instant,
    buffer_for_tools: bool,
    observer: Observer,
}

/// Where a generation's measurements go: the metrics, and the key's token budget.
struct Observer {
    metrics: Arc<Metrics>,
    model: String,
    key: Option<Arc<crate::auth::Key>>,
    started: Instant,
    last_token: Option<Instant>,
    ended: bool,
}

impl Observer {
    fn token(&mut self) {
        let now = Instant::now();
        match self.last_token {
            None => self.metrics.observe_ttft(&self.model, now - self.started),
            Some(last) => self.metrics.observe_itl(&self.model, now - last),
        }
        self.last_token = Some(now);
    }

    fn done(&mut self, reason: FinishReason, usage: &Usage, queue: Duration) {
        self.ended = true;
        let reason = match reason {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "abort",
        };
        self.metrics.observe_finished(&self.model, reason, self.started.elapsed(), queue, usage);
        if let Some(key) = &self.key {
            key.charge(u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens));
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        // The client went away (or an error ended it) before the end.
        if !self.ended {
            self.metrics.observe_aborted(&self.model);
        }
    }
}

impl Generation {
    /// Acquires the model and starts generating; every error here is returned before the
    /// response begins.
    pub async fn start(
        state: &AppState,
        ctx: &RequestContext,
        model: &str,
        load: LoadRequest,
        request: GenerateRequest,
        started: Instant,
    ) -> Result<Generation, ApiError> {
        request.validate()?;
        let buffer_for_tools = !request.tools.is_empty();
        let mut acquired = state.registry.acquire(model, load.clone()).await?;
        let stream = match acquired.model.generate(request.clone()).await {
            // The model's engine lost it before the request began (an out-of-process engine
            // restarted): load it again and try once more; nothing was sent to the client yet.
            Err(EngineError::Unavailable(why)) if !acquired.model.is_healthy() => {
                tracing::warn!(model = %acquired.name, %why, "the model was lost; loading it again");
                drop(acquired);
                acquired = state.registry.acquire(model, load).await?;
                acquired.model.generate(request).await?
            }
            result => result?,
        };
        let observer = Observer {
            metrics: state.metrics.clone(),
            model: acquired.name.clone(),
            key: ctx.key.clone(),
            started,
            last_token: None,
            ended: false,
        };
        Ok(Generation { acquired, stream, started, buffer_for_tools, observer })
    }

    /// The output as text pieces, then one `Done`. When tools were offered, text is held to
    /// the end so that a tool call is never half-streamed as prose. Dropping the stream drops
    /// the engine's stream, which cancels the work.
    pub fn pieces(self) -> futures::stream::BoxStream<'static, Result<Piece, ApiError>> {
        let Generation { acquired, stream, started, buffer_for_tools, mut observer } = self;
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen_end = finished.clone();
        let mut held = String::new();
        let pieces = stream
            .map(move |event| -> Vec<Result<Piece, ApiError>> {
                // `acquired` lives as long as the stream: the model stays loaded while it streams.
                let load_duration = acquired.load_duration;
                if let Ok(TokenEvent::Token { .. }) = &event {
                    observer.token();
                }
                match event {
                    Ok(TokenEvent::Token { text, .. }) | Ok(TokenEvent::Text(text)) => {
                        if text.is_empty() {
                            vec![]
                        } else if buffer_for_tools {
                            held.push_str(&text);
                            vec![]
                        } else {
                            vec![Ok(Piece::Text(text))]
                        }
                    }
                    Ok(TokenEvent::Done { finish_reason, usage, timings }) => {
                        seen_end.store(true, std::sync::atomic::Ordering::Relaxed);
                        observer.done(finish_reason, &usage, timings.queue);
                        let mut out = Vec::new();
                        let tool_calls = match hyperllama_engine::tools::parse_tool_calls(&held) {
                            Some(calls) if buffer_for_tools => calls,
                            _ => {
                                if !held.is_empty() {
                                    out.push(Ok(Piece::Text(std::mem::take(&mut held))));
                                }
                                Vec::new()
                            }
                        };
                        out.push(Ok(Piece::Done(Final {
                            finish_reason,
                            usage,
                            prompt_eval: timings.prompt_eval,
                            eval: timings.eval,
                            load_duration,
                            total_duration: started.elapsed(),
                            tool_calls,
                        })));
                        out
                    }
                    Err(e) => {
                        seen_end.store(true, std::sync::atomic::Ordering::Relaxed);
                        vec![Err(ApiError::from(e))]
                    }
                }
            })
            .flat_map(futures::stream::iter);
        let tail = futures::stream::once(async move {
            if finished.load(std::sync::atomic::Ordering::Relaxed) {
                None
            } else {
                Some(Err(ApiError::new(
                    crate::ErrorKind::Internal,
                    "stream_ended",
                    "generation ended without a result",
                )))
            }
        })
        .filter_map(futures::future::ready);
        pieces.chain(tail).boxed()
    }

    /// Runs to the end; returns all text and the final stats.
    pub async fn collect(self) -> Result<(String, Final), ApiError> {
        let mut text = String::new();
        let mut pieces = self.pieces();
        while let Some(p) = pieces.next().await {
            match p? {
                Piece::Text(t) => text.push_str(&t),
                Piece::Done(f) => return Ok((text, f)),
            }
        }
        Err(ApiError::new(crate::ErrorKind::Internal, "stream_ended", "generation ended without a result"))
    }
}

/// Accounts for an embedding request: metrics and the key's token budget.
pub fn account_embedding(state: &AppState, ctx: &RequestContext, model: &str, prompt_tokens: u32) {
    state.metrics.observe_embedding(model, prompt_tokens);
    if let Some(key) = &ctx.key {
        key.charge(u64::from(prompt_tokens));
    }
}

/// Tools in the shape both dialects send: `[{"type": "function", "function": {...}}]`.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolDto {
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionDto,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FunctionDto {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub parameters: serde_json::Value,
}

fn function_type() -> String {
    "function".into()
}

pub fn tool_specs(tools: &[ToolDto]) -> Result<Vec<ToolSpec>, ApiError> {
    tools
        .iter()
        .map(|t| {
            if t.kind != "function" {
                return Err(ApiError::bad_request(format!("unsupported tool type {:?}: only \"function\"", t.kind))
                    .with_param("tools"));
            }
            Ok(ToolSpec {
                name: t.function.name.clone(),
                description: t.function.description.clone(),
                parameters: t.function.parameters.clone(),
            })
        })
        .collect()
}

pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Shortens embeddings to `dims` (Matryoshka-style) and renormalises them; both dialects'
/// `dimensions` field.
pub fn truncate_dimensions(vectors: &mut [Vec<f32>], dims: u32, full: u32) -> Result<(), ApiError> {
    if dims == 0 || dims > full {
        return Err(ApiError::bad_request(format!("dimensions must be between 1 and {full}, got {dims}"))
            .with_param("dimensions"));
    }
    for v in vectors {
        v.truncate(dims as usize);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
    }
    Ok(())
}
