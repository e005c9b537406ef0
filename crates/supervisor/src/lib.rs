//! A child process that serves HTTP on a loopback port, supervised: started on first use on a
//! free port, waited for until its health path answers, restarted with exponential backoff when
//! it dies (or when a caller reports it unreachable and it does not answer), and stopped with
//! SIGTERM then SIGKILL. The MAX sidecar and launched OpenAI-compatible servers (vLLM,
//! llama-server) are such processes. A remote server (a URL somebody else runs) goes through
//! the same interface without a process.
//!
//! Every start is a new *generation*: state held by an older generation (loaded models) is gone
//! with the process, so handles remember the generation they were made in.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tokio::sync::{watch, Notify};

/// Replaced by the port in [`ProcessSpec::args`].
pub const PORT: &str = "{port}";

/// How to run the process.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// What it is, for logs and errors ("the MAX sidecar", "vllm serve").
    pub name: String,
    pub program: PathBuf,
    /// Arguments; [`PORT`] in any of them becomes the port.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// A path that answers 2xx once it serves (`/health`, `/v1/models`).
    pub health_path: String,
    /// What to tell the user when `program` does not exist.
    pub missing_hint: String,
    /// How long a start may take before it counts as failed.
    pub start_timeout: Duration,
    /// Its output goes to our log under this target.
    pub log_target: &'static str,
}

/// What the supervisor is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    NotStarted,
    Starting {
        generation: u64,
    },
    Ready {
        url: String,
        generation: u64,
        pid: Option<u32>,
    },
    /// It died; the next start is due after a backoff.
    Restarting {
        generation: u64,
        reason: String,
    },
    /// It cannot be started (no program, or it never became healthy); nothing retries.
    Failed {
        reason: String,
    },
    Stopped,
}

enum Target {
    Launch(ProcessSpec),
    Remote(String),
}

/// The supervised process (or remote server). Cheap to share (`Arc`).
pub struct Supervisor {
    target: Target,
    /// Sent as a bearer token with every request.
    bearer: Option<String>,
    http: reqwest::Client,
    state: watch::Sender<State>,
    started: Mutex<bool>,
    stop: Notify,
    /// Somebody could not reach the process: check on it now rather than at its next death.
    check: Notify,
    restarts: std::sync::atomic::AtomicU64,
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// How long a caller that could not reach the process waits for the supervisor's verdict.
const CHECK_PATIENCE: Duration = Duration::from_secs(20);
/// A process that ran this long before dying restarts without waiting.
const STABLE_UPTIME: Duration = Duration::from_secs(60);

impl Supervisor {
    /// A process to launch on first use.
    pub fn launch(spec: ProcessSpec, bearer: Option<String>) -> Arc<Self> {
        Self::with_target(Target::Launch(spec), bearer)
    }

    /// A server somebody else runs at `url`: never started or stopped, always generation 1.
    pub fn remote(url: &str, bearer: Option<String>) -> Arc<Self> {
        Self::with_target(Target::Remote(url.trim_end_matches('/').to_string()), bearer)
    }

    fn with_target(target: Target, bearer: Option<String>) -> Arc<Self> {
        let (state, _) = watch::channel(State::NotStarted);
        Arc::new(Self {
            target,
            bearer,
            http: reqwest::Client::new(),
            state,
            started: Mutex::new(false),
            stop: Notify::new(),
            check: Notify::new(),
            restarts: 0.into(),
        })
    }

    pub fn is_remote(&self) -> bool {
        matches!(self.target, Target::Remote(_))
    }

    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    /// How many times the process was restarted after dying.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A request to the process, with its bearer token.
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.bearer {
            Some(b) => r.bearer_auth(b),
            None => r,
        }
    }

    /// Starts the process if nobody has, and waits until it serves: its URL and generation.
    pub async fn ready(self: &Arc<Self>) -> Result<(String, u64), String> {
        self.ready_after(0).await
    }

