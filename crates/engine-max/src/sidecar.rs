//! The MAX sidecar's supervisor: starts `python -m hyperllama_max` from its own virtual
//! environment on a loopback port with a fresh shared secret, waits for its health, restarts it
//! with exponential backoff when it dies, and stops it on shutdown. A remote sidecar (a URL and
//! its secret) is used as is.
//!
//! Every start is a new *generation*. Models loaded in an older generation are gone with the
//! process that held them: their handles report unhealthy and the registry loads them again;
//! a request in flight when the sidecar died ends with an error when its connection breaks.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tokio::sync::{watch, Notify};

/// Where the sidecar comes from.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// The Python of the sidecar's virtual environment (with `hyperllama_max` and MAX installed).
    pub python: PathBuf,
    /// A sidecar somebody else runs: no process is started.
    pub url: Option<String>,
    /// The remote sidecar's secret; a launched sidecar gets a fresh one.
    pub secret: Option<String>,
    /// How long a start may take before it counts as failed.
    pub start_timeout: Duration,
}

impl SidecarConfig {
    /// `HYPERLLAMA_MAX_PYTHON` (default: the environment `scripts/setup-max.sh` makes),
    /// `HYPERLLAMA_MAX_URL` and `HYPERLLAMA_MAX_SECRET` for a remote sidecar.
    pub fn from_env() -> Self {
        let python = std::env::var_os("HYPERLLAMA_MAX_PYTHON").map(PathBuf::from).unwrap_or_else(default_python);
        Self {
            python,
            url: std::env::var("HYPERLLAMA_MAX_URL").ok().filter(|s| !s.is_empty()),
            secret: std::env::var("HYPERLLAMA_MAX_SECRET").ok().filter(|s| !s.is_empty()),
            start_timeout: Duration::from_secs(180),
        }
    }
}

/// `$HYPERLLAMA_MAX_VENV/bin/python`, or `~/.cache/hyperllama/max-venv/bin/python`.
pub fn default_python() -> PathBuf {
    let venv = std::env::var_os("HYPERLLAMA_MAX_VENV").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        home.join(".cache/hyperllama/max-venv")
    });
    venv.join("bin/python")
}

/// What the supervisor is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum SidecarState {
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
    /// It cannot be started (no environment, or it never became healthy); nothing retries.
    Failed {
        reason: String,
    },
    Stopped,
}

/// The supervised sidecar. Cheap to share (`Arc`).
pub struct Sidecar {
    config: SidecarConfig,
    secret: String,
    http: reqwest::Client,
    state: watch::Sender<SidecarState>,
    started: Mutex<bool>,
    stop: Notify,
    /// Somebody could not reach the sidecar: check on it now rather than at its next death.
    check: Notify,
    restarts: std::sync::atomic::AtomicU64,
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// How long a caller that could not reach the sidecar waits for the supervisor's verdict.
const CHECK_PATIENCE: Duration = Duration::from_secs(20);
/// A sidecar that ran this long before dying restarts without waiting.
const STABLE_UPTIME: Duration = Duration::from_secs(60);

impl Sidecar {
    pub fn new(config: SidecarConfig) -> Arc<Self> {
        let secret = config.secret.clone().unwrap_or_else(new_secret);
        let (state, _) = watch::channel(SidecarState::NotStarted);
        Arc::new(Self {
            config,
            secret,
            http: reqwest::Client::new(),
            state,
            started: Mutex::new(false),
            stop: Notify::new(),
            check: Notify::new(),
            restarts: 0.into(),
        })
    }

    pub fn config(&self) -> &SidecarConfig {
        &self.config
    }

    pub fn state(&self) -> SidecarState {
        self.state.borrow().clone()
    }

    /// How many times the sidecar was restarted after dying.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// An authenticated request to the sidecar.
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.http.request(method, url).bearer_auth(&self.secret)
    }

    /// Starts the sidecar if nobody has, and waits until it serves: its URL and generation.
    pub async fn ready(self: &Arc<Self>) -> Result<(String, u64), String> {
        self.ready_after(0).await
    }

