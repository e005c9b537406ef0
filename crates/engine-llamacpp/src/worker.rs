//! The compute thread: one llama.cpp context, `parallel` compute lanes, continuous batching,
//! the prompt cache and speculative decoding. It carries out the plans of [`crate::sched`]:
//!
//! 1. cancelled requests leave (their KV goes to the prompt cache);
//! 2. waiting requests are admitted into the lowest free lanes, the best-cached first within a
//!    fairness window; each restores its longest cached prefix (the lane's own, or the prompt
//!    cache's) and computes only the rest;
//! 3. gaps below active lanes are closed by moving a sequence down;
//! 4. one `llama_decode` holds, in lane order, each generating lane's next token (and its
//!    n-gram draft) and prompt chunks up to the step's budget (adaptive: bounded while lanes
//!    decode, the whole batch when none does);
//! 5. each lane samples (an argmax over the logits for plain greedy requests), verifies its
//!    draft, streams the accepted tokens, and finishes or goes on.
//!
//! Events go out on unbounded channels: a slow reader must not stall the other lanes.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use hyperllama_core::{FinishReason, Logprobs, Sampling, Timings, TokenEvent, TokenLogprob, Usage, ValidRequest};
use hyperllama_engine::{EngineError, ModelStats, StopMatcher, Utf8Decoder};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::session::LlamaStateSeqFlags;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use crate::cache::PromptCache;
use crate::sched::plan::{self, LaneView, PlanConfig, WaitingView, Work};
use crate::sched::spec;

pub(crate) type EventSender = tokio::sync::mpsc::UnboundedSender<Result<TokenEvent, EngineError>>;

/// With the `fault-injection` feature (tests only), a request with this stop string makes the
/// compute thread panic in the step after its first token.
#[cfg(feature = "fault-injection")]
pub const FAULT_PANIC: &str = "\u{0}hyperllama-fault:panic";

/// A cached prefix shorter than this is not worth a restore from the prompt cache.
const MIN_RESTORE: usize = 16;
/// Drafting pauses for this many steps in a lane whose drafts were mostly rejected.
const SPEC_BACKOFF_STEPS: u64 = 16;
/// Below this share of accepted draft tokens, drafting pauses.
const SPEC_MIN_ACCEPT: f64 = 0.3;

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
    Shutdown,
}

/// How the scheduler is sized and tuned.
#[derive(Debug, Clone)]
pub(crate) struct SchedulerConfig {
    /// Lanes (sequences decoded together).
    pub parallel: usize,
    /// The most tokens one sequence may hold (prompt + output).
    pub ctx_per_seq: usize,
    /// The most tokens one step may hold (the context's `n_batch`).
    pub max_step_tokens: usize,
    pub n_ubatch: usize,
    /// A fixed prompt budget per step while lanes decode (`--step-tokens`); `None`: adaptive.
    pub fixed_step_tokens: Option<usize>,
    /// The step time the adaptive budget aims at while lanes decode.
    pub target_step_ms: f64,
    /// n-gram speculative decoding.
    pub speculative: bool,
}

/// A waiting request.
struct Waiting {
    job: Box<Job>,
    /// Tokens of its prompt the prompt cache held when it arrived.
    cached: usize,
    skips: u32,
    order: u64,
}

/// A request that holds a lane.
struct Active {
    tx: EventSender,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens whose KV is in the lane.
    prefilled: usize,
    /// Of those, how many were reused (the lane's or the prompt cache's).
    cached_tokens: usize,
    /// The sampler chain; `None` for plain greedy requests (an argmax over the logits).
    sampler: Option<LlamaSampler>,
    decoder: Utf8Decoder,
    stop: StopMatcher,
    ignore_eos: bool,
    max_tokens: u32,
    generated: u32,
    /// The last sampled token, to be decoded in the next step.
    pending: Option<LlamaToken>,
    /// The prompt and every generated token, for n-gram drafting.
    history: Vec<i32>,
    /// Whether drafts may be verified for this request (deterministic sampling).
    can_speculate: bool,
    /// This step: the drafted tokens, and the batch indexes of the logits to read.
    draft: Vec<LlamaToken>,
    logit_idx: Vec<i32>,
    added: usize,
    /// Drafts accepted over drafted, decayed; drafting pauses until `spec_pause_until`.
    spec_rate: f64,
    spec_pause_until: u64,
    logprobs: Option<u8>,
    temperature: f32,
    /// The reasoning budget, when the request set one.
    think: Option<ThinkBudget>,
    order: u64,
    queued_at: Instant,
    started: Instant,
    first_token_at: Option<Instant>,
    #[cfg(feature = "fault-injection")]
    panic_injected: bool,
}

