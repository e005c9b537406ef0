//! Modular MAX behind HyperLlama's [`Engine`] trait, through the Python sidecar in `python/`.
//!
//! The sidecar ([`sidecar`]) is started on first use, supervised and restarted; this module
//! speaks its HTTP API: `POST /load` (NDJSON progress), `POST /generate` (NDJSON token events),
//! `POST /unload`, `GET /health`. Prompts are rendered here with the model's own chat template
//! (the same code the llama.cpp engine uses), so a chat gives MAX exactly the text it gives
//! llama.cpp, tools included; MAX tokenizes and samples.

pub mod sidecar;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hyperllama_core::{
    FinishReason, Prompt, Timings, TokenEvent, ToolSpec, Usage, ValidRequest, ValidationError, UNKNOWN_TOKEN_ID,
};
use hyperllama_engine::{
    ChatTemplate, Embeddings, Engine, EngineError, EngineInfo, Health, LoadOptions, LoadedModel, MemoryEstimate,
    ModelInfo, ModelStats, PromptRenderer, TokenStream,
};
use hyperllama_protocol::openai;
use serde_json::{json, Value};
pub use sidecar::{Sidecar, SidecarConfig, SidecarState};

/// The MAX release the sidecar is pinned to (python/pyproject.toml).
pub const PINNED_MAX_VERSION: &str = "26.7.0";

/// Sequences MAX batches when the caller does not say (`serve --parallel`'s default too).
pub const DEFAULT_BATCH: u32 = 4;

/// MAX, through its sidecar.
#[derive(Clone)]
pub struct MaxEngine {
    sidecar: Arc<Sidecar>,
    /// `info()` runs for every request the registry routes: the version is read from disk once.
    version: Arc<std::sync::OnceLock<Option<String>>>,
}

impl MaxEngine {
    pub fn new(config: SidecarConfig) -> Self {
        Self { sidecar: Sidecar::new(config), version: Arc::default() }
    }

    pub fn sidecar(&self) -> &Arc<Sidecar> {
        &self.sidecar
    }

    /// The MAX version installed in the sidecar's environment, read from its package metadata
    /// (no Python started).
    pub fn installed_version(&self) -> Option<String> {
        let venv = self.sidecar.config().python.parent()?.parent()?.join("lib");
        for py in std::fs::read_dir(venv).ok()?.flatten() {
            let site = py.path().join("site-packages");
            for entry in std::fs::read_dir(site).ok()?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(v) = name.strip_prefix("max-").and_then(|r| r.strip_suffix(".dist-info")) {
                    return Some(v.to_string());
                }
            }
        }
        None
    }
}

/// The context and batch a load with `options` gets (MAX compiles per shape: one batch size
/// for every caller keeps one compiled model).
fn shape(options: &LoadOptions, trained: u32) -> (u32, u32) {
    (options.ctx_size.unwrap_or(4096).min(trained), options.parallel.unwrap_or(DEFAULT_BATCH).max(1))
}

fn open_gguf(path: &Path) -> Result<hyperllama_gguf::GgufFile, EngineError> {
    hyperllama_gguf::GgufFile::open(path).map_err(|e| EngineError::Load(format!("{}: {e}", path.display())))
}

