//! Any OpenAI-compatible server behind HyperLlama's [`Engine`] trait: vLLM (`vllm serve`, one
//! GPU box or a Ray cluster), llama.cpp's `llama-server`, SGLang, another HyperLlama. This is
//! how a fleet of nodes sits behind one front door.
//!
//! The remote server owns tokenization, chat templates and sampling; this engine translates
//! one [`GenerateRequest`] into a streaming `/v1/chat/completions` (chat prompts) or
//! `/v1/completions` (raw prompts) call, and the server-sent events back into
//! [`TokenEvent`]s, ending with the server's own `usage`. Dropping the stream drops the HTTP
//! response, which closes the connection: the remote server cancels the generation.
//!
//! Extensions both vLLM and llama-server accept are sent only when a request needs them:
//! `top_k`, `min_p`, `repetition_penalty`/`repeat_penalty`, `ignore_eos`, `cache_prompt`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hyperllama_core::{FinishReason, Timings, TokenEvent, Usage, ValidRequest, ValidationError, UNKNOWN_TOKEN_ID};
use hyperllama_engine::{
    Embeddings, Engine, EngineError, EngineInfo, Health, LoadOptions, LoadedModel, MemoryEstimate, ModelInfo,
    ModelStats, RemoteCatalog, ServedModel, TokenStream,
};
use hyperllama_protocol::openai::{
    self, ChatChunk, CompletionChunk, ModelList, ModelObject, ToolCallAssembler, WireRequest,
};
use hyperllama_protocol::sse::SseEvent;
use hyperllama_supervisor::{ProcessSpec, State, Supervisor, PORT};
use serde_json::{json, Value};

/// An OpenAI-compatible server: remote (a URL), or launched and supervised by HyperLlama
/// (`vllm serve`, `llama-server`, any command that serves `/v1` on a port it is given).
#[derive(Clone)]
pub struct OpenAiEngine {
    server: Arc<Supervisor>,
    /// The command line of a launched server (for `info` and errors).
    command: Option<String>,
}

impl OpenAiEngine {
    /// `url` may name the server (`http://host:8000`) or its API (`http://host:8000/v1`).
    pub fn new(url: &str, api_key: Option<String>) -> Self {
        let u = url.trim().trim_end_matches('/');
        let u = if u.contains("://") { u.to_string() } else { format!("http://{u}") };
        let base = if u.ends_with("/v1") { u } else { format!("{u}/v1") };
        Self { server: Supervisor::remote(&base, api_key), command: None }
    }

    /// A server HyperLlama runs: `command` (program and arguments, [`PORT`] where the port
    /// goes) is started on first use on a free loopback port, health-checked on `/v1/models`,
    /// restarted when it dies and stopped at shutdown. `api_key`, when the server wants one.
    pub fn launch(command: Vec<String>, api_key: Option<String>, start_timeout: Duration) -> Result<Self, String> {
        let (program, args) = command.split_first().ok_or("an empty command")?;
        if !command.iter().any(|a| a.contains(PORT)) {
            return Err(format!("the command must take its port from {PORT}: {}", command.join(" ")));
        }
        let name = std::path::Path::new(program).file_name().map(|n| n.to_string_lossy().into_owned());
        let spec = ProcessSpec {
            name: name.unwrap_or_else(|| program.clone()),
            program: program.into(),
            args: args.to_vec(),
            env: Vec::new(),
            health_path: "/v1/models".into(),
            missing_hint: format!("is {program} installed?"),
            start_timeout,
            log_target: "openai_server",
        };
        Ok(Self { server: Supervisor::launch(spec, api_key), command: Some(command.join(" ")) })
    }

    /// `vllm serve MODEL` on loopback with the port HyperLlama gives it, and `extra` arguments
    /// (`--tensor-parallel-size 2`, `--pipeline-parallel-size 2` for a Ray cluster, ...).
    pub fn vllm_command(model: &str, extra: &[String]) -> Vec<String> {
        let mut c: Vec<String> =
            ["vllm", "serve", model, "--host", "127.0.0.1", "--port", PORT].map(String::from).into();
        // Clients name the model as given, whatever vLLM would call a local path.
        if !extra.iter().any(|a| a == "--served-model-name") {
            c.extend(["--served-model-name".to_string(), model.to_string()]);
        }
        c.extend(extra.iter().cloned());
        c
    }

