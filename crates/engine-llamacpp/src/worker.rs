//! The compute thread: one llama.cpp context, several sequences, continuous batching.
//!
//! The thread is an actor. It owns the context and a fixed set of slots (llama.cpp sequence
//! ids), takes commands from one channel and loops over *steps*. Each step is one
//! `llama_decode` call that holds
//!
//! 1. one token for every sequence that is generating (they all advance together), then
//! 2. prompt chunks of sequences that are still prefilling, oldest request first, up to the
//!    step's token budget (chunked prefill: a long new prompt costs running streams one
//!    step's delay per chunk, never the whole prefill).
//!
//! Requests join at the next step when a slot is free and wait in first-come-first-served
//! order otherwise; finished and cancelled ones leave at the end of a step. A consumer that
//! drops its stream is noticed at the next step (`is_closed`), so its slot is freed within
//! one token.
//!
//! Each sequence has its own KV stream of `ctx_per_seq` cells. A slot keeps the tokens of its
//! last request after it finishes; a new request takes the free slot whose cached tokens share
//! the longest prefix with its prompt (ties: the lowest id, since llama.cpp batches runs of
//! consecutive sequence ids in one graph), or copies the prefix from another slot (a stream
//! copy at the next decode: a memcpy, no recompute), and evaluates only the rest.
//!
//! Events go out on unbounded channels: a slow reader must not stall the other sequences of
//! the batch (at most `max_tokens` small events pile up for it).

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use hyperllama_core::{FinishReason, Timings, TokenEvent, Usage, ValidRequest};
use hyperllama_engine::{Embeddings, EngineError, ModelStats, StopMatcher, Utf8Decoder};
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

pub(crate) type EventSender = tokio::sync::mpsc::UnboundedSender<Result<TokenEvent, EngineError>>;

/// The most tokens one embedding input may have (the whole input is one micro-batch).
pub(crate) const EMBED_MAX_TOKENS: u32 = 2048;

/// With the `fault-injection` feature (tests only), a request with this stop string makes the
/// compute thread panic in the step after its first token.
#[cfg(feature = "fault-injection")]
pub const FAULT_PANIC: &str = "\u{0}hyperllama-fault:panic";

/// A shorter shared prefix than this is not worth copying from another slot.
const MIN_PREFIX_COPY: usize = 16;

pub(crate) struct Job {
    pub tokens: Vec<LlamaToken>,
    pub request: ValidRequest,
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

/// How the scheduler is sized.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SchedulerConfig {
    /// Slots (sequences decoded together).
    pub parallel: usize,
    /// The most tokens one sequence may hold (prompt + output).
    pub ctx_per_seq: usize,
    /// The most tokens one step may hold.
    pub step_tokens: usize,
}

/// A request that holds a slot.
struct Active {
    tx: EventSender,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens whose KV is in the cache.
    prefilled: usize,
    /// Of those, how many came from the cache.
    cached_tokens: usize,
    sampler: LlamaSampler,
    decoder: Utf8Decoder,
    stop: StopMatcher,
    ignore_eos: bool,
    max_tokens: u32,
    generated: u32,
    /// The last sampled token, to be decoded in the next step.
    pending: Option<LlamaToken>,
    /// This step: the batch index of the logits to sample from, and how many tokens it added.
    logits: Option<i32>,
    added: usize,
    queued_at: Instant,
    started: Instant,
    first_token_at: Option<Instant>,
    #[cfg(feature = "fault-injection")]
    panic_injected: bool,
}

struct Slot {
    id: i32,
    /// Tokens whose KV is in the cache for this sequence, in position order.
    cached: Vec<LlamaToken>,
    active: Option<Active>,
}

struct Worker<'m> {
    backend: &'static LlamaBackend,
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    /// A second context for embeddings (mean pooling), created on first use.
    embed_ctx: Option<LlamaContext<'m>>,
    threads: i32,
    batch: LlamaBatch<'static>,
    config: SchedulerConfig,
    slots: Vec<Slot>,
    waiting: VecDeque<Box<Job>>,
    stats: Arc<Mutex<ModelStats>>,
}

