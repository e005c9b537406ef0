//! Picks and builds engines. The only module that names concrete engine types.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use hyperllama_engine::{Engine, EngineInfo, LoadOptions, LoadedModel};
use hyperllama_engine_llamacpp::LlamaCppEngine;

/// Every engine compiled into this binary.
pub fn available() -> Vec<Arc<dyn Engine>> {
    vec![Arc::new(LlamaCppEngine::new())]
}

/// The engine the server loads GGUF models with.
pub fn default_engine() -> Arc<dyn Engine> {
    Arc::new(LlamaCppEngine::new())
}

/// The engine that would serve `path`, and why.
pub fn choose(path: &Path) -> (Option<EngineInfo>, String) {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    if ext == "gguf" {
        match hyperllama_gguf::GgufFile::open(path) {
            Ok(g) => {
                let arch = g.architecture().unwrap_or("unknown").to_string();
                if hyperllama_engine_llamacpp::supports_architecture(&arch) {
                    let why = format!("GGUF ({}, {arch}) -> llama.cpp, the default for GGUF", g.quantization());
                    (Some(LlamaCppEngine::new().info()), why)
                } else {
                    (None, format!("GGUF with architecture {arch:?}, which this llama.cpp build does not support"))
                }
            }
            Err(e) => (None, e.to_string()),
        }
    } else {
        (None, format!("{}: only GGUF models are supported by the engines in this build", path.display()))
    }
}

/// Loads `path` with the engine chosen for it.
pub async fn load(options: LoadOptions) -> anyhow::Result<Arc<dyn LoadedModel>> {
    let engine = LlamaCppEngine::new();
    let path = options.path.clone();
    engine.load(options).await.with_context(|| format!("loading {}", path.display()))
}