    /// The server's API URL now (`http://host:port/v1`), or what will be launched.
    pub fn base_url(&self) -> String {
        match (self.server.state(), &self.command) {
            (State::Ready { url, .. }, None) => url,
            (State::Ready { url, .. }, Some(_)) => format!("{url}/v1"),
            (_, Some(command)) => format!("launch: {command}"),
            (_, None) => "a remote server".into(),
        }
    }

    /// The API URL of the running server and its generation (starting it if needed); with
    /// `stale`, one newer than a generation that could not be reached.
    async fn base(&self, stale: u64) -> Result<(String, u64), EngineError> {
        let (url, generation) = self.server.ready_after(stale).await.map_err(EngineError::Unavailable)?;
        Ok((if self.command.is_some() { format!("{url}/v1") } else { url }, generation))
    }

    fn request(&self, method: reqwest::Method, base: &str, path: &str) -> reqwest::RequestBuilder {
        self.server.request(method, &format!("{base}{path}"))
    }

    /// The ids the server serves, with their metadata, and where: a launched server that
    /// cannot be reached is reported to its supervisor and its replacement asked.
    async fn models(&self) -> Result<(Vec<ModelObject>, String, u64), EngineError> {
        let (base, generation) = self.base(0).await?;
        match self.models_at(&base).await {
            Err(EngineError::Unavailable(_)) if self.command.is_some() => {
                let (base, generation) = self.base(generation).await?;
                Ok((self.models_at(&base).await?, base, generation))
            }
            other => Ok((other?, base, generation)),
        }
    }

    async fn models_at(&self, base: &str) -> Result<Vec<ModelObject>, EngineError> {
        let resp = self
            .request(reqwest::Method::GET, base, "/models")
            .send()
            .await
            .map_err(|e| EngineError::Unavailable(format!("cannot reach {base}: {e}")))?;
        let resp = check(resp, base).await?;
        let list: ModelList =
            resp.json().await.map_err(|e| EngineError::Unavailable(format!("{base}: bad /models answer: {e}")))?;
        Ok(list.data)
    }
}

/// Maps a remote error status to ours, keeping the server's message: its refusal of the
/// request is the client's error (400), a busy server is an overload (429), anything else is
/// the node's failure (502/503), never the client's.
async fn check(resp: reqwest::Response, base: &str) -> Result<reqwest::Response, EngineError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let message = openai::error_message(&resp.text().await.unwrap_or_default());
    Err(match status.as_u16() {
        400 | 422 => EngineError::Validation(ValidationError::Invalid(format!("the remote server refused: {message}"))),
        429 => EngineError::Overloaded { waiting: 0 },
        401 | 403 => EngineError::Unavailable(format!("{base} refused our credentials ({status}): {message}")),
        _ => EngineError::Unavailable(format!("{base} answered {status}: {message}")),
    })
}

