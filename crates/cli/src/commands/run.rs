//! `hyperllama run`: chat with a model through the server, one-shot or interactive.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

use super::models::HostArg;
use crate::client::Client;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A model name, or a path to a .gguf file (created on the server under its file name).
    pub model: String,
    /// Ask this and exit; without it, an interactive chat (/bye to leave).
    pub prompt: Vec<String>,
    /// Return JSON that the model is constrained to produce.
    #[arg(long)]
    pub format: Option<String>,
    /// How long the model stays loaded afterwards (e.g. 5m, -1, 0).
    #[arg(long)]
    pub keepalive: Option<String>,
    /// Print timings after each answer.
    #[arg(long)]
    pub verbose: bool,
    #[command(flatten)]
    pub host: HostArg,
}

/// A model reference that may be a local GGUF file: such a file is created on the server
/// (uploaded as a blob) under a name derived from the file name.
pub async fn ensure_model(c: &Client, model: &str) -> anyhow::Result<String> {
    let path = Path::new(model);
    if !(model.ends_with(".gguf") && path.is_file()) {
        // A hub reference that is not in the store yet is pulled first, as `ollama run` does.
        if hyperllama_store::hub::HubRef::parse(model).is_some()
            && c.post("/api/show", &json!({ "model": model })).await.is_err()
        {
            super::models::pull(super::models::NamesArgs {
                models: vec![model.to_string()],
                host: HostArg { host: Some(c.base().to_string()) },
            })
            .await?;
        }
        return Ok(model.to_string());
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_lowercase()).unwrap_or_default();
    let mut name: String = stem
        .chars()
        .map(|ch| if ch.is_ascii_alphanumeric() || ch == '.' || ch == '_' || ch == '-' { ch } else { '-' })
        .collect();
    name = name.trim_start_matches(['.', '-']).chars().take(80).collect();
    if name.is_empty() {
        name = "model".into();
    }
    let mf = hyperllama_store::Modelfile { from: path.display().to_string(), ..Default::default() };
    super::models::create_from_modelfile(c, &name, mf, &std::env::current_dir()?).await?;
    Ok(name)
}

/// Streams one chat turn to stdout; returns the answer and the final line's stats.
pub async fn chat_turn(c: &Client, body: &Value, print: bool) -> anyhow::Result<(String, Value)> {
    let mut answer = String::new();
    let mut last = Value::Null;
    let mut out = std::io::stdout();
    c.stream("/api/chat", body, |line| {
        if let Some(t) = line["message"]["content"].as_str() {
            if print {
                out.write_all(t.as_bytes())?;
                out.flush()?;
            }
            answer.push_str(t);
        }
        if line["done"] == true {
            last = line;
        }
        Ok(())
    })
    .await?;
    Ok((answer, last))
}

fn print_stats(v: &Value) {
    let ns = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let rate = |n: f64, d: f64| if d > 0.0 { n / (d / 1e9) } else { 0.0 };
    eprintln!(
        "total duration: {:.0} ms | load: {:.0} ms | prompt: {} tokens, {:.1} tok/s | eval: {} tokens, {:.1} tok/s",
        ns("total_duration") / 1e6,
        ns("load_duration") / 1e6,
        v["prompt_eval_count"],
        rate(ns("prompt_eval_count"), ns("prompt_eval_duration")),
        v["eval_count"],
        rate(ns("eval_count"), ns("eval_duration")),
    );
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let c = Client::new(args.host.host.as_deref());
    let model = ensure_model(&c, &args.model).await?;
    let base = |messages: &[Value]| {
        let mut b = json!({ "model": model, "messages": messages, "stream": true });
        if let Some(f) = &args.format {
            b["format"] = if f == "json" { json!("json") } else { serde_json::from_str(f).unwrap_or(json!(f)) };
        }
        if let Some(k) = &args.keepalive {
            b["keep_alive"] = json!(k);
        }
        b
    };
    let mut prompt = args.prompt.join(" ");
    if prompt.is_empty() && !std::io::stdin().is_terminal() {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        prompt = s;
    }
    if !prompt.trim().is_empty() {
        let (_, stats) = chat_turn(&c, &base(&[json!({ "role": "user", "content": prompt })]), true).await?;
        println!();
        if args.verbose {
            print_stats(&stats);
        }
        return Ok(());
    }
    // Interactive: load first so the first answer is not slowed by the load.
    c.post("/api/chat", &json!({ "model": model, "messages": [] })).await.context("loading the model")?;
    eprintln!(">>> Chatting with {model}. Type /bye to leave, /clear to forget, \"\"\" for multi-line input; Ctrl-C stops an answer.");
    let mut history: Vec<Value> = Vec::new();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        eprint!(">>> ");
        let Some(input) = read_input(&mut lines).await? else { break };
        let trimmed = input.trim();
        match trimmed {
            "" => continue,
            "/bye" | "/exit" => break,
            "/clear" => {
                history.clear();
                eprintln!("Cleared session context");
                continue;
            }
            "/?" | "/help" => {
                eprintln!("/bye  leave\n/clear  forget the conversation\n\"\"\"  begin or end multi-line input");
                continue;
            }
            _ => {}
        }
        history.push(json!({ "role": "user", "content": input }));
        let body = base(&history);
        tokio::select! {
            r = chat_turn(&c, &body, true) => match r {
                Ok((answer, stats)) => {
                    println!("\n");
                    if args.verbose { print_stats(&stats); }
                    history.push(json!({ "role": "assistant", "content": answer }));
                }
                // A refused turn (a 4xx, the server gone) ends that turn, not the session:
                // the input is forgotten and the user can try again.
                Err(e) => {
                    eprintln!("\nError: {e:#}\n");
                    history.pop();
                }
            },
            _ = tokio::signal::ctrl_c() => {
                // Dropping the request cancels the generation on the server.
                println!("\n(stopped)\n");
                history.pop();
            }
        }
    }
    Ok(())
}

/// One input, possibly multi-line between `"""` markers; `None` at end of input.
async fn read_input(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::io::Stdin>>,
) -> anyhow::Result<Option<String>> {
    let first = tokio::select! {
        l = lines.next_line() => l?,
        _ = tokio::signal::ctrl_c() => { eprintln!("\nUse Ctrl + d or /bye to exit."); return Ok(Some(String::new())); }
    };
    let Some(first) = first else { return Ok(None) };
    let Some(rest) = first.trim_start().strip_prefix("\"\"\"") else { return Ok(Some(first)) };
    if let Some(body) = rest.strip_suffix("\"\"\"") {
        return Ok(Some(body.to_string()));
    }
    let mut text = rest.to_string();
    while let Some(l) = lines.next_line().await? {
        if let Some(body) = l.strip_suffix("\"\"\"") {
            text.push('\n');
            text.push_str(body);
            return Ok(Some(text.trim_start_matches('\n').to_string()));
        }
        text.push('\n');
        text.push_str(&l);
    }
    Ok(Some(text))
}
