//! The MAX sidecar: `python -m hyperllama_max` from its own virtual environment on a loopback
//! port with a fresh shared secret, supervised (health, restarts with backoff, stop) by
//! [`hyperllama_supervisor`]. A remote sidecar (a URL and its secret) is used as is.
//!
//! Every start is a new *generation*. Models loaded in an older generation are gone with the
//! process that held them: their handles report unhealthy and the registry loads them again;
//! a request in flight when the sidecar died ends with an error when its connection breaks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyperllama_supervisor::{ProcessSpec, Supervisor};

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

pub use hyperllama_supervisor::State as SidecarState;

/// The supervised sidecar (see [`hyperllama_supervisor`]). Cheap to share (`Arc`).
pub struct Sidecar {
    config: SidecarConfig,
    inner: Arc<Supervisor>,
}

impl Sidecar {
    pub fn new(config: SidecarConfig) -> Arc<Self> {
        let secret = config.secret.clone().unwrap_or_else(new_secret);
        let inner = match &config.url {
            Some(url) => Supervisor::remote(url, Some(secret)),
            None => Supervisor::launch(
                ProcessSpec {
                    name: "the MAX sidecar".into(),
                    program: config.python.clone(),
                    args: ["-m", "hyperllama_max", "--port", hyperllama_supervisor::PORT].map(String::from).into(),
                    env: [
                        ("HYPERLLAMA_MAX_SECRET", secret.as_str()),
                        ("MAX_SERVE_DISABLE_TELEMETRY", "1"),
                        ("HF_HUB_OFFLINE", "1"),
                        ("PYTHONUNBUFFERED", "1"),
                    ]
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .into(),
                    health_path: "/health".into(),
                    missing_hint: "no MAX environment: run scripts/setup-max.sh, or set HYPERLLAMA_MAX_PYTHON".into(),
                    start_timeout: config.start_timeout,
                    log_target: "max_sidecar",
                },
                Some(secret),
            ),
        };
        Arc::new(Self { config, inner })
    }

    pub fn config(&self) -> &SidecarConfig {
        &self.config
    }

    pub fn state(&self) -> SidecarState {
        self.inner.state()
    }

    /// How many times the sidecar was restarted after dying.
    pub fn restarts(&self) -> u64 {
        self.inner.restarts()
    }

    /// An authenticated request to the sidecar.
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.inner.request(method, url)
    }

    /// Starts the sidecar if nobody has, and waits until it serves: its URL and generation.
    pub async fn ready(&self) -> Result<(String, u64), String> {
        self.inner.ready().await
    }

    /// Waits for a generation newer than `stale`, which a caller could not reach (see
    /// [`Supervisor::ready_after`]).
    pub async fn ready_after(&self, stale: u64) -> Result<(String, u64), String> {
        self.inner.ready_after(stale).await
    }

    /// Has the supervisor check generation `generation` at once.
    pub fn suspect(&self, generation: u64) {
        self.inner.suspect(generation);
    }

    /// Stops the sidecar (and the MAX processes it runs) and keeps it stopped.
    pub async fn shutdown(&self) {
        self.inner.shutdown().await;
    }
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
