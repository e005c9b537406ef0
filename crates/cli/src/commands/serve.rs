use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use hyperllama_server::auth::{Auth, KeySpec, KeysFile, Limits};
use hyperllama_server::{AppState, Engines, HttpOptions, KeepAlive, Registry, RegistryConfig};

pub use crate::config::ServeArgs;
use crate::config::Settings;

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

fn listen_addr(args: &Settings) -> anyhow::Result<SocketAddr> {
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

pub async fn run(args: ServeArgs, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let settings = args.resolve(matches)?;
    if args.print_config {
        settings.print();
        return Ok(());
    }
    let addr = listen_addr(&settings)?;
    let keep_alive = KeepAlive::parse_str(&settings.keep_alive)
        .with_context(|| format!("invalid keep_alive {:?}: use e.g. 5m, 30s, -1 or 0", settings.keep_alive))?;
    let auth = api_keys(&settings)?;
    let dir = models_dir(settings.models.clone())?;
    let store =
        hyperllama_store::Store::open(&dir).with_context(|| format!("opening the model store {}", dir.display()))?;
    // Local engines load the store's models; remote nodes serve theirs by name.
    let engines =
        Engines::new(crate::engines::available(&crate::engines::Remote::default())).prefer(settings.engine.clone());
    let remotes = Arc::new(hyperllama_server::Remotes::new(crate::engines::fleet_nodes(
        settings.openai_url.as_deref(),
        settings.openai_api_key.as_deref(),
        &settings.launch,
        &settings.vllm,
    )?));
    if let Some(id) = &settings.engine {
        if engines.get(id).is_none() {
            anyhow::bail!("--engine {id:?} is not available; this server has: {}", engines.ids().join(", "));
        }
    }
    let registry = Arc::new(
        Registry::with_engines(
            engines,
            store,
            RegistryConfig {
                ctx_size: settings.ctx_size,
                threads: settings.threads,
                parallel: settings.parallel,
                max_queue: settings.max_queue,
                step_tokens: settings.step_tokens,
                keep_alive,
                max_loaded: settings.max_loaded_models,
                memory_limit: settings.memory_limit,
                hub: hyperllama_store::hub::HubConfig::from_env(),
            },
        )
        .with_remotes(remotes),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() && !auth.enabled() {
        tracing::warn!(%local, "listening on a non-loopback address without API keys: anyone who can reach it can use it (set --api-key)");
    }
    if auth.enabled() {
        tracing::info!(keys = auth.len(), "API keys required");
    }
    let tls =
        match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => Some(hyperllama_server::tls_config(cert, key).await.with_context(|| {
                format!("cannot use the TLS certificate {} and key {}", cert.display(), key.display())
            })?),
            _ => None,
        };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let state = AppState::new(registry).with_auth(auth).with_http(HttpOptions {
        origins: settings.origins.clone(),
        request_timeout: settings.request_timeout,
        shutdown_grace: settings.shutdown_timeout,
        tls,
    });
    // One line on stdout, so scripts can wait for it and learn the port (with --port 0).
    println!("HyperLlama {} listening on {scheme}://{local} (models in {})", env!("CARGO_PKG_VERSION"), dir.display());
    use std::io::Write;
    std::io::stdout().flush()?;
    hyperllama_server::serve(listener, state, shutdown_signal()).await?;
    Ok(())
}

/// Keys from --api-key / HYPERLLAMA_API_KEYS (named key-1, key-2, ...) and the keys file;
/// keys without their own limits get --rate-limit-rpm / --rate-limit-tpm.
fn api_keys(settings: &Settings) -> anyhow::Result<Auth> {
    let defaults = Limits { requests_per_minute: settings.rate_limit_rpm, tokens_per_minute: settings.rate_limit_tpm };
    let mut specs: Vec<KeySpec> = settings
        .api_keys
        .iter()
        .filter(|k| !k.trim().is_empty())
        .enumerate()
        .map(|(i, k)| KeySpec { name: format!("key-{}", i + 1), key: k.trim().to_string(), limits: defaults })
        .collect();
    if let Some(path) = &settings.api_keys_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read keys file {}", path.display()))?;
        let file: KeysFile = toml::from_str(&text).with_context(|| format!("invalid keys file {}", path.display()))?;
        for mut k in file.keys {
            k.limits.requests_per_minute = k.limits.requests_per_minute.or(defaults.requests_per_minute);
            k.limits.tokens_per_minute = k.limits.tokens_per_minute.or(defaults.tokens_per_minute);
            specs.push(k);
        }
    }
    if specs.is_empty() && (defaults.requests_per_minute.is_some() || defaults.tokens_per_minute.is_some()) {
        anyhow::bail!("rate limits are per API key: set --api-key or --api-keys-file too");
    }
    Ok(Auth::new(specs)?)
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
