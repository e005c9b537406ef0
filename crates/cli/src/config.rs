//! `hyperllama serve`'s settings, declared once: [`ServeArgs`] is at the same time the flags
//! (with their `HYPERLLAMA_*` variables, read by clap) and the TOML file's keys (`--config`).
//! Ollama's own variables (`OLLAMA_NUM_PARALLEL`, ...) are a layer of their own, named in one
//! table ([`OLLAMA_ALIASES`]) and parsed by the same parsers. The layers merge declaratively,
//! key by key, with one order: flag > `HYPERLLAMA_*` > `OLLAMA_*` > file > default. Durations,
//! sizes and keep-alives are typed values parsed once, with one grammar
//! ([`hyperllama_core::units`]). `--print-config` shows every resolved value and its source.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, Parser};
use hyperllama_core::KeepAlive;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A duration flag ("90s", "5m", "1h30m", bare seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dur(pub Duration);

impl std::str::FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        hyperllama_core::units::parse_duration(s).map(Dur)
    }
}

impl std::fmt::Display for Dur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hyperllama_core::units::format_duration(self.0))
    }
}

/// A size flag ("8GiB", "512MB", bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bytes(pub u64);

impl std::str::FromStr for Bytes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        hyperllama_core::units::parse_bytes(s).map(Bytes)
    }
}

impl std::fmt::Display for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hyperllama_core::units::human_bytes(self.0))
    }
}

/// Typed values travel between layers as their text (TOML and JSON alike).
macro_rules! as_text {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                match Value::deserialize(d)? {
                    Value::String(s) => s.parse().map_err(serde::de::Error::custom),
                    Value::Number(n) => n.to_string().parse().map_err(serde::de::Error::custom),
                    other => Err(serde::de::Error::custom(format!("expected a string, got {other}"))),
                }
            }
        }
    };
}
as_text!(Dur);
as_text!(Bytes);