/// A request's reasoning budget: the tokens written inside the reasoning block are counted,
/// and when they reach the budget the closing delimiter is written in the model's place.
struct ThinkBudget {
    budget: u32,
    used: u32,
    open: String,
    close: String,
    /// Inside the block now (the template may open it in the prompt).
    inside: bool,
    /// The block was closed (by the model or by the budget): nothing more to count.
    done: bool,
    /// The closing tokens still to be written.
    forced: VecDeque<LlamaToken>,
    close_tokens: Vec<LlamaToken>,
    /// The end of the output so far, to see the delimiters in.
    tail: String,
}

impl ThinkBudget {
    /// Follows the text of one more token; whether the budget is spent now.
    fn observe(&mut self, piece: &str) -> bool {
        if self.done {
            return false;
        }
        self.tail.push_str(piece);
        if !self.inside {
            if self.tail.contains(&self.open) {
                self.inside = true;
                self.tail.clear();
            }
        } else if self.tail.contains(&self.close) {
            self.done = true;
            return false;
        } else {
            self.used += 1;
        }
        let keep = self.open.len().max(self.close.len()) * 2;
        if self.tail.len() > keep {
            let mut cut = self.tail.len() - keep;
            while !self.tail.is_char_boundary(cut) {
                cut += 1;
            }
            self.tail.drain(..cut);
        }
        if self.inside && self.used >= self.budget && self.forced.is_empty() {
            self.forced.extend(self.close_tokens.iter().copied());
            self.done = true;
            return true;
        }
        false
    }
}

struct Lane {
    id: i32,
    /// Tokens whose KV is in the lane, in position order.
    resident: Vec<LlamaToken>,
    active: Option<Active>,
}

/// What happened to a lane after a token.
enum Flow {
    Go,
    Done,
}

struct Worker<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    config: SchedulerConfig,
    lanes: Vec<Lane>,
    waiting: VecDeque<Waiting>,
    cache: PromptCache,
    stats: Arc<Mutex<ModelStats>>,
    next_order: u64,
    steps: u64,
    /// Milliseconds per prompt token, measured, for the adaptive step budget.
    ms_per_prompt_token: f64,
    n_vocab: usize,
    /// Control tokens shown as text (see [`SHOWN_CONTROL_TOKENS`]).
    shown_controls: std::collections::HashSet<i32>,
}

/// Control tokens that mark tool calls and reasoning in some families' output (Mistral's
/// `[TOOL_CALLS]`, `[ARGS]`, `[CALL_ID]`, `[THINK]`; Llama 3's `<|python_tag|>`; gpt-oss's
/// harmony markers; DeepSeek-R1's call markers; `<think>` and `<tool_call>` where a GGUF
/// marks them control): streamed as text so the output parser
/// sees them, as llama-server's preserved tokens are. Other control tokens stay hidden.
const SHOWN_CONTROL_TOKENS: &[&str] = &[
    "[TOOL_CALLS]",
    "[ARGS]",
    "[CALL_ID]",
    "[THINK]",
    "[/THINK]",
    "<|python_tag|>",
    "<tool_call>",
    "</tool_call>",
    "<think>",
    "</think>",
    // gpt-oss (harmony); its `<|call|>` and `<|return|>` end the turn and stay hidden.
    "<|channel|>",
    "<|message|>",
    "<|start|>",
    "<|end|>",
    "<|constrain|>",
    // DeepSeek-R1
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁sep｜>",
    "<｜tool▁call▁end｜>",
    "<｜tool▁calls▁end｜>",
];

fn shown_controls(model: &LlamaModel) -> std::collections::HashSet<i32> {
    let vocab = model.vocab();
    vocab
        .tokens()
        .filter(|&t| vocab.is_control(t) && !vocab.is_eog(t))
        .filter(|&t| {
            vocab.text(t).and_then(|c| c.to_str().ok()).is_some_and(|text| SHOWN_CONTROL_TOKENS.contains(&text))
        })
        .map(|t| t.0)
        .collect()
}

/// Everything the compute thread starts with.
pub(crate) struct WorkerSpec {
    pub backend: &'static LlamaBackend,
    pub params: LlamaContextParams,
    pub config: SchedulerConfig,
    pub cache: PromptCache,
    pub jobs: mpsc::Receiver<Command>,
    /// Answered once the context exists: the context per sequence, or why it could not be made.
    pub ready: mpsc::SyncSender<Result<u32, EngineError>>,
    pub stats: Arc<Mutex<ModelStats>>,
}

