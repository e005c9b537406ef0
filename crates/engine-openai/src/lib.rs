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
use hyperllama_core::{
    FinishReason, GenerateRequest, OutputFormat, Prompt, Sampling, Timings, TokenEvent, ToolSpec, Usage,
    ValidationError, UNKNOWN_TOKEN_ID,
};
use hyperllama_engine::{
    Embeddings, Engine, EngineError, EngineInfo, Health, LoadOptions, LoadedModel, ModelInfo, ModelStats, ServedModel,
    TokenStream,
};
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
    async fn models(&self) -> Result<(Vec<Value>, String, u64), EngineError> {
        let (base, generation) = self.base(0).await?;
        match self.models_at(&base).await {
            Err(EngineError::Unavailable(_)) if self.command.is_some() => {
                let (base, generation) = self.base(generation).await?;
                Ok((self.models_at(&base).await?, base, generation))
            }
            other => Ok((other?, base, generation)),
        }
    }

    async fn models_at(&self, base: &str) -> Result<Vec<Value>, EngineError> {
        let resp = self
            .request(reqwest::Method::GET, base, "/models")
            .send()
            .await
            .map_err(|e| EngineError::Unavailable(format!("cannot reach {base}: {e}")))?;
        let resp = check(resp, base).await?;
        let v: Value = resp.json().await.map_err(|e| EngineError::Internal(format!("bad /models answer: {e}")))?;
        Ok(v["data"].as_array().cloned().unwrap_or_default())
    }
}

/// Maps a remote error status to ours, keeping the server's message.
async fn check(resp: reqwest::Response, base: &str) -> Result<reqwest::Response, EngineError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            v["error"]["message"]
                .as_str()
                .or_else(|| v["error"].as_str())
                .or_else(|| v["message"].as_str())
                .map(String::from)
        })
        .unwrap_or_else(|| text.chars().take(300).collect());
    Err(match status.as_u16() {
        400 | 422 => EngineError::Validation(ValidationError::Invalid(format!("the remote server refused: {message}"))),
        401 | 403 => EngineError::Unavailable(format!("{base} refused our credentials ({status}): {message}")),
        429 | 503 => EngineError::Overloaded { waiting: 0 },
        _ => EngineError::Unavailable(format!("{base} answered {status}: {message}")),
    })
}

#[async_trait::async_trait]
impl Engine for OpenAiEngine {
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

    async fn shutdown(&self) {
        self.server.shutdown().await;
    }

    async fn served_models(&self) -> Result<Vec<ServedModel>, EngineError> {
        Ok(self
            .models()
            .await?
            .0
            .iter()
            .filter_map(|m| {
                Some(ServedModel {
                    id: m["id"].as_str()?.to_string(),
                    owned_by: m["owned_by"].as_str().unwrap_or_default().to_string(),
                    created: m["created"].as_i64().unwrap_or(0),
                    context_length: context_of(m),
                })
            })
            .collect())
    }