/// Every `serve` setting: a flag, a `HYPERLLAMA_*` variable, and a key of the config file.
#[derive(Args, Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeArgs {
    /// A TOML file with any of these settings (keys as the flags, with underscores).
    #[arg(long, env = "HYPERLLAMA_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Print the resolved settings and where each came from, then exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
    /// Address to listen on, `host:port`. Loopback by default: 127.0.0.1:11434. OLLAMA_HOST too.
    #[arg(long, env = "HYPERLLAMA_HOST")]
    pub host: Option<String>,
    /// Port, overriding the one in --host.
    #[arg(long)]
    pub port: Option<u16>,
    /// Where models are stored (default: $HYPERLLAMA_HOME/models, i.e. ~/.hyperllama/models).
    /// OLLAMA_MODELS too.
    #[arg(long, env = "HYPERLLAMA_MODELS")]
    pub models: Option<PathBuf>,
    /// Context per sequence for loaded models (a request's num_ctx overrides it). Default 4096,
    /// capped by what the model was trained with. OLLAMA_CONTEXT_LENGTH too.
    #[arg(long, env = "HYPERLLAMA_CTX_SIZE")]
    pub ctx_size: Option<u32>,
    /// CPU threads per model (default: the number of physical cores).
    #[arg(long, env = "HYPERLLAMA_THREADS")]
    pub threads: Option<u32>,
    /// Layers to offload to the GPU in GPU builds (default: all).
    #[arg(long, env = "HYPERLLAMA_GPU_LAYERS")]
    pub gpu_layers: Option<u32>,
    /// Sequences each model decodes together (continuous batching). Each sequence may use the
    /// whole --ctx-size, so KV memory is ctx-size x parallel. OLLAMA_NUM_PARALLEL too. Default 4.
    #[arg(long, env = "HYPERLLAMA_NUM_PARALLEL")]
    pub parallel: Option<u32>,
    /// Requests that may wait for a free sequence, per model; more are refused at once with
    /// 503 (Ollama API) / 429 (OpenAI API) and Retry-After. OLLAMA_MAX_QUEUE too. Default 512.
    #[arg(long, env = "HYPERLLAMA_MAX_QUEUE")]
    pub max_queue: Option<u32>,
    /// Tokens per batched decode step: one per generating sequence plus prompt chunks of new
    /// requests (chunked prefill). Default: adaptive (a target step time while streams decode).
    #[arg(long, env = "HYPERLLAMA_STEP_TOKENS")]
    pub step_tokens: Option<u32>,
    /// The engine models load with unless the request (`options.engine`) or the model
    /// (Modelfile `PARAMETER engine`) names one: llamacpp, max. Default: llamacpp for GGUF.
    #[arg(long, env = "HYPERLLAMA_ENGINE")]
    pub engine: Option<String>,
    /// Remote OpenAI-compatible servers (vLLM, llama-server, other HyperLlama nodes),
    /// comma-separated: their models are served by name (listed in /api/tags and /v1/models),
    /// the first node serving a name gets its requests; local models win over remote ones.
    #[arg(long, env = "HYPERLLAMA_OPENAI_URL")]
    pub openai_url: Option<String>,
    /// OpenAI-compatible servers HyperLlama launches and supervises as fleet nodes: a command
    /// line each (repeat the flag; `;`-separate in the variable) with `{port}` where the port
    /// goes, e.g. "llama-server -m m.gguf --port {port}". Restarted when they die, stopped at shutdown.
    #[arg(long = "launch", env = "HYPERLLAMA_LAUNCH", value_delimiter = ';')]
    pub launch: Vec<String>,
    /// vLLM nodes to launch (needs `vllm` installed, a CUDA GPU): "MODEL [vllm serve args]",
    /// e.g. "Qwen/Qwen2.5-7B-Instruct --tensor-parallel-size 2". Repeat, or `;`-separate.
    #[arg(long = "vllm", env = "HYPERLLAMA_VLLM", value_delimiter = ';')]
    pub vllm: Vec<String>,
    /// The remote server's API key (never printed).
    #[arg(long, env = "HYPERLLAMA_OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,
    /// How long a model stays loaded after a request: "5m", "1h", "-1" (forever), "0". Default
    /// 5m. OLLAMA_KEEP_ALIVE too.
    #[arg(long, env = "HYPERLLAMA_KEEP_ALIVE", allow_hyphen_values = true)]
    pub keep_alive: Option<KeepAlive>,
    /// Most models loaded at once; the least recently used idle one is unloaded first.
    /// OLLAMA_MAX_LOADED_MODELS too. Default 3.
    #[arg(long, env = "HYPERLLAMA_MAX_LOADED_MODELS")]
    pub max_loaded_models: Option<usize>,
    /// Refuse to load a model whose estimated memory exceeds this ("8GiB", "512MB", bytes);
    /// default: the RAM available at load time.
    #[arg(long, env = "HYPERLLAMA_MEMORY_LIMIT")]
    pub memory_limit: Option<Bytes>,
    /// The host-RAM prompt cache of each model (MiB): conversations' KV state kept beyond the
    /// sequences, restored when they come back. Default: an eighth of the RAM available at
    /// start, at most 8 GiB; 0 turns it off.
    #[arg(long, env = "HYPERLLAMA_CACHE_RAM")]
    pub cache_ram: Option<u64>,
    /// Where the prompt cache spills to disk, so it survives unloads and restarts (default:
    /// $HYPERLLAMA_HOME/cache; "off" for none).
    #[arg(long, env = "HYPERLLAMA_CACHE_DIR")]
    pub cache_dir: Option<String>,
    /// Speculative decoding in the embedded engine: "ngram" (draft from the prompt and the
    /// text so far, verified in one decode; default) or "off".
    #[arg(long, env = "HYPERLLAMA_SPECULATIVE")]
    pub speculative: Option<String>,
    /// Threads for steps that only decode (one token per sequence); prompt steps use
    /// --threads. Default: --threads (docs/PERFORMANCE.md, "Thread split", measures 1).
    #[arg(long, env = "HYPERLLAMA_DECODE_THREADS")]
    pub decode_threads: Option<u32>,
    /// llama.cpp's flash attention: "auto" (llama.cpp decides), "on" or "off". Default: off
    /// on the CPU, where it halves decode speed at long contexts (docs/PERFORMANCE.md), auto
    /// with a GPU.
    #[arg(long, env = "HYPERLLAMA_FLASH_ATTN")]
    pub flash_attn: Option<String>,
    /// API keys (repeat the flag, or comma-separate them in the variable): requests must send
    /// `Authorization: Bearer <key>` or `x-api-key`. Several keys allow rotation.
    #[arg(long = "api-key", env = "HYPERLLAMA_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,
    /// A TOML file of keys with names and per-key limits: [[keys]] name, key,
    /// requests_per_minute, tokens_per_minute.
    #[arg(long, env = "HYPERLLAMA_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Requests per minute per key, for keys without their own limit.
    #[arg(long, env = "HYPERLLAMA_RATE_LIMIT_RPM")]
    pub rate_limit_rpm: Option<u32>,
    /// Tokens (prompt + generated) per minute per key, for keys without their own limit.
    #[arg(long, env = "HYPERLLAMA_RATE_LIMIT_TPM")]
    pub rate_limit_tpm: Option<u32>,
    /// Browser origins allowed by CORS besides this machine's own, comma-separated ("*" for
    /// any). OLLAMA_ORIGINS too. Always allowed: localhost, 127.0.0.1 (any port), app://,
    /// file://, tauri://.
    #[arg(long, env = "HYPERLLAMA_ORIGINS", value_delimiter = ',')]
    pub origins: Vec<String>,
    /// The longest a request may wait for its response to begin ("60s", "5m"); 408 after.
    /// Default: no limit.
    #[arg(long, env = "HYPERLLAMA_REQUEST_TIMEOUT")]
    pub request_timeout: Option<Dur>,
    /// Serve HTTPS: a PEM certificate chain (with --tls-key). Default: plain HTTP.
    #[arg(long, env = "HYPERLLAMA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "HYPERLLAMA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// On SIGINT/SIGTERM, how long in-flight responses may run on before they are cut. Default 10s.
    #[arg(long, env = "HYPERLLAMA_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<Dur>,
    /// Let any client create models from paths on this machine's disk (`/api/create` with an
    /// absolute `from`). Without it only local clients may (loopback, no API keys).
    #[arg(long, env = "HYPERLLAMA_ALLOW_LOCAL_PATHS")]
    pub allow_local_paths: Option<bool>,
    /// Do not serve the web chat and dashboard (`/ui/`); `/` then always answers as Ollama's does.
    #[arg(long, env = "HYPERLLAMA_NO_WEBUI", num_args = 0..=1, default_missing_value = "true")]
    pub no_webui: Option<bool>,
    /// The log format (`--log-format` on the command line; here for the file's sake).
    #[arg(skip)]
    pub log_format: Option<String>,
}