#[async_trait::async_trait]
impl Engine for MaxEngine {
    fn id(&self) -> &'static str {
        "max"
    }

    /// MAX loads the weights as float32 (4 bytes a parameter, 4-7x a Q4 file) and keeps a
    /// float32 KV cache, twice llama.cpp's f16 one.
    async fn estimate_memory(&self, options: &LoadOptions) -> Result<Option<MemoryEstimate>, EngineError> {
        let path = options.path.clone();
        let options = options.clone();
        tokio::task::spawn_blocking(move || {
            let gguf = open_gguf(&path)?;
            let trained = u32::try_from(gguf.context_length().unwrap_or(2048)).unwrap_or(u32::MAX);
            let (ctx, batch) = shape(&options, trained);
            let est = gguf.memory_estimate(u64::from(ctx), u64::from(batch));
            let weights = gguf.parameter_count().saturating_mul(4);
            let kv_cache = est.kv_cache.saturating_mul(2);
            Ok(Some(MemoryEstimate {
                weights,
                kv_cache,
                compute: est.compute,
                total: weights.saturating_add(kv_cache).saturating_add(est.compute),
                context: u64::from(ctx),
                parallel: u64::from(batch),
            }))
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))?
    }

    /// Stops the sidecar and the MAX processes it runs.
    async fn shutdown(&self) {
        self.sidecar.shutdown().await;
    }

    fn info(&self) -> EngineInfo {
        let installed = self.version.get_or_init(|| self.installed_version()).clone();
        let version = match (&self.sidecar.config().url, installed) {
            (Some(url), _) => format!("remote sidecar at {url}"),
            (None, Some(v)) => v,
            (None, None) => format!("not installed (pinned {PINNED_MAX_VERSION})"),
        };
        EngineInfo { id: "max", version, formats: vec!["gguf (llama, as float32)"], devices: vec!["cpu".into()] }
    }

    async fn health(&self) -> Health {
        match self.sidecar.state() {
            SidecarState::Ready { url, .. } => {
                match self.sidecar.request(reqwest::Method::GET, &format!("{url}/health")).send().await {
                    Ok(r) if r.status().is_success() => {
                        let v: Value = r.json().await.unwrap_or_default();
                        match v["status"].as_str() {
                            Some("loading") => Health::Loading { detail: "a model is loading".into() },
                            _ => Health::Ready,
                        }
                    }
                    Ok(r) => Health::Unavailable { reason: format!("the sidecar answered {}", r.status()) },
                    Err(e) => Health::Unavailable { reason: format!("the sidecar does not answer: {e}") },
                }
            }
            SidecarState::NotStarted if self.sidecar.config().url.is_none() => {
                if self.installed_version().is_some() {
                    Health::Ready
                } else {
                    Health::Unavailable {
                        reason: format!(
                            "no MAX environment at {} (scripts/setup-max.sh)",
                            self.sidecar.config().python.display()
                        ),
                    }
                }
            }
            SidecarState::NotStarted | SidecarState::Starting { .. } => {
                Health::Loading { detail: "the sidecar is starting".into() }
            }
            SidecarState::Restarting { reason, .. } => Health::Loading { detail: format!("restarting: {reason}") },
            SidecarState::Failed { reason } => Health::Unavailable { reason },
            SidecarState::Stopped => Health::Unavailable { reason: "stopped".into() },
        }
    }

    async fn load(&self, options: LoadOptions) -> Result<Arc<dyn LoadedModel>, EngineError> {
        let path = options.path.clone();
        let gguf = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || open_gguf(&path))
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))??
        };
        let arch = gguf.architecture().unwrap_or("unknown").to_string();
        if arch != "llama" {
            return Err(EngineError::Load(format!(
                "the MAX engine serves the llama architecture from GGUF; this model is {arch:?} (use --engine llamacpp)"
            )));
        }
        let id = model_id(&path);
        let trained = u32::try_from(gguf.context_length().unwrap_or(2048)).unwrap_or(u32::MAX);
        let (ctx, batch) = shape(&options, trained);
        let body = json!({
            "model": id,
            "gguf": path,
            "max_length": ctx,
            "max_batch_size": batch,
            "stream": true,
        });
        let started = Instant::now();
        // A sidecar that died a moment ago may not be reaped yet: one that cannot be reached
        // is reported to the supervisor, and the load goes to the generation that replaces it.
        let mut stale = 0;
        let (url, generation, resp) = loop {
            let (url, generation) = self.sidecar.ready_after(stale).await.map_err(EngineError::Unavailable)?;
            match self.sidecar.request(reqwest::Method::POST, &format!("{url}/load")).json(&body).send().await {
                Ok(resp) => break (url, generation, resp),
                Err(e) if e.is_connect() && stale == 0 => stale = generation,
                Err(e) => return Err(EngineError::Unavailable(format!("the MAX sidecar does not answer: {e}"))),
            }
        };
        if !resp.status().is_success() {
            let status = resp.status();
            let text = openai::error_message(&resp.text().await.unwrap_or_default());
            return Err(EngineError::Load(format!("the MAX sidecar refused the load ({status}): {text}")));
        }
        let mut lines = ndjson(resp);
        let mut last = Value::Null;
        while let Some(line) = lines.next().await {
            let v =
                line.map_err(|e| EngineError::Unavailable(format!("the MAX sidecar went away while loading: {e}")))?;
            if let Some(status) = v["status"].as_str() {
                tracing::info!(model = %id, elapsed_s = started.elapsed().as_secs(), "MAX load: {status}");
            }
            last = v;
        }
        if let Some(err) = last["error"].as_str() {
            return Err(EngineError::Load(format!("MAX: {err}")));
        }
        if last["status"] != "ready" {
            return Err(EngineError::Load("the MAX sidecar ended the load without an answer".into()));
        }
        let template = match gguf.chat_template() {
            Some(src) => Some(ChatTemplate::new(
                src,
                gguf.bos_token().unwrap_or_default(),
                gguf.eos_token().unwrap_or_default(),
            )?),
            None => None,
        };
        let weights = gguf.parameter_count() * 4;
        let info = ModelInfo {
            name: gguf.name().map(str::to_string).unwrap_or_else(|| id.clone()),
            architecture: arch,
            parameter_count: gguf.parameter_count(),
            quantization: format!("F32 (MAX, from {})", gguf.quantization()),
            context_length: trained,
            loaded_context: ctx,
            embedding_length: u32::try_from(gguf.embedding_length().unwrap_or(0)).unwrap_or(0),
            chat_template: gguf.chat_template().map(str::to_string),
            size_bytes: weights,
        };
        tracing::info!(model = %id, secs = started.elapsed().as_secs_f64(), "loaded with MAX");
        Ok(Arc::new(MaxModel {
            live: Liveness { sidecar: self.sidecar.clone(), generation, lost: Arc::default() },
            url,
            id,
            info,
            template,
            parallel: batch,
            counters: Arc::default(),
        }))
    }
}