    /// Like [`Supervisor::ready`], for a caller that could not reach generation `stale`:
    /// reports it (see [`Supervisor::suspect`]) and waits for a newer generation. If the
    /// supervisor finds the old one alive and answering after all, that one is returned.
    pub async fn ready_after(self: &Arc<Self>, stale: u64) -> Result<(String, u64), String> {
        {
            let mut started = self.started.lock().map_err(|_| "supervisor state poisoned".to_string())?;
            if !*started {
                *started = true;
                match &self.target {
                    Target::Remote(url) => {
                        self.state.send_replace(State::Ready { url: url.clone(), generation: 1, pid: None });
                    }
                    Target::Launch(_) => {
                        let me = self.clone();
                        tokio::spawn(async move { me.supervise().await });
                    }
                }
            }
        }
        if stale > 0 {
            self.suspect(stale);
        }
        let (name, timeout, patience) = match &self.target {
            // A remote server has no generations to wait for.
            Target::Remote(url) => (url.clone(), Duration::from_secs(1), Duration::ZERO),
            Target::Launch(spec) => (spec.name.clone(), spec.start_timeout * 2, CHECK_PATIENCE),
        };
        let deadline = tokio::time::Instant::now() + patience;
        let mut rx = self.state.subscribe();
        let wait = async {
            loop {
                match rx.borrow_and_update().clone() {
                    State::Ready { url, generation, .. }
                        if generation > stale || tokio::time::Instant::now() >= deadline =>
                    {
                        return Ok((url, generation))
                    }
                    State::Failed { reason } => return Err(reason),
                    State::Stopped => return Err(format!("{name} was stopped")),
                    _ => {}
                }
                let patient = tokio::time::Instant::now() < deadline;
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() {
                        return Err(format!("{name}: its supervisor ended"));
                    },
                    () = tokio::time::sleep_until(deadline), if patient => {}
                }
            }
        };
        // A restart backoff plus a start fits well within twice the start timeout.
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or_else(|_| Err(format!("{name} did not become ready in time")))
    }

    /// A request to generation `generation` could not connect or broke off: have the supervisor
    /// check at once whether the process is gone or hung, instead of trusting it until it is reaped.
    pub fn suspect(&self, generation: u64) {
        if matches!(*self.state.borrow(), State::Ready { generation: g, .. } if g == generation) {
            self.check.notify_one();
        }
    }

    /// Stops the process (SIGTERM, then SIGKILL after a grace period) and keeps it stopped.
    pub async fn shutdown(&self) {
        let was_started = self.started.lock().map(|s| *s).unwrap_or(false);
        if !was_started || self.is_remote() {
            self.state.send_replace(State::Stopped);
            return;
        }
        let mut rx = self.state.subscribe();
        self.stop.notify_one();
        let stopped = async {
            while !matches!(*rx.borrow_and_update(), State::Stopped | State::Failed { .. }) {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(30), stopped).await;
    }

    async fn supervise(self: Arc<Self>) {
        let Target::Launch(spec) = &self.target else { return };
        let mut backoff = FIRST_BACKOFF;
        let mut generation = 0;
        loop {
            generation += 1;
            self.state.send_replace(State::Starting { generation });
            let (mut child, url) = match spawn(spec) {
                Ok(c) => c,
                Err(reason) => {
                    tracing::error!(%reason, "{} cannot start", spec.name);
                    self.state.send_replace(State::Failed { reason });
                    return;
                }
            };
            let pid = child.id();
            if let Err(reason) = self.wait_healthy(spec, &mut child, &url).await {
                let _ = child.kill().await;
                tracing::error!(%reason, "{} did not become healthy", spec.name);
                self.state.send_replace(State::Failed { reason });
                return;
            }
            tracing::info!(%url, generation, pid, "{} ready", spec.name);
            self.state.send_replace(State::Ready { url: url.clone(), generation, pid });
            let up = Instant::now();
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    () = self.stop.notified() => {
                        stop_gracefully(&mut child).await;
                        self.state.send_replace(State::Stopped);
                        return;
                    }
                    () = self.check.notified() => {
                        // A process that just died is reaped within moments; a live one must answer.
                        if let Ok(status) = tokio::time::timeout(Duration::from_secs(1), child.wait()).await {
                            break status;
                        }
                        if !self.answers(spec, &url).await {
                            tracing::warn!(%url, "{} does not answer its health check; killing it", spec.name);
                            let _ = child.start_kill();
                            break child.wait().await;
                        }
                    }
                }
            };
            let reason = match status {
                Ok(s) => format!("{} exited ({s})", spec.name),
                Err(e) => format!("lost {}: {e}", spec.name),
            };
            self.restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if up.elapsed() >= STABLE_UPTIME {
                backoff = FIRST_BACKOFF;
            }
            tracing::warn!(%reason, retry_in_ms = backoff.as_millis() as u64, "restarting {}", spec.name);
            self.state.send_replace(State::Restarting { generation, reason });
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.stop.notified() => {
                    self.state.send_replace(State::Stopped);
                    return;
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Whether the process answers its health check within a few tries.
    async fn answers(&self, spec: &ProcessSpec, url: &str) -> bool {
        for _ in 0..3 {
            let probe = self
                .request(reqwest::Method::GET, &format!("{url}{}", spec.health_path))
                .timeout(Duration::from_secs(5));
            if probe.send().await.is_ok_and(|r| r.status().is_success()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        false
    }

    async fn wait_healthy(&self, spec: &ProcessSpec, child: &mut Child, url: &str) -> Result<(), String> {
        let deadline = Instant::now() + spec.start_timeout;
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("{} exited while starting ({status}); see the log above", spec.name));
            }
            let probe = self.request(reqwest::Method::GET, &format!("{url}{}", spec.health_path));
            if probe.send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{} was not healthy after {:?}", spec.name, spec.start_timeout));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn spawn(spec: &ProcessSpec) -> Result<(Child, String), String> {
    // A bare name is looked up on PATH by the OS; a path must exist.
    if spec.program.components().count() > 1 && !spec.program.exists() {
        return Err(format!("{} does not exist ({})", spec.program.display(), spec.missing_hint));
    }
    let port = free_port().map_err(|e| format!("no free loopback port: {e}"))?.to_string();
    let args = spec.args.iter().map(|a| a.replace(PORT, &port));
    let mut child = Command::new(&spec.program)
        .args(args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {} ({}): {e}", spec.program.display(), spec.missing_hint))?;
    // Its output goes to our log.
    if let Some(out) = child.stdout.take() {
        forward_lines(out, spec.log_target);
    }
    if let Some(err) = child.stderr.take() {
        forward_lines(err, spec.log_target);
    }
    Ok((child, format!("http://127.0.0.1:{port}")))
}

fn forward_lines<R: tokio::io::AsyncRead + Unpin + Send + 'static>(r: R, target: &'static str) {
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "child", child = target, "{line}");
        }
    });
}

/// SIGTERM, then SIGKILL after a grace period (so the process can stop its own children).
async fn stop_gracefully(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we own and a constant signal; no memory is involved.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(25), child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}
