//! Which models exist (the store), which are loaded, and for how long (keep-alive).
//!
//! One loaded instance per model name. A request with different load-time options (context
//! size, threads) reloads it, as Ollama does. A reaper task unloads models whose keep-alive
//! ran out and that no response is still streaming from; `max_loaded` evicts the least
//! recently used idle model before loading another.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyperllama_engine::{Engine, LoadOptions, LoadedModel};
use hyperllama_store::{Digest, Manifest, Measurements, ModelName, Store};
use serde::Serialize;

use crate::remotes::{remote_url, Remotes};
use crate::{ApiError, Engines, ErrorKind, KeepAlive};

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub ctx_size: Option<u32>,
    pub threads: Option<u32>,
    /// Sequences each model decodes together (continuous batching); each gets `ctx_size`.
    pub parallel: u32,
    /// Requests that may wait for a sequence, per model, before new ones are refused.
    pub max_queue: u32,
    /// Tokens per batched decode step (`None`: the engine's default).
    pub step_tokens: Option<u32>,
    pub keep_alive: KeepAlive,
    pub max_loaded: usize,
    /// Refuse loads whose estimated memory exceeds this; `None` means the RAM available now.
    pub memory_limit: Option<u64>,
    /// The Hugging Face hub (or mirror) that `/api/pull` fetches from.
    pub hub: hyperllama_store::hub::HubConfig,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            ctx_size: None,
            threads: None,
            parallel: DEFAULT_PARALLEL,
            max_queue: DEFAULT_MAX_QUEUE,
            step_tokens: None,
            keep_alive: KeepAlive::DEFAULT,
            max_loaded: 3,
            memory_limit: None,
            hub: hyperllama_store::hub::HubConfig::from_env(),
        }
    }
}

/// The context a model gets when nobody asks for one: the engine's default, 4096, capped by
/// what the model was trained with.
pub const DEFAULT_CTX: u64 = 4096;
/// Sequences per model when nobody says (`--parallel`).
pub const DEFAULT_PARALLEL: u32 = 4;
/// Waiting requests per model before refusals (`--max-queue`; Ollama's default too).
pub const DEFAULT_MAX_QUEUE: u32 = 512;

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Facts from a model's GGUF header, for `/api/tags`, `/api/show` and `/api/ps`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelDetails {
    pub format: &'static str,
    pub family: String,
    pub families: Vec<String>,
    pub parameter_size: String,
    pub quantization_level: String,
    #[serde(skip)]
    pub context_length: u64,
    #[serde(skip)]
    pub embedding_length: u64,
    #[serde(skip)]
    pub chat_template: Option<String>,
    /// Selected GGUF metadata (scalars only), for `/api/show`'s `model_info`.
    #[serde(skip)]
    pub model_info: serde_json::Map<String, serde_json::Value>,
    #[serde(skip)]
    pub gguf: Arc<hyperllama_gguf::GgufFile>,
}

struct Slot {
    model: Arc<dyn LoadedModel>,
    engine: &'static str,
    manifest: Manifest,
    options: LoadOptions,
    expires: Option<Instant>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    last_used: Instant,
}

/// A model ready to serve one request. Holding it keeps the model loaded.
pub struct Acquired {
    pub name: String,
    pub model: Arc<dyn LoadedModel>,
    pub manifest: Manifest,
    pub load_duration: Duration,
}

/// Load-time options a request may ask for.
#[derive(Debug, Clone, Default)]
pub struct LoadRequest {
    pub num_ctx: Option<u32>,
    pub num_thread: Option<u32>,
    pub keep_alive: Option<KeepAlive>,
    /// `options.engine`: the engine the request asks for.
    pub engine: Option<String>,
}

/// A loaded model, as `/api/ps` shows it.
#[derive(Debug, Clone)]
pub struct Running {
    pub name: String,
    pub manifest: Manifest,
    pub context_length: u32,
    pub size: u64,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub stats: hyperllama_engine::ModelStats,
    /// The engine serving it ("llamacpp", "max", ...).
    pub engine: &'static str,
}

pub struct Registry {
    engines: Engines,
    /// Nodes whose models are served by name when the store does not have them.
    remotes: Arc<Remotes>,
    store: Store,
    config: RegistryConfig,
    loaded: tokio::sync::Mutex<HashMap<String, Slot>>,
    details: std::sync::Mutex<HashMap<Digest, Arc<ModelDetails>>>,
    /// The store's engine measurements, read again when the file changes.
    measured: std::sync::Mutex<(Option<std::time::SystemTime>, Arc<Measurements>)>,
}

