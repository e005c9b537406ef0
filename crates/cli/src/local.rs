//! The in-process commands' (`generate`, `bench`) view of models: the same resolver and
//! service the server uses, over this machine's store, so `generate smol`, `generate
//! hf.co/owner/repo:Q4_K_M` and `generate model.gguf` all work; a Hugging Face repo that is not
//! in the store is pulled first (progress bar, resume, checksum), as `ollama run` does.

use std::sync::Arc;

use anyhow::Context;
use hyperllama_server::registry::Resolved;
use hyperllama_server::{ErrorKind, Registry, RegistryConfig};
use hyperllama_store::hub::{self, HubRef, Progress};

use crate::args::ModelArgs;

/// A registry over the store of `HYPERLLAMA_MODELS` (or `~/.hyperllama/models`) with this
/// binary's engines, where names may also be `.gguf` paths.
pub fn registry(args: &ModelArgs) -> anyhow::Result<Arc<Registry>> {
    let dir = crate::commands::serve::models_dir(None)?;
    let store =
        hyperllama_store::Store::open(&dir).with_context(|| format!("opening the model store {}", dir.display()))?;
    let engines =
        hyperllama_server::Engines::new(crate::engines::available(&args.remote())).prefer(args.engine.clone());
    if let Some(id) = &args.engine {
        if engines.get(id).is_none() {
            anyhow::bail!("unknown engine {id:?}; this build has: {}", engines.ids().join(", "));
        }
    }
    let config = RegistryConfig {
        ctx_size: args.ctx_size,
        threads: args.threads,
        gpu_layers: args.gpu_layers,
        parallel: 1,
        keep_alive: hyperllama_core::KeepAlive::Forever,
        max_loaded: 1,
        ..RegistryConfig::default()
    };
    Ok(Arc::new(Registry::with_engines(engines, store, config).allowing_paths()))
}

/// `name` resolved as the server would; a hub repo missing from the store is pulled first.
pub async fn resolve(registry: &Registry, name: &str) -> anyhow::Result<Resolved> {
    match registry.resolve(name).await {
        Ok(r) => Ok(r),
        Err(e) if e.kind == ErrorKind::NotFound && looks_like_hub(name) => {
            let Some(r) = HubRef::parse(name) else { return Err(anyhow::anyhow!("{e}")) };
            pull(registry, &r).await?;
            registry.resolve(name).await.map_err(|e| anyhow::anyhow!("{e}"))
        }
        Err(e) if e.kind == ErrorKind::NotFound && name.to_ascii_lowercase().ends_with(".gguf") => anyhow::bail!("{e}"),
        Err(e) if e.kind == ErrorKind::NotFound => anyhow::bail!(
            "{name:?} is not a .gguf file, a model in the store ({}), or a Hugging Face repo (owner/repo[:QUANT]): {e}",
            registry.store().root().display()
        ),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

/// A hub reference, not a path that happens to contain a `/`.
fn looks_like_hub(name: &str) -> bool {
    !name.to_ascii_lowercase().ends_with(".gguf")
        && !std::path::Path::new(name).exists()
        && HubRef::parse(name).is_some()
}

/// Pulls `r` into the registry's store with a progress bar on stderr.
async fn pull(registry: &Registry, r: &HubRef) -> anyhow::Result<()> {
    eprintln!("pulling {}", r.store_name()?);
    let mut bar: Option<indicatif::ProgressBar> = None;
    hub::pull(registry.store(), registry.hub_config(), r, |p| match p {
        Progress::Status(s) => {
            if let Some(b) = bar.take() {
                b.finish();
            }
            eprintln!("{s}");
        }
        Progress::Download { total, completed, .. } => {
            let b = bar.get_or_insert_with(|| {
                let b = indicatif::ProgressBar::new(total);
                b.set_style(
                    indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b
            });
            b.set_position(completed);
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("pulling {}: {e}", r.repo))?;
    Ok(())
}