pub(crate) fn run(model: &LlamaModel, spec: WorkerSpec) {
    let WorkerSpec { backend, params, config, cache, jobs, ready, stats } = spec;
    let ctx = match model.new_context(backend, params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(EngineError::Load(format!("cannot create a llama.cpp context: {e}"))));
            return;
        }
    };
    let lanes = (0..config.parallel).map(|i| Lane { id: i as i32, resident: Vec::new(), active: None }).collect();
    let mut w = Worker {
        model,
        ctx,
        batch: LlamaBatch::new(config.max_step_tokens, 1),
        n_vocab: usize::try_from(model.n_vocab()).unwrap_or(0),
        shown_controls: shown_controls(model),
        config,
        lanes,
        waiting: VecDeque::new(),
        cache,
        stats,
        next_order: 0,
        steps: 0,
        ms_per_prompt_token: 2.0,
    };
    if let Ok(mut s) = w.stats.lock() {
        s.parallel = w.config.parallel as u32;
    }
    let _ = ready.send(Ok(w.config.ctx_per_seq as u32));

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
        // the lanes start afresh, and the thread goes on serving.
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| w.step())) {
            let msg = panic_message(&panic);
            tracing::error!(%msg, "a decode step panicked; failing its requests and clearing the lanes");
            w.fail_active(|| EngineError::Internal(format!("generation panicked: {msg}")));
            w.reset_lanes();
        }
        w.publish_gauges();
    }
    w.fail_active(|| EngineError::Unavailable("the model was unloaded".into()));
    for job in w.waiting.drain(..) {
        let _ = job.job.tx.send(Err(EngineError::Unavailable("the model was unloaded".into())));
    }
    w.cache.flush();
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

fn ids(tokens: &[LlamaToken]) -> Vec<i32> {
    tokens.iter().map(|t| t.0).collect()
}

fn decode_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("llama_decode failed: {e}"))
}

/// The index of the largest logit.
fn argmax(logits: &[f32]) -> i32 {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as i32
}