    /// "Loads" the model the remote server serves under `options.path` (its model id).
    async fn load(&self, options: LoadOptions) -> Result<Arc<dyn LoadedModel>, EngineError> {
        let id = options.path.to_string_lossy().into_owned();
        let (models, base, generation) = self.models().await?;
        let Some(meta) = models.iter().find(|m| m["id"].as_str() == Some(id.as_str())) else {
            let served: Vec<&str> = models.iter().filter_map(|m| m["id"].as_str()).collect();
            return Err(EngineError::Load(format!("{base} does not serve {id:?}; it serves {served:?}")));
        };
        let context = context_of(meta);
        let info = ModelInfo {
            name: id.clone(),
            architecture: "remote".into(),
            parameter_count: meta["meta"]["n_params"].as_u64().unwrap_or(0),
            context_length: u32::try_from(context).unwrap_or(u32::MAX),
            loaded_context: u32::try_from(context).unwrap_or(u32::MAX),
            embedding_length: meta["meta"]["n_embd"].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            size_bytes: meta["meta"]["size"].as_u64().unwrap_or(0),
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

/// The context a `/v1/models` entry states: vLLM says `max_model_len`, llama-server `meta.n_ctx_train`.
fn context_of(meta: &Value) -> u64 {
    meta["max_model_len"].as_u64().or_else(|| meta["meta"]["n_ctx_train"].as_u64()).unwrap_or(0)
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

/// The OpenAI request body for `request` (chat or completion, streaming with usage) and the
/// path it goes to (`/chat/completions` or `/completions`). The MAX sidecar takes the same body.
pub fn request_body(model: &str, request: &GenerateRequest) -> (&'static str, Value) {
    let mut body = json!({ "model": model, "stream": true, "stream_options": { "include_usage": true } });
    let path = match &request.prompt {
        Prompt::Raw(text) => {
            body["prompt"] = json!(text);
            "/completions"
        }
        Prompt::Chat(messages) => {
            body["messages"] = messages
                .iter()
                .map(|m| {
                    let mut v = json!({ "role": m.role.as_str(), "content": m.content });
                    if let Some(name) = &m.tool_name {
                        v["name"] = json!(name);
                    }
                    v
                })
                .collect();
            if !request.tools.is_empty() {
                body["tools"] = request.tools.iter().map(tool_json).collect();
            }
            "/chat/completions"
        }
    };
    let s = &request.sampling;
    match s.sampling {
        Sampling::Greedy => body["temperature"] = json!(0.0),
        Sampling::Random { temperature, top_k, top_p, min_p } => {
            body["temperature"] = json!(temperature);
            if let Some(k) = top_k {
                body["top_k"] = json!(k);
            }
            if let Some(p) = top_p {
                body["top_p"] = json!(p);
            }
            if let Some(p) = min_p {
                body["min_p"] = json!(p);
            }
        }
    }
    if let Some(seed) = s.seed {
        body["seed"] = json!(seed);
    }
    let p = s.penalties;
    if p.presence != 0.0 {
        body["presence_penalty"] = json!(p.presence);
    }
    if p.frequency != 0.0 {
        body["frequency_penalty"] = json!(p.frequency);
    }
    if p.repeat != 1.0 {
        // vLLM's name, then llama-server's.
        body["repetition_penalty"] = json!(p.repeat);
        body["repeat_penalty"] = json!(p.repeat);
    }
    if let Some(n) = request.stop.max_tokens {
        body["max_tokens"] = json!(n);
    }
    if !request.stop.stop.is_empty() {
        body["stop"] = json!(request.stop.stop);
    }
    if request.stop.ignore_eos {
        body["ignore_eos"] = json!(true);
    }
    if !request.cache_prompt {
        body["cache_prompt"] = json!(false);
    }
    match &request.format {
        Some(OutputFormat::Json) => body["response_format"] = json!({ "type": "json_object" }),
        Some(OutputFormat::JsonSchema(schema)) => {
            body["response_format"] =
                json!({ "type": "json_schema", "json_schema": { "name": "output", "schema": schema } })
        }
        None => {}
    }
    (path, body)
}

fn tool_json(t: &ToolSpec) -> Value {
    json!({ "type": "function", "function": { "name": t.name, "description": t.description, "parameters": t.parameters } })
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

    async fn generate(&self, request: GenerateRequest) -> Result<TokenStream, EngineError> {
        request.validate()?;
        let (path, body) = request_body(&self.id, &request);
        let started = Instant::now();
        let resp = self
            .engine
            .request(reqwest::Method::POST, &self.base, path)
            .json(&body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let resp = check(resp, &self.base).await?;
        let stats = self.stats.clone();
        let chat = path == "/chat/completions";
        let events = futures::stream::unfold(
            SseState {
                bytes: Box::pin(resp.bytes_stream()),
                buf: Vec::new(),
                done: false,
                started,
                first: None,
                n: 0,
                usage: None,
                finish: None,
                pending: Vec::new(),
            },
            move |mut st| {
                let stats = stats.clone();
                async move {
                    loop {
                        if let Some(ev) = st.pending.pop() {
                            return Some((ev, st));
                        }
                        if st.done {
                            return None;
                        }
                        match next_event(&mut st, chat).await {
                            Ok(true) => {}
                            Ok(false) => {
                                // The end: the final event, with the server's usage when it sent one.
                                st.done = true;
                                let end = Instant::now();
                                let first = st.first.unwrap_or(end);
                                let usage = st.usage.unwrap_or(Usage { completion_tokens: st.n, ..Usage::default() });
                                stats.finished.fetch_add(1, Ordering::Relaxed);
                                stats.prompt.fetch_add(u64::from(usage.prompt_tokens), Ordering::Relaxed);
                                stats.generated.fetch_add(u64::from(usage.completion_tokens), Ordering::Relaxed);
                                let timings = Timings {
                                    queue: Default::default(),
                                    prompt_eval: first - st.started,
                                    eval: end - first,
                                };
                                let finish_reason = st.finish.unwrap_or(FinishReason::Stop);
                                st.pending.push(Ok(TokenEvent::Done { finish_reason, usage, timings }));
                            }
                            Err(e) => {
                                st.done = true;
                                st.pending.push(Err(e));
                            }
                        }
                    }
                }
            },
        );
        Ok(Box::pin(events))
    }

    fn render_prompt(&self, prompt: &Prompt, _tools: &[ToolSpec]) -> Result<String, EngineError> {
        match prompt {
            Prompt::Raw(text) => Ok(text.clone()),
            Prompt::Chat(_) => Err(EngineError::Unavailable("the remote server applies its own chat template".into())),
        }
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

    fn tokenize(&self, _text: &str) -> Result<Vec<u32>, EngineError> {
        Err(EngineError::Unavailable("tokenization happens on the remote server".into()))
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

type ByteStream = std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

struct SseState {
    bytes: ByteStream,
    buf: Vec<u8>,
    done: bool,
    started: Instant,
    first: Option<Instant>,
    n: u32,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
    /// Events ready to go out (popped from the end).
    pending: Vec<Result<TokenEvent, EngineError>>,
}

/// Reads until the next `data:` event is handled. `Ok(true)`: go on (events may be pending);
/// `Ok(false)`: the stream ended (`[DONE]` or the end of the body).
async fn next_event(st: &mut SseState, chat: bool) -> Result<bool, EngineError> {
    loop {
        if let Some(nl) = st.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = st.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim().strip_prefix("data:").map(str::trim) else { continue };
            if data == "[DONE]" {
                return Ok(false);
            }
            let v: Value = serde_json::from_str(data)
                .map_err(|e| EngineError::Internal(format!("the remote server sent a malformed event: {e}")))?;
            if let Some(err) = v.get("error") {
                let msg = err["message"].as_str().map(String::from).unwrap_or_else(|| err.to_string());
                return Err(EngineError::Internal(format!("the remote server failed mid-stream: {msg}")));
            }
            let choice = &v["choices"][0];
            let text = if chat { choice["delta"]["content"].as_str() } else { choice["text"].as_str() };
            if let Some(text) = text.filter(|t| !t.is_empty()) {
                st.first.get_or_insert_with(Instant::now);
                st.n += 1;
                st.pending.push(Ok(TokenEvent::Token { id: UNKNOWN_TOKEN_ID, text: text.to_string() }));
            }
            match choice["finish_reason"].as_str() {
                Some("length") => st.finish = Some(FinishReason::Length),
                Some(_) => st.finish = Some(FinishReason::Stop),
                None => {}
            }
            if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                let n = |k: &str| u[k].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
                st.usage = Some(Usage {
                    prompt_tokens: n("prompt_tokens"),
                    cached_tokens: u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0) as u32,
                    completion_tokens: n("completion_tokens"),
                });
            }
            return Ok(true);
        }
        match st.bytes.next().await {
            Some(Ok(chunk)) => st.buf.extend_from_slice(&chunk),
            Some(Err(e)) => return Err(EngineError::Unavailable(format!("the remote stream broke: {e}"))),
            None => return Ok(false),
        }
    }
}