/// The sidecar's name for one load: the file name (a content digest for store blobs) and a
/// counter, so that two loads of one file (two model names, different options) are two models.
fn model_id(path: &Path) -> String {
    static LOADS: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let name: String =
        name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).take(80).collect();
    format!("{name}-{}", LOADS.fetch_add(1, Ordering::Relaxed) + 1)
}

#[derive(Default)]
struct Counters {
    finished: AtomicU64,
    cancelled: AtomicU64,
    prompt: AtomicU64,
    cached: AtomicU64,
    generated: AtomicU64,
    active: AtomicU64,
}

/// One model loaded in the sidecar.
pub struct MaxModel {
    live: Liveness,
    url: String,
    id: String,
    info: ModelInfo,
    template: Option<ChatTemplate>,
    parallel: u32,
    counters: Arc<Counters>,
}

/// Whether the sidecar generation that loaded a model still has it.
#[derive(Clone)]
struct Liveness {
    sidecar: Arc<Sidecar>,
    generation: u64,
    /// The sidecar said 404 for it, or could not be reached, or broke off a stream.
    lost: Arc<AtomicBool>,
}

impl Liveness {
    /// The model must be loaded again; the supervisor checks on the sidecar at once.
    fn lose(&self) {
        self.lost.store(true, Ordering::Relaxed);
        self.sidecar.suspect(self.generation);
    }

    /// The sidecar that loaded the model is still the one running.
    fn same_sidecar(&self) -> bool {
        matches!(self.sidecar.state(), SidecarState::Ready { generation, .. } if generation == self.generation)
    }
}

#[async_trait::async_trait]
impl LoadedModel for MaxModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn stats(&self) -> ModelStats {
        let c = &self.counters;
        ModelStats {
            requests_finished: c.finished.load(Ordering::Relaxed),
            requests_cancelled: c.cancelled.load(Ordering::Relaxed),
            prompt_tokens: c.prompt.load(Ordering::Relaxed),
            cached_prompt_tokens: c.cached.load(Ordering::Relaxed),
            generated_tokens: c.generated.load(Ordering::Relaxed),
            parallel: self.parallel,
            active: u32::try_from(c.active.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
            ..ModelStats::default()
        }
    }