impl Registry {
    /// A registry whose models all load with `engine`.
    pub fn new(engine: Arc<dyn Engine>, store: Store, config: RegistryConfig) -> Self {
        Self::with_engines(Engines::new(vec![engine]), store, config)
    }

    /// A registry that picks an engine per model (see [`Engines::choose`]).
    pub fn with_engines(engines: Engines, store: Store, config: RegistryConfig) -> Self {
        Self {
            engines,
            remotes: Arc::default(),
            store,
            config,
            loaded: Default::default(),
            details: Default::default(),
            measured: Default::default(),
        }
    }

    /// Serves the models of these nodes too (the fleet's front door).
    pub fn with_remotes(mut self, remotes: Arc<Remotes>) -> Self {
        self.remotes = remotes;
        self
    }

    pub fn remotes(&self) -> &Arc<Remotes> {
        &self.remotes
    }

    pub fn engines(&self) -> &Engines {
        &self.engines
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Sequences each loaded model decodes together.
    pub fn parallel(&self) -> u32 {
        self.config.parallel.max(1)
    }

    pub fn hub_config(&self) -> &hyperllama_store::hub::HubConfig {
        &self.config.hub
    }

    /// The model `name` names, and the key it is loaded under: a model of the store, or else a
    /// model one of the remote nodes serves (see [`Remotes`]).
    pub fn manifest(&self, name: &str) -> Result<(String, Manifest), ApiError> {
        let local = self.local_manifest(name);
        match local {
            // Not in the store, or not a store name at all (`/models/x.gguf`): a node may serve it.
            Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::BadRequest) => match self.remotes.find(name) {
                Some(remote) => Ok((remote.served.id.clone(), remote.manifest())),
                None => Err(e),
            },
            other => other.map(|(parsed, m)| (parsed.to_string(), m)),
        }
    }

    fn local_manifest(&self, name: &str) -> Result<(ModelName, Manifest), ApiError> {
        // `hf.co/owner/repo:Q4_K_M` is stored as `owner/repo:q4_k_m`.
        let bare = name.strip_prefix("hf.co/").or_else(|| name.strip_prefix("huggingface.co/")).unwrap_or(name);
        let mut parsed = ModelName::parse(bare)?;
        if parsed.tag.chars().any(|c| c.is_ascii_uppercase()) && self.store.get(&parsed).is_err() {
            parsed.tag = parsed.tag.to_ascii_lowercase();
        }
        match self.store.get(&parsed) {
            Ok(manifest) => Ok((parsed, manifest)),
            // Name the model as the user wrote it, in Ollama's wording.
            Err(hyperllama_store::StoreError::NotFound(_)) => Err(ApiError::model_not_found(name)),
            Err(e) => Err(e.into()),
        }
    }

    pub fn blob_path(&self, manifest: &Manifest) -> PathBuf {
        self.store.blob_path(&manifest.model)
    }

    /// GGUF facts for a manifest's weights, read once per blob.
    pub fn details(&self, manifest: &Manifest) -> Result<Arc<ModelDetails>, ApiError> {
        if let Some(url) = remote_url(manifest) {
            return Err(ApiError::bad_request(format!(
                "{} is served by {url}; its weights are not in this server's store",
                manifest.name
            )));
        }
        if let Some(d) = self.details.lock().ok().and_then(|c| c.get(&manifest.model).cloned()) {
            return Ok(d);
        }
        let gguf = hyperllama_gguf::GgufFile::open(self.blob_path(manifest))
            .map_err(|e| ApiError::new(ErrorKind::Internal, "corrupt_model", e.to_string()))?;
        let arch = gguf.architecture().unwrap_or("unknown").to_string();
        let mut model_info = serde_json::Map::new();
        for (k, v) in &gguf.metadata {
            if k.starts_with("tokenizer.") {
                continue;
            }
            let j = match v {
                hyperllama_gguf::Value::String(s) => serde_json::Value::String(s.clone()),
                hyperllama_gguf::Value::Bool(b) => serde_json::Value::Bool(*b),
                hyperllama_gguf::Value::Array(_) => continue,
                other => match (other.as_u64(), other.as_f64()) {
                    (Some(n), _) => serde_json::Value::from(n),
                    (None, Some(f)) => serde_json::Value::from(f),
                    _ => continue,
                },
            };
            model_info.insert(k.clone(), j);
        }
        model_info.insert("general.parameter_count".into(), gguf.parameter_count().into());
        let d = Arc::new(ModelDetails {
            format: "gguf",
            family: arch.clone(),
            families: vec![arch],
            parameter_size: hyperllama_gguf::human_params(gguf.parameter_count()),
            quantization_level: gguf.quantization(),
            context_length: gguf.context_length().unwrap_or(0),
            embedding_length: gguf.embedding_length().unwrap_or(0),
            chat_template: gguf.chat_template().map(str::to_string),
            model_info,
            gguf: Arc::new(gguf),
        });
        if let Ok(mut c) = self.details.lock() {
            c.insert(manifest.model.clone(), d.clone());
        }
        Ok(d)
    }

