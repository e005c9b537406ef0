use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use hyperllama_core::{GenerateRequest, Message, Prompt, TokenEvent};
use hyperllama_engine::LoadedModel;
use serde::Serialize;

use crate::args::{ModelArgs, SamplingArgs};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt; `-` reads it from stdin.
    prompt: String,
    /// Stop after this many generated tokens.
    #[arg(long, short = 'n')]
    max_tokens: Option<u32>,
    /// Stop before this string (repeatable); it is not printed.
    #[arg(long)]
    stop: Vec<String>,
    /// A system message for the chat template.
    #[arg(long, conflicts_with = "raw")]
    system: Option<String>,
    /// Send the prompt as is, without the model's chat template.
    #[arg(long)]
    raw: bool,
    /// Print one JSON object at the end (text and timings) instead of streaming text.
    #[arg(long)]
    json: bool,
    /// Print timings to stderr after the answer.
    #[arg(long)]
    verbose: bool,
    /// Go through a running server (`host:port` or URL) instead of loading the model in-process;
    /// MODEL is then a model name (or a .gguf file, created on the server).
    #[arg(long)]
    host: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

/// The `--json` result; durations in nanoseconds, named as in Ollama's API.
#[derive(Serialize)]
struct GenerateResult {
    model: String,
    response: String,
    done_reason: &'static str,
    total_duration: u128,
    load_duration: u128,
    prompt_eval_count: u32,
    prompt_eval_cached: u32,
    prompt_eval_duration: u128,
    eval_count: u32,
    eval_duration: u128,
    time_to_first_token: u128,
    prompt_tokens_per_second: f64,
    tokens_per_second: f64,
}

pub async fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let prompt_text = if args.prompt == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading the prompt from stdin")?;
        s
    } else {
        args.prompt.clone()
    };
    let prompt = if args.raw {
        Prompt::Raw(prompt_text)
    } else {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(Message::system(system.clone()));
        }
        messages.push(Message::user(prompt_text));
        Prompt::Chat(messages)
    };
    let mut request = GenerateRequest::new(prompt);
    request.sampling = args.sampling.params()?;
    request.stop.max_tokens = args.max_tokens;
    request.stop.stop = args.stop.clone();
    request.validate()?;
    if let Some(host) = &args.host {
        return via_server(&args, host, request).await;
    }

    let started = Instant::now();
    let (model, engine) =
        crate::engines::load(args.model.load_options()?, args.model.engine.as_deref(), &args.model.remote()).await?;
    let load_duration = started.elapsed();
    let result = in_process(&args, model, request, started, load_duration).await;
    engine.shutdown().await;
    result
}

async fn in_process(
    args: &GenerateArgs,
    model: Arc<dyn LoadedModel>,
    request: GenerateRequest,
    started: Instant,
    load_duration: Duration,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut stream = model.generate(request).await?;
    let mut out = std::io::stdout().lock();
    let mut response = String::new();
    let mut ttft = None;
    let mut done = None;
    while let Some(event) = stream.next().await {
        match event? {
            TokenEvent::Token { text, .. } | TokenEvent::Text(text) => {
                ttft.get_or_insert_with(|| t0.elapsed());
                if !args.json {
                    out.write_all(text.as_bytes())?;
                    out.flush()?;
                }
                response.push_str(&text);
            }
            TokenEvent::Done { finish_reason, usage, timings } => done = Some((finish_reason, usage, timings)),
        }
    }
    let (finish_reason, usage, timings) = done.context("the engine ended the stream without a final event")?;
    let per_sec = |n: u32, d: std::time::Duration| {
        if d.is_zero() {
            0.0
        } else {
            f64::from(n) / d.as_secs_f64()
        }
    };
    let result = GenerateResult {
        model: model.info().name.clone(),
        response,
        done_reason: finish_reason.as_str(),
        total_duration: started.elapsed().as_nanos(),
        load_duration: load_duration.as_nanos(),
        prompt_eval_count: usage.prompt_tokens,
        prompt_eval_cached: usage.cached_tokens,
        prompt_eval_duration: timings.prompt_eval.as_nanos(),
        eval_count: usage.completion_tokens,
        eval_duration: timings.eval.as_nanos(),
        time_to_first_token: ttft.unwrap_or_default().as_nanos(),
        prompt_tokens_per_second: per_sec(usage.prompt_tokens - usage.cached_tokens, timings.prompt_eval),
        // The first token's time belongs to the prompt evaluation; eval covers the rest.
        tokens_per_second: per_sec(usage.completion_tokens.saturating_sub(1), timings.eval),
    };
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&result)?)?;
    } else {
        writeln!(out)?;
    }
    if args.verbose {
        eprintln!(
            "load {:.0} ms | prompt {} tokens in {:.0} ms ({:.1} tok/s) | {} tokens in {:.0} ms ({:.1} tok/s) | {}",
            load_duration.as_secs_f64() * 1e3,
            result.prompt_eval_count,
            timings.prompt_eval.as_secs_f64() * 1e3,
            result.prompt_tokens_per_second,
            result.eval_count,
            timings.eval.as_secs_f64() * 1e3,
            result.tokens_per_second,
            result.done_reason,
        );
    }
    model.unload().await?;
    Ok(())
}

