//! Builds engines and picks one per model. The only module that names concrete engine types.
//!
//! - `llamacpp`: llama.cpp in process, the default for GGUF.
//! - `max`: Modular MAX through its supervised Python sidecar (`scripts/setup-max.sh`), for
//!   GGUF llama models (converted to float32 once per model).
//! - `openai`: a remote OpenAI-compatible server (vLLM, llama-server, another HyperLlama), when
//!   a URL is given: the model name is the remote model id.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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

/// The fleet nodes of `serve`: remote servers (`--openai-url`, comma-separated, in order) and
/// servers HyperLlama launches (`--launch CMD`, `--vllm "MODEL ARGS"`); the server serves
/// their models by name.
pub fn fleet_nodes(
    urls: Option<&str>,
    api_key: Option<&str>,
    launch: &[String],
    vllm: &[String],
) -> anyhow::Result<Vec<Arc<dyn Engine>>> {
    let mut nodes: Vec<Arc<dyn Engine>> = urls
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| Arc::new(OpenAiEngine::new(u, api_key.map(str::to_string))) as Arc<dyn Engine>)
        .collect();
    let split = |line: &str| {
        shlex::split(line).filter(|w| !w.is_empty()).with_context(|| format!("cannot split the command line {line:?}"))
    };
    let mut commands = Vec::new();
    for line in launch {
        commands.push((split(line)?, Duration::from_secs(300)));
    }
    for line in vllm {
        let words = split(line)?;
        // vLLM downloads and compiles on its first start: give it time.
        commands.push((OpenAiEngine::vllm_command(&words[0], &words[1..]), Duration::from_secs(1800)));
    }
    for (command, start_timeout) in commands {
        let program = &command[0];
        if which(program).is_none() {
            anyhow::bail!(
                "cannot launch {program:?}: not found{}",
                if program == "vllm" { " (vLLM runs on a CUDA machine: pip install vllm)" } else { "" }
            );
        }
        let engine = OpenAiEngine::launch(command, None, start_timeout).map_err(anyhow::Error::msg)?;
        nodes.push(Arc::new(engine));
    }
    Ok(nodes)
}

/// Whether `path` is a Hugging Face model directory on a machine with a CUDA GPU and vLLM.
fn vllm_serves(path: &Path) -> bool {
    path.is_dir()
        && path.join("config.json").exists()
        && hyperllama_hw::detect().gpus.iter().any(|g| g.vendor.eq_ignore_ascii_case("nvidia"))
        && which("vllm").is_some()
}

/// vLLM's `vllm` command and its version, when it is installed.
pub fn vllm_installed() -> Option<(PathBuf, String)> {
    let path = which("vllm")?;
    let out = std::process::Command::new(&path).arg("--version").output().ok();
    let version = out
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown version".into());
    Some((path, version))
}

/// `program` itself when it is a path that exists, else where `PATH` has it.
fn which(program: &str) -> Option<PathBuf> {
    let p = Path::new(program);
    if p.components().count() > 1 {
        return p.exists().then(|| p.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(program)).find(|p| p.is_file())
}

/// The engine named `id`, or the default for `path`.
pub fn pick(engines: &[Arc<dyn Engine>], id: Option<&str>, path: &Path) -> anyhow::Result<Arc<dyn Engine>> {
    let ids = || engines.iter().map(|e| e.info().id).collect::<Vec<_>>().join(", ");
    match id {
        Some(id) => engines.iter().find(|e| e.info().id.eq_ignore_ascii_case(id)).cloned().with_context(|| {
            if id.eq_ignore_ascii_case("openai") {
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
        let cuda = hyperllama_hw::detect().gpus.iter().any(|g| g.vendor.eq_ignore_ascii_case("nvidia"));
        let vllm = which("vllm");
        let what = format!("{}: a Hugging Face safetensors model", path.display());
        let why = match (cuda, vllm.is_some()) {
            (true, true) => format!(
                "{what} on a CUDA GPU -> vLLM (`generate`/`bench` launch it; `hyperllama serve --vllm {}`)",
                path.display()
            ),
            (true, false) => {
                format!("{what}: vLLM would serve it on this CUDA GPU, but it is not installed (pip install vllm)")
            }
            (false, _) => format!(
                "{what}: vLLM serves it on a CUDA GPU, and this machine has none; run `vllm serve` on a GPU machine \
                 and put it behind `hyperllama serve --openai-url URL`"
            ),
        };
        (None, why)
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
    // A Hugging Face model directory goes to vLLM by itself where vLLM can serve it.
    let engine = engine.or_else(|| vllm_serves(&path).then_some("vllm"));
    if engine.is_some_and(|e| e.eq_ignore_ascii_case("vllm")) {
        // `vllm serve MODEL`, launched for this command and stopped after it.
        let vllm = which("vllm").context(
            "engine vllm: vllm is not installed (on a CUDA machine: pip install vllm), or run it elsewhere and use \
             --engine openai --openai-url URL",
        )?;
        let mut command = OpenAiEngine::vllm_command(&path.to_string_lossy(), &[]);
        command[0] = vllm.to_string_lossy().into_owned();
        let engine: Arc<dyn Engine> =
            Arc::new(OpenAiEngine::launch(command, None, Duration::from_secs(1800)).map_err(anyhow::Error::msg)?);
        let model = engine.load(options).await.with_context(|| format!("loading {} with vllm", path.display()))?;
        return Ok((model, engine));
    }
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