impl Worker<'_> {
    fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.lanes.iter().all(|l| l.active.is_none())
    }

    /// Takes one command; false means stop serving.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Generate(job) => {
                let cached = if job.request.cache_prompt { self.cache.lookup(&ids(&job.tokens)) } else { 0 };
                let order = self.next_order;
                self.next_order += 1;
                self.waiting.push_back(Waiting { job, cached, skips: 0, order });
            }
            Command::Shutdown => return false,
        }
        true
    }

    fn reset_lanes(&mut self) {
        self.ctx.clear_kv_cache();
        for lane in &mut self.lanes {
            lane.resident.clear();
        }
    }

    /// Ends every active request with an error (their lanes become free).
    fn fail_active(&mut self, error: impl Fn() -> EngineError) {
        let mut failed = 0;
        for lane in &mut self.lanes {
            if let Some(a) = lane.active.take() {
                let _ = a.tx.send(Err(error()));
                failed += 1;
            }
        }
        if let Ok(mut s) = self.stats.lock() {
            s.requests_finished += failed;
        }
    }

    fn publish_gauges(&self) {
        let cache = self.cache.stats();
        if let Ok(mut s) = self.stats.lock() {
            s.active = self.lanes.iter().filter(|l| l.active.is_some()).count() as u32;
            s.waiting = self.waiting.len() as u32;
            s.kv_tokens = self.lanes.iter().map(|l| l.resident.len() as u64).sum();
            s.cache_ram_bytes = cache.ram_bytes;
            s.cache_disk_bytes = cache.disk_bytes;
            s.cache_evictions = cache.evictions;
        }
    }

    fn plan_config(&self) -> PlanConfig {
        let adaptive = (self.config.target_step_ms / self.ms_per_prompt_token.max(0.01)) as usize;
        PlanConfig {
            lanes: self.config.parallel,
            n_ubatch: self.config.n_ubatch,
            max_step_tokens: self.config.max_step_tokens,
            prefill_while_decoding: self
                .config
                .fixed_step_tokens
                .unwrap_or(adaptive.clamp(16, self.config.max_step_tokens)),
            fairness_window: 8,
            max_skips: 4,
            spec_max_decoders: 2,
        }
    }

    fn views(&mut self) -> Vec<LaneView> {
        let steps = self.steps;
        let speculative = self.config.speculative;
        let ctx_per_seq = self.config.ctx_per_seq;
        let mut views = Vec::with_capacity(self.lanes.len());
        for lane in &mut self.lanes {
            let Some(a) = lane.active.as_mut() else {
                views.push(LaneView::Free);
                continue;
            };
            if a.pending.is_none() {
                views.push(LaneView::Prefill { remaining: a.prompt.len() - a.prefilled, order: a.order });
                continue;
            }
            a.draft.clear();
            let room = ctx_per_seq.saturating_sub(lane.resident.len() + 2);
            let left = (a.max_tokens.saturating_sub(a.generated)) as usize;
            let forcing = a.think.as_ref().is_some_and(|t| !t.forced.is_empty());
            if speculative && a.can_speculate && !forcing && steps >= a.spec_pause_until && room >= 3 && left > 1 {
                let want = 7.min(room).min(left - 1);
                a.draft = spec::draft(&a.history, want).into_iter().map(LlamaToken).collect();
            }
            views.push(LaneView::Decode { draft_avail: a.draft.len() });
        }
        views
    }

    /// One scheduling step.
    fn step(&mut self) {
        self.reap_cancelled();
        self.admit();
        let views: Vec<LaneView> = self
            .lanes
            .iter()
            .map(|l| if l.active.is_some() { LaneView::Decode { draft_avail: 0 } } else { LaneView::Free })
            .collect();
        for (from, to) in plan::compact(&views, self.waiting.len()) {
            self.move_lane(from, to);
        }
        if self.lanes.iter().all(|l| l.active.is_none()) {
            return;
        }
        let views = self.views();
        let work = plan::schedule(&self.plan_config(), &views);
        let n_tokens = self.fill_batch(&work);
        if n_tokens == 0 {
            return;
        }
        let shape: Vec<(usize, usize)> = work.iter().map(|(l, w)| (*l, w.tokens())).collect();
        let ubatches = plan::ubatches(&shape, self.config.n_ubatch);
        let prompt_tokens: usize =
            work.iter().filter(|(_, w)| matches!(w, Work::Prefill { .. })).map(|(_, w)| w.tokens()).sum();
        let t0 = Instant::now();
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            // Which sequence caused it is unknown: fail the ones in this batch, drop their KV.
            let msg = e.to_string();
            tracing::error!(error = %msg, "llama_decode failed");
            for (lane, _) in &work {
                let l = &mut self.lanes[*lane];
                if let Some(a) = l.active.take() {
                    let _ = a.tx.send(Err(decode_error(&msg)));
                }
                let _ = self.ctx.kv_cache_seq_rm(l.id, None, None);
                l.resident.clear();
            }
            return;
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        if prompt_tokens >= 32 {
            // Most of a step with a prompt chunk is the chunk: its cost per token, smoothed.
            let per = ms / n_tokens as f64;
            self.ms_per_prompt_token = 0.7 * self.ms_per_prompt_token + 0.3 * per;
        }
        self.steps += 1;
        if let Ok(mut s) = self.stats.lock() {
            s.decode_steps += 1;
            s.batched_tokens += n_tokens as u64;
            s.ubatches += ubatches as u64;
            s.ubatches_last_step = ubatches as u32;
        }
        for (lane, w) in work {
            match w {
                Work::Prefill { .. } => self.advance_prefill(lane),
                Work::Decode { .. } => self.advance_decode(lane),
            }
        }
    }

    fn reap_cancelled(&mut self) {
        let mut cancelled = Vec::new();
        for i in 0..self.lanes.len() {
            if self.lanes[i].active.as_ref().is_some_and(|a| a.tx.is_closed()) {
                if let Some(a) = self.lanes[i].active.take() {
                    cancelled.push(a.generated);
                }
                self.capture(i);
            }
        }
        let before = self.waiting.len();
        self.waiting.retain(|w| !w.job.tx.is_closed());
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

    /// Waiting requests into free lanes, as the planner says.
    fn admit(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let views: Vec<LaneView> = self
            .lanes
            .iter()
            .map(|l| if l.active.is_some() { LaneView::Decode { draft_avail: 0 } } else { LaneView::Free })
            .collect();
        let queue: Vec<WaitingView> =
            self.waiting.iter().map(|w| WaitingView { cached: w.cached, skips: w.skips }).collect();
        let picks = plan::admit(&self.plan_config(), &views, &queue);
        if picks.is_empty() {
            return;
        }
        // Requests older than one admitted before them were passed over once more.
        let newest_admitted = picks.iter().map(|(i, _)| self.waiting[*i].order).max().unwrap_or(0);
        let mut taken: Vec<(usize, Waiting)> = Vec::new();
        let mut indexes: Vec<(usize, usize)> = picks;
        indexes.sort_by_key(|p| std::cmp::Reverse(p.0));
        for (wi, lane) in indexes {
            if let Some(w) = self.waiting.remove(wi) {
                taken.push((lane, w));
            }
        }
        for w in &mut self.waiting {
            if w.order < newest_admitted {
                w.skips += 1;
            }
        }
        taken.sort_by_key(|(lane, _)| *lane);
        for (lane, w) in taken {
            self.start(lane, w);
        }
    }

    /// Starts `w` in lane `idx`: restores its longest cached prefix, builds its sampler.
    fn start(&mut self, idx: usize, w: Waiting) {
        let Waiting { job, order, .. } = w;
        let Job { tokens, request, grammar, tx, queued_at } = *job;
        let id = self.lanes[idx].id;
        let mut common = if request.cache_prompt { common_prefix(&self.lanes[idx].resident, &tokens) } else { 0 };
        let mut from_cache = false;
        if request.cache_prompt {
            // Another lane, busy with a request that shares a longer prefix (a system prompt
            // many conversations use): its KV goes to the prompt cache now, to be restored here.
            let donor = (0..self.lanes.len())
                .filter(|&j| j != idx && self.lanes[j].active.is_some())
                .map(|j| (j, common_prefix(&self.lanes[j].resident, &tokens)))
                .max_by_key(|&(_, n)| n);
            if let Some((j, n)) = donor.filter(|&(_, n)| n >= common + MIN_RESTORE) {
                if self.cache.enabled() {
                    self.capture(j);
                } else if self.share_prefix(j, idx, n.min(tokens.len() - 1)) {
                    common = n.min(tokens.len() - 1);
                }
            }
        }
        if request.cache_prompt && self.cache.enabled() {
            let key = ids(&tokens);
            let cached = self.cache.lookup(&key).min(tokens.len() - 1);
            if cached >= common + MIN_RESTORE {
                if let Some(blob) = self.cache.blob(&key, cached) {
                    // SAFETY: the blob was assembled from states this context's llama.cpp wrote
                    // (RAM) or from a disk entry whose sha256, model key and KV layout were checked.
                    let ok = unsafe { self.ctx.state_seq_set_data_ext(&blob, id, LlamaStateSeqFlags::empty()) };
                    if ok {
                        self.lanes[idx].resident = tokens[..cached].to_vec();
                        common = cached;
                        from_cache = true;
                    } else {
                        tracing::warn!(
                            lane = id,
                            tokens = cached,
                            "the prompt cache's state was refused; computing the prompt"
                        );
                        let _ = self.ctx.kv_cache_seq_rm(id, None, None);
                        self.lanes[idx].resident.clear();
                        common = 0;
                    }
                }
            }
        }
        // At least one prompt token is evaluated: sampling needs fresh logits.
        common = common.min(tokens.len().saturating_sub(1));
        let lane = &mut self.lanes[idx];
        if common < lane.resident.len() {
            let keep = u32::try_from(common).unwrap_or(0);
            if common == 0 || self.ctx.kv_cache_seq_rm(id, Some(keep), None).is_err() {
                let _ = self.ctx.kv_cache_seq_rm(id, None, None);
                common = 0;
            }
            lane.resident.truncate(common);
        }
        if let Ok(mut s) = self.stats.lock() {
            s.cache_hit_tokens += common as u64;
            s.cache_miss_tokens += (tokens.len() - common) as u64;
        }
        if from_cache {
            tracing::debug!(lane = id, tokens = common, "prompt restored from the prompt cache");
        }

        let p = request.sampling;
        let greedy = matches!(p.sampling, Sampling::Greedy);
        let plain_greedy = greedy && grammar.is_none() && p.penalties.is_off();
        let sampler = if plain_greedy {
            None
        } else {
            match crate::sampler::build(self.model, &p, grammar.as_deref()) {
                Ok(mut s) => {
                    if grammar.is_none() {
                        // The penalties see the prompt too (a grammar must only see generated tokens).
                        s.accept_many(&tokens);
                    }
                    Some(s)
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        };
        let temperature = match p.sampling {
            Sampling::Random { temperature, .. } => temperature,
            Sampling::Greedy => 1.0,
        };
        let think = request.reasoning.as_ref().and_then(|r| {
            let budget = r.budget?;
            let close_tokens = self.model.vocab().tokenize(format!("{}\n\n", r.close).as_bytes(), false, true);
            // The template may have opened the block at the end of the prompt.
            let tail: Vec<u8> = tokens[tokens.len().saturating_sub(4)..]
                .iter()
                .flat_map(|&t| self.model.vocab().token_to_piece(t, true, None))
                .collect();
            let inside = String::from_utf8_lossy(&tail).trim_end().ends_with(&r.open);
            Some(ThinkBudget {
                budget,
                used: 0,
                open: r.open.clone(),
                close: r.close.clone(),
                inside,
                done: false,
                forced: VecDeque::new(),
                close_tokens,
                tail: String::new(),
            })
        });
        lane.active = Some(Active {
            tx,
            prefilled: common,
            cached_tokens: common,
            history: ids(&tokens),
            prompt: tokens,
            sampler,
            decoder: Utf8Decoder::new(),
            stop: StopMatcher::new(&request.stop.stop),
            ignore_eos: request.stop.ignore_eos,
            max_tokens: request.stop.max_tokens.unwrap_or(u32::MAX),
            generated: 0,
            pending: None,
            can_speculate: greedy && request.speculate,
            draft: Vec::new(),
            logit_idx: Vec::new(),
            added: 0,
            spec_rate: 1.0,
            spec_pause_until: 0,
            logprobs: request.logprobs,
            temperature,
            think,
            order,
            queued_at,
            started: Instant::now(),
            first_token_at: None,
            #[cfg(feature = "fault-injection")]
            panic_injected: request.stop.stop.iter().any(|s| s == FAULT_PANIC),
        });
    }

    /// Makes lane `dst` hold the first `n` tokens of lane `src` (llama.cpp copies the whole
    /// stream, then the tail past the prefix goes): the way without a prompt cache.
    fn share_prefix(&mut self, src: usize, dst: usize, n: usize) -> bool {
        let (s, d) = (self.lanes[src].id, self.lanes[dst].id);
        let Ok(n32) = u32::try_from(n) else { return false };
        if self.ctx.kv_cache_seq_rm(d, None, None).is_err()
            || self.ctx.kv_cache_seq_cp(s, d, None, None).is_err()
            || self.ctx.kv_cache_seq_rm(d, Some(n32), None).is_err()
        {
            let _ = self.ctx.kv_cache_seq_rm(d, None, None);
            self.lanes[dst].resident.clear();
            return false;
        }
        self.lanes[dst].resident = self.lanes[src].resident[..n].to_vec();
        true
    }

    /// Moves lane `from`'s sequence (its KV and its request) into the free lane `to`.
    fn move_lane(&mut self, from: usize, to: usize) {
        let (src, dst) = (self.lanes[from].id, self.lanes[to].id);
        let moved = match self.state_of(src) {
            // SAFETY: the state was just written by this context.
            Some(blob) => unsafe { self.ctx.state_seq_set_data_ext(&blob, dst, LlamaStateSeqFlags::empty()) },
            None => false,
        };
        if !moved {
            // Fall back to llama.cpp's own stream copy.
            let _ = self.ctx.kv_cache_seq_rm(dst, None, None);
            if self.ctx.kv_cache_seq_cp(src, dst, None, None).is_err() {
                return;
            }
        }
        let _ = self.ctx.kv_cache_seq_rm(src, None, None);
        let active = self.lanes[from].active.take();
        let resident = std::mem::take(&mut self.lanes[from].resident);
        self.lanes[to].active = active;
        self.lanes[to].resident = resident;
    }

    /// Lane `id`'s state as llama.cpp serializes it.
    fn state_of(&self, id: i32) -> Option<Vec<u8>> {
        let size = self.ctx.state_seq_get_size_ext(id, LlamaStateSeqFlags::empty());
        if size == 0 {
            return None;
        }
        let mut blob = vec![0u8; size];
        // SAFETY: `blob` holds the `size` bytes llama.cpp asked for.
        let n = unsafe { self.ctx.state_seq_get_data_ext(blob.as_mut_ptr(), id, LlamaStateSeqFlags::empty()) };
        (n == size).then_some(blob)
    }

    /// Puts lane `idx`'s KV into the prompt cache.
    fn capture(&mut self, idx: usize) {
        let lane = &self.lanes[idx];
        if !self.cache.enabled() || lane.resident.is_empty() {
            return;
        }
        let tokens = ids(&lane.resident);
        if self.cache.lookup(&tokens) >= tokens.len() {
            return;
        }
        if let Some(blob) = self.state_of(lane.id) {
            self.cache.capture(&tokens, &blob);
        }
    }

    /// Builds this step's batch from the plan, in lane order; returns how many tokens it holds.
    fn fill_batch(&mut self, work: &[(usize, Work)]) -> usize {
        self.batch.clear();
        for &(idx, w) in work {
            let lane = &mut self.lanes[idx];
            let Some(a) = lane.active.as_mut() else { continue };
            a.logit_idx.clear();
            a.added = 0;
            match w {
                Work::Decode { draft } => {
                    a.draft.truncate(draft);
                    let Some(token) = a.pending else { continue };
                    let first = lane.resident.len() as i32;
                    for (pos, t) in (first..).zip(std::iter::once(token).chain(a.draft.iter().copied())) {
                        if self.batch.add(t, pos, &[lane.id], true).is_err() {
                            break;
                        }
                        a.logit_idx.push(self.batch.n_tokens() - 1);
                        a.added += 1;
                    }
                    a.draft.truncate(a.added.saturating_sub(1));
                }
                Work::Prefill { tokens } => {
                    let last = a.prompt.len() - 1;
                    for p in a.prefilled..(a.prefilled + tokens).min(a.prompt.len()) {
                        if self.batch.add(a.prompt[p], p as i32, &[lane.id], p == last).is_err() {
                            break;
                        }
                        a.added += 1;
                        if p == last {
                            a.logit_idx.push(self.batch.n_tokens() - 1);
                        }
                    }
                }
            }
        }
        self.batch.n_tokens() as usize
    }

    fn advance_prefill(&mut self, idx: usize) {
        let lane = &mut self.lanes[idx];
        let Some(a) = lane.active.as_mut() else { return };
        lane.resident.extend_from_slice(&a.prompt[a.prefilled..a.prefilled + a.added]);
        a.prefilled += a.added;
        let Some(&at) = a.logit_idx.first() else { return };
        // The prompt is in: the first token.
        let token = self.sample(idx, at);
        if let Flow::Go = self.emit(idx, token, at) {
            if let Some(a) = self.lanes[idx].active.as_mut() {
                a.pending = Some(token);
            }
        }
    }

    /// After a decode step: the pending token is in the KV; each drafted token is checked in
    /// turn against what the model would have written; the accepted ones stay, the rest of
    /// the draft's KV goes.
    fn advance_decode(&mut self, idx: usize) {
        let (pending, draft, idxs) = {
            let lane = &mut self.lanes[idx];
            let Some(a) = lane.active.as_mut() else { return };
            let Some(p) = a.pending.take() else { return };
            (p, std::mem::take(&mut a.draft), std::mem::take(&mut a.logit_idx))
        };
        #[cfg(feature = "fault-injection")]
        if self.lanes[idx].active.as_ref().is_some_and(|a| a.panic_injected && a.generated > 0) {
            panic!("injected fault");
        }
        self.lanes[idx].resident.push(pending);
        let mut accepted = 0;
        let mut flow = Flow::Go;
        let mut next = None;
        for (j, &at) in idxs.iter().enumerate() {
            let token = self.sample(idx, at);
            flow = self.emit(idx, token, at);
            if let Flow::Done = flow {
                break;
            }
            match draft.get(j) {
                Some(&d) if d == token => {
                    // The draft's token is what the model writes: its KV (already computed) stays.
                    self.lanes[idx].resident.push(d);
                    accepted += 1;
                }
                _ => {
                    next = Some(token);
                    break;
                }
            }
        }
        // The KV of rejected draft tokens goes.
        let lane = &mut self.lanes[idx];
        let keep = lane.resident.len();
        if !draft.is_empty() && accepted < draft.len() {
            let _ = self.ctx.kv_cache_seq_rm(lane.id, Some(keep as u32), None);
        }
        if !draft.is_empty() {
            if let Ok(mut s) = self.stats.lock() {
                s.spec_drafted += draft.len() as u64;
                s.spec_accepted += accepted as u64;
            }
            if let Some(a) = lane.active.as_mut() {
                let rate = accepted as f64 / draft.len() as f64;
                a.spec_rate = 0.6 * a.spec_rate + 0.4 * rate;
                if a.spec_rate < SPEC_MIN_ACCEPT {
                    a.spec_pause_until = self.steps + SPEC_BACKOFF_STEPS;
                    a.spec_rate = SPEC_MIN_ACCEPT;
                }
            }
        }
        if let Flow::Go = flow {
            if let Some(a) = self.lanes[idx].active.as_mut() {
                // The last sample (a correction, or the token after every accepted draft) is next.
                a.pending = next;
            }
        }
    }

    /// The next token from the logits at batch index `at`.
    fn sample(&mut self, idx: usize, at: i32) -> LlamaToken {
        let ctx = &self.ctx;
        let Some(a) = self.lanes[idx].active.as_mut() else { return LlamaToken(0) };
        a.first_token_at.get_or_insert_with(Instant::now);
        // The reasoning budget is spent: its closing delimiter is written instead.
        if let Some(forced) = a.think.as_mut().and_then(|t| t.forced.pop_front()) {
            if let Some(s) = a.sampler.as_mut() {
                s.accept(forced);
            }
            return forced;
        }
        match a.sampler.as_mut() {
            Some(s) => s.sample(ctx, at),
            None => LlamaToken(argmax(ctx.get_logits_ith(at))),
        }
    }

    /// Streams `token` (sampled from the logits at batch index `at`) for lane `idx`; finishes
    /// the request when it ends it.
    fn emit(&mut self, idx: usize, token: LlamaToken, at: i32) -> Flow {
        let vocab = self.model.vocab();
        let (ignore_eos, want) = match self.lanes[idx].active.as_ref() {
            Some(a) => (a.ignore_eos, a.logprobs.map(|n| (n, a.temperature))),
            None => return Flow::Done,
        };
        if vocab.is_eog(token) && !ignore_eos {
            self.finish(idx, FinishReason::Stop, false);
            return Flow::Done;
        }
        let logprobs = want.map(|(n, temperature)| Box::new(self.logprobs(at, token, n, temperature)));
        // Every position of the lane is used: this token (which needs no position) is the last.
        let ctx_full = self.lanes[idx].resident.len() >= self.config.ctx_per_seq;
        let piece = vocab.token_to_piece(token, self.shown_controls.contains(&token.0), None);
        enum Outcome {
            Go,
            Stopped,
            Length,
            Gone(u32),
        }
        let outcome = {
            let Some(a) = self.lanes[idx].active.as_mut() else { return Flow::Done };
            a.generated += 1;
            a.history.push(token.0);
            if let Some(t) = a.think.as_mut() {
                // With special tokens shown: a model's `</think>` may be one.
                let shown = vocab.token_to_piece(token, true, None);
                if t.observe(&String::from_utf8_lossy(&shown)) {
                    tracing::debug!(budget = t.budget, "reasoning budget spent; closing the reasoning");
                }
            }
            let step = a.stop.push(&a.decoder.push(&piece));
            if a.tx.send(Ok(TokenEvent::Token { id: token.0 as u32, text: step.emit, logprobs })).is_err() {
                Outcome::Gone(a.generated)
            } else if step.stopped {
                Outcome::Stopped
            } else if a.generated >= a.max_tokens || ctx_full {
                Outcome::Length
            } else {
                Outcome::Go
            }
        };
        match outcome {
            Outcome::Go => Flow::Go,
            Outcome::Stopped => {
                self.finish(idx, FinishReason::Stop, true);
                Flow::Done
            }
            Outcome::Length => {
                self.finish(idx, FinishReason::Length, false);
                Flow::Done
            }
            Outcome::Gone(generated) => {
                self.lanes[idx].active = None;
                if let Ok(mut s) = self.stats.lock() {
                    s.requests_cancelled += 1;
                    s.last_cancelled_tokens = u64::from(generated);
                }
                self.capture(idx);
                Flow::Done
            }
        }
    }

    /// Log-probabilities of `token` and the `n` most likely tokens at batch index `at`, from
    /// the model's distribution at the request's temperature.
    fn logprobs(&self, at: i32, token: LlamaToken, n: u8, temperature: f32) -> Logprobs {
        let logits = self.ctx.get_logits_ith(at);
        let t = if temperature > 0.0 { temperature } else { 1.0 };
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = logits.iter().map(|&l| f64::from((l - max) / t).exp()).sum();
        let log_z = (sum.ln()) as f32;
        let lp = |id: usize| (logits[id] - max) / t - log_z;
        let vocab = self.model.vocab();
        let entry = |id: i32| {
            let bytes = vocab.token_to_piece(LlamaToken(id), true, None);
            TokenLogprob {
                id: id as u32,
                text: String::from_utf8_lossy(&bytes).into_owned(),
                bytes,
                logprob: lp(id as usize),
            }
        };
        let mut top: Vec<usize> = Vec::new();
        if n > 0 {
            // A partial selection of the n best of the vocabulary.
            let mut idx: Vec<usize> = (0..logits.len().min(self.n_vocab.max(logits.len()))).collect();
            let k = usize::from(n).min(idx.len());
            idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| logits[b].total_cmp(&logits[a]));
            idx.truncate(k);
            idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            top = idx;
        }
        Logprobs { token: entry(token.0), top: top.into_iter().map(|i| entry(i as i32)).collect() }
    }

    fn finish(&mut self, idx: usize, finish_reason: FinishReason, stopped_by_string: bool) {
        let Some(mut a) = self.lanes[idx].active.take() else { return };
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
        let stop_sequence = if stopped_by_string { a.stop.matched().map(str::to_string) } else { None };
        let _ = a.tx.send(Ok(TokenEvent::Done { finish_reason, usage, timings, stop_sequence }));
        // The conversation so far goes to the prompt cache, for its next turn.
        self.capture(idx);
    }
}
