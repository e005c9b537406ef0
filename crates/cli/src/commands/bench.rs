use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use hyperllama_core::{GenerateRequest, Prompt, SamplingParams, TokenEvent};
use hyperllama_engine::LoadedModel;
use serde::Serialize;

use std::path::PathBuf;

use super::{bench_chart, bench_serve, bench_workload};
use crate::args::ModelArgs;

/// In-process by default (MODEL is a .gguf path); with `--url`, a serving benchmark of any
/// OpenAI-compatible server (MODEL is the name that server knows the model by).
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt, sent raw (no chat template) so that its token count is exact. Omit it and
    /// give --prompt-tokens to use a synthetic prompt of that length.
    prompt: Option<String>,
    /// Measured iterations (after the warm-up).
    #[arg(long, short = 'i', default_value_t = 5)]
    iterations: u32,
    /// Warm-up iterations, not measured.
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// Tokens to generate per request (end-of-generation is ignored, so this is exact).
    #[arg(long, short = 'n', visible_alias = "output-len", default_value_t = 128)]
    max_tokens: u32,
    /// Prompt length in tokens for synthetic prompts (about this many with --url).
    #[arg(long, visible_alias = "input-len", default_value_t = 128)]
    prompt_tokens: u32,
    /// Serving benchmark: the base URL of an OpenAI-compatible server (HyperLlama, llama-server,
    /// vLLM, MAX serve, Ollama), e.g. http://127.0.0.1:11434.
    #[arg(long)]
    url: Option<String>,
    /// With --url: concurrency levels to sweep, e.g. 1,2,4,8,16.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    concurrency: Vec<usize>,
    /// With --url: requests per concurrency level (default: 4 x concurrency, at least 8).
    #[arg(long)]
    requests: Option<usize>,
    /// With --url: requests per second, arriving as a Poisson process (default: all at once,
    /// bounded by the concurrency).
    #[arg(long)]
    request_rate: Option<f64>,
    /// With --url: prompts to cycle through, one per line or JSON lines with a "prompt" field.
    #[arg(long)]
    prompts_file: Option<PathBuf>,
    /// With --url: the API key to send as a bearer token.
    #[arg(long, env = "HYPERLLAMA_BENCH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// With --url: a name for this server in tables and charts (default: the URL).
    #[arg(long)]
    label: Option<String>,
    /// With --url: seed for the synthetic prompts (the same seed sends the same prompts).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// With --url: what to send. `uniform`: random prompts at each --concurrency level (the
    /// serving sweep); `multi-turn`: --conversations chats sharing a system prompt, --turns
    /// turns each, round robin, at most the first --concurrency level at a time (prompt caches);
    /// `grounded`: one stream rewriting a given text, --requests times (speculative decoding).
    #[arg(long, value_enum, default_value = "uniform")]
    workload: Workload,
    /// With --workload multi-turn: the number of conversations.
    #[arg(long, default_value_t = 24)]
    conversations: usize,
    /// With --workload multi-turn: turns per conversation.
    #[arg(long, default_value_t = 4)]
    turns: usize,
    /// With --workload multi-turn: about how many tokens the shared system prompt has.
    #[arg(long, default_value_t = 600)]
    system_tokens: u32,
    /// With --url and --workload uniform: sampling temperature (default 0: greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// With --url and --workload uniform: nucleus sampling (sent only when given).
    #[arg(long)]
    top_p: Option<f32>,
    /// With --url: draw throughput and TTFT against concurrency into this PNG.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// With --url: earlier `--json` reports to compare with (ratios in the table, lines in the chart).
    #[arg(long)]
    compare: Vec<PathBuf>,
    /// Reuse the KV cache of a repeated prompt (off by default: every iteration is a cold prefill).
    #[arg(long)]
    cache_prompt: bool,
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
    /// Remember the median decode speed and TTFT for this model and engine in the model store
    /// (`HYPERLLAMA_MODELS`): `serve` then picks the fastest measured engine for it when no
    /// engine is asked for (docs/ENGINES.md).
    #[arg(long)]
    record: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    Uniform,
    MultiTurn,
    Grounded,
}

#[derive(Serialize)]
struct Sample {
    ttft_ms: f64,
    prompt_tokens: u32,
    prompt_tps: f64,
    generated_tokens: u32,
    decode_tps: f64,
    latency_ms: f64,
}

