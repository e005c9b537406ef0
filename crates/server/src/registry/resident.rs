//! The loaded models ("residents"): one lock over a short list, never held across a load or
//! an unload, so a slow load (a MAX compile, a vLLM node starting) never stalls other models,
//! `/api/ps` or `/metrics`.
//!
//! Each loaded instance is one model with one set of load options. A request whose options
//! differ from the loaded instance's gets a new instance: the old one is unloaded first if
//! idle, and otherwise keeps serving its streams while the new one loads beside it (memory
//! permitting; if not, the load waits until the busy one is idle). A busy instance is never
//! unloaded. Loads run in their own task, so a client that goes away does not leave a load
//! half done, and requests for the same instance wait for the one load instead of starting
//! another.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyperllama_core::KeepAlive;
use hyperllama_engine::{Engine, LoadOptions, LoadedModel, ModelStats};
use hyperllama_store::Manifest;
use tokio::sync::{watch, Notify};

use super::memory::MemoryGuard;
use crate::error::ApiError;

/// Everything a load needs, decided before it starts.
#[derive(Clone)]
pub struct LoadPlan {
    /// The name it is loaded and shown under.
    pub key: String,
    pub manifest: Manifest,
    pub engine: Arc<dyn Engine>,
    /// Why this engine (for the log).
    pub why: String,
    pub options: LoadOptions,
    pub keep_alive: KeepAlive,
}

#[derive(Clone)]
enum LoadState {
    Loading,
    Ready { model: Arc<dyn LoadedModel>, load_duration: Duration },
    Failed(ApiError),
}

struct Meta {
    keep_alive: KeepAlive,
    /// When an idle instance may be unloaded; `None` while in use or kept forever.
    expires: Option<Instant>,
    last_used: Instant,
}

struct Instance {
    key: String,
    manifest: Manifest,
    engine: &'static str,
    options: LoadOptions,
    state: watch::Sender<LoadState>,
    users: AtomicUsize,
    meta: Mutex<Meta>,
}

impl Instance {
    fn ready(&self) -> Option<Arc<dyn LoadedModel>> {
        match &*self.state.borrow() {
            LoadState::Ready { model, .. } => Some(model.clone()),
            _ => None,
        }
    }

    fn serves(&self, plan: &LoadPlan) -> bool {
        self.key == plan.key
            && self.manifest.model == plan.manifest.model
            && self.engine == plan.engine.id()
            && self.options == plan.options
    }

    fn busy(&self) -> bool {
        self.users.load(Ordering::Acquire) > 0
    }

    fn touch(&self, keep_alive: KeepAlive) {
        if let Ok(mut m) = self.meta.lock() {
            m.keep_alive = keep_alive;
            m.expires = None;
            m.last_used = Instant::now();
        }
    }
}

/// Keeps its instance loaded while held; when the last one goes, the keep-alive starts.
struct UseGuard {
    instance: Arc<Instance>,
    idle: Arc<Notify>,
}

impl Drop for UseGuard {
    fn drop(&mut self) {
        if self.instance.users.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Ok(mut m) = self.instance.meta.lock() {
                m.last_used = Instant::now();
                m.expires = match m.keep_alive {
                    KeepAlive::Forever => None,
                    KeepAlive::For(d) => Some(Instant::now() + d),
                };
            }
            self.idle.notify_waiters();
        }
    }
}

/// A model ready to serve one request. Holding it keeps the model loaded.
pub struct Acquired {
    pub name: String,
    pub model: Arc<dyn LoadedModel>,
    pub manifest: Manifest,
    pub engine: &'static str,
    /// How long this request waited for a load (zero when the model was loaded already).
    pub load_duration: Duration,
    _guard: UseGuard,
}

/// A loaded model, as `/api/ps` shows it.
#[derive(Debug, Clone)]
pub struct Running {
    pub name: String,
    pub manifest: Manifest,
    pub context_length: u32,
    pub size: u64,
    /// When it will be unloaded (`None`: kept forever).
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub stats: ModelStats,
    /// The engine serving it ("llamacpp", "max", ...).
    pub engine: &'static str,
    pub busy: bool,
}

pub struct Residents {
    instances: Mutex<Vec<Arc<Instance>>>,
    idle: Arc<Notify>,
    max_loaded: usize,
    memory: MemoryGuard,
    loads: AtomicU64,
}

enum Step {
    /// An instance that serves the plan (loaded or loading); its user count is taken.
    Use(Arc<Instance>, Vec<Arc<Instance>>),
    /// A new instance to load (user count taken), and idle ones to unload first.
    Load(Arc<Instance>, Vec<Arc<Instance>>),
}

