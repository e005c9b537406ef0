use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use hyperllama_core::{GenerateRequest, Message, Prompt, TokenEvent};
use hyperllama_server::service::{Input, Knobs, Piece, PromptInput, Service, ServiceRequest};
use hyperllama_server::RequestContext;
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
    if prompt_text.is_empty() {
        anyhow::bail!("the prompt is empty");
    }
    args.model.check()?;
    // Check the sampling options before anything loads.
    args.sampling.params()?;
    if args.max_tokens == Some(0) {
        anyhow::bail!("`max_tokens` must be at least 1, got 0 (--max-tokens)");
    }
    if let Some(host) = &args.host {
        return via_server(&args, host, &prompt_text).await;
    }
    if args.model.is_served_elsewhere() {
        return served_elsewhere(&args, prompt_text).await;
    }
    let registry = crate::local::registry(&args.model)?;
    let resolved = crate::local::resolve(&registry, &args.model.model).await?;
    let service = Service::new(registry.clone(), Arc::default());
    let input =
        Input::Prompt(PromptInput { text: prompt_text, raw: args.raw, system: args.system.clone(), template: None });
    let mut req = ServiceRequest::new(resolved.key.clone(), input);
    req.knobs = Knobs {
        max_tokens: args.max_tokens.map(i64::from),
        stop: (!args.stop.is_empty()).then(|| args.stop.clone()),
        num_ctx: args.model.ctx_size.map(i64::from),
        num_thread: args.model.threads.map(i64::from),
        num_gpu: args.model.gpu_layers.map(i64::from),
        ..args.sampling.knobs()
    };
    // As Ollama: a limit past the context is cut to fit.
    req.overflow.clamp_output = true;
    let result = in_process(&args, &service, req).await;
    registry.unload_all().await;
    registry.engines().shutdown().await;
    result
}

/// The answer through the service (the server's own path: Modelfile policy, validation),
/// streamed to stdout, with the timings on request.
async fn in_process(args: &GenerateArgs, service: &Service, req: ServiceRequest) -> anyhow::Result<()> {
    let ctx = RequestContext::local();
    let t0 = ctx.started;
    let generation = service.generate(req, &ctx).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let model_name = generation.acquired.model.info().name.clone();
    let mut pieces = generation.pieces();
    let mut out = std::io::stdout().lock();
    let mut response = String::new();
    let mut ttft = None;
    let mut done = None;
    while let Some(piece) = pieces.next().await {
        match piece.map_err(|e| anyhow::anyhow!("{e}"))? {
            Piece::Text { text, .. } => {
                ttft.get_or_insert_with(|| t0.elapsed());
                if !args.json {
                    out.write_all(text.as_bytes())?;
                    out.flush()?;
                }
                response.push_str(&text);
            }
            // Reasoning goes to stderr, apart from the answer.
            Piece::Thinking(t) => {
                if !args.json {
                    eprint!("{t}");
                }
            }
            Piece::ToolStart { .. } | Piece::ToolArgs { .. } => {}
            Piece::Done(fin) => done = Some(fin),
        }
    }
    let fin = done.context("the engine ended the stream without a final event")?;
    let per_sec = |n: u32, d: Duration| if d.is_zero() { 0.0 } else { f64::from(n) / d.as_secs_f64() };
    let usage = fin.usage;
    let result = GenerateResult {
        model: model_name,
        response,
        done_reason: fin.finish_reason.as_str(),
        total_duration: fin.total_duration.as_nanos(),
        load_duration: fin.load_duration.as_nanos(),
        prompt_eval_count: usage.prompt_tokens,
        prompt_eval_cached: usage.cached_tokens,
        prompt_eval_duration: fin.prompt_eval.as_nanos(),
        eval_count: usage.completion_tokens,
        eval_duration: fin.eval.as_nanos(),
        time_to_first_token: ttft.unwrap_or_default().as_nanos(),
        prompt_tokens_per_second: per_sec(usage.prompt_tokens - usage.cached_tokens, fin.prompt_eval),
        // The first token's time belongs to the prompt evaluation; eval covers the rest.
        tokens_per_second: per_sec(usage.completion_tokens.saturating_sub(1), fin.eval),
    };
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&result)?)?;
    } else {
        writeln!(out)?;
    }
    if args.verbose {
        eprintln!(
            "load {:.0} ms | prompt {} tokens in {:.0} ms ({:.1} tok/s) | {} tokens in {:.0} ms ({:.1} tok/s) | {}",
            fin.load_duration.as_secs_f64() * 1e3,
            result.prompt_eval_count,
            fin.prompt_eval.as_secs_f64() * 1e3,
            result.prompt_tokens_per_second,
            result.eval_count,
            fin.eval.as_secs_f64() * 1e3,
            result.tokens_per_second,
            result.done_reason,
        );
    }
    Ok(())
}

/// `--engine openai` (a remote model id) and `--engine vllm` / a Hugging Face directory (a
/// vLLM launched for this command): the engine serves the model itself.
async fn served_elsewhere(args: &GenerateArgs, prompt_text: String) -> anyhow::Result<()> {
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
    let request = request.validate()?;
    let started = Instant::now();
    let options = args.model.load_options(PathBuf::from(&args.model.model))?;
    let (model, engine) = crate::engines::load(options, args.model.engine.as_deref(), &args.model.remote()).await?;
    let load_duration = started.elapsed();
    let t0 = Instant::now();
    let result = async {
        let mut stream = model.generate(request).await?;
        let mut out = std::io::stdout().lock();
        let mut n = 0u32;
        while let Some(event) = stream.next().await {
            match event? {
                TokenEvent::Token { text, .. } | TokenEvent::Text(text) => {
                    n += 1;
                    if !args.json {
                        out.write_all(text.as_bytes())?;
                        out.flush()?;
                    }
                }
                TokenEvent::ToolCall(c) => writeln!(out, "[tool call] {} {}", c.name, c.arguments)?,
                TokenEvent::Done { finish_reason, usage, timings, .. } => {
                    writeln!(out)?;
                    if args.verbose || args.json {
                        eprintln!(
                            "load {:.0} ms | prompt {} tokens | {} tokens in {:.0} ms | {} ({n} pieces in {:.0} ms)",
                            load_duration.as_secs_f64() * 1e3,
                            usage.prompt_tokens,
                            usage.completion_tokens,
                            timings.eval.as_secs_f64() * 1e3,
                            finish_reason.as_str(),
                            t0.elapsed().as_secs_f64() * 1e3
                        );
                    }
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    let _ = model.unload().await;
    engine.shutdown().await;
    result
}

/// `generate --host`: the same request through the server's Ollama API.
async fn via_server(args: &GenerateArgs, host: &str, prompt_text: &str) -> anyhow::Result<()> {
    use serde_json::{json, Value};
    let c = crate::client::Client::new(Some(host));
    let model = super::run::ensure_model(&c, &args.model.model).await?;
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
    let mut body = json!({ "model": model, "prompt": prompt_text, "raw": args.raw, "options": options });
    if let Some(s) = &args.system {
        body["system"] = json!(s);
    }
    let path = "/api/generate";
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