#[async_trait::async_trait]
impl Engine for OpenAiEngine {
    fn id(&self) -> &'static str {
        "openai"
    }

    fn info(&self) -> EngineInfo {
        EngineInfo { id: "openai", version: self.base_url(), formats: vec!["remote"], devices: vec!["remote".into()] }
    }

    async fn health(&self) -> Health {
        if self.command.is_some() {
            match self.server.state() {
                State::Ready { .. } => {}
                State::Failed { reason } => return Health::Unavailable { reason },
                State::Stopped => return Health::Unavailable { reason: "stopped".into() },
                State::NotStarted => return Health::Loading { detail: "starts on first use".into() },
                State::Starting { .. } | State::Restarting { .. } => {
                    return Health::Loading { detail: "the server is starting".into() }
                }
            }
        }
        match self.models().await {
            Ok(_) => Health::Ready,
            Err(e) => Health::Unavailable { reason: e.to_string() },
        }
    }

    /// The node holds the weights: nothing is loaded in this process.
    async fn estimate_memory(&self, _options: &LoadOptions) -> Result<Option<MemoryEstimate>, EngineError> {
        Ok(None)
    }

    async fn shutdown(&self) {
        self.server.shutdown().await;
    }

    fn catalog(&self) -> Option<&dyn RemoteCatalog> {
        Some(self)
    }

    /// "Loads" the model the remote server serves under `options.path` (its model id).
    async fn load(&self, options: LoadOptions) -> Result<Arc<dyn LoadedModel>, EngineError> {
        let id = options.path.to_string_lossy().into_owned();
        let (models, base, generation) = self.models().await?;
        let Some(meta) = models.iter().find(|m| m.id == id) else {
            let served: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
            return Err(EngineError::Load(format!("{base} does not serve {id:?}; it serves {served:?}")));
        };
        let context = meta.context_length();
        let info = ModelInfo {
            name: id.clone(),
            architecture: "remote".into(),
            parameter_count: meta.meta_u64("n_params").unwrap_or(0),
            context_length: u32::try_from(context).unwrap_or(u32::MAX),
            loaded_context: u32::try_from(context).unwrap_or(u32::MAX),
            embedding_length: meta.meta_u64("n_embd").and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            size_bytes: meta.meta_u64("size").unwrap_or(0),
            ..ModelInfo::default()
        };
        Ok(Arc::new(RemoteModel {
            engine: self.clone(),
            base,
            generation,
            lost: AtomicBool::new(false),
            id,
            info,
            stats: Arc::default(),
        }))
    }
}

#[async_trait::async_trait]
impl RemoteCatalog for OpenAiEngine {
    fn url(&self) -> String {
        self.base_url()
    }

    async fn served_models(&self) -> Result<Vec<ServedModel>, EngineError> {
        Ok(self
            .models()
            .await?
            .0
            .into_iter()
            .map(|m| ServedModel {
                context_length: m.context_length(),
                id: m.id,
                owned_by: m.owned_by,
                created: m.created,
            })
            .collect())
    }
}

#[derive(Default)]
struct Counters {
    finished: AtomicU64,
    prompt: AtomicU64,
    generated: AtomicU64,
}

/// One model of a remote server.
pub struct RemoteModel {
    engine: OpenAiEngine,
    /// The API URL of the server process it was loaded from.
    base: String,
    generation: u64,
    /// A launched server it was loaded from could not be reached: load it again.
    lost: AtomicBool,
    id: String,
    info: ModelInfo,
    stats: Arc<Counters>,
}

#[async_trait::async_trait]
impl LoadedModel for RemoteModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn stats(&self) -> ModelStats {
        ModelStats {
            requests_finished: self.stats.finished.load(Ordering::Relaxed),
            prompt_tokens: self.stats.prompt.load(Ordering::Relaxed),
            generated_tokens: self.stats.generated.load(Ordering::Relaxed),
            ..ModelStats::default()
        }
    }

    async fn generate(&self, request: ValidRequest) -> Result<TokenStream, EngineError> {
        let wire = openai::request_for(&self.id, &request);
        let started = Instant::now();
        let resp = self
            .engine
            .request(reqwest::Method::POST, &self.base, wire.path())
            .json(&wire.to_json())
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let resp = check(resp, &self.base).await?;
        let chat = matches!(wire, WireRequest::Chat(_));
        let events = hyperllama_protocol::stream::sse_events(resp.bytes_stream());
        Ok(Box::pin(remote_events(Box::pin(events), chat, started, self.stats.clone())))
    }

    async fn embed(&self, inputs: Vec<String>, _truncate: bool) -> Result<Embeddings, EngineError> {
        if inputs.is_empty() {
            return Err(ValidationError::Empty { field: "input" }.into());
        }
        let resp = self
            .engine
            .request(reqwest::Method::POST, &self.base, "/embeddings")
            .json(&json!({ "model": self.id, "input": inputs }))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let v: Value = check(resp, &self.base)
            .await?
            .json()
            .await
            .map_err(|e| EngineError::Internal(format!("bad embeddings answer: {e}")))?;
        let mut out = Embeddings {
            prompt_tokens: v["usage"]["prompt_tokens"].as_u64().unwrap_or(0) as u32,
            ..Embeddings::default()
        };
        for item in v["data"].as_array().into_iter().flatten() {
            let vec: Vec<f32> = item["embedding"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64)
                .map(|x| x as f32)
                .collect();
            let norm = vec.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt().max(1e-12);
            out.vectors.push(vec.iter().map(|x| (f64::from(*x) / norm) as f32).collect());
        }
        if out.vectors.len() != inputs.len() {
            return Err(EngineError::Internal(format!(
                "asked for {} embeddings, got {}",
                inputs.len(),
                out.vectors.len()
            )));
        }
        Ok(out)
    }

    async fn unload(&self) -> Result<(), EngineError> {
        Ok(())
    }

    /// False once a launched server it was loaded from restarted or could not be reached.
    fn is_healthy(&self) -> bool {
        self.engine.command.is_none()
            || (!self.lost.load(Ordering::Relaxed)
                && matches!(self.engine.server.state(), State::Ready { generation, .. } if generation == self.generation))
    }
}