/// Ollama's variables that mean the same as a setting: honoured when HyperLlama's own flag and
/// variable are not set (and shown as their source).
pub const OLLAMA_ALIASES: &[(&str, &str)] = &[
    ("host", "OLLAMA_HOST"),
    ("models", "OLLAMA_MODELS"),
    ("ctx_size", "OLLAMA_CONTEXT_LENGTH"),
    ("parallel", "OLLAMA_NUM_PARALLEL"),
    ("max_queue", "OLLAMA_MAX_QUEUE"),
    ("origins", "OLLAMA_ORIGINS"),
    ("keep_alive", "OLLAMA_KEEP_ALIVE"),
    ("max_loaded_models", "OLLAMA_MAX_LOADED_MODELS"),
];

/// What `--print-config` shows for a setting nobody set.
const DEFAULTS: &[(&str, &str)] = &[
    ("host", "127.0.0.1:11434"),
    ("port", "(from host)"),
    ("models", "$HYPERLLAMA_HOME/models"),
    ("ctx_size", "4096 (capped by the model)"),
    ("threads", "physical cores"),
    ("gpu_layers", "all (GPU builds)"),
    ("parallel", "4"),
    ("max_queue", "512"),
    ("step_tokens", "adaptive"),
    ("engine", "llamacpp for GGUF"),
    ("openai_url", "none (no remote nodes)"),
    ("launch", "none"),
    ("vllm", "none"),
    ("openai_api_key", "none"),
    ("keep_alive", "5m0s"),
    ("max_loaded_models", "3"),
    ("memory_limit", "available RAM"),
    ("cache_ram", "1/8 of available RAM, at most 8 GiB"),
    ("cache_dir", "$HYPERLLAMA_HOME/cache"),
    ("speculative", "ngram"),
    ("decode_threads", "--threads"),
    ("flash_attn", "off on the CPU, auto with a GPU"),
    ("api_keys", "none"),
    ("api_keys_file", "none"),
    ("rate_limit_rpm", "unlimited"),
    ("rate_limit_tpm", "unlimited"),
    ("origins", "localhost, 127.0.0.1, app://, file://, tauri://"),
    ("request_timeout", "none"),
    ("tls_cert", "none"),
    ("tls_key", "none"),
    ("shutdown_timeout", "10s"),
    ("allow_local_paths", "false (local clients only)"),
    ("no_webui", "false (web UI at /ui/)"),
    ("log_format", "text"),
];