pub(crate) fn run(
    backend: &'static LlamaBackend,
    model: &LlamaModel,
    params: LlamaContextParams,
    config: SchedulerConfig,
    jobs: mpsc::Receiver<Command>,
    ready: mpsc::SyncSender<Result<u32, EngineError>>,
    stats: Arc<Mutex<ModelStats>>,
) {
    let threads = params.n_threads();
    let ctx = match model.new_context(backend, params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(EngineError::Load(format!("cannot create a llama.cpp context: {e}"))));
            return;
        }
    };
    let slots = (0..config.parallel).map(|i| Slot { id: i as i32, cached: Vec::new(), active: None }).collect();
    let mut w = Worker {
        backend,
        model,
        ctx,
        embed_ctx: None,
        threads,
        batch: LlamaBatch::new(config.step_tokens, 1),
        config,
        slots,
        waiting: VecDeque::new(),
        stats,
    };
    if let Ok(mut s) = w.stats.lock() {
        s.parallel = config.parallel as u32;
    }
    let _ = ready.send(Ok(config.ctx_per_seq as u32));

    'serve: loop {
        // Wait for work when there is none; otherwise take what arrived and run a step.
        if w.is_idle() {
            match jobs.recv() {
                Ok(cmd) => {
                    if !w.handle(cmd) {
                        break 'serve;
                    }
                }
                Err(_) => break 'serve,
            }
        }
        loop {
            match jobs.try_recv() {
                Ok(cmd) => {
                    if !w.handle(cmd) {
                        break 'serve;
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => break 'serve,
            }
        }
        // A Rust panic in a step must not take the model down: its requests get an error,
        // the cache starts afresh, and the thread goes on serving.
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| w.step())) {
            let msg = panic_message(&panic);
            tracing::error!(%msg, "a decode step panicked; failing its requests and clearing the cache");
            w.fail_active(|| EngineError::Internal(format!("generation panicked: {msg}")));
            w.reset_cache();
        }
        w.publish_gauges();
    }
    w.fail_active(|| EngineError::Unavailable("the model was unloaded".into()));
    for job in w.waiting.drain(..) {
        let _ = job.tx.send(Err(EngineError::Unavailable("the model was unloaded".into())));
    }
    w.publish_gauges();
    tracing::debug!("compute thread stopped");
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn decode_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("llama_decode failed: {e}"))
}

