//! Model management verbs, through the server: list, ps, show, rm, cp, stop, pull, create.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

use crate::client::Client;

#[derive(Args, Debug)]
pub struct HostArg {
    /// The server, `host:port` or a URL (default: $HYPERLLAMA_HOST, else 127.0.0.1:11434).
    #[arg(long)]
    pub host: Option<String>,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    pub model: String,
    /// Print the Modelfile.
    #[arg(long)]
    pub modelfile: bool,
    /// Print the prompt template.
    #[arg(long)]
    pub template: bool,
    /// Print the parameters.
    #[arg(long)]
    pub parameters: bool,
    /// Print the system message.
    #[arg(long)]
    pub system: bool,
    /// Print the license.
    #[arg(long)]
    pub license: bool,
    #[command(flatten)]
    pub host: HostArg,
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    /// Model names.
    #[arg(required = true)]
    pub models: Vec<String>,
    #[command(flatten)]
    pub host: HostArg,
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    pub source: String,
    pub destination: String,
    #[command(flatten)]
    pub host: HostArg,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The new model's name, `[namespace/]model[:tag]`.
    pub name: String,
    /// A Modelfile (FROM, PARAMETER, TEMPLATE, SYSTEM, LICENSE, MESSAGE).
    #[arg(long, short = 'f', conflicts_with = "from")]
    pub file: Option<PathBuf>,
    /// Shortcut for a Modelfile with only `FROM PATH.gguf`.
    #[arg(long)]
    pub from: Option<PathBuf>,
    #[command(flatten)]
    pub host: HostArg,
}

fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else {
        format!("{:.0} MB", b / 1e6)
    }
}

/// A span as Ollama's CLI words it ("Less than a second", "About a minute", "3 days").
fn human_duration(d: chrono::Duration) -> String {
    let seconds = d.num_seconds();
    match seconds {
        s if s < 1 => return "Less than a second".into(),
        1 => return "1 second".into(),
        s if s < 60 => return format!("{s} seconds"),
        _ => {}
    }
    let minutes = d.num_minutes();
    match minutes {
        1 => return "About a minute".into(),
        m if m < 60 => return format!("{m} minutes"),
        _ => {}
    }
    let hours = (d.num_seconds() as f64 / 3600.0).round() as i64;
    match hours {
        1 => "About an hour".into(),
        h if h < 48 => format!("{h} hours"),
        h if h < 24 * 7 * 2 => format!("{} days", h / 24),
        h if h < 24 * 30 * 2 => format!("{} weeks", h / 24 / 7),
        h if h < 24 * 365 * 2 => format!("{} months", h / 24 / 30),
        _ => format!("{} years", d.num_days() / 365),
    }
}

/// An RFC 3339 time relative to `now`: "2 minutes ago", "4 minutes from now", "Forever".
pub fn human_time(rfc3339: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(rfc3339) else { return rfc3339.to_string() };
    let delta = now.signed_duration_since(t.with_timezone(&chrono::Utc));
    if delta.num_days() / 365 < -20 {
        "Forever".into()
    } else if delta < chrono::Duration::zero() {
        format!("{} from now", human_duration(-delta))
    } else {
        format!("{} ago", human_duration(delta))
    }
}

pub async fn list(host: HostArg) -> anyhow::Result<()> {
    let v = Client::new(host.host.as_deref()).get("/api/tags").await?;
    let now = chrono::Utc::now();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<48} {:<14} {:<10} MODIFIED", "NAME", "ID", "SIZE")?;
    for m in v["models"].as_array().into_iter().flatten() {
        let digest = m["digest"].as_str().unwrap_or_default();
        writeln!(
            out,
            "{:<48} {:<14} {:<10} {}",
            m["name"].as_str().unwrap_or_default(),
            &digest[..digest.len().min(12)],
            human_size(m["size"].as_u64().unwrap_or(0)),
            human_time(m["modified_at"].as_str().unwrap_or_default(), now),
        )?;
    }
    Ok(())
}

/// Exits 0 when the server answers `/health` (the Docker HEALTHCHECK; no key needed).
pub async fn health(host: HostArg) -> anyhow::Result<()> {
    let v = Client::new(host.host.as_deref()).get("/health").await?;
    println!("{}", v["status"].as_str().unwrap_or("ok"));
    Ok(())
}

