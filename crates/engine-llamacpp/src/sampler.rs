use hyperllama_core::{Sampling, SamplingParams};
use hyperllama_engine::EngineError;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;

/// Builds llama.cpp's sampler chain for `params`, in llama.cpp's own order:
/// grammar -> penalties -> top-k -> top-p -> min-p -> temperature -> draw (or greedy).
pub(crate) fn build(
    model: &LlamaModel,
    params: &SamplingParams,
    grammar: Option<&str>,
) -> Result<LlamaSampler, EngineError> {
    let n_vocab = model.n_vocab();
    let mut chain = Vec::new();
    if let Some(g) = grammar {
        chain
            .push(LlamaSampler::grammar(model, g, "root").map_err(|e| EngineError::Internal(format!("grammar: {e}")))?);
    }
    let p = params.penalties;
    if !p.is_off() {
        let last_n = i32::try_from(p.last_n).unwrap_or(i32::MAX);
        chain.push(LlamaSampler::penalties(n_vocab, last_n, p.repeat, p.frequency, p.presence));
    }
    match params.sampling {
        Sampling::Greedy => chain.push(LlamaSampler::greedy()),
        Sampling::Random { temperature, top_k, top_p, min_p } => {
            if let Some(k) = top_k {
                chain.push(LlamaSampler::top_k(i32::try_from(k).unwrap_or(i32::MAX)));
            }
            if let Some(p) = top_p {
                chain.push(LlamaSampler::top_p(p, 1));
            }
            if let Some(p) = min_p {
                chain.push(LlamaSampler::min_p(p, 1));
            }
            chain.push(LlamaSampler::temp(temperature));
            chain.push(LlamaSampler::dist(seed32(params.seed)));
        }
    }
    Ok(LlamaSampler::chain_simple(chain))
}

/// The seed llama.cpp's RNG gets: the request's (folded to 32 bits), else a fresh one.
fn seed32(seed: Option<u64>) -> u32 {
    match seed {
        Some(s) => (s ^ (s >> 32)) as u32,
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
                .unwrap_or(0x5eed);
            // Avoid LLAMA_DEFAULT_SEED (0xFFFFFFFF), which asks llama.cpp for its own.
            nanos & 0x7fff_ffff
        }
    }
}
