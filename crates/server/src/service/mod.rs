//! The one layer under the dialects. A handler extracts its body, converts it into a
//! [`ServiceRequest`] (`TryFrom`), calls the service and encodes what comes back; everything
//! between belongs here, once for every dialect:
//!
//! 1. resolve the model name (once: the store is read once per request);
//! 2. apply the Modelfile's policy ([`policy`]: `PARAMETER`, `SYSTEM`, `MESSAGE`, `TEMPLATE`);
//! 3. validate into a [`hyperllama_core::ValidRequest`] (once: engines take only that);
//! 4. plan the load (engine, options) and acquire the model ([`crate::registry`]);
//! 5. generate, retrying once if an out-of-process engine lost the model before the first
//!    byte;
//! 6. observe (metrics, the key's token budget) while the tokens stream ([`Generation`]).

pub mod generation;
pub mod go_template;
pub mod policy;
pub mod request;

use std::sync::Arc;
use std::time::Duration;

use hyperllama_core::KeepAlive;
use hyperllama_engine::{Embeddings, EngineError};

pub use generation::{Collected, Final, Generation, Piece};
pub use request::{Input, Knobs, PromptInput, ServiceRequest, ToolChoice};

use crate::context::RequestContext;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::registry::{Acquired, Registry, Resolved};

pub struct Service {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
}

/// An embedding request, as every dialect asks for it.
pub struct EmbedRequest {
    pub model: String,
    pub inputs: Vec<String>,
    /// Cut inputs longer than the context instead of refusing them.
    pub truncate: bool,
    pub dimensions: Option<u32>,
    pub knobs: Knobs,
    pub keep_alive: Option<KeepAlive>,
}

/// What an embedding request gets back.
pub struct Embedded {
    pub acquired: Acquired,
    pub embeddings: Embeddings,
}

impl Service {
    pub fn new(registry: Arc<Registry>, metrics: Arc<Metrics>) -> Self {
        Self { registry, metrics }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Starts a generation; every error here comes before the response begins.
    pub async fn generate(&self, req: ServiceRequest, ctx: &RequestContext) -> Result<Generation, ApiError> {
        let resolved = self.registry.resolve(&req.model).await?;
        let prepared = policy::prepare(&req, &resolved.manifest)?;
        let buffer_for_tools = !prepared.request.tools.is_empty();
        let valid = prepared.request.validate()?;
        let plan = self.registry.plan(&resolved, &prepared.load, req.keep_alive)?;
        let mut acquired = self.registry.acquire(&plan).await?;
        let stream = match acquired.model.generate(valid.clone()).await {
            // The model's engine lost it before the request began (an out-of-process engine
            // restarted): load it again and try once more; nothing was sent to the client yet.
            Err(EngineError::Unavailable(why)) if !acquired.model.is_healthy() => {
                tracing::warn!(model = %acquired.name, %why, "the model was lost; loading it again");
                drop(acquired);
                acquired = self.registry.acquire(&plan).await?;
                acquired.model.generate(valid).await?
            }
            result => result?,
        };
        let observer = generation::Observer {
            metrics: self.metrics.model(&acquired.name),
            key: ctx.key.clone(),
            started: ctx.started,
            last_token: None,
            ended: false,
        };
        Ok(Generation::new(acquired, stream, ctx.started, buffer_for_tools, observer))
    }

    /// Loads `model` (Ollama's empty prompt) and keeps it for `keep_alive`; returns how long
    /// the load took (zero when it was loaded).
    pub async fn load(&self, model: &str, knobs: &Knobs, keep_alive: Option<KeepAlive>) -> Result<Duration, ApiError> {
        let (resolved, load) = self.resolve_with(model, knobs).await?;
        let plan = self.registry.plan(&resolved, &load, keep_alive)?;
        Ok(self.registry.acquire(&plan).await?.load_duration)
    }

    /// Unloads `model` now if idle, else when its streams end; whether it was loaded.
    pub async fn unload(&self, model: &str) -> Result<bool, ApiError> {
        let resolved = self.registry.resolve(model).await?;
        Ok(self.registry.unload(&resolved.key).await)
    }

    /// Pooled, normalised embeddings of the inputs, shortened to `dimensions` when asked.
    pub async fn embed(&self, req: EmbedRequest, ctx: &RequestContext) -> Result<Embedded, ApiError> {
        let EmbedRequest { model, inputs, truncate, dimensions, knobs, keep_alive } = req;
        if inputs.is_empty() || inputs.iter().any(String::is_empty) {
            return Err(ApiError::bad_request("`input` must be non-empty text").with_param("input"));
        }
        let (resolved, load) = self.resolve_with(&model, &knobs).await?;
        let plan = self.registry.plan(&resolved, &load, keep_alive)?;
        let acquired = self.registry.acquire(&plan).await?;
        let mut embeddings = acquired.model.embed(inputs, truncate).await?;
        self.metrics.model(&acquired.name).observe_embedding(embeddings.prompt_tokens);
        if let Some(key) = &ctx.key {
            key.charge(u64::from(embeddings.prompt_tokens));
        }
        if let Some(d) = dimensions {
            truncate_dimensions(&mut embeddings.vectors, d, acquired.model.info().embedding_length)?;
        }
        Ok(Embedded { acquired, embeddings })
    }

    async fn resolve_with(
        &self,
        model: &str,
        knobs: &Knobs,
    ) -> Result<(Resolved, crate::registry::LoadOverrides), ApiError> {
        let resolved = self.registry.resolve(model).await?;
        let knobs = Knobs::from_parameters(&resolved.manifest.parameters).under(knobs.clone());
        let load = policy::load_overrides(&knobs)?;
        Ok((resolved, load))
    }
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

/// Nanoseconds, as Ollama reports durations.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
