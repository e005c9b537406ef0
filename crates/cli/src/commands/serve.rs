use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use hyperllama_server::auth::{Auth, KeySpec, KeysFile, Limits};
use hyperllama_server::{AppState, Engines, HttpOptions, Registry, RegistryConfig};

pub use crate::config::ServeArgs;
use crate::config::Settings;

/// `--models`, else `HYPERLLAMA_MODELS`, else `$HYPERLLAMA_HOME/models`.
pub fn models_dir(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit.or_else(|| std::env::var_os("HYPERLLAMA_MODELS").map(PathBuf::from)) {
        return Ok(p);
    }
    Ok(hyperllama_home()?.join("models"))
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
        settings.print(&mut std::io::stdout().lock())?;
        return Ok(());
    }
    let addr = listen_addr(&settings)?;
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
                gpu_layers: settings.gpu_layers,
                parallel: settings.parallel,
                max_queue: settings.max_queue,
                step_tokens: settings.step_tokens,
                keep_alive: settings.keep_alive,
                max_loaded: settings.max_loaded_models,
                memory_limit: settings.memory_limit,
                hub: hyperllama_store::hub::HubConfig::from_env(),
                engine_options: engine_options(&settings)?,
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
        allow_local_paths: settings.allow_local_paths,
        webui: settings.webui,
    });
    // Stored Responses-API responses survive a restart.
    let responses_dir = hyperllama_home()?.join("responses");
    let state = match hyperllama_server::response_store::ResponseStore::with_dir(&responses_dir, 1024, 10_000) {
        Ok(store) => state.with_responses(store),
        Err(e) => {
            tracing::warn!(dir = %responses_dir.display(), error = %e, "stored responses are kept in memory only");
            state
        }
    };
    // One line on stdout, so scripts can wait for it and learn the port (with --port 0).
    {
        use std::io::Write;
        // The web UI's address goes on the same line: a script that reads one line and closes
        // the pipe must not make a second write fail.
        let ui = if settings.webui {
            let shown =
                if local.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], local.port())) } else { local };
            format!("; web chat and dashboard at {scheme}://{shown}/ui/")
        } else {
            String::new()
        };
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "HyperLlama {} listening on {scheme}://{local} (models in {}{ui})",
            env!("CARGO_PKG_VERSION"),
            dir.display()
        )?;
        out.flush()?;
    }
    hyperllama_server::serve(listener, state, shutdown_signal()).await?;
    Ok(())
}

/// The llama.cpp engine's prompt cache and speculation settings, as engine options.
fn engine_options(settings: &Settings) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if let Some(mib) = settings.cache_ram {
        out.push(("cache_ram_mib".into(), mib.to_string()));
    }
    match settings.cache_dir.as_deref() {
        Some("off") | Some("") => out.push(("cache_dir".into(), String::new())),
        Some(dir) => out.push(("cache_dir".into(), dir.to_string())),
        None => out.push(("cache_dir".into(), hyperllama_home()?.join("cache").display().to_string())),
    }
    if let Some(s) = &settings.speculative {
        if !matches!(s.as_str(), "off" | "ngram") {
            anyhow::bail!("--speculative {s:?}: use ngram or off");
        }
        out.push(("speculative".into(), s.clone()));
    }
    if let Some(n) = settings.decode_threads {
        if n == 0 {
            anyhow::bail!("--decode-threads must be at least 1");
        }
        out.push(("decode_threads".into(), n.to_string()));
    }
    if let Some(f) = &settings.flash_attn {
        if !matches!(f.as_str(), "auto" | "on" | "off") {
            anyhow::bail!("--flash-attn {f:?}: use auto, on or off");
        }
        out.push(("flash_attn".into(), f.clone()));
    }
    Ok(out)
}

/// `HYPERLLAMA_HOME`, else `~/.hyperllama`.
pub fn hyperllama_home() -> anyhow::Result<PathBuf> {
    Ok(match std::env::var_os("HYPERLLAMA_HOME") {
        Some(h) => PathBuf::from(h),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set; set HYPERLLAMA_HOME")?).join(".hyperllama")
        }
    })
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
