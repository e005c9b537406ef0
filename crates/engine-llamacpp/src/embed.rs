//! Embeddings on a thread and a llama.cpp context of their own (mean pooling), started on the
//! first request: a large `/api/embed` never holds up the lanes that are generating.

use std::sync::{mpsc, Arc};

use hyperllama_engine::{Embeddings, EngineError};
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

/// The most tokens one embedding input may have (the whole input is one micro-batch).
pub(crate) const EMBED_MAX_TOKENS: u32 = 2048;

pub(crate) struct EmbedJob {
    pub inputs: Vec<Vec<LlamaToken>>,
    pub reply: tokio::sync::oneshot::Sender<Result<Embeddings, EngineError>>,
}

/// Starts the embedding thread; it ends when the sender is dropped.
pub(crate) fn spawn(
    backend: &'static LlamaBackend,
    model: Arc<LlamaModel>,
    threads: i32,
    name: &str,
) -> Result<mpsc::Sender<EmbedJob>, EngineError> {
    let (tx, rx) = mpsc::channel::<EmbedJob>();
    std::thread::Builder::new()
        .name(format!("embed-{name}"))
        .spawn(move || {
            let params = LlamaContextParams::default()
                .with_n_ctx(std::num::NonZeroU32::new(EMBED_MAX_TOKENS))
                .with_n_batch(EMBED_MAX_TOKENS)
                .with_n_ubatch(EMBED_MAX_TOKENS)
                .with_n_seq_max(1)
                .with_n_threads(threads)
                .with_n_threads_batch(threads)
                .with_embeddings(true)
                .with_pooling_type(LlamaPoolingType::Mean);
            let mut ctx = match model.new_context(backend, params) {
                Ok(c) => c,
                Err(e) => {
                    for job in rx {
                        let _ = job
                            .reply
                            .send(Err(EngineError::Internal(format!("cannot create the embedding context: {e}"))));
                    }
                    return;
                }
            };
            for job in rx {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| embed(&mut ctx, &job.inputs)))
                    .unwrap_or_else(|_| Err(EngineError::Internal("embedding panicked".into())));
                let _ = job.reply.send(result);
            }
        })
        .map_err(|e| EngineError::Internal(format!("cannot start the embedding thread: {e}")))?;
    Ok(tx)
}

fn embed(
    ctx: &mut llama_cpp_2::context::LlamaContext<'_>,
    inputs: &[Vec<LlamaToken>],
) -> Result<Embeddings, EngineError> {
    let decode_error = |e: &dyn std::fmt::Display| EngineError::Internal(format!("embedding decode failed: {e}"));
    let mut out = Embeddings::default();
    for tokens in inputs {
        ctx.clear_kv_cache();
        let mut batch = LlamaBatch::new(tokens.len(), 1);
        for (i, &t) in tokens.iter().enumerate() {
            batch.add(t, i as i32, &[0], true).map_err(|e| decode_error(&e))?;
        }
        ctx.decode(&mut batch).map_err(|e| decode_error(&e))?;
        let v = ctx.embeddings_seq_ith(0).map_err(|e| EngineError::Internal(format!("no pooled embedding: {e}")))?;
        let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt().max(1e-12);
        out.vectors.push(v.iter().map(|x| (f64::from(*x) / norm) as f32).collect());
        out.prompt_tokens += tokens.len() as u32;
    }
    Ok(out)
}
