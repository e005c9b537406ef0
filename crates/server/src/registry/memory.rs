//! The memory guard: a load whose estimate (from its engine) exceeds what is available is
//! refused with both numbers, instead of letting the OS kill the server.

use hyperllama_core::units::human_bytes;
use hyperllama_engine::MemoryEstimate;

use crate::error::{ApiError, ErrorKind};

#[derive(Debug, Clone, Copy)]
pub struct MemoryGuard {
    /// `--memory-limit`; `None` means the RAM available at load time.
    pub limit: Option<u64>,
}

impl MemoryGuard {
    pub fn available(&self) -> u64 {
        self.limit.unwrap_or_else(hyperllama_hw::available_memory)
    }

    pub fn check(&self, engine: &str, est: &MemoryEstimate) -> Result<(), ApiError> {
        let available = self.available();
        if est.total <= available {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorKind::Unavailable,
            "insufficient_memory",
            format!(
                "model requires {} with {engine} (weights {} + KV cache {} for {} tokens x {} sequences + compute {}) \
                 but only {} is available; lower num_ctx or --parallel, or unload other models",
                human_bytes(est.total),
                human_bytes(est.weights),
                human_bytes(est.kv_cache),
                est.context,
                est.parallel,
                human_bytes(est.compute),
                human_bytes(available)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_names_both_numbers() {
        let guard = MemoryGuard { limit: Some(1 << 30) };
        let est = MemoryEstimate {
            weights: 1 << 30,
            kv_cache: 1 << 29,
            compute: 0,
            total: 3 << 29,
            context: 4096,
            parallel: 4,
        };
        let e = guard.check("max", &est).unwrap_err();
        assert!(e.message.contains("1.50 GiB") && e.message.contains("1.00 GiB") && e.message.contains("max"), "{e}");
        assert!(guard.check("llamacpp", &MemoryEstimate { total: 1 << 20, ..est }).is_ok());
    }
}
