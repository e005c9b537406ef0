//! Which models exist and which are loaded: resolution ([`resolve`]), model facts
//! ([`details`]), the memory guard ([`memory`]) and the loaded instances ([`resident`]),
//! behind one small facade. The service asks it to resolve a name once, to plan a load
//! (engine and options) and to acquire the model.

pub mod details;
pub mod memory;
pub mod resident;
pub mod resolve;

use std::sync::Arc;

use hyperllama_core::KeepAlive;
use hyperllama_engine::{LoadOptions, MemoryEstimate};
use hyperllama_store::{Measurements, Store};

pub use details::ModelFacts;
pub use memory::MemoryGuard;
pub use resident::{Acquired, LoadPlan, Residents, Running};
pub use resolve::{Location, Resolved, Resolver};

use crate::error::ApiError;
use crate::{Engines, Remotes};

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub ctx_size: Option<u32>,
    pub threads: Option<u32>,
    /// GPU layers for every load (`None`: all, when a GPU is present).
    pub gpu_layers: Option<u32>,
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
    /// The Hugging Face hub (or mirror) that pulls fetch from.
    pub hub: hyperllama_store::hub::HubConfig,
    /// Engine options every load gets (the prompt cache, speculation), as `key=value`.
    pub engine_options: Vec<(String, String)>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            ctx_size: None,
            threads: None,
            gpu_layers: None,
            parallel: DEFAULT_PARALLEL,
            max_queue: DEFAULT_MAX_QUEUE,
            step_tokens: None,
            keep_alive: KeepAlive::DEFAULT,
            max_loaded: 3,
            memory_limit: None,
            hub: hyperllama_store::hub::HubConfig::from_env(),
            engine_options: Vec::new(),
        }
    }
}

/// Sequences per model when nobody says (`--parallel`).
pub const DEFAULT_PARALLEL: u32 = 4;
/// Waiting requests per model before refusals (`--max-queue`; Ollama's default too).
pub const DEFAULT_MAX_QUEUE: u32 = 512;

/// Load-time options a request may ask for (Ollama's `options`, an `/v1` extension).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadOverrides {
    pub num_ctx: Option<u32>,
    pub num_thread: Option<u32>,
    pub num_gpu: Option<u32>,
    /// The engine the request asks for.
    pub engine: Option<String>,
}

pub struct Registry {
    resolver: Resolver,
    facts: details::FactsCache,
    engines: Engines,
    residents: Arc<Residents>,
    config: RegistryConfig,
    /// The store's engine measurements, read again when the file changes (checked with each
    /// resolution, on the blocking pool).
    measured: Arc<MeasurementsCache>,
}

impl Registry {
    /// A registry whose models all load with `engine`.
    pub fn new(engine: Arc<dyn hyperllama_engine::Engine>, store: Store, config: RegistryConfig) -> Self {
        Self::with_engines(Engines::new(vec![engine]), store, config)
    }

    /// A registry that picks an engine per model (see [`Engines::choose`]).
    pub fn with_engines(engines: Engines, store: Store, config: RegistryConfig) -> Self {
        let residents = Arc::new(Residents::new(config.max_loaded, MemoryGuard { limit: config.memory_limit }));
        let registry = Self {
            resolver: Resolver::new(store, Arc::default(), false),
            facts: Default::default(),
            engines,
            residents,
            config,
            measured: Default::default(),
        };
        refresh_measurements(registry.store(), &registry.measured);
        registry
    }

    /// Serves the models of these nodes too (the fleet's front door).
    pub fn with_remotes(mut self, remotes: Arc<Remotes>) -> Self {
        self.resolver = Resolver::new(self.resolver.store().clone(), remotes, false);
        self
    }

    /// Lets names be paths to `.gguf` files (the CLI's in-process commands; never a server).
    pub fn allowing_paths(mut self) -> Self {
        self.resolver = Resolver::new(self.resolver.store().clone(), self.resolver.remotes().clone(), true);
        self
    }

    pub fn remotes(&self) -> &Arc<Remotes> {
        self.resolver.remotes()
    }

    pub fn engines(&self) -> &Engines {
        &self.engines
    }

    pub fn store(&self) -> &Store {
        self.resolver.store()
    }