pub async fn ps(host: HostArg) -> anyhow::Result<()> {
    let v = Client::new(host.host.as_deref()).get("/api/ps").await?;
    let now = chrono::Utc::now();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<48} {:<14} {:<10} {:<8} {:<9} UNTIL", "NAME", "ID", "SIZE", "CONTEXT", "ENGINE")?;
    for m in v["models"].as_array().into_iter().flatten() {
        let digest = m["digest"].as_str().unwrap_or_default();
        writeln!(
            out,
            "{:<48} {:<14} {:<10} {:<8} {:<9} {}",
            m["name"].as_str().unwrap_or_default(),
            &digest[..digest.len().min(12)],
            human_size(m["size"].as_u64().unwrap_or(0)),
            m["context_length"].as_u64().unwrap_or(0),
            m["engine"].as_str().unwrap_or_default(),
            human_time(m["expires_at"].as_str().unwrap_or_default(), now),
        )?;
    }
    Ok(())
}

pub async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let v = Client::new(args.host.host.as_deref()).post("/api/show", &json!({ "model": args.model })).await?;
    let v: Value = v.json().await?;
    let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    if args.modelfile {
        print!("{}", field("modelfile"));
    } else if args.template {
        println!("{}", field("template"));
    } else if args.parameters {
        print!("{}", field("parameters"));
    } else if args.system {
        println!("{}", field("system"));
    } else if args.license {
        println!("{}", field("license"));
    } else {
        let d = &v["details"];
        let info = &v["model_info"];
        let arch = d["family"].as_str().unwrap_or_default();
        println!("  Model");
        println!("    {:<20} {arch}", "architecture");
        println!("    {:<20} {}", "parameters", d["parameter_size"].as_str().unwrap_or_default());
        println!("    {:<20} {}", "context length", info[format!("{arch}.context_length")]);
        println!("    {:<20} {}", "embedding length", info[format!("{arch}.embedding_length")]);
        println!("    {:<20} {}", "quantization", d["quantization_level"].as_str().unwrap_or_default());
        if let Some(format) = v["chat_format"].as_str() {
            println!("    {:<20} {format}", "chat format");
        }
        let mem = &v["memory_estimate"];
        let gib = |k: &str| mem[k].as_f64().unwrap_or(0.0) / (1u64 << 30) as f64;
        println!(
            "\n  Memory (context {}, {} sequences)\n    {:<20} {:.2} GiB\n    {:<20} {:.2} GiB\n    {:<20} {:.2} GiB\n    {:<20} {:.2} GiB",
            mem["context_length"], mem["parallel"], "weights", gib("weights"), "KV cache", gib("kv_cache"),
            "compute (estimate)", gib("compute"), "total", gib("total")
        );
        let caps: Vec<&str> = v["capabilities"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        println!("\n  Capabilities\n    {}", caps.join("\n    "));
        let params = field("parameters");
        if !params.is_empty() {
            println!("\n  Parameters");
            for l in params.lines() {
                println!("    {l}");
            }
        }
        let system = field("system");
        if !system.is_empty() {
            println!("\n  System\n    {system}");
        }
    }
    Ok(())
}

pub async fn rm(args: NamesArgs) -> anyhow::Result<()> {
    let c = Client::new(args.host.host.as_deref());
    for m in &args.models {
        c.delete("/api/delete", &json!({ "model": m })).await?;
        println!("deleted '{m}'");
    }
    Ok(())
}

pub async fn cp(args: CopyArgs) -> anyhow::Result<()> {
    let c = Client::new(args.host.host.as_deref());
    c.post("/api/copy", &json!({ "source": args.source, "destination": args.destination })).await?;
    println!("copied '{}' to '{}'", args.source, args.destination);
    Ok(())
}

pub async fn stop(args: NamesArgs) -> anyhow::Result<()> {
    let c = Client::new(args.host.host.as_deref());
    for m in &args.models {
        c.post("/api/generate", &json!({ "model": m, "prompt": "", "keep_alive": 0, "stream": false })).await?;
    }
    Ok(())
}