#[derive(Serialize)]
struct Stats {
    mean: f64,
    p50: f64,
    p90: f64,
    max: f64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    engine: &'static str,
    threads: Option<u32>,
    iterations: u32,
    prompt_tokens: u32,
    max_tokens: u32,
    load_ms: f64,
    ttft_ms: Stats,
    prompt_tps: Stats,
    decode_tps: Stats,
    latency_ms: Stats,
    /// Speculative decoding over the whole run (warm-up included): tokens drafted, accepted.
    spec_drafted: u64,
    spec_accepted: u64,
    samples: Vec<Sample>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(url) = &args.url {
        return serve_bench(url, &args).await;
    }
    if args.iterations == 0 {
        anyhow::bail!("--iterations must be at least 1");
    }
    // The model as the server would resolve it (a hub repo missing from the store is pulled).
    let (path, known_digest) = if args.model.is_served_elsewhere() {
        (PathBuf::from(&args.model.model), None)
    } else {
        let registry = crate::local::registry(&args.model)?;
        let resolved = crate::local::resolve(&registry, &args.model.model).await?;
        let digest = matches!(resolved.location, hyperllama_server::registry::Location::Local { .. })
            .then(|| resolved.manifest.model.clone());
        (resolved.load_path(), digest)
    };
    // The weights' digest names the measurement: a store blob's is known; a file is hashed
    // before loading, so a file that cannot be recorded fails fast.
    let digest = match (args.record, known_digest) {
        (false, _) => None,
        (true, Some(d)) => Some(d),
        (true, None) if path.is_file() => Some(hyperllama_store::digest_of_file(&path)?),
        (true, None) => {
            anyhow::bail!("--record needs model weights here (their digest names the measurement): {}", path.display())
        }
    };
    let t0 = Instant::now();
    let (model, engine) =
        crate::engines::load(args.model.load_options(path)?, args.model.engine.as_deref(), &args.model.remote())
            .await?;
    let load_ms = ms(t0.elapsed());
    let result = in_process(&args, model.clone(), engine.info().id, load_ms).await;
    let _ = model.unload().await;
    engine.shutdown().await;
    let report = result?;
    if let Some(digest) = digest {
        let dir = crate::commands::serve::models_dir(std::env::var_os("HYPERLLAMA_MODELS").map(PathBuf::from))?;
        let store = hyperllama_store::Store::open(&dir)?;
        let m = hyperllama_store::Measurement {
            decode_tps: report.decode_tps.p50,
            ttft_ms: report.ttft_ms.p50,
            threads: report.threads,
            measured_at: chrono::Utc::now().to_rfc3339(),
        };
        store.record_measurement(&digest, report.engine, m)?;
        eprintln!(
            "recorded {} {:.1} decode tok/s for sha256:{} in {}",
            report.engine,
            report.decode_tps.p50,
            digest.hex(),
            dir.display()
        );
    }
    Ok(())
}

async fn in_process(
    args: &BenchArgs,
    model: std::sync::Arc<dyn hyperllama_engine::LoadedModel>,
    engine: &'static str,
    load_ms: f64,
) -> anyhow::Result<Report> {
    let prompt = match &args.prompt {
        Some(p) => p.clone(),
        None => synthetic_prompt(model.as_ref(), args.prompt_tokens)?,
    };

    for _ in 0..args.warmup {
        one(model.as_ref(), &prompt, args).await?;
    }
    let mut samples = Vec::new();
    for i in 0..args.iterations {
        let s = one(model.as_ref(), &prompt, args).await?;
        if !args.json {
            eprintln!(
                "iteration {}/{}: ttft {:.1} ms, prompt {:.1} tok/s, decode {:.1} tok/s",
                i + 1,
                args.iterations,
                s.ttft_ms,
                s.prompt_tps,
                s.decode_tps
            );
        }
        samples.push(s);
    }
    let stats = |f: fn(&Sample) -> f64| summarize(samples.iter().map(f).collect());
    let engine_stats = model.stats();
    let report = Report {
        spec_drafted: engine_stats.spec_drafted,
        spec_accepted: engine_stats.spec_accepted,
        model: model.info().name.clone(),
        engine,
        threads: args.model.threads,
        iterations: args.iterations,
        prompt_tokens: samples.first().map(|s| s.prompt_tokens).unwrap_or(0),
        max_tokens: args.max_tokens,
        load_ms,
        ttft_ms: stats(|s| s.ttft_ms),
        prompt_tps: stats(|s| s.prompt_tps),
        decode_tps: stats(|s| s.decode_tps),
        latency_ms: stats(|s| s.latency_ms),
        samples,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(report);
    }
    println!(
        "model: {}  prompt: {} tokens  generate: {} tokens  iterations: {}",
        report.model, report.prompt_tokens, report.max_tokens, report.iterations
    );
    println!("load: {:.0} ms", report.load_ms);
    println!("{:<16} {:>10} {:>10} {:>10} {:>10}", "metric", "mean", "p50", "p90", "max");
    for (name, s) in [
        ("ttft (ms)", &report.ttft_ms),
        ("prompt (tok/s)", &report.prompt_tps),
        ("decode (tok/s)", &report.decode_tps),
        ("latency (ms)", &report.latency_ms),
    ] {
        println!("{name:<16} {:>10.1} {:>10.1} {:>10.1} {:>10.1}", s.mean, s.p50, s.p90, s.max);
    }
    if report.spec_drafted > 0 {
        println!(
            "speculative drafts: {} tokens drafted, {:.0}% accepted",
            report.spec_drafted,
            100.0 * report.spec_accepted as f64 / report.spec_drafted as f64
        );
    }
    Ok(report)
}