    /// The model `name`, loaded with the requested options; loads (or reloads) when needed.
    pub async fn acquire(&self, name: &str, req: LoadRequest) -> Result<Acquired, ApiError> {
        let (key, manifest) = self.manifest(name)?;
        if let Some(node) = self.remotes.node_for(&manifest) {
            // The node owns the model's context, threads and memory.
            let options = LoadOptions { path: PathBuf::from(&manifest.name), ..LoadOptions::default() };
            let why = format!("served by {}", node.info().version);
            return self.acquire_with(key, manifest, node, why, options, None, req.keep_alive).await;
        }
        let param_u32 =
            |k: &str| manifest.parameters.get(k).and_then(|v| v.as_u64()).and_then(|v| u32::try_from(v).ok());
        let options = LoadOptions {
            path: self.blob_path(&manifest),
            ctx_size: req.num_ctx.or_else(|| param_u32("num_ctx")).or(self.config.ctx_size),
            threads: req.num_thread.or_else(|| param_u32("num_thread")).or(self.config.threads),
            gpu_layers: param_u32("num_gpu"),
            parallel: Some(self.config.parallel.max(1)),
            max_queue: Some(self.config.max_queue),
            step_tokens: self.config.step_tokens,
        };
        let ctx = self.context_for(&manifest, options.ctx_size)?;
        let measured = self.measurements();
        let (engine, why) = self.engines.choose(
            req.engine.as_deref(),
            manifest.parameters.get("engine").and_then(|v| v.as_str()),
            measured.get(manifest.model.hex()),
        )?;
        self.acquire_with(key, manifest, engine, why, options, Some(ctx), req.keep_alive).await
    }

    /// Loads (unless loaded alike) `key` with `engine`; `ctx` is the context whose memory is
    /// checked first (none for remote models).
    #[allow(clippy::too_many_arguments)]
    async fn acquire_with(
        &self,
        key: String,
        manifest: Manifest,
        engine: Arc<dyn Engine>,
        why: String,
        options: LoadOptions,
        ctx: Option<u64>,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Acquired, ApiError> {
        let keep_alive = keep_alive.unwrap_or(self.config.keep_alive);
        let engine_id = engine.info().id;

        let mut loaded = self.loaded.lock().await;
        let mut load_duration = Duration::ZERO;
        let reusable = loaded.get(&key).is_some_and(|s| {
            s.options == options && s.engine == engine_id && s.manifest.model == manifest.model && s.model.is_healthy()
        });
        if !reusable {
            if let Some(old) = loaded.remove(&key) {
                tracing::info!(model = %key, "reloading with new options");
                let _ = old.model.unload().await;
            }
            self.evict_for_one_more(&mut loaded).await;
            if let Some(ctx) = ctx {
                self.check_memory(&manifest, ctx)?;
            }
            let t0 = Instant::now();
            let model = engine.load(options.clone()).await?;
            load_duration = t0.elapsed();
            tracing::info!(model = %key, engine = engine_id, %why, ms = load_duration.as_millis() as u64, "model loaded");
            loaded.insert(
                key.clone(),
                Slot {
                    model,
                    engine: engine_id,
                    manifest: manifest.clone(),
                    options,
                    expires: None,
                    expires_at: None,
                    last_used: Instant::now(),
                },
            );
        }
        let slot = loaded.get_mut(&key).ok_or_else(|| ApiError::new(ErrorKind::Internal, "internal", "lost a slot"))?;
        slot.last_used = Instant::now();
        match keep_alive {
            KeepAlive::Forever => {
                slot.expires = None;
                slot.expires_at = None;
            }
            KeepAlive::For(d) => {
                slot.expires = Some(Instant::now() + d);
                slot.expires_at = chrono::Duration::from_std(d).ok().map(|d| chrono::Utc::now() + d);
            }
        }
        Ok(Acquired { name: key, model: slot.model.clone(), manifest: slot.manifest.clone(), load_duration })
    }

    /// Engine speeds recorded by `bench --record`, by weights digest.
    fn measurements(&self) -> Arc<Measurements> {
        let modified = self.store.measurements_modified();
        let Ok(mut cache) = self.measured.lock() else { return Arc::default() };
        if cache.0 != modified {
            *cache = (modified, Arc::new(self.store.measurements()));
        }
        cache.1.clone()
    }

    /// The context a load with `requested` would get.
    fn context_for(&self, manifest: &Manifest, requested: Option<u32>) -> Result<u64, ApiError> {
        let trained = self.details(manifest)?.context_length;
        Ok(requested.map(u64::from).unwrap_or(if trained > 0 { DEFAULT_CTX.min(trained) } else { DEFAULT_CTX }))
    }

    /// The memory estimate for loading `manifest` with context `ctx` (or the default).
    pub fn memory_estimate(
        &self,
        manifest: &Manifest,
        ctx: Option<u32>,
    ) -> Result<(u64, hyperllama_gguf::MemoryEstimate), ApiError> {
        let ctx = self.context_for(manifest, ctx.or(self.config.ctx_size))?;
        Ok((ctx, self.details(manifest)?.gguf.memory_estimate(ctx, u64::from(self.config.parallel.max(1)))))
    }

    /// Refuses, with both numbers, a load that would not fit, instead of letting the OS kill us.
    fn check_memory(&self, manifest: &Manifest, ctx: u64) -> Result<(), ApiError> {
        let parallel = u64::from(self.config.parallel.max(1));
        let est = self.details(manifest)?.gguf.memory_estimate(ctx, parallel);
        let available = self.config.memory_limit.unwrap_or_else(hyperllama_hw::available_memory);
        if est.total > available {
            return Err(ApiError::new(
                ErrorKind::Unavailable,
                "insufficient_memory",
                format!(
                    "model requires {} (weights {} + KV cache {} for {ctx} tokens x {parallel} sequences + compute {}) but only {} is available; lower num_ctx or --parallel, or unload other models",
                    gib(est.total),
                    gib(est.weights),
                    gib(est.kv_cache),
                    gib(est.compute),
                    gib(available)
                ),
            ));
        }
        Ok(())
    }

    async fn evict_for_one_more(&self, loaded: &mut HashMap<String, Slot>) {
        while loaded.len() >= self.config.max_loaded.max(1) {
            let idle = loaded
                .iter()
                .filter(|(_, s)| Arc::strong_count(&s.model) == 1)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone());
            let Some(k) = idle else { break };
            if let Some(s) = loaded.remove(&k) {
                tracing::info!(model = %k, "unloading the least recently used model to make room");
                let _ = s.model.unload().await;
            }
        }
    }

