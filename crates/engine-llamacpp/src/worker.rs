//! The compute thread: owns the llama.cpp context and serves one generation at a time.
//!
//! It keeps the tokens whose KV is in the cache, so a prompt that shares a prefix with the
//! previous one (the next turn of a chat, a repeated system prompt) only evaluates the new
//! tail. Before every decode step it checks whether the consumer is still there; a dropped
//! stream stops the work within one token.

use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use hyperllama_core::{FinishReason, GenerateRequest, Timings, TokenEvent, Usage};
use hyperllama_engine::{Embeddings, EngineError, ModelStats, StopMatcher, Utf8Decoder};
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

pub(crate) type EventSender = tokio::sync::mpsc::Sender<Result<TokenEvent, EngineError>>;

/// The most tokens one embedding input may have (the whole input is one micro-batch).
pub(crate) const EMBED_MAX_TOKENS: u32 = 2048;

pub(crate) struct Job {
    pub tokens: Vec<LlamaToken>,
    pub request: GenerateRequest,
    /// A GBNF grammar the output must follow (`format`).
    pub grammar: Option<String>,
    pub tx: EventSender,
    pub queued_at: Instant,
}

pub(crate) enum Command {
    Generate(Box<Job>),
    Embed { inputs: Vec<Vec<LlamaToken>>, reply: tokio::sync::oneshot::Sender<Result<Embeddings, EngineError>> },
    Shutdown,
}

/// How a generation ended, from the worker's point of view.
enum Outcome {
    /// Ran to its end (already counted, before the final event went out).
    Finished,
    /// Ended by an error or panic.
    Failed,
    Cancelled {
        generated: u32,
    },
}

struct Worker<'m> {
    backend: &'static LlamaBackend,
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    /// A second context for embeddings (mean pooling), created on first use.
    embed_ctx: Option<LlamaContext<'m>>,
    threads: i32,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    /// Tokens whose KV is in sequence 0, in order.
    cached: Vec<LlamaToken>,
    stats: Arc<Mutex<ModelStats>>,
}

pub(crate) fn run(
    backend: &'static LlamaBackend,
    model: &LlamaModel,
    params: LlamaContextParams,
    jobs: mpsc::Receiver<Command>,
    ready: mpsc::SyncSender<Result<u32, EngineError>>,
    stats: Arc<Mutex<ModelStats>>,
) {
    let n_batch = params.n_batch() as usize;
    let threads = params.n_threads();
    let ctx = match model.new_context(backend, params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(EngineError::Load(format!("cannot create a llama.cpp context: {e}"))));
            return;
        }
    };
    // llama.cpp pads the context (to a multiple of 256); report the size it really has.
    let n_ctx = ctx.n_ctx();
    let mut w = Worker {
        backend,
        model,
        ctx,
        embed_ctx: None,
        threads,
        batch: LlamaBatch::new(n_batch, 1),
        n_batch,
        cached: Vec::new(),
        stats,
    };
    let _ = ready.send(Ok(n_ctx));

    loop {
        let job = match jobs.recv() {
            Ok(Command::Generate(job)) => job,
            Ok(Command::Embed { inputs, reply }) => {
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| w.embed(&inputs)))
                    .unwrap_or_else(|_| Err(EngineError::Internal("embedding panicked".into())));
                let _ = reply.send(result);
                continue;
            }
            Ok(Command::Shutdown) | Err(_) => break,
        };
        let tx = job.tx.clone();
        // A Rust panic in one request must not take the model down with it.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| w.generate(*job)));
        let outcome = match result {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                w.reset_cache();
                let _ = tx.blocking_send(Err(e));
                Outcome::Failed
            }
            Err(panic) => {
                w.reset_cache();
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(%msg, "generation panicked");
                let _ = tx.blocking_send(Err(EngineError::Internal(format!("generation panicked: {msg}"))));
                Outcome::Failed
            }
        };
        if let Ok(mut s) = w.stats.lock() {
            match outcome {
                Outcome::Finished => {}
                Outcome::Failed => s.requests_finished += 1,
                Outcome::Cancelled { generated } => {
                    s.requests_cancelled += 1;
                    s.last_cancelled_tokens = u64::from(generated);
                }
            }
        }
    }
    tracing::debug!("compute thread stopped");
}

