//! Builds engines and picks one per model. The only module that names concrete engine types.
//!
//! - `llamacpp`: llama.cpp in process, the default for GGUF.
//! - `max`: Modular MAX through its supervised Python sidecar (`scripts/setup-max.sh`), for
//!   GGUF llama models (converted to float32 once per model).
//! - `openai`: a remote OpenAI-compatible server (vLLM, llama-server, another HyperLlama), when
//!   a URL is given: the model name is the remote model id.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use hyperllama_engine::{Engine, EngineInfo, Health, LoadOptions, LoadedModel};
use hyperllama_engine_llamacpp::LlamaCppEngine;
use hyperllama_engine_max::{MaxEngine, SidecarConfig};
use hyperllama_engine_openai::OpenAiEngine;

/// Where a remote OpenAI-compatible server is, for the `openai` engine.
#[derive(Debug, Clone, Default)]
pub struct Remote {
    pub url: Option<String>,
    pub api_key: Option<String>,
}

/// Every engine this binary can use (the `openai` one only with a URL).
pub fn available(remote: &Remote) -> Vec<Arc<dyn Engine>> {
    let mut engines: Vec<Arc<dyn Engine>> =
        vec![Arc::new(LlamaCppEngine::new()), Arc::new(MaxEngine::new(SidecarConfig::from_env()))];
    if let Some(url) = &remote.url {
        engines.push(Arc::new(OpenAiEngine::new(url, remote.api_key.clone())));
    }
    engines
}

/// The engine named `id`, or the default for `path`.
pub fn pick(engines: &[Arc<dyn Engine>], id: Option<&str>, path: &Path) -> anyhow::Result<Arc<dyn Engine>> {
    let ids = || engines.iter().map(|e| e.info().id).collect::<Vec<_>>().join(", ");
    match id {
        Some(id) => engines.iter().find(|e| e.info().id.eq_ignore_ascii_case(id)).cloned().with_context(|| {
            if id.eq_ignore_ascii_case("openai") || id.eq_ignore_ascii_case("vllm") {
                format!("engine {id:?} needs a server: pass --openai-url URL (vLLM: `vllm serve MODEL`, then its URL)")
            } else {
                format!("unknown engine {id:?}; this build has: {}", ids())
            }
        }),
        None => {
            let (info, why) = choose(path);
            let info = info.with_context(|| why.clone())?;
            engines.iter().find(|e| e.info().id == info.id).cloned().with_context(|| format!("no engine {}", info.id))
        }
    }
}

/// The engine that would serve `path` when nobody asks for one, and why.
pub fn choose(path: &Path) -> (Option<EngineInfo>, String) {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    if ext == "gguf" {
        match hyperllama_gguf::GgufFile::open(path) {
            Ok(g) => {
                let arch = g.architecture().unwrap_or("unknown").to_string();
                if hyperllama_engine_llamacpp::supports_architecture(&arch) {
                    let mut why = format!("GGUF ({}, {arch}) -> llama.cpp, the default for GGUF", g.quantization());
                    if arch == "llama" {
                        why.push_str("; MAX also serves it (as float32) with --engine max");
                    }
                    (Some(LlamaCppEngine::new().info()), why)
                } else {
                    (None, format!("GGUF with architecture {arch:?}, which this llama.cpp build does not support"))
                }
            }
            Err(e) => (None, e.to_string()),
        }
    } else if path.is_dir() && path.join("config.json").exists() {
        (
            None,
            format!(
                "{}: a Hugging Face safetensors model; serve it with vLLM (`vllm serve {}` on a CUDA GPU) and point \
                 HyperLlama at it with --engine openai --openai-url URL",
                path.display(),
                path.display()
            ),
        )
    } else {
        (None, format!("{}: only GGUF models are supported by the local engines in this build", path.display()))
    }
}

/// Loads `options.path` with the engine named `engine` (or the default for its format).
/// Returns the engine too: the caller stops it (`Engine::shutdown`) when done.
pub async fn load(
    options: LoadOptions,
    engine: Option<&str>,
    remote: &Remote,
) -> anyhow::Result<(Arc<dyn LoadedModel>, Arc<dyn Engine>)> {
    let path = options.path.clone();
    let engine = pick(&available(remote), engine, &path)?;
    let model =
        engine.load(options).await.with_context(|| format!("loading {} with {}", path.display(), engine.info().id))?;
    Ok((model, engine))
}

/// One line per engine: id, version, health.
pub async fn health_lines(engines: &[Arc<dyn Engine>]) -> Vec<(EngineInfo, Health)> {
    let mut out = Vec::new();
    for e in engines {
        out.push((e.info(), e.health().await));
    }
    out
}