/// Settings whose values are never printed.
const SECRETS: &[&str] = &["openai_api_key", "api_keys"];

/// Where a value came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Flag,
    Env(String),
    File,
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag => f.write_str("flag"),
            Source::Env(v) => write!(f, "env {v}"),
            Source::File => f.write_str("config file"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// The resolved settings, typed, with defaults applied.
#[derive(Debug)]
pub struct Settings {
    pub host: String,
    pub port: Option<u16>,
    pub models: Option<PathBuf>,
    pub ctx_size: Option<u32>,
    pub threads: Option<u32>,
    pub gpu_layers: Option<u32>,
    pub parallel: u32,
    pub max_queue: u32,
    pub step_tokens: Option<u32>,
    pub engine: Option<String>,
    pub openai_url: Option<String>,
    pub launch: Vec<String>,
    pub vllm: Vec<String>,
    pub openai_api_key: Option<String>,
    pub keep_alive: KeepAlive,
    pub max_loaded_models: usize,
    pub memory_limit: Option<u64>,
    pub cache_ram: Option<u64>,
    pub cache_dir: Option<String>,
    pub speculative: Option<String>,
    pub decode_threads: Option<u32>,
    pub flash_attn: Option<String>,
    pub api_keys: Vec<String>,
    pub api_keys_file: Option<PathBuf>,
    pub rate_limit_rpm: Option<u32>,
    pub rate_limit_tpm: Option<u32>,
    /// This machine's origins and the configured ones.
    pub origins: Vec<String>,
    pub request_timeout: Option<Duration>,
    pub shutdown_timeout: Duration,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub allow_local_paths: bool,
    pub webui: bool,
    /// (setting, shown value, source), in flag order, for `--print-config`.
    pub report: Vec<(String, String, Source)>,
}

/// A command with only the serve settings, to parse the Ollama layer with the same parsers.
#[derive(Parser)]
#[command(name = "serve")]
struct OnlyServe {
    #[command(flatten)]
    serve: ServeArgs,
}

/// A layer as its keys: values set in it, nothing else (nulls and empty lists dropped).
fn keys_of(args: &ServeArgs) -> anyhow::Result<Map<String, Value>> {
    let Value::Object(map) = serde_json::to_value(args)? else { bail!("settings are not a map") };
    Ok(map.into_iter().filter(|(_, v)| !(v.is_null() || v.as_array().is_some_and(Vec::is_empty))).collect())
}

/// The keys of `args` that `m` says came from `source`.
fn layer(args: &ServeArgs, m: &ArgMatches, source: ValueSource) -> anyhow::Result<Map<String, Value>> {
    Ok(keys_of(args)?.into_iter().filter(|(k, _)| m.value_source(k) == Some(source)).collect())
}

/// A layer's keys, and for each setting found in it, what to report as its source.
type Layer = (Map<String, Value>, Box<dyn Fn(&str) -> Source>);

/// The `OLLAMA_*` variables that are set, parsed as the flags they stand for, and which
/// variable each setting came from.
#[allow(clippy::type_complexity)]
fn ollama_layer() -> anyhow::Result<(Map<String, Value>, Vec<(String, String)>)> {
    let mut argv = vec!["serve".to_string()];
    let mut used = Vec::new();
    for (id, var) in OLLAMA_ALIASES {
        let Ok(value) = std::env::var(var) else { continue };
        let value = value.trim().to_string();
        if value.is_empty() {
            continue;
        }
        argv.push(format!("--{}={value}", id.replace('_', "-")));
        used.push((id.to_string(), var.to_string()));
    }
    if used.is_empty() {
        return Ok((Map::new(), used));
    }
    let m = OnlyServe::command().try_get_matches_from(&argv).map_err(|e| {
        anyhow::anyhow!("{}: {}", used.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(", "), e.render())
    })?;
    let args = <OnlyServe as clap::FromArgMatches>::from_arg_matches(&m)?.serve;
    let keys = layer(&args, &m, ValueSource::CommandLine)?;
    Ok((keys, used))
}

impl ServeArgs {
    /// Merges flags, variables, Ollama's variables, the config file and defaults into one set
    /// of settings.
    pub fn resolve(&self, matches: &ArgMatches) -> anyhow::Result<Settings> {
        let file: ServeArgs = match &self.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?
            }
            None => ServeArgs::default(),
        };
        let (ollama, ollama_vars) = ollama_layer()?;
        let env_name = |id: &str| -> String {
            OnlyServe::command()
                .get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let layers: Vec<Layer> = vec![
            (layer(self, matches, ValueSource::CommandLine)?, Box::new(|_| Source::Flag)),
            (layer(self, matches, ValueSource::EnvVariable)?, Box::new(move |id| Source::Env(env_name(id)))),
            (
                ollama,
                Box::new(move |id| {
                    let var = ollama_vars.iter().find(|(k, _)| k == id).map(|(_, v)| v.clone()).unwrap_or_default();
                    Source::Env(var)
                }),
            ),
            (keys_of(&file)?, Box::new(|_| Source::File)),
        ];
        let mut merged = Map::new();
        let mut report = Vec::new();
        for arg in OnlyServe::command().get_arguments() {
            let id = arg.get_id().as_str();
            if id == "config" || id == "print_config" {
                continue;
            }
            let found = layers.iter().find_map(|(keys, source)| keys.get(id).map(|v| (v.clone(), source(id))));
            let (shown, source) = match found {
                Some((v, source)) => {
                    let shown = show(id, &v);
                    merged.insert(id.to_string(), v);
                    (shown, source)
                }
                None => (
                    DEFAULTS.iter().find(|(k, _)| *k == id).map(|(_, d)| d.to_string()).unwrap_or_default(),
                    Source::Default,
                ),
            };
            report.push((id.to_string(), shown, source));
        }
        if let Some(f) = &file.log_format {
            // Logging is set up before the file is read; it only knows --log-format / the variable.
            tracing::debug!(log_format = %f, "log_format in the config file applies from the next start with it as a flag");
        }
        let m: ServeArgs = serde_json::from_value(Value::Object(merged)).context("merging the settings")?;
        if m.tls_cert.is_some() != m.tls_key.is_some() {
            bail!("tls_cert and tls_key go together: set both or neither");
        }
        let parallel = m.parallel.unwrap_or(hyperllama_server::DEFAULT_PARALLEL);
        if parallel == 0 {
            bail!("parallel must be at least 1");
        }
        // As Ollama: configured origins add to the local defaults.
        let mut origins = hyperllama_server::default_origins();
        origins.extend(m.origins.iter().map(|o| o.trim().to_string()).filter(|o| !o.is_empty()));
        Ok(Settings {
            host: m.host.unwrap_or_else(|| "127.0.0.1:11434".into()),
            port: m.port,
            models: m.models,
            ctx_size: m.ctx_size,
            threads: m.threads,
            gpu_layers: m.gpu_layers,
            parallel,
            max_queue: m.max_queue.unwrap_or(hyperllama_server::DEFAULT_MAX_QUEUE),
            step_tokens: m.step_tokens,
            engine: m.engine.filter(|e| !e.is_empty()),
            openai_url: m.openai_url,
            launch: m.launch,
            vllm: m.vllm,
            openai_api_key: m.openai_api_key,
            keep_alive: m.keep_alive.unwrap_or(KeepAlive::DEFAULT),
            max_loaded_models: m.max_loaded_models.unwrap_or(3),
            memory_limit: m.memory_limit.map(|b| b.0),
            cache_ram: m.cache_ram,
            cache_dir: m.cache_dir,
            speculative: m.speculative,
            decode_threads: m.decode_threads,
            flash_attn: m.flash_attn,
            api_keys: m.api_keys,
            api_keys_file: m.api_keys_file,
            rate_limit_rpm: m.rate_limit_rpm,
            rate_limit_tpm: m.rate_limit_tpm,
            origins,
            request_timeout: m.request_timeout.map(|d| d.0),
            shutdown_timeout: m.shutdown_timeout.map(|d| d.0).unwrap_or(hyperllama_server::SHUTDOWN_GRACE),
            tls_cert: m.tls_cert,
            tls_key: m.tls_key,
            allow_local_paths: m.allow_local_paths.unwrap_or(false),
            webui: !m.no_webui.unwrap_or(false),
            report,
        })
    }
}