    async fn generate(&self, request: ValidRequest) -> Result<TokenStream, EngineError> {
        // One template for every engine: chats are rendered here, MAX completes the text.
        let rendered = self.render_request(&request)?;
        let raw = request.with_raw_prompt(rendered);
        let mut wire = openai::request_for(&self.id, &raw);
        if let openai::WireRequest::Completion(c) = &mut wire {
            c.stream_options = None;
            c.logprobs = None;
        }
        wire.sampling_mut().cache_prompt = None;
        let body = wire.to_json();
        let started = Instant::now();
        let resp = self
            .live
            .sidecar
            .request(reqwest::Method::POST, &format!("{}/generate", self.url))
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                self.live.lose();
                EngineError::Unavailable(format!("the MAX sidecar does not answer: {e}"))
            })?;
        let status = resp.status();
        if !status.is_success() {
            let msg = openai::error_message(&resp.text().await.unwrap_or_default());
            return Err(match status.as_u16() {
                400 => EngineError::Validation(ValidationError::Invalid(format!("MAX refused the request: {msg}"))),
                // The sidecar's 503 is "not loaded" or an OS error: the model is lost and the
                // service loads it again (never "busy": MAX queues requests itself).
                404 | 503 => {
                    self.live.lost.store(true, Ordering::Relaxed);
                    EngineError::Unavailable(format!("the model is no longer loaded in MAX ({status}): {msg}"))
                }
                _ => EngineError::Internal(format!("MAX ({status}): {msg}")),
            });
        }
        let counters = self.counters.clone();
        counters.active.fetch_add(1, Ordering::Relaxed);
        let guard = ActiveGuard { counters: counters.clone(), done: false };
        let lines = ndjson(resp);
        let live = self.live.clone();
        let events = futures::stream::unfold(
            (lines, guard, None::<Instant>, false),
            move |(mut lines, mut guard, mut first, ended)| {
                let live = live.clone();
                async move {
                    if ended {
                        return None;
                    }
                    let item = match lines.next().await {
                        None => {
                            live.lose();
                            Err(EngineError::Unavailable("the MAX sidecar ended the stream without finishing".into()))
                        }
                        Some(Err(e)) => {
                            live.lose();
                            Err(EngineError::Unavailable(format!("the MAX sidecar went away mid-request: {e}")))
                        }
                        Some(Ok(v)) => {
                            if let Some(text) = v["token"].as_str() {
                                first.get_or_insert_with(Instant::now);
                                return Some((
                                    Ok(TokenEvent::token(UNKNOWN_TOKEN_ID, text)),
                                    (lines, guard, first, false),
                                ));
                            }
                            if let Some(err) = v["error"].as_str() {
                                Err(EngineError::Internal(format!("MAX failed mid-stream: {err}")))
                            } else if v["done"] == true {
                                let n =
                                    |k: &str| v["usage"][k].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
                                let usage = Usage {
                                    prompt_tokens: n("prompt_tokens"),
                                    cached_tokens: n("cached_tokens"),
                                    completion_tokens: n("completion_tokens"),
                                };
                                let c = &guard.counters;
                                c.finished.fetch_add(1, Ordering::Relaxed);
                                c.prompt.fetch_add(u64::from(usage.prompt_tokens), Ordering::Relaxed);
                                c.cached.fetch_add(u64::from(usage.cached_tokens), Ordering::Relaxed);
                                c.generated.fetch_add(u64::from(usage.completion_tokens), Ordering::Relaxed);
                                guard.done = true;
                                let end = Instant::now();
                                let first = first.unwrap_or(end);
                                let finish_reason = match v["finish_reason"].as_str() {
                                    Some("length") => FinishReason::Length,
                                    _ => FinishReason::Stop,
                                };
                                let timings =
                                    Timings { queue: Duration::ZERO, prompt_eval: first - started, eval: end - first };
                                Ok(TokenEvent::Done { finish_reason, usage, timings, stop_sequence: None })
                            } else {
                                Err(EngineError::Internal(format!("the MAX sidecar sent an unknown event: {v}")))
                            }
                        }
                    };
                    Some((item, (lines, guard, first, true)))
                }
            },
        );
        Ok(Box::pin(events))
    }

    fn renderer(&self) -> Option<&dyn PromptRenderer> {
        Some(self)
    }

    async fn embed(&self, _inputs: Vec<String>, _truncate: bool) -> Result<Embeddings, EngineError> {
        Err(EngineError::Validation(ValidationError::Invalid(
            "the MAX engine does not serve embeddings here; use the llamacpp engine".into(),
        )))
    }

    async fn unload(&self) -> Result<(), EngineError> {
        if !self.live.same_sidecar() {
            return Ok(()); // the sidecar that held it is gone already
        }
        let r = self
            .live
            .sidecar
            .request(reqwest::Method::POST, &format!("{}/unload", self.url))
            .json(&json!({ "model": self.id }))
            .send()
            .await
            .map_err(|e| EngineError::Unavailable(format!("the MAX sidecar does not answer: {e}")))?;
        if r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(EngineError::Internal(format!("the MAX sidecar could not unload: {}", r.status())))
        }
    }

    /// False once the sidecar that held this model restarted (or stopped).
    fn is_healthy(&self) -> bool {
        !self.live.lost.load(Ordering::Relaxed) && self.live.same_sidecar()
    }
}

impl PromptRenderer for MaxModel {
    fn render_prompt(&self, prompt: &Prompt, tools: &[ToolSpec]) -> Result<String, EngineError> {
        hyperllama_engine::render_prompt(self.template.as_ref(), prompt, tools)
    }
    fn template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }
}

/// Counts a generation as active until it finishes or is dropped (cancelled).
struct ActiveGuard {
    counters: Arc<Counters>,
    done: bool,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.counters.active.fetch_sub(1, Ordering::Relaxed);
        if !self.done {
            self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type Lines = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Value, String>> + Send>>;

/// An NDJSON body as a stream of JSON values.
fn ndjson(resp: reqwest::Response) -> Lines {
    Box::pin(hyperllama_protocol::stream::ndjson_lines(resp.bytes_stream()).map(|line| match line {
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes).map_err(|e| format!("malformed line: {e}")),
        Err(e) => Err(e.to_string()),
    }))
}