impl RemoteModel {
    /// The error for a request that could not reach the server; a launched server is checked.
    fn unreachable(&self, e: reqwest::Error) -> EngineError {
        if self.engine.command.is_some() {
            self.lost.store(true, Ordering::Relaxed);
            self.engine.server.suspect(self.generation);
        }
        EngineError::Unavailable(format!("cannot reach {}: {e}", self.base))
    }
}

type Events = std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<SseEvent>> + Send>>;

/// What a remote stream has said so far.
struct Progress {
    first: Option<Instant>,
    n: u32,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
    calls: ToolCallAssembler,
    pending: std::collections::VecDeque<Result<TokenEvent, EngineError>>,
}

/// A remote stream as token events: text as tokens, tool calls put back together from their
/// deltas, then `Done` with the server's own usage. A stream that ends without `[DONE]` and
/// without a finish reason was cut (a crashed node, a dropped connection): an error, never a
/// normal stop.
fn remote_events(
    events: Events,
    chat: bool,
    started: Instant,
    stats: Arc<Counters>,
) -> impl futures::Stream<Item = Result<TokenEvent, EngineError>> + Send {
    let progress = Progress {
        first: None,
        n: 0,
        usage: None,
        finish: None,
        calls: ToolCallAssembler::default(),
        pending: Default::default(),
    };
    futures::stream::unfold((events, progress, false), move |(mut events, mut p, mut ended)| {
        let stats = stats.clone();
        async move {
            loop {
                if let Some(ev) = p.pending.pop_front() {
                    return Some((ev, (events, p, ended)));
                }
                if ended {
                    return None;
                }
                let complete = match events.next().await {
                    Some(Ok(ev)) if ev.data.trim() == "[DONE]" => true,
                    Some(Ok(ev)) => match p.handle(&ev.data, chat) {
                        Ok(()) => false,
                        Err(e) => {
                            ended = true;
                            p.pending.push_back(Err(e));
                            continue;
                        }
                    },
                    Some(Err(e)) => {
                        ended = true;
                        p.pending.push_back(Err(EngineError::Unavailable(format!("the remote stream broke: {e}"))));
                        continue;
                    }
                    None if p.finish.is_none() => {
                        ended = true;
                        p.pending.push_back(Err(EngineError::Unavailable(
                            "the remote server ended the stream before the answer finished (no [DONE], no finish reason)"
                                .into(),
                        )));
                        continue;
                    }
                    None => true,
                };
                if complete {
                    ended = true;
                    p.finish_stream(started, &stats);
                }
            }
        }
    })
}

impl Progress {
    /// One `data:` event.
    fn handle(&mut self, data: &str, chat: bool) -> Result<(), EngineError> {
        if let Ok(err) = serde_json::from_str::<ErrorEvent>(data) {
            return Err(EngineError::Unavailable(format!("the remote server failed mid-stream: {}", err.message())));
        }
        let malformed =
            |e: serde_json::Error| EngineError::Internal(format!("the remote server sent a malformed event: {e}"));
        let (text, finish, usage) = if chat {
            let chunk: ChatChunk = serde_json::from_str(data).map_err(malformed)?;
            let choice = chunk.choices.into_iter().next().unwrap_or_default();
            if let Some(calls) = &choice.delta.tool_calls {
                self.calls.push(calls);
            }
            (choice.delta.content, choice.finish_reason, chunk.usage)
        } else {
            let chunk: CompletionChunk = serde_json::from_str(data).map_err(malformed)?;
            let choice = chunk.choices.into_iter().next().unwrap_or_default();
            (Some(choice.text), choice.finish_reason, chunk.usage)
        };
        if let Some(text) = text.filter(|t| !t.is_empty()) {
            self.first.get_or_insert_with(Instant::now);
            self.n += 1;
            self.pending.push_back(Ok(TokenEvent::token(UNKNOWN_TOKEN_ID, text)));
        }
        match finish.as_deref() {
            Some("length") => self.finish = Some(FinishReason::Length),
            Some(_) => self.finish = Some(FinishReason::Stop),
            None => {}
        }
        if let Some(u) = usage {
            self.usage = Some(u.into());
        }
        Ok(())
    }

