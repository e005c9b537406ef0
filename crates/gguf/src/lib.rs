//! A strict reader for GGUF headers: metadata key/values and tensor descriptors.
//!
//! llama.cpp's loader answers a bad file with a null pointer and a log line; users deserve
//! better. This crate reads the header itself, checks that every tensor's data lies inside
//! the file, and reports exactly what is wrong (not GGUF, truncated, unsupported version)
//! before any engine touches the file. It also serves `info`/`show` (architecture, context
//! length, chat template, quantization) without loading weights.

mod ggml_type;
mod reader;
mod value;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use ggml_type::GgmlType;
pub use value::Value;

/// Why a file could not be read as GGUF.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("model file not found: {}", path.display())]
    NotFound { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is not a GGUF file (it starts with {magic:?}, a GGUF file starts with \"GGUF\")", path.display())]
    NotGguf { path: PathBuf, magic: String },
    #[error("{} uses GGUF version {version}; versions 2 and 3 are supported", path.display())]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("{} is truncated: {what} needs {needed} bytes but the file has {size} (an interrupted download?)", path.display())]
    Truncated { path: PathBuf, what: String, needed: u64, size: u64 },
    #[error("{} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

impl GgufError {
    pub fn kind(&self) -> &'static str {
        match self {
            GgufError::NotFound { .. } => "not_found",
            GgufError::Io { .. } => "io",
            GgufError::NotGguf { .. } => "not_gguf",
            GgufError::UnsupportedVersion { .. } => "unsupported_version",
            GgufError::Truncated { .. } => "truncated",
            GgufError::Corrupt { .. } => "corrupt",
        }
    }
}

/// One tensor's descriptor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the tensor's data, relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The product of the dimensions (the reader refuses tensors where it overflows).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |n, &d| n.saturating_mul(d))
    }
    /// Bytes of data, when the type's block layout is known.
    pub fn n_bytes(&self) -> Option<u64> {
        self.ggml_type.bytes_for(self.n_elements())
    }
}

/// A GGUF file's header.
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    pub file_size: u64,
}

impl GgufFile {
    /// Reads and checks the header of the file at `path`, including that every tensor's data
    /// fits inside the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        reader::read(path.as_ref())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    /// `general.architecture`, e.g. "llama".
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }
    /// A per-architecture key, e.g. `arch_key("context_length")` -> `llama.context_length`.
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        let arch = self.architecture()?;
        self.get_u64(&format!("{arch}.{suffix}"))
    }
    pub fn context_length(&self) -> Option<u64> {
        self.arch_u64("context_length")
    }
    pub fn embedding_length(&self) -> Option<u64> {
        self.arch_u64("embedding_length")
    }
    pub fn block_count(&self) -> Option<u64> {
        self.arch_u64("block_count")
    }
    pub fn chat_template(&self) -> Option<&str> {
        self.get_str("tokenizer.chat_template")
    }
    pub fn name(&self) -> Option<&str> {
        self.get_str("general.name")
    }
    /// The number of weights, summed over tensors.
    pub fn parameter_count(&self) -> u64 {
        self.tensors.iter().fold(0u64, |n, t| n.saturating_add(t.n_elements()))
    }
    /// The file's quantization: `general.file_type` when present, else the most common
    /// weight type among 2-D tensors.
    pub fn quantization(&self) -> String {
        if let Some(ft) = self.get_u64("general.file_type") {
            if let Some(name) = ggml_type::file_type_name(ft) {
                return name.to_string();
            }
        }
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for t in self.tensors.iter().filter(|t| t.dims.len() >= 2) {
            let n = counts.entry(t.ggml_type.to_string()).or_default();
            *n = n.saturating_add(t.n_elements());
        }
        counts.into_iter().max_by_key(|(_, n)| *n).map(|(k, _)| k).unwrap_or_else(|| "unknown".into())
    }
    /// A token's text from the vocabulary (`tokenizer.ggml.tokens`).
    pub fn token_text(&self, id: u64) -> Option<&str> {
        match self.get("tokenizer.ggml.tokens")? {
            Value::Array(items) => items.get(usize::try_from(id).ok()?)?.as_str(),
            _ => None,
        }
    }
    pub fn bos_token(&self) -> Option<&str> {
        self.token_text(self.get_u64("tokenizer.ggml.bos_token_id")?)
    }
    pub fn eos_token(&self) -> Option<&str> {
        self.token_text(self.get_u64("tokenizer.ggml.eos_token_id")?)
    }
}

/// "134.5M", "7.2B": the way Ollama and the hub write parameter counts.
pub fn human_params(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else {
        format!("{:.1}K", n / 1e3)
    }
}

#[cfg(test)]
mod tests;

/// What loading a model will take, in bytes: the weights, the KV cache for `ctx` tokens in
/// each of `parallel` sequences (f16 keys and values, as llama.cpp allocates by default), and
/// llama.cpp's compute buffers (an estimate: logits and activations for one 512-token micro-batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub kv_cache: u64,
    pub compute: u64,
    pub total: u64,
}

impl GgufFile {
    pub fn memory_estimate(&self, ctx: u64, parallel: u64) -> MemoryEstimate {
        // Header values are untrusted: every sum and product saturates.
        let weights = self.tensors.iter().fold(0u64, |n, t| n.saturating_add(t.n_bytes().unwrap_or(0)));
        let weights = if weights == 0 { self.file_size } else { weights };
        let layers = self.block_count().unwrap_or(0);
        let embd = self.embedding_length().unwrap_or(0);
        let heads = self.arch_u64("attention.head_count").unwrap_or(1).max(1);
        let kv_heads = self.arch_u64("attention.head_count_kv").unwrap_or(heads);
        let head_k = self.arch_u64("attention.key_length").unwrap_or(embd / heads);
        let head_v = self.arch_u64("attention.value_length").unwrap_or(embd / heads);
        let tokens = ctx.saturating_mul(parallel.max(1));
        let kv_cache = tokens
            .saturating_mul(layers)
            .saturating_mul(kv_heads)
            .saturating_mul(head_k.saturating_add(head_v))
            .saturating_mul(2);
        let vocab = match self.get("tokenizer.ggml.tokens") {
            Some(Value::Array(a)) => a.len() as u64,
            _ => 32_000,
        };
        let ubatch = 512u64.min(ctx.max(1));
        let compute = (4 * ubatch)
            .saturating_mul(vocab.saturating_add(embd.saturating_mul(6)))
            .saturating_add((4 * ubatch).saturating_mul(ctx.min(tokens)));
        MemoryEstimate { weights, kv_cache, compute, total: weights.saturating_add(kv_cache).saturating_add(compute) }
    }
}
