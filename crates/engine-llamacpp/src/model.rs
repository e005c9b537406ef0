use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use hyperllama_core::{Prompt, ToolSpec, ValidRequest, ValidationError};
use hyperllama_engine::{
    ChatTemplate, Embeddings, EngineError, LoadOptions, LoadedModel, ModelInfo, ModelStats, PromptRenderer,
    TokenStream, Tokenizer,
};
use hyperllama_gguf::GgufFile;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use crate::worker::{self, Command, Job, SchedulerConfig};

use crate::DEFAULT_CTX;
/// The most tokens one step holds (llama-server's default batch): a whole prompt chunk when
/// no lane decodes.
const MAX_STEP_TOKENS: u32 = 2048;

/// The engine's own settings (`LoadOptions::extra`, from `serve`'s flags).
struct Tuning {
    /// A fixed prompt budget per step (`--step-tokens`); `None`: adaptive.
    step_tokens: Option<u32>,
    target_step_ms: f64,
    speculative: bool,
    /// Threads for one-token steps (`n_threads`), when not all of them.
    decode_threads: Option<i32>,
    cache_ram_bytes: usize,
    cache_dir: Option<std::path::PathBuf>,
    cache_disk_bytes: u64,
    /// llama.cpp's flash attention: `None` for its own choice (auto).
    flash_attn: Option<bool>,
}

impl Tuning {
    fn from_options(o: &LoadOptions) -> Result<Self, EngineError> {
        let num = |key: &str| -> Result<Option<u64>, EngineError> {
            o.extra(key)
                .map(|v| v.trim().parse::<u64>().map_err(|_| EngineError::Load(format!("{key}={v:?} is not a number"))))
                .transpose()
        };
        let speculative = match o.extra("speculative") {
            None | Some("ngram") | Some("on") => true,
            Some("off") => false,
            Some(other) => return Err(EngineError::Load(format!("speculative={other:?}: use ngram or off"))),
        };
        let flash_attn = match o.extra("flash_attn") {
            None => FlashAttn::Default,
            Some("auto") => FlashAttn::Auto,
            Some("on") => FlashAttn::On,
            Some("off") => FlashAttn::Off,
            Some(other) => return Err(EngineError::Load(format!("flash_attn={other:?}: use auto, on or off"))),
        };
        // Default: an eighth of the RAM available now, at most 8 GiB.
        let default_ram = (hyperllama_hw::available_memory() / 8).min(8 << 30);
        Ok(Self {
            step_tokens: o.step_tokens,
            target_step_ms: num("step_target_ms")?.map(|v| v as f64).unwrap_or(DEFAULT_TARGET_STEP_MS),
            speculative,
            decode_threads: num("decode_threads")?.map(|v| v.max(1) as i32),
            cache_ram_bytes: num("cache_ram_mib")?.map(|m| (m as usize) << 20).unwrap_or(default_ram as usize),
            cache_dir: o.extra("cache_dir").filter(|d| !d.is_empty()).map(std::path::PathBuf::from),
            cache_disk_bytes: num("cache_disk_mib")?.map(|m| m << 20).unwrap_or(8 << 30),
            flash_attn: match flash_attn {
                FlashAttn::Auto => None,
                FlashAttn::On => Some(true),
                FlashAttn::Off => Some(false),
                // Decided at load, once it is known whether layers go to a GPU.
                FlashAttn::Default => None,
            },
        })
    }
}

enum FlashAttn {
    Default,
    Auto,
    On,
    Off,
}

/// Whether flash attention is used when no setting says: not on the CPU. Measured here (2
/// threads, SmolLM2 Q4_1, per-sequence KV, docs/PERFORMANCE.md "Flash attention"): decode at
/// 1024 tokens of context 68 vs 33 tok/s for one stream and 103 vs 52 tok/s for eight, at the
/// cost of 9-12% on prompt processing; llama.cpp's own default (auto) turns it on.
fn flash_attn_default(explicit: Option<&str>, on_gpu: bool) -> Option<bool> {
    match explicit {
        Some(_) => None,
        None if on_gpu => None,
        None => Some(false),
    }
}

/// The step time the adaptive prompt budget aims at while lanes decode.
const DEFAULT_TARGET_STEP_MS: f64 = 80.0;