    pub fn residents(&self) -> &Arc<Residents> {
        &self.residents
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Sequences each loaded model decodes together.
    pub fn parallel(&self) -> u32 {
        self.config.parallel.max(1)
    }

    pub fn hub_config(&self) -> &hyperllama_store::hub::HubConfig {
        &self.config.hub
    }

    /// The model `name` names (once per request), on the blocking pool, where the engine
    /// measurements are checked for changes too.
    pub async fn resolve(&self, name: &str) -> Result<Resolved, ApiError> {
        let resolver = self.resolver.clone();
        let measured = self.measured.clone();
        let name = name.to_string();
        tokio::task::spawn_blocking(move || {
            refresh_measurements(resolver.store(), &measured);
            resolver.resolve_blocking(&name)
        })
        .await?
    }

    /// The GGUF facts of a local model (read once per blob).
    pub async fn facts(&self, resolved: &Resolved) -> Result<Arc<ModelFacts>, ApiError> {
        match &resolved.location {
            Location::Remote { .. } => Err(ApiError::bad_request(format!(
                "{} is served by {}; its weights are not in this server's store",
                resolved.key, resolved.manifest.source
            ))),
            _ => self.facts.get(&resolved.manifest.model, resolved.load_path()).await,
        }
    }

    /// The engine and load options for `resolved`: a node serves its own models; local ones
    /// get the engine asked for (request, Modelfile, server), else the fastest measured, else
    /// the format's default, with options from the request, the Modelfile and the server.
    pub fn plan(
        &self,
        resolved: &Resolved,
        over: &LoadOverrides,
        keep_alive: Option<KeepAlive>,
    ) -> Result<LoadPlan, ApiError> {
        let keep_alive = keep_alive.unwrap_or(self.config.keep_alive);
        if let Location::Remote { node } = &resolved.location {
            let engine = self
                .remotes()
                .node(*node)
                .ok_or_else(|| ApiError::internal(format!("no fleet node {} for {}", node.0, resolved.key)))?;
            let why = format!("served by {}", self.remotes().url(*node));
            // The node owns the model's context, threads and memory.
            let options = LoadOptions { path: resolved.load_path(), ..LoadOptions::default() };
            return Ok(LoadPlan {
                key: resolved.key.clone(),
                manifest: resolved.manifest.clone(),
                engine,
                why,
                options,
                keep_alive,
            });
        }
        let m = &resolved.manifest;
        let param_u32 = |k: &str| m.parameters.get(k).and_then(|v| v.as_u64()).and_then(|v| u32::try_from(v).ok());
        let options = LoadOptions {
            path: resolved.load_path(),
            ctx_size: over.num_ctx.or_else(|| param_u32("num_ctx")).or(self.config.ctx_size),
            threads: over.num_thread.or_else(|| param_u32("num_thread")).or(self.config.threads),
            gpu_layers: over.num_gpu.or_else(|| param_u32("num_gpu")).or(self.config.gpu_layers),
            parallel: Some(self.parallel()),
            max_queue: Some(self.config.max_queue),
            step_tokens: self.config.step_tokens,
            extra: self.config.engine_options.clone(),
        };
        let measured = self.measurements();
        let (engine, why) = self.engines.choose(
            over.engine.as_deref(),
            m.parameters.get("engine").and_then(|v| v.as_str()),
            measured.get(m.model.hex()),
        )?;
        Ok(LoadPlan { key: resolved.key.clone(), manifest: m.clone(), engine, why, options, keep_alive })
    }

    /// Resolves, plans and acquires `name` in one call (the CLI and tests; the service does
    /// the steps itself, applying the Modelfile policy between them).
    pub async fn load_model(
        &self,
        name: &str,
        over: &LoadOverrides,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Acquired, ApiError> {
        let resolved = self.resolve(name).await?;
        let plan = self.plan(&resolved, over, keep_alive)?;
        self.acquire(&plan).await
    }

    /// The plan's model, loaded; loads it (beside busy copies with other options) when needed.
    pub async fn acquire(&self, plan: &LoadPlan) -> Result<Acquired, ApiError> {
        self.residents.acquire(plan).await
    }

    /// What loading with `plan` would take, from its engine.
    pub async fn memory_estimate(&self, plan: &LoadPlan) -> Result<Option<MemoryEstimate>, ApiError> {
        Ok(plan.engine.estimate_memory(&plan.options).await?)
    }

    /// Unloads `key` now if idle, else when its streams end; whether it was loaded.
    pub async fn unload(&self, key: &str) -> bool {
        self.residents.unload(key).await
    }

    pub async fn unload_all(&self) {
        self.residents.unload_all().await
    }

    pub fn running(&self) -> Vec<Running> {
        self.residents.running()
    }

    /// Unloads idle models whose keep-alive ran out.
    pub fn spawn_reaper(&self) -> tokio::task::JoinHandle<()> {
        self.residents.clone().spawn_reaper()
    }

    /// Engine speeds recorded by `bench --record`, by weights digest.
    fn measurements(&self) -> Arc<Measurements> {
        self.measured.lock().map(|c| c.1.clone()).unwrap_or_default()
    }
}

type MeasurementsCache = std::sync::Mutex<(Option<std::time::SystemTime>, Arc<Measurements>)>;

/// Reads the store's engine measurements again if the file changed. Blocking (a `stat`).
fn refresh_measurements(store: &Store, cache: &MeasurementsCache) {
    let modified = store.measurements_modified();
    let stale = cache.lock().map(|c| c.0 != modified).unwrap_or(false);
    if stale {
        let fresh = Arc::new(store.measurements());
        if let Ok(mut c) = cache.lock() {
            *c = (modified, fresh);
        }
    }
}
