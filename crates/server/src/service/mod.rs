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

use hyperllama_core::{GenerateRequest, KeepAlive, Prompt, Reasoning, Role};
use hyperllama_engine::parse::{OutputParser, ReasoningDelimiters, ToolFormat};
use hyperllama_engine::{Embeddings, EngineError};

pub use generation::{Collected, Final, Generation, OutputPolicy, Piece};
pub use request::{Input, Knobs, Overflow, PromptInput, ServiceRequest, Think, ToolChoice};

use crate::context::RequestContext;
use crate::error::{ApiError, ErrorKind};
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
    pub async fn generate(&self, mut req: ServiceRequest, ctx: &RequestContext) -> Result<Generation, ApiError> {
        req.n = 1;
        let mut all = self.generate_choices(req, ctx).await?;
        Ok(all.remove(0))
    }

    /// Starts `req.n` independent answers to one prompt (OpenAI's `n`), with seeds derived
    /// from the request's. The first is started alone; the others once it has produced its
    /// first token, so that they restore its prompt's KV instead of computing it again.
    pub async fn generate_choices(
        &self,
        req: ServiceRequest,
        ctx: &RequestContext,
    ) -> Result<Vec<Generation>, ApiError> {
        if req.n == 0 || req.n > MAX_CHOICES {
            return Err(ApiError::bad_request(format!("`n` must be between 1 and {MAX_CHOICES}, got {}", req.n))
                .with_param("n"));
        }
        let resolved = self.registry.resolve(&req.model).await?;
        let prepared = policy::prepare(&req, &resolved.manifest)?;
        let plan = self.registry.plan(&resolved, &prepared.load, req.keep_alive)?;
        let mut acquired = self.registry.acquire(&plan).await?;
        let fitted = self.fit(&req, prepared.request, prepared.truncate, &acquired).await?;
        if fitted.truncated_messages > 0 {
            self.metrics.count_truncated(&acquired.name);
        }
        let policy = |fitted: &Fitted| OutputPolicy {
            parser: OutputParser::new(
                !fitted.request.tools.is_empty(),
                fitted.delimiters.clone(),
                fitted.starts_in_reasoning,
            )
            .with_tools(fitted.tool_format, &fitted.request.tools),
            show_reasoning: req.think.enabled != Some(false),
            truncated_messages: fitted.truncated_messages,
            prompt_tokens: fitted.prompt_tokens,
        };
        let first = fitted.request.clone().validate()?;
        let stream = match acquired.model.generate(first.clone()).await {
            // The model's engine lost it before the request began (an out-of-process engine
            // restarted): load it again and try once more; nothing was sent to the client yet.
            Err(EngineError::Unavailable(why)) if !acquired.model.is_healthy() => {
                tracing::warn!(model = %acquired.name, %why, "the model was lost; loading it again");
                drop(acquired);
                acquired = self.registry.acquire(&plan).await?;
                acquired.model.generate(first).await?
            }
            result => result?,
        };
        let observer = self.observer(&acquired, ctx);
        let mut out = vec![Generation::new(acquired, stream, ctx.started, policy(&fitted), observer)];
        if req.n > 1 {
            out[0].prime().await;
            let base = fitted.request.sampling.seed;
            for i in 1..req.n {
                let mut r = fitted.request.clone();
                r.sampling.seed = base.map(|s| s.wrapping_add(u64::from(i)));
                let acquired = self.registry.acquire(&plan).await?;
                let stream = acquired.model.generate(r.validate()?).await?;
                let observer = self.observer(&acquired, ctx);
                out.push(Generation::new(acquired, stream, ctx.started, policy(&fitted), observer));
            }
        }
        Ok(out)
    }

    /// The model of `model`, loaded as a request would load it, with its tokenizer and
    /// renderer (a model served elsewhere has neither here: 501).
    async fn local(&self, model: &str, knobs: &Knobs) -> Result<Acquired, ApiError> {
        let (resolved, load) = self.resolve_with(model, knobs).await?;
        let plan = self.registry.plan(&resolved, &load, None)?;
        let acquired = self.registry.acquire(&plan).await?;
        if acquired.model.tokenizer().is_none() || acquired.model.renderer().is_none() {
            return Err(ApiError::new(
                ErrorKind::NotImplemented,
                "no_local_tokenizer",
                format!("{model} is served by another server; its tokenizer is not available here"),
            ));
        }
        Ok(acquired)
    }

    /// The prompt a request would be rendered to, and its token count.
    pub async fn render(&self, req: ServiceRequest) -> Result<(String, u32), ApiError> {
        let acquired = self.local(&req.model, &req.knobs).await?;
        let resolved = self.registry.resolve(&req.model).await?;
        let mut request = policy::prepare(&req, &resolved.manifest)?.request;
        reasoning(&req, &mut request, &acquired)?;
        let model = acquired.model.clone();
        tokio::task::spawn_blocking(move || {
            let (Some(renderer), Some(tokenizer)) = (model.renderer(), model.tokenizer()) else {
                return Err(ApiError::internal("the model lost its tokenizer"));
            };
            let text = renderer.render_request(&request)?;
            let n = tokenizer.tokenize(&text, true)?.len();
            Ok((text, u32::try_from(n).unwrap_or(u32::MAX)))
        })
        .await
        .map_err(ApiError::from)?
    }

    /// How many tokens a request's prompt is (Anthropic's `count_tokens`).
    pub async fn count_prompt_tokens(&self, req: ServiceRequest, _ctx: &RequestContext) -> Result<u32, ApiError> {
        Ok(self.render(req).await?.1)
    }

    /// `text` as token ids and each token's bytes.
    pub async fn tokenize(&self, model: &str, text: String, special: bool) -> Result<Vec<(u32, Vec<u8>)>, ApiError> {
        let acquired = self.local(model, &Knobs::default()).await?;
        let model = acquired.model.clone();
        tokio::task::spawn_blocking(move || {
            let t = model.tokenizer().ok_or_else(|| ApiError::internal("the model lost its tokenizer"))?;
            let ids = t.tokenize(&text, special)?;
            ids.into_iter().map(|id| Ok((id, t.token_bytes(id)?))).collect::<Result<Vec<_>, ApiError>>()
        })
        .await
        .map_err(ApiError::from)?
    }

    /// The text of token ids.
    pub async fn detokenize(&self, model: &str, ids: Vec<u32>) -> Result<String, ApiError> {
        let acquired = self.local(model, &Knobs::default()).await?;
        let model = acquired.model.clone();
        tokio::task::spawn_blocking(move || {
            let t = model.tokenizer().ok_or_else(|| ApiError::internal("the model lost its tokenizer"))?;
            Ok(t.detokenize(&ids)?)
        })
        .await
        .map_err(ApiError::from)?
    }

    fn observer(&self, acquired: &Acquired, ctx: &RequestContext) -> generation::Observer {
        generation::Observer {
            metrics: self.metrics.model(&acquired.name),
            key: ctx.key.clone(),
            started: ctx.started,
            last_token: None,
            ended: false,
        }
    }

    /// The request as the model will see it: reasoning switches set from its template, the
    /// prompt rendered and counted where this process has the model's tokenizer, fitted to
    /// the context (oldest messages dropped when `truncate` allows, `max_tokens` clamped when
    /// the dialect does so), else refused with the numbers.
    async fn fit(
        &self,
        req: &ServiceRequest,
        mut request: GenerateRequest,
        truncate: bool,
        acquired: &Acquired,
    ) -> Result<Fitted, ApiError> {
        let model = acquired.model.clone();
        // A model without a chat template (a base model) completes a prompt as it is, as
        // Ollama's default template (`{{ .Prompt }}`) does; a chat gets a plain transcript.
        // (A remote engine renders with its own server's template: not this.)
        if let (Input::Prompt(p), Prompt::Chat(_), None, Some(_)) =
            (&req.input, &request.prompt, &model.info().chat_template, model.renderer())
        {
            request.prompt = Prompt::Raw(p.text.clone());
        }
        let delimiters = reasoning(req, &mut request, acquired)?;
        let tool_format = model.info().chat_template.as_deref().map(ToolFormat::from_template).unwrap_or_default();
        let overflow = req.overflow;
        let name = acquired.name.clone();
        tokio::task::spawn_blocking(move || {
            let (Some(renderer), Some(tokenizer)) = (model.renderer(), model.tokenizer()) else {
                // The engine renders and counts elsewhere (a remote server); it refuses what
                // does not fit itself.
                return Ok(Fitted {
                    request,
                    delimiters,
                    starts_in_reasoning: false,
                    tool_format,
                    truncated_messages: 0,
                    prompt_tokens: None,
                });
            };
            let ctx_size = model.info().loaded_context;
            let mut dropped = 0;
            loop {
                let text = renderer.render_request(&request)?;
                let prompt_tokens = tokenizer.tokenize(&text, true)?.len() as u64;
                if prompt_tokens < u64::from(ctx_size) {
                    let room = u64::from(ctx_size) - prompt_tokens;
                    if let Some(max) = request.stop.max_tokens.filter(|&m| u64::from(m) > room) {
                        if !overflow.clamp_output {
                            return Err(ApiError::new(
                                ErrorKind::BadRequest,
                                "max_tokens_too_large",
                                format!(
                                    "max_tokens is {max}, but the prompt is {prompt_tokens} tokens and the context of \
                                     {name} is {ctx_size}: at most {room} tokens can be generated"
                                ),
                            )
                            .with_param("max_tokens"));
                        }
                        request.stop.max_tokens = Some(room as u32);
                    }
                    let starts_in_reasoning = delimiters.as_ref().is_some_and(|d| text.trim_end().ends_with(&d.open));
                    request.prompt = Prompt::Raw(text);
                    return Ok(Fitted {
                        request,
                        delimiters,
                        starts_in_reasoning,
                        tool_format,
                        truncated_messages: dropped,
                        prompt_tokens: Some(prompt_tokens as u32),
                    });
                }
                let dropped_one = truncate && drop_oldest(&mut request.prompt);
                if !dropped_one {
                    let asked = request.stop.max_tokens.map(|m| format!(", {m} tokens of output requested")).unwrap_or_default();
                    let hint = if truncate || !matches!(request.prompt, Prompt::Chat(_)) {
                        ""
                    } else {
                        ", or send `truncate: true` to drop the oldest messages"
                    };
                    return Err(ApiError::new(
                        ErrorKind::BadRequest,
                        "prompt_too_long",
                        format!(
                            "the prompt is {prompt_tokens} tokens, but the context of {name} is {ctx_size} tokens{asked}: \
                             shorten it, raise the context (num_ctx / --ctx-size){hint}"
                        ),
                    )
                    .with_param("messages"));
                }
                dropped += 1;
            }
        })
        .await
        .map_err(ApiError::from)?
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

/// The most choices one request may ask for.
pub const MAX_CHOICES: u32 = 16;

/// A request fitted to its model.
struct Fitted {
    request: GenerateRequest,
    delimiters: Option<ReasoningDelimiters>,
    starts_in_reasoning: bool,
    /// How the model writes tool calls (from its template).
    tool_format: ToolFormat,
    truncated_messages: usize,
    /// Counted here (local engines).
    prompt_tokens: Option<u32>,
}

/// Sets the request's reasoning from the model's template and what the client asked; the
/// delimiters, when the model reasons.
fn reasoning(
    req: &ServiceRequest,
    request: &mut GenerateRequest,
    acquired: &Acquired,
) -> Result<Option<ReasoningDelimiters>, ApiError> {
    let delimiters = match &request.prompt {
        Prompt::Chat(_) => acquired.model.info().chat_template.as_deref().and_then(ReasoningDelimiters::from_template),
        Prompt::Raw(_) => None,
    };
    // gpt-oss: reasoning in the harmony analysis channel (split by the output parser), its
    // depth set by the template's `reasoning_effort`; no delimiters to force for a budget.
    let harmony = matches!(&request.prompt, Prompt::Chat(_))
        && acquired
            .model
            .info()
            .chat_template
            .as_deref()
            .is_some_and(|t| ToolFormat::from_template(t) == ToolFormat::Harmony);
    if harmony {
        request.reasoning = Some(Reasoning {
            enabled: req.think.enabled,
            effort: req.think.effort.clone(),
            budget: None,
            open: String::new(),
            close: String::new(),
        });
        return Ok(None);
    }
    if req.think.strict && req.think.enabled == Some(true) && delimiters.is_none() {
        return Err(
            ApiError::bad_request(format!("\"{}\" does not support thinking", acquired.name)).with_param("think")
        );
    }
    if let Some(d) = &delimiters {
        let off = req.think.enabled == Some(false);
        request.reasoning = Some(Reasoning {
            enabled: req.think.enabled,
            effort: req.think.effort.clone(),
            budget: if off { None } else { req.think.budget() },
            open: d.open.clone(),
            close: d.close.clone(),
        });
    }
    Ok(delimiters)
}

/// Drops the oldest message that is not a system message, and any assistant or tool
/// messages left leading the conversation (templates want it to start with the user); keeps
/// the last message. Whether one was dropped.
fn drop_oldest(prompt: &mut Prompt) -> bool {
    let Prompt::Chat(messages) = prompt else { return false };
    let last = messages.len().saturating_sub(1);
    let Some(i) = messages.iter().position(|m| m.role != Role::System).filter(|&i| i < last) else {
        return false;
    };
    messages.remove(i);
    while let Some(j) = messages.iter().position(|m| m.role != Role::System) {
        if j >= messages.len() - 1 || messages[j].role == Role::User {
            break;
        }
        messages.remove(j);
    }
    true
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
