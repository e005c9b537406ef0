use std::io::{Read, Write};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use hyperllama_core::{GenerateRequest, Message, Prompt, TokenEvent};
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

    let started = Instant::now();
    let model = crate::engines::load(args.model.load_options()?).await?;
    let load_duration = started.elapsed();

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
