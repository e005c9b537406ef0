//! `hyperllama serve`'s settings: one set, reachable three ways. Each setting has a flag, a
//! `HYPERLLAMA_*` environment variable (clap reads both) and a key in an optional TOML file
//! (`--config`); the flag wins over the variable, the variable over the file, the file over
//! the default. `--print-config` shows every resolved value and where it came from.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use serde::Deserialize;

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// A TOML file with any of these settings (keys as the flags, with underscores).
    #[arg(long, env = "HYPERLLAMA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the resolved settings and where each came from, then exit.
    #[arg(long)]
    pub print_config: bool,
    /// Address to listen on, `host:port` (like OLLAMA_HOST). Loopback by default: 127.0.0.1:11434.
    #[arg(long, env = "HYPERLLAMA_HOST")]
    pub host: Option<String>,
    /// Port, overriding the one in --host.
    #[arg(long)]
    pub port: Option<u16>,
    /// Where models are stored (default: $HYPERLLAMA_HOME/models, i.e. ~/.hyperllama/models).
    #[arg(long, env = "HYPERLLAMA_MODELS")]
    pub models: Option<PathBuf>,
    /// Context per sequence for loaded models (a request's num_ctx overrides it). Default 4096,
    /// capped by what the model was trained with.
    #[arg(long, env = "HYPERLLAMA_CTX_SIZE")]
    pub ctx_size: Option<u32>,
    /// CPU threads per model (default: the number of physical cores).
    #[arg(long, env = "HYPERLLAMA_THREADS")]
    pub threads: Option<u32>,
    /// Sequences each model decodes together (continuous batching). Each sequence may use the
    /// whole --ctx-size, so KV memory is ctx-size x parallel. OLLAMA_NUM_PARALLEL is honoured
    /// too. Default 4.
    #[arg(long, env = "HYPERLLAMA_NUM_PARALLEL")]
    pub parallel: Option<u32>,
    /// Requests that may wait for a free sequence, per model; more are refused at once with
    /// 503 (Ollama API) / 429 (OpenAI API) and Retry-After. OLLAMA_MAX_QUEUE is honoured too.
    /// Default 512.
    #[arg(long, env = "HYPERLLAMA_MAX_QUEUE")]
    pub max_queue: Option<u32>,
    /// Tokens per batched decode step: one per generating sequence plus prompt chunks of new
    /// requests (chunked prefill). Default 512.
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
    /// How long a model stays loaded after a request: "5m", "1h", "-1" (forever), "0". Default 5m.
    #[arg(long, env = "HYPERLLAMA_KEEP_ALIVE", allow_hyphen_values = true)]
    pub keep_alive: Option<String>,
    /// Most models loaded at once; the least recently used idle one is unloaded first. Default 3.
    #[arg(long, env = "HYPERLLAMA_MAX_LOADED_MODELS")]
    pub max_loaded_models: Option<usize>,
    /// Refuse to load a model whose estimated memory exceeds this ("8GiB", "512MB", bytes);
    /// default: the RAM available at load time.
    #[arg(long, env = "HYPERLLAMA_MEMORY_LIMIT")]
    pub memory_limit: Option<String>,
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
    /// Browser origins allowed by CORS, comma-separated ("*" for any). OLLAMA_ORIGINS is
    /// honoured too. Default: localhost, 127.0.0.1 (any port), app://, file://, tauri://.
    #[arg(long, env = "HYPERLLAMA_ORIGINS", value_delimiter = ',')]
    pub origins: Vec<String>,
    /// The longest a request may wait for its response to begin ("60s", "5m"); 408 after.
    /// Default: no limit.
    #[arg(long, env = "HYPERLLAMA_REQUEST_TIMEOUT")]
    pub request_timeout: Option<String>,
    /// Serve HTTPS: a PEM certificate chain (with --tls-key). Default: plain HTTP.
    #[arg(long, env = "HYPERLLAMA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "HYPERLLAMA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// On SIGINT/SIGTERM, how long in-flight responses may run on before they are cut. Default 10s.
    #[arg(long, env = "HYPERLLAMA_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<String>,
}

