//! Facts from a model's GGUF header (family, size, quantization, context, template,
//! metadata), read once per blob on the blocking pool and cached. How a dialect shows them
//! (Ollama's `details`, `model_info`) is the dialect's business.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hyperllama_gguf::GgufFile;
use hyperllama_store::Digest;

use crate::error::{ApiError, ErrorKind};

/// One model file's facts.
#[derive(Debug)]
pub struct ModelFacts {
    pub family: String,
    pub parameter_count: u64,
    pub quantization: String,
    pub context_length: u64,
    pub embedding_length: u64,
    pub chat_template: Option<String>,
    pub file: GgufFile,
}

impl ModelFacts {
    /// "135.0M", "8.0B".
    pub fn parameter_size(&self) -> String {
        hyperllama_gguf::human_params(self.parameter_count)
    }
}

#[derive(Default)]
pub struct FactsCache {
    cache: Mutex<HashMap<Digest, Arc<ModelFacts>>>,
}

impl FactsCache {
    pub async fn get(&self, digest: &Digest, path: PathBuf) -> Result<Arc<ModelFacts>, ApiError> {
        if let Some(f) = self.cache.lock().ok().and_then(|c| c.get(digest).cloned()) {
            return Ok(f);
        }
        let facts = tokio::task::spawn_blocking(move || read(path)).await??;
        let facts = Arc::new(facts);
        if let Ok(mut c) = self.cache.lock() {
            c.insert(digest.clone(), facts.clone());
        }
        Ok(facts)
    }
}

fn read(path: PathBuf) -> Result<ModelFacts, ApiError> {
    let file = GgufFile::open(&path).map_err(|e| ApiError::new(ErrorKind::Internal, "corrupt_model", e.to_string()))?;
    Ok(ModelFacts {
        family: file.architecture().unwrap_or("unknown").to_string(),
        parameter_count: file.parameter_count(),
        quantization: file.quantization(),
        context_length: file.context_length().unwrap_or(0),
        embedding_length: file.embedding_length().unwrap_or(0),
        chat_template: file.chat_template().map(str::to_string),
        file,
    })
}