async fn serve_bench(url: &str, args: &BenchArgs) -> anyhow::Result<()> {
    match args.workload {
        Workload::Uniform => {}
        Workload::MultiTurn => return multi_turn_bench(url, args).await,
        Workload::Grounded => return grounded_bench(url, args).await,
    }
    let baselines = args
        .compare
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            serde_json::from_str::<bench_serve::Report>(&text)
                .with_context(|| format!("{} is not a `hyperllama bench --url --json` report", p.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bench = bench_serve::ServeBench {
        url: url.to_string(),
        model: args.model.model.clone(),
        api_key: args.api_key.clone(),
        concurrency: args.concurrency.clone(),
        requests: args.requests,
        input_len: args.prompt_tokens,
        output_len: args.max_tokens,
        prompts_file: args.prompts_file.clone(),
        request_rate: args.request_rate,
        warmup: args.warmup,
        label: args.label.clone(),
        seed: args.seed,
        temperature: args.temperature,
        top_p: args.top_p,
    };
    let report = bench_serve::run(&bench).await?;
    if let Some(path) = &args.chart {
        let all: Vec<&bench_serve::Report> = std::iter::once(&report).chain(baselines.iter()).collect();
        bench_chart::draw(path, &all)?;
        eprintln!("chart written to {}", path.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        bench_serve::print_table(&report, &baselines);
    }
    Ok(())
}

async fn multi_turn_bench(url: &str, args: &BenchArgs) -> anyhow::Result<()> {
    let client = bench_workload::Client::new(url, &args.model.model, args.api_key.clone())?;
    let w = bench_workload::MultiTurn {
        conversations: args.conversations,
        turns: args.turns,
        system_tokens: args.system_tokens,
        concurrency: args.concurrency.first().copied().unwrap_or(1),
        output_len: args.max_tokens,
        label: args.label.clone().unwrap_or_else(|| url.to_string()),
        seed: args.seed,
    };
    let report = bench_workload::multi_turn(&client, &w).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{}  {} conversations x {} turns, {} at a time, ~{} system tokens, {} output tokens",
        report.label, report.conversations, report.turns, report.concurrency, w.system_tokens, report.output_len
    );
    println!("{:>5} {:>10} {:>10} {:>10} {:>10}", "turn", "prompt", "cached", "TTFT p50", "TTFT p90");
    for t in &report.per_turn {
        println!(
            "{:>5} {:>10.0} {:>10.0} {:>10.1} {:>10.1}",
            t.turn, t.mean_prompt_tokens, t.mean_cached_tokens, t.ttft_ms.p50, t.ttft_ms.p90
        );
    }
    println!(
        "total {:.2} s, {:.1} output tok/s, later-turn TTFT p50 {:.1} ms",
        report.total_s, report.output_throughput, report.later_ttft_p50_ms
    );
    Ok(())
}

async fn grounded_bench(url: &str, args: &BenchArgs) -> anyhow::Result<()> {
    let client = bench_workload::Client::new(url, &args.model.model, args.api_key.clone())?;
    let texts = match &args.prompts_file {
        Some(p) => bench_serve::read_prompts(p)?,
        None => vec![bench_workload::PASSAGE.to_string()],
    };
    let label = args.label.clone().unwrap_or_else(|| url.to_string());
    for _ in 0..args.warmup {
        client.chat(&[serde_json::json!({ "role": "user", "content": "Hello" })], 8).await?;
    }
    let report = bench_workload::grounded(&client, args.requests.unwrap_or(5), args.max_tokens, &texts, &label).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{}  grounded rewrite, {} requests, ~{:.0} prompt tokens, {} output tokens",
        report.label, report.requests, report.mean_prompt_tokens, report.output_len
    );
    println!(
        "decode tok/s p50 {:.1} (mean {:.1}), TTFT p50 {:.1} ms",
        report.decode_tps.p50, report.decode_tps.mean, report.ttft_ms.p50
    );
    if let (Some(rate), Some(drafted)) = (report.spec_acceptance, report.spec_drafted) {
        println!("speculative drafts: {drafted:.0} tokens drafted, {:.0}% accepted", rate * 100.0);
    }
    Ok(())
}

async fn one(model: &dyn LoadedModel, prompt: &str, args: &BenchArgs) -> anyhow::Result<Sample> {
    let mut request = GenerateRequest::new(Prompt::Raw(prompt.to_string()));
    request.sampling = SamplingParams::greedy();
    request.stop.max_tokens = Some(args.max_tokens);
    request.stop.ignore_eos = true;
    request.cache_prompt = args.cache_prompt;
    let t0 = Instant::now();
    let mut stream = model.generate(request.validate()?).await?;
    let mut ttft = None;
    while let Some(event) = stream.next().await {
        match event? {
            TokenEvent::Token { .. } => {
                ttft.get_or_insert_with(|| t0.elapsed());
            }
            TokenEvent::Text(_) | TokenEvent::ToolCall(_) => {}
            TokenEvent::Done { usage, timings, .. } => {
                let latency = t0.elapsed();
                let computed = usage.prompt_tokens - usage.cached_tokens;
                return Ok(Sample {
                    ttft_ms: ms(ttft.unwrap_or(latency)),
                    prompt_tokens: usage.prompt_tokens,
                    prompt_tps: rate(computed, timings.prompt_eval),
                    generated_tokens: usage.completion_tokens,
                    decode_tps: rate(usage.completion_tokens.saturating_sub(1), timings.eval),
                    latency_ms: ms(latency),
                });
            }
        }
    }
    anyhow::bail!("the engine ended the stream without a final event")
}

/// A prompt of exactly `n` tokens (with the BOS token, if the model adds one).
fn synthetic_prompt(model: &dyn LoadedModel, n: u32) -> anyhow::Result<String> {
    const WORDS: &[&str] = &["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while"];
    let Some(tokenizer) = model.tokenizer() else {
        // Engines that tokenize elsewhere (MAX's sidecar): these words are one token each in
        // byte-level BPE vocabularies; the report gives the prompt size the engine counted.
        return Ok((0..n as usize).map(|i| WORDS[i % WORDS.len()]).collect::<Vec<_>>().join(" "));
    };
    let mut text = String::new();
    for i in 0.. {
        let count = tokenizer.tokenize(&text, true)?.len();
        if count as u32 >= n {
            break;
        }
        if i > 10 * n as usize + 10 {
            anyhow::bail!("could not build a prompt of {n} tokens");
        }
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(WORDS[i % WORDS.len()]);
    }
    // Trim back if the last word overshot.
    while tokenizer.tokenize(&text, true)?.len() as u32 > n {
        let cut = text.rfind(' ').context("prompt too short to trim")?;
        text.truncate(cut);
    }
    Ok(text)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn rate(n: u32, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        f64::from(n) / d.as_secs_f64()
    }
}

fn summarize(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Stats { mean: v.iter().sum::<f64>() / v.len() as f64, p50: pick(0.5), p90: pick(0.9), max: v[v.len() - 1] }
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles() {
        let s = super::summarize(vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((s.mean, s.p50, s.p90, s.max), (3.0, 3.0, 5.0, 5.0));
        let s = super::summarize(vec![7.0]);
        assert_eq!((s.p50, s.p90, s.max), (7.0, 7.0, 7.0));
    }
}