impl Worker<'_> {
    fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.slots.iter().all(|s| s.active.is_none())
    }

    /// Takes one command; false means stop serving.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Generate(job) => self.waiting.push_back(job),
            Command::Embed { inputs, reply } => {
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.embed(&inputs)))
                    .unwrap_or_else(|_| Err(EngineError::Internal("embedding panicked".into())));
                let _ = reply.send(result);
            }
            Command::Shutdown => return false,
        }
        true
    }

    fn reset_cache(&mut self) {
        self.ctx.clear_kv_cache();
        for slot in &mut self.slots {
            slot.cached.clear();
        }
    }

    /// Ends every active request with an error (their slots become free).
    fn fail_active(&mut self, error: impl Fn() -> EngineError) {
        let mut failed = 0;
        for slot in &mut self.slots {
            if let Some(a) = slot.active.take() {
                let _ = a.tx.send(Err(error()));
                failed += 1;
            }
        }
        if let Ok(mut s) = self.stats.lock() {
            s.requests_finished += failed;
        }
    }

    fn publish_gauges(&self) {
        if let Ok(mut s) = self.stats.lock() {
            s.active = self.slots.iter().filter(|s| s.active.is_some()).count() as u32;
            s.waiting = self.waiting.len() as u32;
            s.kv_tokens = self.slots.iter().map(|s| s.cached.len() as u64).sum();
        }
    }

    /// One scheduling step: drop cancelled requests, admit waiting ones, decode one batch.
    fn step(&mut self) {
        self.reap_cancelled();
        self.admit();
        if self.slots.iter().all(|s| s.active.is_none()) {
            return;
        }
        let n_tokens = self.fill_batch();
        if n_tokens == 0 {
            return;
        }
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            // Which sequence caused it is unknown: fail the ones in this batch, drop their KV.
            let msg = e.to_string();
            tracing::error!(error = %msg, "llama_decode failed");
            for slot in &mut self.slots {
                if slot.active.as_ref().is_some_and(|a| a.added > 0) {
                    if let Some(a) = slot.active.take() {
                        let _ = a.tx.send(Err(decode_error(&msg)));
                    }
                    let _ = self.ctx.kv_cache_seq_rm(slot.id, None, None);
                    slot.cached.clear();
                }
            }
            return;
        }
        if let Ok(mut s) = self.stats.lock() {
            s.decode_steps += 1;
            s.batched_tokens += n_tokens as u64;
        }
        for i in 0..self.slots.len() {
            self.advance(i);
        }
    }

    fn reap_cancelled(&mut self) {
        let mut cancelled = Vec::new();
        for slot in &mut self.slots {
            if slot.active.as_ref().is_some_and(|a| a.tx.is_closed()) {
                if let Some(a) = slot.active.take() {
                    cancelled.push(a.generated);
                }
            }
        }
        let before = self.waiting.len();
        self.waiting.retain(|job| !job.tx.is_closed());
        let dropped_waiting = before - self.waiting.len();
        if cancelled.is_empty() && dropped_waiting == 0 {
            return;
        }
        if let Ok(mut s) = self.stats.lock() {
            s.requests_cancelled += (cancelled.len() + dropped_waiting) as u64;
            if let Some(&g) = cancelled.last() {
                s.last_cancelled_tokens = u64::from(g);
            }
        }
    }

    /// Moves waiting requests into free slots, first come first served.
    fn admit(&mut self) {
        while !self.waiting.is_empty() {
            let Some(job) = self.waiting.pop_front() else { break };
            // The free slot whose cache shares the longest prefix; ties go to the lowest id, since
            // llama.cpp batches runs of consecutive sequence ids together.
            let best = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.active.is_none())
                .map(|(i, s)| {
                    let common = if job.request.cache_prompt { common_prefix(&s.cached, &job.tokens) } else { 0 };
                    (i, common)
                })
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
            let Some((slot_idx, common)) = best else {
                self.waiting.push_front(job);
                break;
            };
            self.start(slot_idx, common, *job);
        }
    }

    fn start(&mut self, slot_idx: usize, mut common: usize, job: Job) {
        let Job { tokens, request, grammar, tx, queued_at } = job;
        let id = self.slots[slot_idx].id;
        if request.cache_prompt {
            // Another slot (busy or not) may hold a longer prefix: share its cells.
            let donor = self
                .slots
                .iter()
                .filter(|s| s.id != id)
                .map(|s| (s.id, common_prefix(&s.cached, &tokens)))
                .max_by_key(|&(_, n)| n);
            if let Some((src, n)) = donor {
                if n >= common + MIN_PREFIX_COPY && self.share_prefix(src, id, n) {
                    common = n;
                }
            }
        }
        // At least one prompt token is evaluated: sampling needs fresh logits.
        common = common.min(tokens.len().saturating_sub(1));
        let keep = u32::try_from(common).unwrap_or(0);
        let slot = &mut self.slots[slot_idx];
        if common == 0 || self.ctx.kv_cache_seq_rm(id, Some(keep), None).is_err() {
            let _ = self.ctx.kv_cache_seq_rm(id, None, None);
            common = 0;
        }
        slot.cached.truncate(common);

        let mut sampler = match crate::sampler::build(self.model, &request.sampling, grammar.as_deref()) {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        if grammar.is_none() {
            // The penalties see the prompt too (a grammar must only see generated tokens).
            sampler.accept_many(&tokens);
        }
        slot.active = Some(Active {
            tx,
            prefilled: common,
            cached_tokens: common,
            prompt: tokens,
            sampler,
            decoder: Utf8Decoder::new(),
            stop: StopMatcher::new(&request.stop.stop),
            ignore_eos: request.stop.ignore_eos,
            max_tokens: request.stop.max_tokens.unwrap_or(u32::MAX),
            generated: 0,
            pending: None,
            logits: None,
            added: 0,
            queued_at,
            started: Instant::now(),
            first_token_at: None,
            #[cfg(feature = "fault-injection")]
            panic_injected: request.stop.stop.iter().any(|s| s == FAULT_PANIC),
        });
    }

    /// Makes slot `dst` hold the first `n` cached tokens of slot `src`.
    fn share_prefix(&mut self, src: i32, dst: i32, n: usize) -> bool {
        let Ok(n32) = u32::try_from(n) else { return false };
        if self.ctx.kv_cache_seq_rm(dst, None, None).is_err() {
            return false;
        }
        // Separate streams: llama.cpp copies the whole stream (at the next decode), then the
        // tail past the prefix goes.
        if self.ctx.kv_cache_seq_cp(src, dst, None, None).is_err()
            || self.ctx.kv_cache_seq_rm(dst, Some(n32), None).is_err()
        {
            let _ = self.ctx.kv_cache_seq_rm(dst, None, None);
            return false;
        }
        let prefix = self.slots.iter().find(|s| s.id == src).map(|s| s.cached[..n].to_vec()).unwrap_or_default();
        if let Some(d) = self.slots.iter_mut().find(|s| s.id == dst) {
            d.cached = prefix;
        }
        true
    }

    /// Builds this step's batch; returns how many tokens it holds.
    fn fill_batch(&mut self) -> usize {
        self.batch.clear();
        let mut budget = self.config.step_tokens;
        // Every generating sequence advances by one token each step.
        for slot in &mut self.slots {
            let Some(a) = slot.active.as_mut() else { continue };
            a.logits = None;
            a.added = 0;
            if let Some(token) = a.pending {
                if self.batch.add(token, slot.cached.len() as i32, &[slot.id], true).is_ok() {
                    a.logits = Some(self.batch.n_tokens() - 1);
                    a.added = 1;
                    budget = budget.saturating_sub(1);
                }
            }
        }
        // Then prompt chunks, oldest request first, while the budget lasts.
        let mut prefilling: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].active.as_ref().is_some_and(|a| a.pending.is_none()))
            .collect();
        prefilling.sort_by_key(|&i| self.slots[i].active.as_ref().map(|a| a.queued_at));
        for i in prefilling {
            if budget == 0 {
                break;
            }
            let slot = &mut self.slots[i];
            let Some(a) = slot.active.as_mut() else { continue };
            let last = a.prompt.len() - 1;
            let n = (a.prompt.len() - a.prefilled).min(budget);
            for p in a.prefilled..a.prefilled + n {
                if self.batch.add(a.prompt[p], p as i32, &[slot.id], p == last).is_err() {
                    break;
                }
                a.added += 1;
                if p == last {
                    a.logits = Some(self.batch.n_tokens() - 1);
                }
            }
            budget = budget.saturating_sub(a.added);
        }
        self.batch.n_tokens() as usize
    }

    /// After a successful decode: records the new KV, samples, streams, finishes.
    fn advance(&mut self, idx: usize) {
        let model = self.model;
        let slot = &mut self.slots[idx];
        let Some(a) = slot.active.as_mut() else { return };
        if a.added > 0 {
            match a.pending.take() {
                Some(token) => slot.cached.push(token),
                None => {
                    slot.cached.extend_from_slice(&a.prompt[a.prefilled..a.prefilled + a.added]);
                    a.prefilled += a.added;
                }
            }
        }
        let Some(logits) = a.logits else { return };
        #[cfg(feature = "fault-injection")]
        if a.panic_injected && a.generated > 0 {
            panic!("injected fault");
        }
        let token = a.sampler.sample(&self.ctx, logits);
        a.first_token_at.get_or_insert_with(Instant::now);
        let vocab = model.vocab();
        if vocab.is_eog(token) && !a.ignore_eos {
            self.finish(idx, FinishReason::Stop, false);
            return;
        }
        a.generated += 1;
        let piece = vocab.token_to_piece(token, false, None);
        let step = a.stop.push(&a.decoder.push(&piece));
        if a.tx.send(Ok(TokenEvent::token(token.0 as u32, step.emit))).is_err() {
            let generated = a.generated;
            slot.active = None;
            if let Ok(mut s) = self.stats.lock() {
                s.requests_cancelled += 1;
                s.last_cancelled_tokens = u64::from(generated);
            }
            return;
        }
        if step.stopped {
            self.finish(idx, FinishReason::Stop, true);
        } else if a.generated >= a.max_tokens || slot.cached.len() >= self.config.ctx_per_seq {
            self.finish(idx, FinishReason::Length, false);
        } else {
            a.pending = Some(token);
        }
    }

    fn finish(&mut self, idx: usize, finish_reason: FinishReason, stopped_by_string: bool) {
        let slot = &mut self.slots[idx];
        let Some(mut a) = slot.active.take() else { return };
        // Release what was held back, unless a stop string ended the text.
        if !stopped_by_string {
            let step = a.stop.push(&a.decoder.finish());
            let mut rest = step.emit;
            if !step.stopped {
                rest.push_str(&a.stop.flush());
            }
            if !rest.is_empty() {
                let _ = a.tx.send(Ok(TokenEvent::Text(rest)));
            }
        }
        let end = Instant::now();
        let first = a.first_token_at.unwrap_or(end);
        let timings = Timings { queue: a.started - a.queued_at, prompt_eval: first - a.started, eval: end - first };
        let usage = Usage {
            prompt_tokens: u32::try_from(a.prompt.len()).unwrap_or(u32::MAX),
            cached_tokens: u32::try_from(a.cached_tokens).unwrap_or(u32::MAX),
            completion_tokens: a.generated,
        };
        // Count before the final event, so a consumer that saw `Done` sees the stats too.
        if let Ok(mut s) = self.stats.lock() {
            s.prompt_tokens += (a.prompt.len() - a.cached_tokens) as u64;
            s.cached_prompt_tokens += a.cached_tokens as u64;
            s.generated_tokens += u64::from(a.generated);
            s.requests_finished += 1;
        }
        self.publish_gauges();
        let _ = a.tx.send(Ok(TokenEvent::Done { finish_reason, usage, timings }));
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
                batch.add(t, i as i32, &[0], true).map_err(decode_error)?;
            }
            ctx.decode(&mut batch).map_err(decode_error)?;
            let v =
                ctx.embeddings_seq_ith(0).map_err(|e| EngineError::Internal(format!("no pooled embedding: {e}")))?;
            let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt().max(1e-12);
            out.vectors.push(v.iter().map(|x| (f64::from(*x) / norm) as f32).collect());
            out.prompt_tokens += tokens.len() as u32;
        }
        Ok(out)
    }
}
