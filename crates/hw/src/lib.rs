//! What this machine has: CPU model and cores, SIMD features, memory, GPUs.
//!
//! Engines use it for defaults (threads = physical cores) and `hyperllama info` shows it so a
//! user can see why an engine was picked. GPUs are found without linking any vendor library:
//! NVIDIA through the driver's `/proc/driver/nvidia/gpus` entries (and `nvidia-smi` when on
//! PATH, for memory), Apple Metal on macOS on Apple silicon.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Hardware {
    pub os: String,
    pub arch: String,
    pub cpu: Cpu,
    pub memory: Memory,
    pub gpus: Vec<Gpu>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cpu {
    pub model: String,
    pub physical_cores: usize,
    pub logical_cores: usize,
    /// SIMD features that matter to llama.cpp's kernels, as detected at run time.
    pub features: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Gpu {
    pub vendor: &'static str,
    pub name: String,
    /// Bytes of device memory, when known.
    pub memory_bytes: Option<u64>,
    /// How it was found: "nvidia-smi", "/proc/driver/nvidia", "metal".
    pub source: &'static str,
}

/// Detects everything. Takes a few milliseconds (sysinfo samples the CPU list once).
pub fn detect() -> Hardware {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
    let model = sys.cpus().first().map(|c| c.brand().trim().to_string()).unwrap_or_default();
    let logical = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    Hardware {
        os: format!(
            "{} {}",
            sysinfo::System::name().unwrap_or_default(),
            sysinfo::System::os_version().unwrap_or_default()
        )
        .trim()
        .to_string(),
        arch: std::env::consts::ARCH.to_string(),
        cpu: Cpu { model, physical_cores: physical_cores(), logical_cores: logical, features: simd_features() },
        memory: Memory { total_bytes: sys.total_memory(), available_bytes: sys.available_memory() },
        gpus: gpus(),
    }
}

/// Physical cores (not hyper-threads): llama.cpp runs fastest with one thread per core.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    // Respect a CPU quota/affinity smaller than the machine (containers).
    sysinfo::System::new().physical_core_count().unwrap_or(logical).clamp(1, logical)
}

/// Available memory in bytes (for load-time checks).
pub fn available_memory() -> u64 {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    sys.available_memory()
}

#[allow(unused_mut)]
fn simd_features() -> Vec<&'static str> {
    let mut f = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! check {
            ($($name:tt),*) => { $( if std::arch::is_x86_feature_detected!($name) { f.push($name); } )* };
        }
        check!(
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512vnni",
            "avx512bf16",
            "avxvnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! check {
            ($($name:tt),*) => { $( if std::arch::is_aarch64_feature_detected!($name) { f.push($name); } )* };
        }
        check!("neon", "dotprod", "fp16", "i8mm", "sve", "sve2", "bf16");
    }
    f
}

fn gpus() -> Vec<Gpu> {
    let mut out = nvidia_smi();
    if out.is_empty() {
        out = nvidia_proc();
    }
    if cfg!(all(target_os = "macos", target_arch = "aarch64")) {
        out.push(Gpu {
            vendor: "apple",
            name: "Apple silicon GPU (Metal)".into(),
            memory_bytes: None,
            source: "metal",
        });
    }
    out
}

fn nvidia_smi() -> Vec<Gpu> {
    let Ok(o) = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"])
        .output()
    else {
        return Vec::new();
    };
    if !o.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let (name, mib) = l.rsplit_once(',')?;
            Some(Gpu {
                vendor: "nvidia",
                name: name.trim().to_string(),
                memory_bytes: mib.trim().parse::<u64>().ok().map(|m| m << 20),
                source: "nvidia-smi",
            })
        })
        .collect()
}

fn nvidia_proc() -> Vec<Gpu> {
    let Ok(dir) = std::fs::read_dir("/proc/driver/nvidia/gpus") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let info = std::fs::read_to_string(e.path().join("information")).ok()?;
            let name = info.lines().find_map(|l| l.strip_prefix("Model:"))?.trim().to_string();
            Some(Gpu { vendor: "nvidia", name, memory_bytes: None, source: "/proc/driver/nvidia" })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn detects_cores_and_memory() {
        let hw = super::detect();
        assert!(hw.cpu.physical_cores >= 1);
        assert!(hw.cpu.logical_cores >= hw.cpu.physical_cores);
        assert!(hw.memory.total_bytes > 0);
        assert!(hw.memory.available_bytes <= hw.memory.total_bytes);
        let json = serde_json::to_value(&hw).expect("serializes");
        assert!(json["cpu"]["features"].is_array());
    }
}