/// The TOML file: the same settings, every one optional; unknown keys are an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    host: Option<String>,
    port: Option<u16>,
    models: Option<PathBuf>,
    ctx_size: Option<u32>,
    threads: Option<u32>,
    parallel: Option<u32>,
    max_queue: Option<u32>,
    step_tokens: Option<u32>,
    engine: Option<String>,
    openai_url: Option<String>,
    launch: Option<Vec<String>>,
    vllm: Option<Vec<String>>,
    openai_api_key: Option<String>,
    keep_alive: Option<String>,
    max_loaded_models: Option<usize>,
    memory_limit: Option<String>,
    api_keys: Option<Vec<String>>,
    api_keys_file: Option<PathBuf>,
    rate_limit_rpm: Option<u32>,
    rate_limit_tpm: Option<u32>,
    origins: Option<Vec<String>>,
    request_timeout: Option<String>,
    shutdown_timeout: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    log_format: Option<String>,
}

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

/// The resolved settings.
#[derive(Debug)]
pub struct Settings {
    pub host: String,
    pub port: Option<u16>,
    pub models: Option<PathBuf>,
    pub ctx_size: Option<u32>,
    pub threads: Option<u32>,
    pub parallel: u32,
    pub max_queue: u32,
    pub step_tokens: Option<u32>,
    pub engine: Option<String>,
    pub openai_url: Option<String>,
    pub launch: Vec<String>,
    pub vllm: Vec<String>,
    pub openai_api_key: Option<String>,
    pub keep_alive: String,
    pub max_loaded_models: usize,
    pub memory_limit: Option<u64>,
    pub api_keys: Vec<String>,
    pub api_keys_file: Option<PathBuf>,
    pub rate_limit_rpm: Option<u32>,
    pub rate_limit_tpm: Option<u32>,
    pub origins: Vec<String>,
    pub request_timeout: Option<Duration>,
    pub shutdown_timeout: Duration,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// (setting, shown value, source), in order, for `--print-config`.
    pub report: Vec<(&'static str, String, Source)>,
}

/// Where clap found `id`: on the command line, in its environment variable, or nowhere.
fn arg_source(m: &ArgMatches, id: &str, env: Option<&str>) -> Option<Source> {
    match m.value_source(id) {
        Some(ValueSource::CommandLine) => Some(Source::Flag),
        Some(ValueSource::EnvVariable) => Some(Source::Env(env.unwrap_or("?").to_string())),
        _ => None,
    }
}

struct Resolver<'a> {
    matches: &'a ArgMatches,
    report: Vec<(&'static str, String, Source)>,
}

impl Resolver<'_> {
    /// The flag/env value, else the file's, else `None`, recording the source.
    fn pick<T: Clone>(
        &mut self,
        id: &'static str,
        env: Option<&str>,
        arg: Option<T>,
        file: Option<T>,
        show: impl Fn(&Option<T>) -> String,
    ) -> Option<T> {
        let (v, src) = match (arg_source(self.matches, id, env), arg, file) {
            (Some(src), Some(a), _) => (Some(a), src),
            (_, _, Some(f)) => (Some(f), Source::File),
            _ => (None, Source::Default),
        };
        self.report.push((id, show(&v), src));
        v
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>, default: &str) -> String {
    v.as_ref().map(|x| x.to_string()).unwrap_or_else(|| default.to_string())
}

/// "90s", "5m", "1h", "250ms", or plain seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().with_context(|| format!("{s:?} is not a duration like 30s, 5m or 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => bail!("unknown unit {other:?} in {s:?}: use ms, s, m or h"),
    };
    if !secs.is_finite() || secs < 0.0 {
        bail!("{s:?} is not a duration");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// "8GiB", "512MB", "1.5G", "1000000" -> bytes.
pub fn parse_bytes(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().with_context(|| format!("{s:?} is not a size like 8GiB or 512MB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        other => bail!("unknown unit {other:?} in {s:?}"),
    };
    Ok((n * mult) as u64)
}

/// An Ollama variable of the same meaning, when HyperLlama's own is not set.
fn ollama_env<T: std::str::FromStr>(var: &str) -> anyhow::Result<Option<T>> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => match v.trim().parse() {
            Ok(x) => Ok(Some(x)),
            Err(_) => bail!("{var}={v:?} is not a valid value"),
        },
        _ => Ok(None),
    }
}