    /// Like [`Sidecar::ready`], for a caller that could not reach generation `stale`: reports it
    /// (see [`Sidecar::suspect`]) and waits for a newer generation. If the supervisor finds the
    /// old one alive and answering after all, that one is returned.
    pub async fn ready_after(self: &Arc<Self>, stale: u64) -> Result<(String, u64), String> {
        {
            let mut started = self.started.lock().map_err(|_| "sidecar state poisoned".to_string())?;
            if !*started {
                *started = true;
                if let Some(url) = &self.config.url {
                    let url = url.trim_end_matches('/').to_string();
                    self.state.send_replace(SidecarState::Ready { url, generation: 1, pid: None });
                } else {
                    let me = self.clone();
                    tokio::spawn(async move { me.supervise().await });
                }
            }
        }
        if stale > 0 {
            self.suspect(stale);
        }
        // A remote sidecar has no generations to wait for.
        let patience = if self.config.url.is_some() { Duration::ZERO } else { CHECK_PATIENCE };
        let deadline = tokio::time::Instant::now() + patience;
        let mut rx = self.state.subscribe();
        let wait = async {
            loop {
                match rx.borrow_and_update().clone() {
                    SidecarState::Ready { url, generation, .. }
                        if generation > stale || tokio::time::Instant::now() >= deadline =>
                    {
                        return Ok((url, generation))
                    }
                    SidecarState::Failed { reason } => return Err(reason),
                    SidecarState::Stopped => return Err("the MAX sidecar was stopped".to_string()),
                    _ => {}
                }
                let patient = tokio::time::Instant::now() < deadline;
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() {
                        return Err("the MAX sidecar supervisor ended".to_string());
                    },
                    () = tokio::time::sleep_until(deadline), if patient => {}
                }
            }
        };
        // A restart backoff plus a start fits well within twice the start timeout.
        tokio::time::timeout(self.config.start_timeout * 2, wait)
            .await
            .unwrap_or_else(|_| Err("the MAX sidecar did not become ready in time".to_string()))
    }

    /// A request to generation `generation` could not connect or broke off: have the supervisor
    /// check at once whether the process is gone or hung, instead of trusting it until it is reaped.
    pub fn suspect(&self, generation: u64) {
        if matches!(*self.state.borrow(), SidecarState::Ready { generation: g, .. } if g == generation) {
            self.check.notify_one();
        }
    }

    /// Stops the sidecar (and the MAX processes it runs) and keeps it stopped.
    pub async fn shutdown(&self) {
        let was_started = self.started.lock().map(|s| *s).unwrap_or(false);
        if !was_started || self.config.url.is_some() {
            self.state.send_replace(SidecarState::Stopped);
            return;
        }
        let mut rx = self.state.subscribe();
        self.stop.notify_one();
        let stopped = async {
            while !matches!(*rx.borrow_and_update(), SidecarState::Stopped | SidecarState::Failed { .. }) {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(30), stopped).await;
    }

    async fn supervise(self: Arc<Self>) {
        let mut backoff = FIRST_BACKOFF;
        let mut generation = 0;
        loop {
            generation += 1;
            self.state.send_replace(SidecarState::Starting { generation });
            let (mut child, url) = match self.spawn().await {
                Ok(c) => c,
                Err(reason) => {
                    tracing::error!(%reason, "the MAX sidecar cannot start");
                    self.state.send_replace(SidecarState::Failed { reason });
                    return;
                }
            };
            let pid = child.id();
            match self.wait_healthy(&mut child, &url).await {
                Ok(()) => {}
                Err(reason) => {
                    let _ = child.kill().await;
                    tracing::error!(%reason, "the MAX sidecar did not become healthy");
                    self.state.send_replace(SidecarState::Failed { reason });
                    return;
                }
            }
            tracing::info!(%url, generation, pid, "MAX sidecar ready");
            self.state.send_replace(SidecarState::Ready { url: url.clone(), generation, pid });
            let up = Instant::now();
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    () = self.stop.notified() => {
                        stop_gracefully(&mut child).await;
                        self.state.send_replace(SidecarState::Stopped);
                        return;
                    }
                    () = self.check.notified() => {
                        // A process that just died is reaped within moments; a live one must answer.
                        if let Ok(status) = tokio::time::timeout(Duration::from_secs(1), child.wait()).await {
                            break status;
                        }
                        if !self.answers(&url).await {
                            tracing::warn!(%url, "the MAX sidecar does not answer its health check; killing it");
                            let _ = child.start_kill();
                            break child.wait().await;
                        }
                    }
                }
            };
            let reason = match status {
                Ok(s) => format!("the MAX sidecar exited ({s})"),
                Err(e) => format!("lost the MAX sidecar: {e}"),
            };
            self.restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if up.elapsed() >= STABLE_UPTIME {
                backoff = FIRST_BACKOFF;
            }
            tracing::warn!(%reason, retry_in_ms = backoff.as_millis() as u64, "restarting the MAX sidecar");
            self.state.send_replace(SidecarState::Restarting { generation, reason });
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.stop.notified() => {
                    self.state.send_replace(SidecarState::Stopped);
                    return;
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn spawn(&self) -> Result<(Child, String), String> {
        let python = &self.config.python;
        if !python.exists() {
            return Err(format!(
                "no MAX environment: {} does not exist (run scripts/setup-max.sh, or set HYPERLLAMA_MAX_PYTHON)",
                python.display()
            ));
        }
        let port = free_port().map_err(|e| format!("no free loopback port: {e}"))?;
        let mut child = Command::new(python)
            .args(["-m", "hyperllama_max", "--port", &port.to_string()])
            .env("HYPERLLAMA_MAX_SECRET", &self.secret)
            .env("MAX_SERVE_DISABLE_TELEMETRY", "1")
            .env("HF_HUB_OFFLINE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
        // The sidecar's output (and MAX's, through it) goes to our log.
        if let Some(out) = child.stdout.take() {
            forward_lines(out);
        }
        if let Some(err) = child.stderr.take() {
            forward_lines(err);
        }
        Ok((child, format!("http://127.0.0.1:{port}")))
    }

    /// Whether the sidecar answers its health check within a few tries.
    async fn answers(&self, url: &str) -> bool {
        for _ in 0..3 {
            let probe = self.request(reqwest::Method::GET, &format!("{url}/health")).timeout(Duration::from_secs(5));
            if probe.send().await.is_ok_and(|r| r.status().is_success()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        false
    }

    async fn wait_healthy(&self, child: &mut Child, url: &str) -> Result<(), String> {
        let deadline = Instant::now() + self.config.start_timeout;
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("the MAX sidecar exited while starting ({status}); see the log above"));
            }
            if let Ok(r) = self.request(reqwest::Method::GET, &format!("{url}/health")).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("the MAX sidecar was not healthy after {:?}", self.config.start_timeout));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn forward_lines<R: tokio::io::AsyncRead + Unpin + Send + 'static>(r: R) {
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "max_sidecar", "{line}");
        }
    });
}

/// SIGTERM, then SIGKILL after a grace period (the sidecar stops its `max serve` children first).
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

/// 32 random bytes as hex, from the OS (the sidecar rejects requests without it).
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if filled.is_err() {
        // No /dev/urandom (not Linux/macOS): fall back on the hasher's per-process random keys.
        use std::hash::{BuildHasher, Hasher};
        for chunk in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(Instant::now().elapsed().as_nanos());
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