/// The disk tier's directory name for a model: its store digest (`sha256-<hex>` blobs), else
/// a digest of its path, size and modification time.
fn cache_key(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if let Some(hex) = name.strip_prefix("sha256-").filter(|h| h.len() == 64) {
        return hex.to_string();
    }
    use sha2::Digest as _;
    let meta = std::fs::metadata(path).ok();
    let stamp = format!(
        "{}\0{}\0{:?}",
        path.display(),
        meta.as_ref().map(|m| m.len()).unwrap_or(0),
        meta.and_then(|m| m.modified().ok())
    );
    sha2::Sha256::digest(stamp.as_bytes()).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// A GGUF model loaded into llama.cpp, served by its own compute thread.
pub struct LlamaCppModel {
    text: Arc<TextSide>,
    info: ModelInfo,
    backend: &'static LlamaBackend,
    threads: i32,
    /// The embedding thread, started on the first embedding request.
    embed: Mutex<Option<mpsc::Sender<crate::embed::EmbedJob>>>,
    jobs: Mutex<Option<mpsc::Sender<Command>>>,
    /// Requests accepted and not yet done; with `admit_limit`, the admission bound.
    in_flight: Arc<AtomicU32>,
    admit_limit: u32,
    worker: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Mutex<ModelStats>>,
}

/// What turns a request into tokens: the vocabulary, the chat template, grammars. Shared with
/// the blocking pool, where that work runs (never on the async runtime's threads).
struct TextSide {
    model: Arc<LlamaModel>,
    template: Option<ChatTemplate>,
    bos_text: String,
    add_bos: bool,
}

impl TextSide {
    fn tokens_for(&self, text: &str) -> Vec<LlamaToken> {
        // A rendered chat template usually writes the BOS token itself; never add a second one.
        let add_special = self.add_bos && (self.bos_text.is_empty() || !text.starts_with(&self.bos_text));
        self.model.vocab().tokenize(text.as_bytes(), add_special, true)
    }

    /// Renders, compiles the grammar and tokenizes: everything a request needs before the
    /// compute thread takes it. Blocking (CPU work).
    fn prepare(&self, request: &ValidRequest, ctx_size: u32) -> Result<(Vec<LlamaToken>, Option<String>), EngineError> {
        let text = hyperllama_engine::render_request(self.template.as_ref(), request)?;
        let forced = request.tool_requirement != hyperllama_core::ToolRequirement::Auto && !request.tools.is_empty();
        let grammar = match &request.format {
            None if forced => {
                let g =
                    crate::grammar::for_tools(&request.tools, &request.tool_requirement, request.parallel_tool_calls)?;
                LlamaSampler::grammar(&self.model, &g, "root")
                    .map_err(|e| ValidationError::Invalid(format!("the tools produced an unusable grammar: {e}")))?;
                Some(g)
            }
            Some(format) => {
                let g = crate::grammar::for_format(format)?;
                // Compile it here, so a bad grammar is the caller's 400 and not a broken stream.
                LlamaSampler::grammar(&self.model, &g, "root")
                    .map_err(|e| ValidationError::Invalid(format!("`format` produced an unusable grammar: {e}")))?;
                Some(g)
            }
            None => None,
        };
        let tokens = self.tokens_for(&text);
        if tokens.is_empty() {
            return Err(ValidationError::Empty { field: "prompt" }.into());
        }
        let prompt_tokens = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        if prompt_tokens >= ctx_size {
            return Err(EngineError::PromptTooLong { prompt_tokens, ctx_size });
        }
        Ok((tokens, grammar))
    }
}

impl LlamaCppModel {
    /// Checks the file, loads the weights and starts the compute thread. Blocking.
    pub(crate) fn load(backend: &'static LlamaBackend, options: LoadOptions) -> Result<Self, EngineError> {
        let path = options.path.as_path();
        let gguf = GgufFile::open(path).map_err(|e| EngineError::Load(e.to_string()))?;
        let arch = gguf
            .architecture()
            .ok_or_else(|| EngineError::Load(format!("{} has no general.architecture key", path.display())))?;
        if !crate::supports_architecture(arch) {
            return Err(EngineError::UnsupportedArchitecture { arch: arch.to_string() });
        }

        let gpu_layers = options.gpu_layers.unwrap_or(if crate::LlamaCppEngine::devices().len() > 1 { 999 } else { 0 });
        let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
        let t0 = Instant::now();
        let model = LlamaModel::load_from_file(backend, path, &params).map_err(|e| {
            EngineError::Load(format!(
                "llama.cpp could not load {}: {e} (run with RUST_LOG=llama-cpp-2=info for its log)",
                path.display()
            ))
        })?;
        let model = Arc::new(model);
        tracing::info!(path = %path.display(), elapsed_ms = t0.elapsed().as_millis() as u64, "model weights loaded");

        let n_ctx_train = model.n_ctx_train();
        let ctx_size = options.ctx_size.unwrap_or(DEFAULT_CTX.min(n_ctx_train)).max(16);
        let threads = options.threads.map(|t| t as usize).unwrap_or_else(hyperllama_hw::physical_cores).max(1);
        let threads = i32::try_from(threads).unwrap_or(1);
        // Every sequence may use the whole `ctx_size` (as in Ollama, unlike llama-server's
        // `-c` divided by `-np`): the KV cache holds ctx_size x parallel cells.
        let parallel = options.parallel.unwrap_or(1).clamp(1, 256);
        let pool = ctx_size.checked_mul(parallel).ok_or_else(|| {
            EngineError::Load(format!("a context of {ctx_size} tokens x {parallel} sequences is too large"))
        })?;
        let tuning = Tuning::from_options(&options)?;
        // A step holds at most n_batch tokens: the whole batch when no lane decodes.
        let n_batch = tuning.step_tokens.unwrap_or(MAX_STEP_TOKENS).max(parallel * 8 + 16).max(64);
        let n_ubatch = 512.min(n_batch);
        // One KV stream per sequence (not one unified pool): attention and the KQ mask then
        // cover only a sequence's own cells. Measured here with 8 sequences, a unified pool
        // made single-stream decode ~12% and 8-stream decode ~15% slower, since every idle
        // lane's cached prefix widens the cells each token attends over (docs/PERFORMANCE.md).
        let flash_attn = tuning.flash_attn.or(flash_attn_default(options.extra("flash_attn"), gpu_layers > 0));
        let policy = match flash_attn {
            None => -1, // LLAMA_FLASH_ATTN_TYPE_AUTO
            Some(false) => 0,
            Some(true) => 1,
        };
        let ctx_params = LlamaContextParams::default()
            .with_flash_attention_policy(policy)
            .with_n_ctx(NonZeroU32::new(pool))
            .with_n_batch(n_batch)
            .with_n_ubatch(n_ubatch)
            .with_n_seq_max(parallel)
            .with_kv_unified(false)
            .with_n_threads(tuning.decode_threads.unwrap_or(threads))
            .with_n_threads_batch(threads);
        let config = SchedulerConfig {
            parallel: parallel as usize,
            ctx_per_seq: ctx_size as usize,
            max_step_tokens: n_batch as usize,
            n_ubatch: n_ubatch as usize,
            fixed_step_tokens: tuning.step_tokens.map(|t| t as usize),
            target_step_ms: tuning.target_step_ms,
            speculative: tuning.speculative,
        };
        // Models whose KV cannot be restored by prefix (sliding-window attention, recurrent
        // state) keep only what each lane holds.
        let prefix_restorable = !model.is_recurrent()
            && !model.is_hybrid()
            && gguf.arch_u64("attention.sliding_window").is_none_or(|w| w == 0);
        let cache = if prefix_restorable {
            let disk = tuning.cache_dir.as_ref().and_then(|dir| {
                // Entries of a context without flash attention hold V transposed: a key of their own.
                let key = match flash_attn {
                    Some(false) => format!("{}-nofa", cache_key(path)),
                    _ => cache_key(path),
                };
                crate::cache::disk::DiskTier::open(dir, &key, tuning.cache_disk_bytes)
                    .map_err(
                        |e| tracing::warn!(dir = %dir.display(), error = %e, "the prompt cache's disk tier is off"),
                    )
                    .ok()
            });
            crate::cache::PromptCache::new(tuning.cache_ram_bytes, parallel, disk)
        } else {
            crate::cache::PromptCache::new(0, parallel, None)
        };

        let template = match gguf.chat_template() {
            Some(src) => Some(ChatTemplate::new(
                src,
                gguf.bos_token().unwrap_or_default(),
                gguf.eos_token().unwrap_or_default(),
            )?),
            None => None,
        };
        let info = ModelInfo {
            name: gguf
                .name()
                .map(str::to_string)
                .unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()),
            architecture: arch.to_string(),
            parameter_count: model.n_params(),
            quantization: gguf.quantization(),
            context_length: n_ctx_train,
            loaded_context: ctx_size,
            embedding_length: u32::try_from(model.n_embd()).unwrap_or(0),
            chat_template: gguf.chat_template().map(str::to_string),
            size_bytes: model.size(),
        };
        let add_bos = model.vocab().should_add_bos();
        let bos_text = gguf.bos_token().unwrap_or_default().to_string();

        let stats = Arc::new(Mutex::new(ModelStats::default()));
        let (jobs_tx, jobs_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread_model = model.clone();
        let thread_stats = stats.clone();
        let worker = std::thread::Builder::new()
            .name(format!("llamacpp-{}", short_name(path)))
            .spawn(move || {
                let spec = worker::WorkerSpec {
                    backend,
                    params: ctx_params,
                    config,
                    cache,
                    jobs: jobs_rx,
                    ready: ready_tx,
                    stats: thread_stats,
                };
                worker::run(&thread_model, spec)
            })
            .map_err(|e| EngineError::Internal(format!("cannot start the compute thread: {e}")))?;
        let mut info = info;
        info.loaded_context = ready_rx
            .recv()
            .map_err(|_| EngineError::Internal("the compute thread died while creating the context".into()))??;

        Ok(Self {
            text: Arc::new(TextSide { model, template, bos_text, add_bos }),
            info,
            backend,
            threads,
            embed: Mutex::new(None),
            jobs: Mutex::new(Some(jobs_tx)),
            in_flight: Arc::new(AtomicU32::new(0)),
            admit_limit: options.max_queue.map_or(u32::MAX, |q| q.saturating_add(parallel)),
            worker: Mutex::new(Some(worker)),
            stats,
        })
    }

    /// The embedding thread (started now if it is not running).
    fn embedder(&self) -> Result<mpsc::Sender<crate::embed::EmbedJob>, EngineError> {
        let mut e = self.embed.lock().map_err(|_| EngineError::Internal("embedding state poisoned".into()))?;
        if e.is_none() {
            if self.jobs.lock().ok().is_none_or(|j| j.is_none()) {
                return Err(EngineError::Unavailable("the model was unloaded".into()));
            }
            *e = Some(crate::embed::spawn(self.backend, self.text.model.clone(), self.threads, &self.info.name)?);
        }
        e.clone().ok_or_else(|| EngineError::Internal("no embedding thread".into()))
    }

    fn send(&self, command: Command) -> Result<(), EngineError> {
        let sent =
            self.jobs.lock().ok().and_then(|jobs| jobs.as_ref().map(|j| j.send(command).is_ok())).unwrap_or(false);
        if sent {
            Ok(())
        } else {
            Err(EngineError::Unavailable("the model was unloaded".into()))
        }
    }

    fn stop_worker(&self) -> Option<JoinHandle<()>> {
        if let Ok(mut e) = self.embed.lock() {
            // Dropping the sender ends the embedding thread after its current job.
            e.take();
        }
        if let Ok(mut jobs) = self.jobs.lock() {
            if let Some(tx) = jobs.take() {
                let _ = tx.send(Command::Shutdown);
            }
        }
        self.worker.lock().ok().and_then(|mut w| w.take())
    }
}

/// Counts a request from `generate` until its stream is dropped; the admission limit reads it.
struct Ticket(Arc<AtomicU32>);

impl Ticket {
    fn new(in_flight: Arc<AtomicU32>) -> Self {
        Self(in_flight)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn short_name(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().chars().take(20).collect()).unwrap_or_default()
}

impl Tokenizer for LlamaCppModel {
    fn tokenize(&self, text: &str, special: bool) -> Result<Vec<u32>, EngineError> {
        let tokens = if special {
            self.text.tokens_for(text)
        } else {
            self.text.model.vocab().tokenize(text.as_bytes(), false, false)
        };
        Ok(tokens.into_iter().map(|t| t.0 as u32).collect())
    }

    fn token_bytes(&self, id: u32) -> Result<Vec<u8>, EngineError> {
        let n_vocab = self.text.model.n_vocab();
        let token = i32::try_from(id).ok().filter(|t| *t < n_vocab).ok_or_else(|| {
            EngineError::Validation(ValidationError::OutOfRange {
                field: "tokens",
                expected: "ids in the vocabulary",
                got: id.to_string(),
            })
        })?;
        Ok(self.text.model.vocab().token_to_piece(LlamaToken(token), true, None))
    }
}

impl PromptRenderer for LlamaCppModel {
    fn render_prompt(&self, prompt: &Prompt, tools: &[ToolSpec]) -> Result<String, EngineError> {
        hyperllama_engine::render_prompt(self.text.template.as_ref(), prompt, tools)
    }
    fn template(&self) -> Option<&ChatTemplate> {
        self.text.template.as_ref()
    }
}

#[async_trait::async_trait]
impl LoadedModel for LlamaCppModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn stats(&self) -> ModelStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    fn tokenizer(&self) -> Option<&dyn Tokenizer> {
        Some(self)
    }

    fn renderer(&self) -> Option<&dyn PromptRenderer> {
        Some(self)
    }

    async fn embed(&self, inputs: Vec<String>, truncate: bool) -> Result<Embeddings, EngineError> {
        if inputs.is_empty() {
            return Err(ValidationError::Empty { field: "input" }.into());
        }
        let limit = self.info.loaded_context.min(crate::embed::EMBED_MAX_TOKENS) as usize;
        let text = self.text.clone();
        let batches = tokio::task::spawn_blocking(move || tokenize_inputs(&text, &inputs, limit, truncate))
            .await
            .map_err(|e| EngineError::Internal(format!("tokenizer thread failed: {e}")))??;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.embedder()?
            .send(crate::embed::EmbedJob { inputs: batches, reply: tx })
            .map_err(|_| EngineError::Unavailable("the embedding thread stopped".into()))?;
        rx.await.map_err(|_| EngineError::Internal("the embedding thread dropped the request".into()))?
    }

    async fn generate(&self, request: ValidRequest) -> Result<TokenStream, EngineError> {
        let queued_at = Instant::now();
        let text = self.text.clone();
        let ctx_size = self.info.loaded_context;
        let (tokens, grammar, request) = tokio::task::spawn_blocking(move || {
            text.prepare(&request, ctx_size).map(|(tokens, grammar)| (tokens, grammar, request))
        })
        .await
        .map_err(|e| EngineError::Internal(format!("tokenizer thread failed: {e}")))??;
        // Admission: at most `parallel` running plus `max_queue` waiting; refuse the rest now.
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let ticket = Ticket::new(self.in_flight.clone());
        if before >= self.admit_limit {
            let waiting = before.saturating_sub(self.stats().parallel);
            return Err(EngineError::Overloaded { waiting });
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        self.send(Command::Generate(Box::new(Job { tokens, request, grammar, tx, queued_at })))?;
        // The stream holds the ticket: a request counts until its consumer drops it, so a
        // cancelled one frees its place in the queue at once.
        Ok(Box::pin(futures::stream::poll_fn(move |cx| {
            let _held = &ticket;
            rx.poll_recv(cx)
        })))
    }

    fn is_healthy(&self) -> bool {
        self.worker.lock().ok().is_some_and(|w| w.as_ref().is_some_and(|h| !h.is_finished()))
    }

    async fn unload(&self) -> Result<(), EngineError> {
        if let Some(handle) = self.stop_worker() {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))?
                .map_err(|_| EngineError::Internal("the compute thread panicked".into()))?;
        }
        Ok(())
    }
}

impl Drop for LlamaCppModel {
    fn drop(&mut self) {
        // The compute thread frees the context and its share of the weights as it stops; it is
        // not joined here, since a drop may happen on the async runtime's threads.
        let _ = self.stop_worker();
    }
}

/// Each input's tokens, cut to `limit` with `truncate`, else refused when longer.
fn tokenize_inputs(
    text: &TextSide,
    inputs: &[String],
    limit: usize,
    truncate: bool,
) -> Result<Vec<Vec<LlamaToken>>, EngineError> {
    let mut batches = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        let mut tokens = text.tokens_for(input);
        if tokens.is_empty() {
            return Err(ValidationError::Invalid(format!("input #{i} is empty")).into());
        }
        if tokens.len() > limit {
            if !truncate {
                return Err(EngineError::PromptTooLong {
                    prompt_tokens: u32::try_from(tokens.len()).unwrap_or(u32::MAX),
                    ctx_size: limit as u32,
                });
            }
            tokens.truncate(limit);
        }
        batches.push(tokens);
    }
    Ok(batches)
}
