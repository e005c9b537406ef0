use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use hyperllama_server::{AppState, KeepAlive, Registry, RegistryConfig};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on, `host:port` (like OLLAMA_HOST). Loopback by default.
    #[arg(long, env = "HYPERLLAMA_HOST", default_value = "127.0.0.1:11434")]
    pub host: String,
    /// Port, overriding the one in --host.
    #[arg(long)]
    pub port: Option<u16>,
    /// Where models are stored (default: $HYPERLLAMA_HOME/models, i.e. ~/.hyperllama/models).
    #[arg(long, env = "HYPERLLAMA_MODELS")]
    pub models: Option<PathBuf>,
    /// Default context length for loaded models (a request's num_ctx overrides it).
    #[arg(long, env = "HYPERLLAMA_CTX_SIZE")]
    pub ctx_size: Option<u32>,
    /// CPU threads per model (default: the number of physical cores).
    #[arg(long, env = "HYPERLLAMA_THREADS")]
    pub threads: Option<u32>,
    /// Sequences each model decodes together (continuous batching). Each sequence may use the
    /// whole --ctx-size, so KV memory is ctx-size x parallel. OLLAMA_NUM_PARALLEL is honoured
    /// too. Default 4.
    #[arg(long, env = "HYPERLLAMA_NUM_PARALLEL")]
    pub parallel: Option<u32>,
    /// Requests that may wait for a free sequence, per model; more are refused at once with
    /// 503 (Ollama API) / 429 (OpenAI API) and Retry-After. OLLAMA_MAX_QUEUE is honoured too.
    /// Default 512.
    #[arg(long, env = "HYPERLLAMA_MAX_QUEUE")]
    pub max_queue: Option<u32>,
    /// Tokens per batched decode step: one per generating sequence plus prompt chunks of new
    /// requests (chunked prefill). Default 512.
    #[arg(long, env = "HYPERLLAMA_STEP_TOKENS")]
    pub step_tokens: Option<u32>,
    /// How long a model stays loaded after a request: "5m", "1h", "-1" (forever), "0".
    #[arg(long, env = "HYPERLLAMA_KEEP_ALIVE", default_value = "5m")]
    pub keep_alive: String,
    /// Most models loaded at once; the least recently used idle one is unloaded first.
    #[arg(long, env = "HYPERLLAMA_MAX_LOADED_MODELS", default_value_t = 3)]
    pub max_loaded_models: usize,
    /// Refuse to load a model whose estimated memory exceeds this ("8GiB", "512MB", bytes);
    /// default: the RAM available at load time.
    #[arg(long, env = "HYPERLLAMA_MEMORY_LIMIT", value_parser = parse_bytes)]
    pub memory_limit: Option<u64>,
}

/// "8GiB", "512MB", "1.5G", "1000000" -> bytes.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a size like 8GiB or 512MB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        other => return Err(format!("unknown unit {other:?} in {s:?}")),
    };
    Ok((n * mult) as u64)
}

/// A flag's value, else Ollama's environment variable of the same meaning.
fn ollama_fallback(value: Option<u32>, var: &str) -> anyhow::Result<Option<u32>> {
    if value.is_some() {
        return Ok(value);
    }
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => {
            Ok(Some(v.trim().parse().with_context(|| format!("{var}={v:?} is not a whole number"))?))
        }
        _ => Ok(None),
    }
}

pub fn models_dir(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let home = match std::env::var_os("HYPERLLAMA_HOME") {
        Some(h) => PathBuf::from(h),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set; set HYPERLLAMA_HOME")?).join(".hyperllama")
        }
    };
    Ok(home.join("models"))
}

fn listen_addr(args: &ServeArgs) -> anyhow::Result<SocketAddr> {
    let raw = args.host.trim();
    let raw = raw.split_once("://").map(|(_, h)| h).unwrap_or(raw).trim_end_matches('/');
    let mut addr: SocketAddr = if raw.contains(':') {
        raw.parse().with_context(|| format!("invalid --host {raw:?}: expected host:port, e.g. 127.0.0.1:11434"))?
    } else {
        format!("{raw}:11434").parse().with_context(|| format!("invalid --host {raw:?}"))?
    };
    if let Some(p) = args.port {
        addr.set_port(p);
    }
    Ok(addr)
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let addr = listen_addr(&args)?;
    if args.parallel == Some(0) {
        anyhow::bail!("--parallel must be at least 1");
    }
    let keep_alive = KeepAlive::parse_str(&args.keep_alive)
        .with_context(|| format!("invalid --keep-alive {:?}: use e.g. 5m, 30s, -1 or 0", args.keep_alive))?;
    let dir = models_dir(args.models.clone())?;
    let store =
        hyperllama_store::Store::open(&dir).with_context(|| format!("opening the model store {}", dir.display()))?;
    let engine = crate::engines::default_engine();
    let registry = Arc::new(Registry::new(
        engine,
        store,
        RegistryConfig {
            ctx_size: args.ctx_size,
            threads: args.threads,
            parallel: ollama_fallback(args.parallel, "OLLAMA_NUM_PARALLEL")?
                .unwrap_or(hyperllama_server::DEFAULT_PARALLEL),
            max_queue: ollama_fallback(args.max_queue, "OLLAMA_MAX_QUEUE")?
                .unwrap_or(hyperllama_server::DEFAULT_MAX_QUEUE),
            step_tokens: args.step_tokens,
            keep_alive,
            max_loaded: args.max_loaded_models,
            memory_limit: args.memory_limit,
            hub: hyperllama_store::hub::HubConfig::from_env(),
        },
    ));
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        tracing::warn!(%local, "listening on a non-loopback address without authentication: anyone who can reach it can use it");
    }
    // One line on stdout, so scripts can wait for it and learn the port (with --port 0).
    println!("HyperLlama {} listening on http://{local} (models in {})", env!("CARGO_PKG_VERSION"), dir.display());
    use std::io::Write;
    std::io::stdout().flush()?;
    hyperllama_server::serve(listener, AppState { registry }, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_bytes("8GiB"), Ok(8 << 30));
        assert_eq!(super::parse_bytes("512MB"), Ok(512_000_000));
        assert_eq!(super::parse_bytes("1000"), Ok(1000));
        assert!(super::parse_bytes("lots").is_err());
        assert!(super::parse_bytes("5 parsecs").is_err());
    }
}
