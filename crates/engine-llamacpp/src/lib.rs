//! llama.cpp, embedded in-process, behind HyperLlama's [`Engine`] trait.
//!
//! llama.cpp is the fastest CPU engine for quantized GGUF models we measured here (see
//! `docs/PERFORMANCE.md`), and the `llama-cpp-2` crate builds it from source with cmake. Its
//! compute is blocking and multi-threaded, so each loaded model gets a dedicated OS thread
//! that owns the llama.cpp context; async callers talk to it over channels and never block
//! the runtime. Dropping a generation stream closes its channel, which the thread checks
//! before every decode step: cancelled work stops within one token.
//!
//! Before llama.cpp sees a file, [`hyperllama_gguf`] checks it, so a missing, non-GGUF,
//! truncated or unsupported-architecture file gets a precise error instead of a null pointer.

mod archs;
pub mod cache;
mod embed;
mod grammar;
mod model;
mod sampler;
pub mod sched;
mod worker;

use std::sync::{Arc, OnceLock};

use hyperllama_engine::{Engine, EngineError, EngineInfo, Health, LoadOptions, LoadedModel, MemoryEstimate};
use llama_cpp_2::llama_backend::LlamaBackend;

pub use model::LlamaCppModel;
#[cfg(feature = "fault-injection")]
pub use worker::FAULT_PANIC;

/// llama.cpp's process-wide backend; it can be initialised only once per process.
fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // llama.cpp logs through tracing (target "llama-cpp-2"): quiet unless RUST_LOG asks.
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Unavailable(format!("llama.cpp backend: {e}")))
}

/// Whether `arch` is one this build of llama.cpp can run.
pub fn supports_architecture(arch: &str) -> bool {
    archs::SUPPORTED_ARCHITECTURES.contains(&arch)
}

/// The embedded llama.cpp engine.
#[derive(Debug, Default, Clone)]
pub struct LlamaCppEngine;

impl LlamaCppEngine {
    pub fn new() -> Self {
        Self
    }

    /// The compute devices this build was compiled for.
    pub fn devices() -> Vec<String> {
        let mut d = vec!["cpu".to_string()];
        if cfg!(feature = "cuda") {
            d.push("cuda".into());
        }
        if cfg!(feature = "metal") {
            d.push("metal".into());
        }
        if cfg!(feature = "vulkan") {
            d.push("vulkan".into());
        }
        d
    }
}

/// The context a load gets when the caller does not ask for one (Ollama's default), capped by
/// what the model was trained with.
pub const DEFAULT_CTX: u32 = 4096;

#[async_trait::async_trait]
impl Engine for LlamaCppEngine {
    fn id(&self) -> &'static str {
        "llamacpp"
    }

    /// Weights as stored (quantized), an f16 KV cache of `ctx x parallel` cells, and the
    /// compute buffers of one micro-batch.
    async fn estimate_memory(&self, options: &LoadOptions) -> Result<Option<MemoryEstimate>, EngineError> {
        let options = options.clone();
        tokio::task::spawn_blocking(move || {
            let gguf = hyperllama_gguf::GgufFile::open(&options.path).map_err(|e| EngineError::Load(e.to_string()))?;
            let trained = u32::try_from(gguf.context_length().unwrap_or(0)).unwrap_or(u32::MAX);
            let ctx = options.ctx_size.unwrap_or(if trained > 0 { DEFAULT_CTX.min(trained) } else { DEFAULT_CTX });
            let parallel = options.parallel.unwrap_or(1).max(1);
            let e = gguf.memory_estimate(u64::from(ctx), u64::from(parallel));
            Ok(Some(MemoryEstimate {
                weights: e.weights,
                kv_cache: e.kv_cache,
                compute: e.compute,
                total: e.total,
                context: u64::from(ctx),
                parallel: u64::from(parallel),
            }))
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))?
    }

    /// Nothing runs beside this process.
    async fn shutdown(&self) {}

    fn info(&self) -> EngineInfo {
        EngineInfo {
            id: "llamacpp",
            version: format!("llama-cpp-2 {}", env!("HYPERLLAMA_LLAMA_CPP_VERSION")),
            formats: vec!["gguf"],
            devices: Self::devices(),
        }
    }

    async fn health(&self) -> Health {
        match backend() {
            Ok(_) => Health::Ready,
            Err(e) => Health::Unavailable { reason: e.to_string() },
        }
    }

    async fn load(&self, options: LoadOptions) -> Result<Arc<dyn LoadedModel>, EngineError> {
        let backend = backend()?;
        let model = tokio::task::spawn_blocking(move || LlamaCppModel::load(backend, options))
            .await
            .map_err(|e| EngineError::Internal(format!("model loader thread failed: {e}")))??;
        Ok(Arc::new(model))
    }
}