/// A value as `--print-config` shows it (secrets never).
fn show(id: &str, v: &Value) -> String {
    if SECRETS.contains(&id) {
        return match v {
            Value::Array(a) => format!("{} key(s)", a.len()),
            _ => "(set, not shown)".into(),
        };
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string()))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

impl Settings {
    /// The table `--print-config` prints (a closed pipe is an error the caller treats as done).
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "{:<20} {:<45} source", "setting", "value")?;
        for (name, value, source) in &self.report {
            writeln!(out, "{name:<20} {value:<45} {source}")?;
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serialises the tests that read or set process environment variables.
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn resolve(args: &[&str]) -> anyhow::Result<Settings> {
        let m = OnlyServe::command().try_get_matches_from(std::iter::once("serve").chain(args.iter().copied()))?;
        let cli = <OnlyServe as clap::FromArgMatches>::from_arg_matches(&m)?;
        cli.serve.resolve(&m)
    }

    fn source(s: &Settings, id: &str) -> Source {
        s.report.iter().find(|e| e.0 == id).map(|e| e.2.clone()).expect("reported")
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hl.toml");
        std::fs::write(
            &path,
            "parallel = 6\nmax_queue = 9\nkeep_alive = \"1h\"\napi_keys = [\"0123456789abcdef0123\"]\nrequest_timeout = \"90s\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let s = resolve(&["--config", p, "--parallel", "2"]).unwrap();
        assert_eq!(s.parallel, 2);
        assert_eq!(source(&s, "parallel"), Source::Flag);
        assert_eq!(s.max_queue, 9);
        assert_eq!(source(&s, "max_queue"), Source::File);
        assert_eq!(s.keep_alive, KeepAlive::For(Duration::from_secs(3600)));
        assert_eq!(s.request_timeout, Some(Duration::from_secs(90)));
        assert_eq!(s.max_loaded_models, 3);
        assert_eq!(source(&s, "max_loaded_models"), Source::Default);
        assert_eq!(s.api_keys.len(), 1);
        // The report never shows a key.
        assert!(s.report.iter().all(|e| !e.1.contains("0123456789abcdef")));
    }

    #[test]
    fn ollama_variables_are_used_and_say_so() {
        let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
        std::env::set_var("OLLAMA_NUM_PARALLEL", "7");
        std::env::set_var("OLLAMA_MAX_QUEUE", "9");
        std::env::set_var("OLLAMA_ORIGINS", "https://x.example,https://y.example");
        std::env::set_var("OLLAMA_KEEP_ALIVE", "-1");
        let s = resolve(&[]);
        let flagged = resolve(&["--parallel", "3"]);
        std::env::set_var("OLLAMA_NUM_PARALLEL", "lots");
        let bad = resolve(&[]);
        for v in ["OLLAMA_NUM_PARALLEL", "OLLAMA_MAX_QUEUE", "OLLAMA_ORIGINS", "OLLAMA_KEEP_ALIVE"] {
            std::env::remove_var(v);
        }
        let s = s.unwrap();
        assert_eq!((s.parallel, s.max_queue), (7, 9));
        assert_eq!(source(&s, "parallel"), Source::Env("OLLAMA_NUM_PARALLEL".into()));
        assert_eq!(source(&s, "max_queue"), Source::Env("OLLAMA_MAX_QUEUE".into()));
        assert!(
            s.origins.contains(&"https://y.example".to_string()) && s.origins.contains(&"http://localhost".to_string())
        );
        assert_eq!(source(&s, "origins"), Source::Env("OLLAMA_ORIGINS".into()));
        assert_eq!(s.keep_alive, KeepAlive::Forever);
        // HyperLlama's own flag wins, and says so.
        let f = flagged.unwrap();
        assert_eq!((f.parallel, source(&f, "parallel")), (3, Source::Flag));
        let e = bad.unwrap_err();
        assert!(format!("{e:#}").contains("OLLAMA_NUM_PARALLEL"), "{e:#}");
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_errors() {
        let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hl.toml");
        std::fs::write(&path, "paralel = 6\n").unwrap();
        let e = resolve(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(format!("{e:#}").contains("paralel"), "{e:#}");
        std::fs::write(&path, "keep_alive = \"soon\"\n").unwrap();
        assert!(resolve(&["--config", path.to_str().unwrap()]).is_err());
        assert!(resolve(&["--request-timeout", "soon"]).is_err());
        assert!(resolve(&["--memory-limit", "lots"]).is_err());
        assert!(resolve(&["--parallel", "0"]).is_err());
    }

    #[test]
    fn printing_to_a_closed_pipe_is_an_error_not_a_panic() {
        let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let s = resolve(&[]).unwrap();
        assert_eq!(s.print(&mut Closed).unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
        let mut buf = Vec::new();
        s.print(&mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("parallel") && text.contains("default"), "{text}");
    }
}