    /// The end: the calls put back together, then `Done` with the server's usage.
    fn finish_stream(&mut self, started: Instant, stats: &Counters) {
        for call in std::mem::take(&mut self.calls).finish() {
            self.pending.push_back(Ok(TokenEvent::ToolCall(call)));
        }
        let end = Instant::now();
        let first = self.first.unwrap_or(end);
        let usage = self.usage.unwrap_or(Usage { completion_tokens: self.n, ..Usage::default() });
        stats.finished.fetch_add(1, Ordering::Relaxed);
        stats.prompt.fetch_add(u64::from(usage.prompt_tokens), Ordering::Relaxed);
        stats.generated.fetch_add(u64::from(usage.completion_tokens), Ordering::Relaxed);
        let timings = Timings { queue: Duration::ZERO, prompt_eval: first - started, eval: end - first };
        let finish_reason = self.finish.unwrap_or(FinishReason::Stop);
        self.pending.push_back(Ok(TokenEvent::Done { finish_reason, usage, timings, stop_sequence: None }));
    }
}

/// An `{"error": ...}` event in the middle of a stream.
#[derive(serde::Deserialize)]
struct ErrorEvent {
    error: serde_json::Value,
}

impl ErrorEvent {
    fn message(&self) -> String {
        self.error["message"].as_str().map(String::from).unwrap_or_else(|| self.error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(datas: &[&str]) -> Events {
        let items: Vec<reqwest::Result<SseEvent>> =
            datas.iter().map(|d| Ok(SseEvent { event: None, data: d.to_string() })).collect();
        Box::pin(futures::stream::iter(items))
    }

    async fn collect(datas: &[&str]) -> Vec<Result<TokenEvent, EngineError>> {
        remote_events(events(datas), true, Instant::now(), Arc::default()).collect().await
    }

    #[tokio::test]
    async fn tool_call_deltas_become_calls_before_done() {
        let out = collect(&[
            r#"{"choices":[{"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\"city\""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":":\"Paris\"}"}}]},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}"#,
            "[DONE]",
        ])
        .await;
        assert_eq!(out.len(), 2, "{out:?}");
        match &out[0] {
            Ok(TokenEvent::ToolCall(c)) => {
                assert_eq!(c.name, "get_weather");
                assert_eq!(c.id.as_deref(), Some("call_a"));
                assert_eq!(c.arguments["city"], "Paris");
            }
            other => panic!("expected a tool call, got {other:?}"),
        }
        assert!(matches!(&out[1], Ok(TokenEvent::Done { usage, .. }) if usage.prompt_tokens == 9));
    }

    #[tokio::test]
    async fn a_cut_stream_is_an_error_and_a_finished_one_without_done_is_not() {
        let out = collect(&[r#"{"choices":[{"delta":{"content":"Hel"}}]}"#]).await;
        assert!(
            matches!(out.last(), Some(Err(EngineError::Unavailable(m))) if m.contains("before the answer finished")),
            "{out:?}"
        );
        let out = collect(&[r#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":"stop"}]}"#]).await;
        assert!(matches!(out.last(), Some(Ok(TokenEvent::Done { finish_reason: FinishReason::Stop, .. }))), "{out:?}");
        let out = collect(&[r#"{"error":{"message":"boom"}}"#]).await;
        assert!(matches!(out.last(), Some(Err(EngineError::Unavailable(m))) if m.contains("boom")), "{out:?}");
    }
}