pub async fn pull(args: NamesArgs) -> anyhow::Result<()> {
    let c = Client::new(args.host.host.as_deref());
    for m in &args.models {
        let mut bar: Option<indicatif::ProgressBar> = None;
        let mut last_status = String::new();
        c.stream("/api/pull", &json!({ "model": m }), |line| {
            let status = line["status"].as_str().unwrap_or_default().to_string();
            match (line["total"].as_u64(), line["completed"].as_u64()) {
                (Some(total), Some(done)) if total > 0 => {
                    let b = bar.get_or_insert_with(|| {
                        let b = indicatif::ProgressBar::new(total);
                        b.set_style(
                            indicatif::ProgressStyle::with_template(
                                "{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                            )
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                        );
                        b.set_message(status.clone());
                        b
                    });
                    b.set_position(done);
                }
                _ => {
                    if let Some(b) = bar.take() {
                        b.finish();
                    }
                    if status != last_status {
                        eprintln!("{status}");
                    }
                }
            }
            last_status = status;
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// Creates `name` on the server from a Modelfile's contents: a local .gguf in FROM is uploaded
/// as a blob first, as Ollama's client does.
pub async fn create_from_modelfile(
    c: &Client,
    name: &str,
    mf: hyperllama_store::Modelfile,
    base_dir: &Path,
) -> anyhow::Result<()> {
    let mut body = json!({ "model": name, "stream": true });
    let from_path = {
        let p = PathBuf::from(&mf.from);
        let p = if p.is_relative() { base_dir.join(p) } else { p };
        (mf.from.ends_with(".gguf") || p.is_file()).then_some(p)
    };
    match from_path {
        Some(p) => {
            hyperllama_gguf::GgufFile::open(&p)?;
            eprintln!("uploading {}", p.display());
            let digest = c.upload_blob(&p).await?;
            let file = p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| "model.gguf".into());
            body["files"] = json!({ file: digest });
        }
        None => body["from"] = json!(mf.from),
    }
    if let Some(t) = mf.template {
        body["template"] = json!(t);
    }
    if let Some(s) = mf.system {
        body["system"] = json!(s);
    }
    if let Some(l) = mf.license {
        body["license"] = json!(l);
    }
    if !mf.parameters.is_empty() {
        body["parameters"] = json!(mf.parameters);
    }
    if !mf.messages.is_empty() {
        body["messages"] = json!(mf
            .messages
            .iter()
            .map(|m| json!({ "role": m.role.as_str(), "content": m.content }))
            .collect::<Vec<_>>());
    }
    c.stream("/api/create", &body, |line| {
        if let Some(s) = line["status"].as_str() {
            eprintln!("{s}");
        }
        Ok(())
    })
    .await
}

pub async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let (mf, base) = match (&args.file, &args.from) {
        (Some(f), _) => {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            let mf = hyperllama_store::Modelfile::parse(&text).with_context(|| f.display().to_string())?;
            (mf, f.parent().map(Path::to_path_buf).unwrap_or_default())
        }
        (None, Some(p)) => (
            hyperllama_store::Modelfile { from: p.display().to_string(), ..Default::default() },
            std::env::current_dir()?,
        ),
        (None, None) => {
            let f = PathBuf::from("Modelfile");
            if !f.exists() {
                bail!("give -f Modelfile or --from PATH.gguf (no ./Modelfile here)");
            }
            let text = std::fs::read_to_string(&f)?;
            (hyperllama_store::Modelfile::parse(&text).context("Modelfile")?, std::env::current_dir()?)
        }
    };
    hyperllama_store::ModelName::parse(&args.name)?;
    let c = Client::new(args.host.host.as_deref());
    create_from_modelfile(&c, &args.name, mf, &base).await
}

#[cfg(test)]
mod tests {
    use super::human_time;

    #[test]
    fn times_read_as_ollama_writes_them() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z").unwrap().with_timezone(&chrono::Utc);
        let t = |s: &str| human_time(s, now);
        assert_eq!(t("2026-12-03T11:59:59.500Z"), "Less than a second ago");
        assert_eq!(t("2026-12-03T11:59:30Z"), "30 seconds ago");
        assert_eq!(t("2026-12-03T11:58:00Z"), "2 minutes ago");
        assert_eq!(t("2026-12-03T11:00:00Z"), "About an hour ago");
        assert_eq!(t("2026-12-01T12:00:00Z"), "2 days ago");
        assert_eq!(t("2026-10-01T12:00:00Z"), "2 months ago");
        assert_eq!(t("2026-12-03T12:04:00Z"), "4 minutes from now");
        assert_eq!(t("2126-12-03T12:00:00Z"), "Forever");
    }
}