impl ServeArgs {
    /// Resolves flags, variables, the config file and defaults into one set of settings.
    pub fn resolve(&self, matches: &ArgMatches) -> anyhow::Result<Settings> {
        let file: FileConfig = match &self.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        if let Some(f) = &file.log_format {
            // Logging is set up before the file is read; it only knows --log-format / the variable.
            tracing::debug!(log_format = %f, "log_format in the config file applies from the next start with it as a flag");
        }
        let mut r = Resolver { matches, report: Vec::new() };
        let host = r
            .pick("host", Some("HYPERLLAMA_HOST"), self.host.clone(), file.host, |v| opt(v, "127.0.0.1:11434"))
            .unwrap_or_else(|| "127.0.0.1:11434".into());
        let port = r.pick("port", None, self.port, file.port, |v| opt(v, "(from host)"));
        let models = r.pick("models", Some("HYPERLLAMA_MODELS"), self.models.clone(), file.models, |v| {
            v.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "$HYPERLLAMA_HOME/models".into())
        });
        let ctx_size = r.pick("ctx_size", Some("HYPERLLAMA_CTX_SIZE"), self.ctx_size, file.ctx_size, |v| {
            opt(v, "4096 (capped by the model)")
        });
        let threads =
            r.pick("threads", Some("HYPERLLAMA_THREADS"), self.threads, file.threads, |v| opt(v, "physical cores"));
        let parallel_arg = self.parallel.or(ollama_env("OLLAMA_NUM_PARALLEL")?);
        let parallel = r
            .pick("parallel", Some("HYPERLLAMA_NUM_PARALLEL"), parallel_arg, file.parallel, |v| {
                opt(v, &hyperllama_server::DEFAULT_PARALLEL.to_string())
            })
            .unwrap_or(hyperllama_server::DEFAULT_PARALLEL);
        fix_ollama_source(&mut r.report, "parallel", self.parallel, "OLLAMA_NUM_PARALLEL");
        let max_queue_arg = self.max_queue.or(ollama_env("OLLAMA_MAX_QUEUE")?);
        let max_queue = r
            .pick("max_queue", Some("HYPERLLAMA_MAX_QUEUE"), max_queue_arg, file.max_queue, |v| {
                opt(v, &hyperllama_server::DEFAULT_MAX_QUEUE.to_string())
            })
            .unwrap_or(hyperllama_server::DEFAULT_MAX_QUEUE);
        fix_ollama_source(&mut r.report, "max_queue", self.max_queue, "OLLAMA_MAX_QUEUE");
        let step_tokens =
            r.pick("step_tokens", Some("HYPERLLAMA_STEP_TOKENS"), self.step_tokens, file.step_tokens, |v| {
                opt(v, "512")
            });
        let engine = r.pick("engine", Some("HYPERLLAMA_ENGINE"), self.engine.clone(), file.engine, |v| {
            opt(v, "llamacpp for GGUF")
        });
        let openai_url =
            r.pick("openai_url", Some("HYPERLLAMA_OPENAI_URL"), self.openai_url.clone(), file.openai_url, |v| {
                opt(v, "none (no remote nodes)")
            });
        let commands = |v: &Option<Vec<String>>| match v {
            Some(c) if !c.is_empty() => c.join("; "),
            _ => "none".into(),
        };
        let launch = r
            .pick("launch", Some("HYPERLLAMA_LAUNCH"), Some(self.launch.clone()), file.launch, commands)
            .unwrap_or_default();
        let vllm =
            r.pick("vllm", Some("HYPERLLAMA_VLLM"), Some(self.vllm.clone()), file.vllm, commands).unwrap_or_default();
        let openai_api_key = r.pick(
            "openai_api_key",
            Some("HYPERLLAMA_OPENAI_API_KEY"),
            self.openai_api_key.clone(),
            file.openai_api_key,
            |v| if v.is_some() { "(set, not shown)".into() } else { "none".into() },
        );
        let keep_alive = r
            .pick("keep_alive", Some("HYPERLLAMA_KEEP_ALIVE"), self.keep_alive.clone(), file.keep_alive, |v| {
                opt(v, "5m")
            })
            .unwrap_or_else(|| "5m".into());
        let max_loaded_models = r
            .pick(
                "max_loaded_models",
                Some("HYPERLLAMA_MAX_LOADED_MODELS"),
                self.max_loaded_models,
                file.max_loaded_models,
                |v| opt(v, "3"),
            )
            .unwrap_or(3);
        let memory_limit = r
            .pick("memory_limit", Some("HYPERLLAMA_MEMORY_LIMIT"), self.memory_limit.clone(), file.memory_limit, |v| {
                opt(v, "available RAM")
            })
            .map(|s| parse_bytes(&s))
            .transpose()
            .context("invalid memory_limit")?;
        let api_keys = r
            .pick(
                "api_keys",
                Some("HYPERLLAMA_API_KEYS"),
                (!self.api_keys.is_empty()).then(|| self.api_keys.clone()),
                file.api_keys,
                // Never the keys themselves.
                |v| v.as_ref().map(|k| format!("{} key(s)", k.len())).unwrap_or_else(|| "none".into()),
            )
            .unwrap_or_default();
        let api_keys_file = r.pick(
            "api_keys_file",
            Some("HYPERLLAMA_API_KEYS_FILE"),
            self.api_keys_file.clone(),
            file.api_keys_file,
            |v| v.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into()),
        );
        let rate_limit_rpm = r.pick(
            "rate_limit_rpm",
            Some("HYPERLLAMA_RATE_LIMIT_RPM"),
            self.rate_limit_rpm,
            file.rate_limit_rpm,
            |v| opt(v, "unlimited"),
        );
        let rate_limit_tpm = r.pick(
            "rate_limit_tpm",
            Some("HYPERLLAMA_RATE_LIMIT_TPM"),
            self.rate_limit_tpm,
            file.rate_limit_tpm,
            |v| opt(v, "unlimited"),
        );
        let origins_arg = if self.origins.is_empty() {
            std::env::var("OLLAMA_ORIGINS")
                .ok()
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.split(',').map(|o| o.trim().to_string()).collect::<Vec<_>>())
        } else {
            Some(self.origins.clone())
        };
        let origins = r
            .pick("origins", Some("HYPERLLAMA_ORIGINS"), origins_arg, file.origins, |v| {
                v.as_ref()
                    .map(|o| o.join(","))
                    .unwrap_or_else(|| "localhost, 127.0.0.1, app://, file://, tauri://".into())
            })
            .map(|mut extra| {
                // As Ollama: configured origins add to the local defaults.
                let mut all = hyperllama_server::default_origins();
                all.append(&mut extra);
                all
            })
            .unwrap_or_else(hyperllama_server::default_origins);
        fix_ollama_source(&mut r.report, "origins", (!self.origins.is_empty()).then_some(()), "OLLAMA_ORIGINS");
        let request_timeout = r
            .pick(
                "request_timeout",
                Some("HYPERLLAMA_REQUEST_TIMEOUT"),
                self.request_timeout.clone(),
                file.request_timeout,
                |v| opt(v, "none"),
            )
            .map(|s| parse_duration(&s))
            .transpose()
            .context("invalid request_timeout")?;
        let shutdown_timeout = r
            .pick(
                "shutdown_timeout",
                Some("HYPERLLAMA_SHUTDOWN_TIMEOUT"),
                self.shutdown_timeout.clone(),
                file.shutdown_timeout,
                |v| opt(v, "10s"),
            )
            .map(|s| parse_duration(&s))
            .transpose()
            .context("invalid shutdown_timeout")?
            .unwrap_or(hyperllama_server::SHUTDOWN_GRACE);
        let show_path =
            |v: &Option<PathBuf>| v.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into());
        let tls_cert = r.pick("tls_cert", Some("HYPERLLAMA_TLS_CERT"), self.tls_cert.clone(), file.tls_cert, show_path);
        let tls_key = r.pick("tls_key", Some("HYPERLLAMA_TLS_KEY"), self.tls_key.clone(), file.tls_key, show_path);
        if tls_cert.is_some() != tls_key.is_some() {
            bail!("tls_cert and tls_key go together: set both or neither");
        }
        if parallel == 0 {
            bail!("parallel must be at least 1");
        }
        Ok(Settings {
            host,
            port,
            models,
            ctx_size,
            threads,
            parallel,
            max_queue,
            step_tokens,
            engine,
            openai_url,
            launch,
            vllm,
            openai_api_key,
            keep_alive,
            max_loaded_models,
            memory_limit,
            api_keys,
            api_keys_file,
            rate_limit_rpm,
            rate_limit_tpm,
            origins,
            request_timeout,
            shutdown_timeout,
            tls_cert,
            tls_key,
            report: r.report,
        })
    }
}