impl Worker<'_> {
    fn reset_cache(&mut self) {
        self.ctx.clear_kv_cache();
        self.cached.clear();
    }

    /// Drops cached KV past the longest prefix shared with `tokens`; returns how many tokens
    /// of `tokens` are already in the cache. At least one token is always left to evaluate,
    /// since sampling needs fresh logits.
    fn reuse_prefix(&mut self, tokens: &[LlamaToken], enabled: bool) -> usize {
        let mut common = if enabled { self.cached.iter().zip(tokens).take_while(|(a, b)| a == b).count() } else { 0 };
        common = common.min(tokens.len().saturating_sub(1));
        let keep = u32::try_from(common).unwrap_or(0);
        if common == 0 || self.ctx.kv_cache_seq_rm(0, Some(keep), None).is_err() {
            self.reset_cache();
            return 0;
        }
        self.cached.truncate(common);
        common
    }

    fn embed(&mut self, inputs: &[Vec<LlamaToken>]) -> Result<Embeddings, EngineError> {
        if self.embed_ctx.is_none() {
            let n = inputs.iter().map(Vec::len).max().unwrap_or(1).max(512) as u32;
            let n = n.max(EMBED_MAX_TOKENS);
            let params = LlamaContextParams::default()
                .with_n_ctx(std::num::NonZeroU32::new(n))
                .with_n_batch(n)
                .with_n_ubatch(n)
                .with_n_seq_max(1)
                .with_n_threads(self.threads)
                .with_n_threads_batch(self.threads)
                .with_embeddings(true)
                .with_pooling_type(LlamaPoolingType::Mean);
            let ctx = self
                .model
                .new_context(self.backend, params)
                .map_err(|e| EngineError::Internal(format!("cannot create the embedding context: {e}")))?;
            self.embed_ctx = Some(ctx);
        }
        let Some(ctx) = self.embed_ctx.as_mut() else {
            return Err(EngineError::Internal("no embedding context".into()));
        };
        let mut out = Embeddings::default();
        for tokens in inputs {
            ctx.clear_kv_cache();
            let mut batch = LlamaBatch::new(tokens.len(), 1);
            for (i, &t) in tokens.iter().enumerate() {
                batch.add(t, i as i32, &[0], true).map_err(Self::decode_error)?;
            }
            ctx.decode(&mut batch).map_err(Self::decode_error)?;
            let v =
                ctx.embeddings_seq_ith(0).map_err(|e| EngineError::Internal(format!("no pooled embedding: {e}")))?;
            let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt().max(1e-12);
            out.vectors.push(v.iter().map(|x| (f64::from(*x) / norm) as f32).collect());
            out.prompt_tokens += tokens.len() as u32;
        }
        Ok(out)
    }

    fn decode_error(e: impl std::fmt::Display) -> EngineError {
        EngineError::Internal(format!("llama_decode failed: {e}"))
    }

    fn generate(&mut self, job: Job) -> Result<Outcome, EngineError> {
        let Job { tokens, request, grammar, tx, queued_at } = job;
        let started = Instant::now();
        let queue = started - queued_at;
        if tx.is_closed() {
            return Ok(Outcome::Cancelled { generated: 0 });
        }

        // Prefill: evaluate what the cache does not hold yet, in chunks of n_batch.
        let cached_tokens = self.reuse_prefix(&tokens, request.cache_prompt);
        let last = tokens.len() - 1;
        let mut pos = cached_tokens;
        for chunk in tokens[cached_tokens..].chunks(self.n_batch) {
            self.batch.clear();
            for (i, &t) in chunk.iter().enumerate() {
                let p = pos + i;
                self.batch.add(t, p as i32, &[0], p == last).map_err(Self::decode_error)?;
            }
            if let Err(e) = self.ctx.decode(&mut self.batch) {
                self.reset_cache();
                return Err(Self::decode_error(e));
            }
            self.cached.extend_from_slice(chunk);
            pos += chunk.len();
            if tx.is_closed() {
                return Ok(Outcome::Cancelled { generated: 0 });
            }
        }

        let vocab = self.model.vocab();
        let mut sampler = crate::sampler::build(self.model, &request.sampling, grammar.as_deref())?;
        if grammar.is_none() {
            // The penalties see the prompt too (a grammar must only see generated tokens).
            sampler.accept_many(&tokens);
        }
        let mut decoder = Utf8Decoder::new();
        let mut stop = StopMatcher::new(&request.stop.stop);
        let max_tokens = request.stop.max_tokens.unwrap_or(u32::MAX);
        let n_ctx = self.ctx.n_ctx() as usize;
        let mut logits_idx = self.batch.n_tokens() - 1;
        let mut generated: u32 = 0;
        let mut first_token_at = None;
        let mut stopped_by_string = false;

        let finish_reason = loop {
            let token = sampler.sample(&self.ctx, logits_idx);
            first_token_at.get_or_insert_with(Instant::now);
            if vocab.is_eog(token) && !request.stop.ignore_eos {
                break FinishReason::Stop;
            }
            generated += 1;
            let piece = vocab.token_to_piece(token, false, None);
            let step = stop.push(&decoder.push(&piece));
            let event = TokenEvent::Token { id: token.0 as u32, text: step.emit };
            if tx.blocking_send(Ok(event)).is_err() {
                return Ok(Outcome::Cancelled { generated });
            }
            if step.stopped {
                stopped_by_string = true;
                break FinishReason::Stop;
            }
            if generated >= max_tokens || pos >= n_ctx {
                break FinishReason::Length;
            }
            if tx.is_closed() {
                return Ok(Outcome::Cancelled { generated });
            }
            self.batch.clear();
            self.batch.add(token, pos as i32, &[0], true).map_err(Self::decode_error)?;
            if let Err(e) = self.ctx.decode(&mut self.batch) {
                self.reset_cache();
                return Err(Self::decode_error(e));
            }
            self.cached.push(token);
            pos += 1;
            logits_idx = 0;
        };

        // Release what was held back, unless a stop string ended the text.
        if !stopped_by_string {
            let step = stop.push(&decoder.finish());
            let mut rest = step.emit;
            if !step.stopped {
                rest.push_str(&stop.flush());
            }
            if !rest.is_empty() && tx.blocking_send(Ok(TokenEvent::Text(rest))).is_err() {
                return Ok(Outcome::Cancelled { generated });
            }
        }

        let end = Instant::now();
        let first = first_token_at.unwrap_or(end);
        let timings = Timings { queue, prompt_eval: first - started, eval: end - first };
        let usage = Usage {
            prompt_tokens: u32::try_from(tokens.len()).unwrap_or(u32::MAX),
            cached_tokens: u32::try_from(cached_tokens).unwrap_or(u32::MAX),
            completion_tokens: generated,
        };
        // Count before the final event, so a consumer that saw `Done` sees the stats too.
        if let Ok(mut s) = self.stats.lock() {
            s.prompt_tokens += (tokens.len() - cached_tokens) as u64;
            s.generated_tokens += u64::from(generated);
            s.requests_finished += 1;
        }
        let _ = tx.blocking_send(Ok(TokenEvent::Done { finish_reason, usage, timings }));
        Ok(Outcome::Finished)
    }
}
