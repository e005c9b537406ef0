//! Option groups shared by subcommands, each flag also readable from the environment.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use hyperllama_core::{Penalties, Sampling, SamplingParams};
use hyperllama_engine::LoadOptions;

/// Where the model is and how to load it.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// The model: a .gguf file, a model in the store (`smol`, `hf.co/owner/repo:Q4_K_M`), or a
    /// Hugging Face repo (`owner/repo[:QUANT]`, pulled into the store first when missing).
    pub model: String,
    /// Context length in tokens (default: 4096, capped by what the model was trained with).
    #[arg(long, env = "HYPERLLAMA_CTX_SIZE")]
    pub ctx_size: Option<u32>,
    /// CPU threads (default: the number of physical cores).
    #[arg(long, env = "HYPERLLAMA_THREADS")]
    pub threads: Option<u32>,
    /// Layers to offload to the GPU in CUDA/Metal builds (default: all).
    #[arg(long, env = "HYPERLLAMA_GPU_LAYERS")]
    pub gpu_layers: Option<u32>,
    /// The engine: llamacpp (default for GGUF), max (Modular MAX through its sidecar; see
    /// scripts/setup-max.sh), openai (a remote server: --openai-url; the model is its model id),
    /// vllm (launches `vllm serve MODEL` for this command; MODEL is a hub id or directory).
    #[arg(long, env = "HYPERLLAMA_ENGINE")]
    pub engine: Option<String>,
    /// The remote OpenAI-compatible server (vLLM, llama-server, ...) for --engine openai.
    #[arg(long, env = "HYPERLLAMA_OPENAI_URL")]
    pub openai_url: Option<String>,
    /// Its API key.
    #[arg(long, env = "HYPERLLAMA_OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,
}

impl ModelArgs {
    pub fn remote(&self) -> crate::engines::Remote {
        crate::engines::Remote { url: self.openai_url.clone(), api_key: self.openai_api_key.clone() }
    }

    pub fn check(&self) -> anyhow::Result<()> {
        if self.ctx_size == Some(0) {
            anyhow::bail!("--ctx-size must be at least 1");
        }
        if self.threads == Some(0) {
            anyhow::bail!("--threads must be at least 1");
        }
        Ok(())
    }

    /// Load options for the weights at `path`.
    pub fn load_options(&self, path: PathBuf) -> anyhow::Result<LoadOptions> {
        self.check()?;
        Ok(LoadOptions {
            path,
            ctx_size: self.ctx_size,
            threads: self.threads,
            gpu_layers: self.gpu_layers,
            ..LoadOptions::default()
        })
    }

    /// Whether MODEL names something a remote or launched engine serves (`--engine openai`,
    /// `--engine vllm`, or a Hugging Face model directory), not weights of the store.
    pub fn is_served_elsewhere(&self) -> bool {
        let e = self.engine.as_deref().unwrap_or_default();
        e.eq_ignore_ascii_case("openai") || e.eq_ignore_ascii_case("vllm") || std::path::Path::new(&self.model).is_dir()
    }
}

/// How tokens are sampled. `--temperature 0` is greedy.
#[derive(Args, Debug, Clone, Default)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 picks the most likely token every time (default 0.8).
    #[arg(long, allow_hyphen_values = true)]
    pub temperature: Option<f32>,
    /// Keep only the K most likely tokens (0 = off; default 40).
    #[arg(long, allow_hyphen_values = true)]
    pub top_k: Option<i64>,
    /// Keep the smallest set of tokens whose probabilities add up to P (1 = off; default 0.9).
    #[arg(long, allow_hyphen_values = true)]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than P times the most likely one (0 = off).
    #[arg(long, allow_hyphen_values = true)]
    pub min_p: Option<f32>,
    /// Penalise repeated tokens (1 = off).
    #[arg(long, allow_hyphen_values = true)]
    pub repeat_penalty: Option<f32>,
    /// How many recent tokens the penalties look at (-1 = the whole context; default 64).
    #[arg(long, allow_hyphen_values = true)]
    pub repeat_last_n: Option<i64>,
    /// Penalise tokens that appeared at all (-2..2).
    #[arg(long, allow_hyphen_values = true)]
    pub presence_penalty: Option<f32>,
    /// Penalise tokens by how often they appeared (-2..2).
    #[arg(long, allow_hyphen_values = true)]
    pub frequency_penalty: Option<f32>,
    /// Random seed: the same seed and prompt give the same output.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    /// The knobs a service request carries (defaults applied by the service's policy).
    pub fn knobs(&self) -> hyperllama_server::service::Knobs {
        hyperllama_server::service::Knobs {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            seed: self.seed.and_then(|s| i64::try_from(s).ok()),
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            ..Default::default()
        }
    }

    pub fn params(&self) -> anyhow::Result<SamplingParams> {
        let defaults = SamplingParams::default();
        let (dk, dp) = match defaults.sampling {
            Sampling::Random { top_k, top_p, .. } => (top_k, top_p),
            Sampling::Greedy => (None, None),
        };
        let sampling =
            Sampling::from_knobs(self.temperature, self.top_k.or(dk.map(i64::from)), self.top_p.or(dp), self.min_p)
                .context("invalid sampling option")?;
        let penalties =
            Penalties::new(self.repeat_penalty, self.presence_penalty, self.frequency_penalty, self.repeat_last_n)
                .context("invalid penalty option")?;
        Ok(SamplingParams { sampling, penalties, seed: self.seed })
    }
}