/// `generate --host`: the same request through the server's Ollama API.
async fn via_server(args: &GenerateArgs, host: &str, request: GenerateRequest) -> anyhow::Result<()> {
    use serde_json::{json, Value};
    let c = crate::client::Client::new(Some(host));
    let model = super::run::ensure_model(&c, &args.model.model.to_string_lossy()).await?;
    let mut options = json!({
        "temperature": args.sampling.temperature, "top_k": args.sampling.top_k, "top_p": args.sampling.top_p,
        "min_p": args.sampling.min_p, "seed": args.sampling.seed, "repeat_penalty": args.sampling.repeat_penalty,
        "repeat_last_n": args.sampling.repeat_last_n, "presence_penalty": args.sampling.presence_penalty,
        "frequency_penalty": args.sampling.frequency_penalty, "num_predict": args.max_tokens,
        "num_ctx": args.model.ctx_size, "num_thread": args.model.threads, "engine": args.model.engine,
    });
    if !args.stop.is_empty() {
        options["stop"] = json!(args.stop);
    }
    if let Some(o) = options.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    let (path, body) = match &request.prompt {
        Prompt::Raw(p) => ("/api/generate", json!({ "model": model, "prompt": p, "raw": true, "options": options })),
        Prompt::Chat(messages) => {
            let msgs: Vec<Value> =
                messages.iter().map(|m| json!({ "role": m.role.as_str(), "content": m.content })).collect();
            ("/api/chat", json!({ "model": model, "messages": msgs, "options": options }))
        }
    };
    let t0 = Instant::now();
    let mut ttft = None;
    let mut response = String::new();
    let mut last = Value::Null;
    let mut out = std::io::stdout().lock();
    c.stream(path, &body, |line| {
        let piece = line["response"].as_str().or_else(|| line["message"]["content"].as_str()).unwrap_or_default();
        if !piece.is_empty() {
            ttft.get_or_insert_with(|| t0.elapsed());
            if !args.json {
                out.write_all(piece.as_bytes())?;
                out.flush()?;
            }
            response.push_str(piece);
        }
        if line["done"] == true {
            last = line;
        }
        Ok(())
    })
    .await?;
    let n = |k: &str| last[k].as_u64().unwrap_or(0);
    let rate = |count: u64, ns: u64| if ns == 0 { 0.0 } else { count as f64 / (ns as f64 / 1e9) };
    if args.json {
        let result = json!({
            "model": model, "response": response, "done_reason": last["done_reason"],
            "total_duration": n("total_duration"), "load_duration": n("load_duration"),
            "prompt_eval_count": n("prompt_eval_count"), "prompt_eval_cached": n("prompt_cache_count"),
            "prompt_eval_duration": n("prompt_eval_duration"), "eval_count": n("eval_count"), "eval_duration": n("eval_duration"),
            "time_to_first_token": ttft.unwrap_or_default().as_nanos() as u64,
            "prompt_tokens_per_second": rate(n("prompt_eval_count").saturating_sub(n("prompt_cache_count")), n("prompt_eval_duration")),
            "tokens_per_second": rate(n("eval_count").saturating_sub(1), n("eval_duration")),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&result)?)?;
    } else {
        writeln!(out)?;
    }
    if args.verbose {
        eprintln!(
            "prompt {} tokens ({:.1} tok/s) | {} tokens ({:.1} tok/s) | {}",
            n("prompt_eval_count"),
            rate(n("prompt_eval_count"), n("prompt_eval_duration")),
            n("eval_count"),
            rate(n("eval_count").saturating_sub(1), n("eval_duration")),
            last["done_reason"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}