/// A value that came from an Ollama variable (not HyperLlama's flag or variable) says so.
fn fix_ollama_source<T>(report: &mut [(&'static str, String, Source)], id: &str, own: Option<T>, var: &str) {
    if own.is_some() {
        return;
    }
    if std::env::var(var).is_ok_and(|v| !v.trim().is_empty()) {
        if let Some(entry) = report.iter_mut().find(|e| e.0 == id && e.2 != Source::File) {
            entry.2 = Source::Env(var.to_string());
        }
    }
}

impl Settings {
    /// The table `--print-config` prints.
    pub fn print(&self) {
        println!("{:<20} {:<45} source", "setting", "value");
        for (name, value, source) in &self.report {
            println!("{name:<20} {value:<45} {source}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn resolve(args: &[&str]) -> anyhow::Result<Settings> {
        let m = Cli::command().try_get_matches_from(std::iter::once("serve").chain(args.iter().copied()))?;
        let cli = Cli::from_arg_matches(&m)?;
        cli.serve.resolve(&m)
    }

    fn source(s: &Settings, id: &str) -> Source {
        s.report.iter().find(|e| e.0 == id).map(|e| e.2.clone()).expect("reported")
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hl.toml");
        std::fs::write(
            &path,
            "parallel = 6\nmax_queue = 9\nkeep_alive = \"1h\"\napi_keys = [\"0123456789abcdef0123\"]\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let s = resolve(&["--config", p, "--parallel", "2"]).unwrap();
        assert_eq!(s.parallel, 2);
        assert_eq!(source(&s, "parallel"), Source::Flag);
        assert_eq!(s.max_queue, 9);
        assert_eq!(source(&s, "max_queue"), Source::File);
        assert_eq!(s.keep_alive, "1h");
        assert_eq!(s.max_loaded_models, 3);
        assert_eq!(source(&s, "max_loaded_models"), Source::Default);
        assert_eq!(s.api_keys.len(), 1);
        // The report never shows a key.
        assert!(s.report.iter().all(|e| !e.1.contains("0123456789abcdef")));
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hl.toml");
        std::fs::write(&path, "paralel = 6\n").unwrap();
        let e = resolve(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(format!("{e:#}").contains("paralel"), "{e:#}");
        assert!(resolve(&["--request-timeout", "soon"]).is_err());
        assert!(resolve(&["--memory-limit", "lots"]).is_err());
        assert!(resolve(&["--parallel", "0"]).is_err());
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_bytes("8GiB").unwrap(), 8 << 30);
        assert_eq!(parse_bytes("512MB").unwrap(), 512_000_000);
        assert!(parse_bytes("5 parsecs").is_err());
    }
}