impl Residents {
    pub fn new(max_loaded: usize, memory: MemoryGuard) -> Self {
        Self {
            instances: Mutex::default(),
            idle: Arc::default(),
            max_loaded: max_loaded.max(1),
            memory,
            loads: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Instance>>> {
        // A panic while holding this lock cannot leave the list inconsistent (every change is
        // one push or retain), so a poisoned lock is still usable.
        self.instances.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many loads have started (for tests and the log).
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// The plan's model, loaded (or loading) with its options; loads it when needed.
    pub async fn acquire(self: &Arc<Self>, plan: &LoadPlan) -> Result<Acquired, ApiError> {
        loop {
            let step = self.step(plan);
            let (instance, fresh) = match step {
                Step::Use(i, evict) => {
                    for old in evict {
                        tokio::spawn(async move { unload(&old).await });
                    }
                    (i, false)
                }
                Step::Load(i, evict) => {
                    self.loads.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(self.clone().load(i.clone(), evict, plan.clone()));
                    (i, true)
                }
            };
            let guard = UseGuard { instance: instance.clone(), idle: self.idle.clone() };
            let mut rx = instance.state.subscribe();
            let state = rx
                .wait_for(|s| !matches!(s, LoadState::Loading))
                .await
                .map(|s| s.clone())
                .unwrap_or_else(|_| LoadState::Failed(ApiError::internal("the load was abandoned")));
            match state {
                LoadState::Ready { model, load_duration } => {
                    if !model.is_healthy() {
                        // Its engine lost it (a sidecar restarted): forget it and load again.
                        tracing::warn!(model = %plan.key, "the loaded model is no longer healthy; loading it again");
                        self.forget(&instance);
                        drop(guard);
                        continue;
                    }
                    return Ok(Acquired {
                        name: instance.key.clone(),
                        model,
                        manifest: instance.manifest.clone(),
                        engine: instance.engine,
                        load_duration: if fresh { load_duration } else { Duration::ZERO },
                        _guard: guard,
                    });
                }
                LoadState::Failed(e) => return Err(e),
                LoadState::Loading => unreachable!("waited until it was not loading"),
            }
        }
    }

    /// Decides, under the lock, what this acquisition does.
    fn step(&self, plan: &LoadPlan) -> Step {
        let mut list = self.lock();
        let mut evict = Vec::new();
        // Forget instances whose load failed, and those their engine lost (a sidecar that
        // restarted): their holders keep them until done, and idle ones are unloaded.
        list.retain(|i| {
            if matches!(&*i.state.borrow(), LoadState::Failed(_)) {
                return false;
            }
            if i.ready().is_some_and(|m| !m.is_healthy()) {
                if !i.busy() {
                    evict.push(i.clone());
                }
                return false;
            }
            true
        });
        // The same model with other options: replaced when idle (one copy per model, as in
        // Ollama), kept serving its streams when busy.
        list.retain(|i| {
            let stale = i.key == plan.key && !i.serves(plan) && !i.busy() && i.ready().is_some();
            if stale {
                tracing::info!(model = %i.key, "unloading the loaded copy: the request asks for other load options");
                evict.push(i.clone());
            }
            !stale
        });
        if let Some(i) = list.iter().find(|i| i.serves(plan)) {
            i.users.fetch_add(1, Ordering::AcqRel);
            i.touch(plan.keep_alive);
            return Step::Use(i.clone(), evict);
        }
        // Room for one more: the least recently used idle models go first.
        while list.len() >= self.max_loaded {
            let lru = list
                .iter()
                .enumerate()
                .filter(|(_, i)| !i.busy() && i.ready().is_some())
                .min_by_key(|(_, i)| i.meta.lock().map(|m| m.last_used).unwrap_or_else(|_| Instant::now()))
                .map(|(n, _)| n);
            let Some(n) = lru else { break };
            let i = list.remove(n);
            tracing::info!(model = %i.key, "unloading the least recently used model to make room");
            evict.push(i);
        }
        let (state, _) = watch::channel(LoadState::Loading);
        let instance = Arc::new(Instance {
            key: plan.key.clone(),
            manifest: plan.manifest.clone(),
            engine: plan.engine.id(),
            options: plan.options.clone(),
            state,
            users: AtomicUsize::new(1),
            meta: Mutex::new(Meta { keep_alive: plan.keep_alive, expires: None, last_used: Instant::now() }),
        });
        list.push(instance.clone());
        Step::Load(instance, evict)
    }

    /// Unloads what must go, checks memory (waiting for busy copies of the same model to
    /// finish when it does not fit), loads, and publishes the result to every waiter.
    async fn load(self: Arc<Self>, instance: Arc<Instance>, evict: Vec<Arc<Instance>>, plan: LoadPlan) {
        for old in evict {
            unload(&old).await;
        }
        let result = async {
            loop {
                let idle = self.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                let Some(est) = plan.engine.estimate_memory(&plan.options).await? else { break };
                match self.memory.check(plan.engine.id(), &est) {
                    Ok(()) => break,
                    Err(e) => {
                        let busy_copy = self.lock().iter().any(|i| i.key == plan.key && i.busy() && !Arc::ptr_eq(i, &instance));
                        if !busy_copy {
                            return Err(e);
                        }
                        tracing::info!(model = %plan.key, "not enough memory beside the busy copy; waiting for it to finish");
                        idle.await;
                        // The busy copy is idle now: unload it, then check again.
                        let stale: Vec<Arc<Instance>> = {
                            let mut list = self.lock();
                            let (gone, keep): (Vec<_>, Vec<_>) = list.drain(..).partition(|i| {
                                i.key == plan.key && !i.busy() && !Arc::ptr_eq(i, &instance) && i.ready().is_some()
                            });
                            *list = keep;
                            gone
                        };
                        for s in stale {
                            unload(&s).await;
                        }
                    }
                }
            }
            let t0 = Instant::now();
            let model = plan.engine.load(plan.options.clone()).await?;
            tracing::info!(model = %plan.key, engine = plan.engine.id(), why = %plan.why, ms = t0.elapsed().as_millis() as u64, "model loaded");
            Ok::<_, ApiError>((model, t0.elapsed()))
        }
        .await;
        match result {
            Ok((model, load_duration)) => {
                instance.state.send_replace(LoadState::Ready { model, load_duration });
            }
            Err(e) => {
                // The caller gets the error (a server logs it with the response).
                tracing::debug!(model = %plan.key, error = %e, "load failed");
                self.forget(&instance);
                instance.state.send_replace(LoadState::Failed(e));
            }
        }
    }

    /// Takes `instance` off the list (its holders keep using it until they are done).
    fn forget(&self, instance: &Arc<Instance>) {
        self.lock().retain(|i| !Arc::ptr_eq(i, instance));
    }

    /// Unloads `key`'s instances: now if idle, else as soon as their streams end. Returns
    /// whether any was loaded.
    pub async fn unload(&self, key: &str) -> bool {
        let (now, later): (Vec<Arc<Instance>>, Vec<Arc<Instance>>) = {
            let mut list = self.lock();
            let mine: Vec<Arc<Instance>> = list.iter().filter(|i| i.key == key).cloned().collect();
            list.retain(|i| i.key != key || i.busy() || i.ready().is_none());
            mine.into_iter().partition(|i| !i.busy() && i.ready().is_some())
        };
        for i in &later {
            if let Ok(mut m) = i.meta.lock() {
                m.keep_alive = KeepAlive::For(Duration::ZERO);
                m.expires = Some(Instant::now());
            }
        }
        let any = !now.is_empty() || !later.is_empty();
        for i in now {
            unload(&i).await;
        }
        any
    }

    pub async fn unload_all(&self) {
        let all: Vec<Arc<Instance>> = self.lock().drain(..).collect();
        for i in all {
            unload(&i).await;
        }
    }

    /// The loaded instances (not those still loading), by name.
    pub fn running(&self) -> Vec<Running> {
        let list = self.lock();
        let mut out: Vec<Running> = list
            .iter()
            .filter_map(|i| {
                let model = i.ready()?;
                let meta = i.meta.lock().ok()?;
                let expires_at = match (i.busy(), meta.expires, meta.keep_alive) {
                    (_, _, KeepAlive::Forever) => None,
                    (false, Some(at), _) => Some(
                        chrono::Utc::now()
                            + chrono::Duration::from_std(at.saturating_duration_since(Instant::now()))
                                .unwrap_or_default(),
                    ),
                    (_, _, KeepAlive::For(d)) => {
                        Some(chrono::Utc::now() + chrono::Duration::from_std(d).unwrap_or_default())
                    }
                };
                Some(Running {
                    name: i.key.clone(),
                    manifest: i.manifest.clone(),
                    context_length: model.info().loaded_context,
                    size: model.info().size_bytes,
                    expires_at,
                    stats: model.stats(),
                    engine: i.engine,
                    busy: i.busy(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Unloads idle models whose keep-alive ran out, every 250 ms.
    pub fn spawn_reaper(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let now = Instant::now();
                let expired: Vec<Arc<Instance>> = {
                    let mut list = self.lock();
                    let (gone, keep): (Vec<_>, Vec<_>) = list.drain(..).partition(|i| {
                        !i.busy()
                            && i.ready().is_some()
                            && i.meta.lock().map(|m| m.expires.is_some_and(|e| e <= now)).unwrap_or(false)
                    });
                    *list = keep;
                    gone
                };
                for i in expired {
                    tracing::info!(model = %i.key, "keep-alive expired; unloading");
                    unload(&i).await;
                }
            }
        })
    }
}

async fn unload(i: &Instance) {
    if let Some(model) = i.ready() {
        if let Err(e) = model.unload().await {
            tracing::warn!(model = %i.key, error = %e, "unload failed");
        }
    }
}