    /// Unloads `name`: now if idle, else as soon as the responses streaming from it end.
    /// Returns whether it was loaded.
    pub async fn unload(&self, name: &str) -> Result<bool, ApiError> {
        let key = match self.manifest(name) {
            Ok((key, _)) => key,
            Err(_) => ModelName::parse(name)?.to_string(),
        };
        let mut loaded = self.loaded.lock().await;
        let busy = match loaded.get_mut(&key) {
            None => return Ok(false),
            Some(slot) if Arc::strong_count(&slot.model) > 1 => {
                slot.expires = Some(Instant::now());
                slot.expires_at = Some(chrono::Utc::now());
                true
            }
            Some(_) => false,
        };
        if !busy {
            if let Some(s) = loaded.remove(&key) {
                drop(loaded);
                s.model.unload().await?;
            }
        }
        Ok(true)
    }

    pub async fn unload_all(&self) {
        let slots: Vec<Slot> = self.loaded.lock().await.drain().map(|(_, s)| s).collect();
        for s in slots {
            let _ = s.model.unload().await;
        }
    }

    pub async fn running(&self) -> Vec<Running> {
        let loaded = self.loaded.lock().await;
        let mut out: Vec<Running> = loaded
            .iter()
            .map(|(name, s)| Running {
                name: name.clone(),
                manifest: s.manifest.clone(),
                context_length: s.model.info().loaded_context,
                size: s.model.info().size_bytes,
                expires_at: s.expires_at,
                stats: s.model.stats(),
                engine: s.engine,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Unloads models whose keep-alive ran out, once nothing streams from them.
    pub fn spawn_reaper(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let now = Instant::now();
                let expired: Vec<Slot> = {
                    let mut loaded = self.loaded.lock().await;
                    let keys: Vec<String> = loaded
                        .iter()
                        .filter(|(_, s)| s.expires.is_some_and(|e| e <= now) && Arc::strong_count(&s.model) == 1)
                        .map(|(k, _)| k.clone())
                        .collect();
                    keys.iter().filter_map(|k| loaded.remove(k)).collect()
                };
                for s in expired {
                    tracing::info!(model = %s.manifest.name, "keep-alive expired; unloading");
                    let _ = s.model.unload().await;
                }
            }
        })
    }
}
