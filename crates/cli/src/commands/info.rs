use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
    /// Also explain which engine would serve this model (a .gguf path).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Include the `openai` engine for this remote server (and check its health).
    #[arg(long, env = "HYPERLLAMA_OPENAI_URL")]
    openai_url: Option<String>,
}

#[derive(Serialize)]
struct Info {
    version: &'static str,
    hardware: hyperllama_hw::Hardware,
    engines: Vec<EngineReport>,
    /// The engine picked for a GGUF model on this machine.
    default_gguf_engine: &'static str,
    /// vLLM, which `serve --vllm` launches: its command and version, when installed.
    vllm: Option<Vllm>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<ModelChoice>,
}

#[derive(Serialize)]
struct EngineReport {
    #[serde(flatten)]
    info: hyperllama_engine::EngineInfo,
    health: hyperllama_engine::Health,
}

#[derive(Serialize)]
struct Vllm {
    path: PathBuf,
    version: String,
}

#[derive(Serialize)]
struct ModelChoice {
    path: PathBuf,
    engine: Option<&'static str>,
    reason: String,
}

pub async fn run(args: InfoArgs) -> anyhow::Result<()> {
    let remote = crate::engines::Remote { url: args.openai_url.clone(), api_key: None };
    let engines: Vec<EngineReport> = crate::engines::health_lines(&crate::engines::available(&remote))
        .await
        .into_iter()
        .map(|(info, health)| EngineReport { info, health })
        .collect();
    let model = args.model.map(|path| {
        let (engine, reason) = crate::engines::choose(&path);
        ModelChoice { path, engine: engine.map(|e| e.id), reason }
    });
    let info = Info {
        version: env!("CARGO_PKG_VERSION"),
        hardware: hyperllama_hw::detect(),
        engines,
        default_gguf_engine: "llamacpp",
        vllm: crate::engines::vllm_installed().map(|(path, version)| Vllm { path, version }),
        model,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    let hw = &info.hardware;
    println!("HyperLlama {}", info.version);
    println!("OS:        {} ({})", hw.os, hw.arch);
    println!("CPU:       {}", if hw.cpu.model.is_empty() { "unknown" } else { &hw.cpu.model });
    println!("Cores:     {} physical, {} logical", hw.cpu.physical_cores, hw.cpu.logical_cores);
    println!(
        "SIMD:      {}",
        if hw.cpu.features.is_empty() { "none detected".into() } else { hw.cpu.features.join(" ") }
    );
    println!("Memory:    {} total, {} available", gib(hw.memory.total_bytes), gib(hw.memory.available_bytes));
    if hw.gpus.is_empty() {
        println!("GPUs:      none found");
    }
    for g in &hw.gpus {
        let mem = g.memory_bytes.map(gib).unwrap_or_else(|| "memory unknown".into());
        println!("GPU:       {} {} ({mem}, via {})", g.vendor, g.name, g.source);
    }
    println!("Engines:");
    for r in &info.engines {
        let e = &r.info;
        let health = match &r.health {
            hyperllama_engine::Health::Ready => "ready".to_string(),
            hyperllama_engine::Health::Loading { detail } => format!("loading ({detail})"),
            hyperllama_engine::Health::Unavailable { reason } => format!("unavailable ({reason})"),
        };
        println!(
            "  {:<10} {}  formats: {}  devices: {}  health: {health}",
            e.id,
            e.version,
            e.formats.join(","),
            e.devices.join(",")
        );
    }
    match &info.vllm {
        Some(v) => println!("  {:<10} {} ({}): launched by `serve --vllm MODEL`", "vllm", v.version, v.path.display()),
        None => {
            println!("  {:<10} not installed (on a CUDA machine: pip install vllm; then `serve --vllm MODEL`)", "vllm")
        }
    }
    println!("GGUF models run on: {}", info.default_gguf_engine);
    if let Some(m) = &info.model {
        println!("{}: {} ({})", m.path.display(), m.engine.unwrap_or("no engine"), m.reason);
    }
    Ok(())
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}
