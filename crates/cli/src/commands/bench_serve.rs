//! `hyperllama bench --url`: a serving benchmark against any OpenAI-compatible endpoint
//! (HyperLlama, llama-server, vLLM, MAX serve, Ollama), in the manner of `vllm bench serve`.
//!
//! For each concurrency level it sends `--requests` streaming `/v1/completions` requests, at
//! most `concurrency` at a time (and, with `--request-rate`, arriving as a Poisson process),
//! and measures from the client side: time to first token (TTFT), time per output token after
//! the first (TPOT), inter-token latency (ITL, every gap between streamed tokens), end-to-end
//! latency, request throughput and output tokens per second.
//!
//! Prompts are synthetic (`--input-len` words drawn at random, a different sequence for every
//! request, so no server can answer from its prefix cache) or read from `--prompts-file`.
//! `ignore_eos` (vLLM's and llama-server's extension) makes every output exactly
//! `--output-len` tokens; the token counts reported are the server's own `usage`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use hyperllama_protocol::openai::CompletionChunk;
use serde::{Deserialize, Serialize};

/// What to run, from `hyperllama bench`'s flags.
pub struct ServeBench {
    pub url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub concurrency: Vec<usize>,
    pub requests: Option<usize>,
    pub input_len: u32,
    pub output_len: u32,
    pub prompts_file: Option<PathBuf>,
    pub request_rate: Option<f64>,
    pub warmup: u32,
    pub label: Option<String>,
    pub seed: u64,
    pub temperature: f32,
    pub top_p: Option<f32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl Percentiles {
    pub fn of(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let pick = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
        Self { mean: v.iter().sum::<f64>() / v.len() as f64, p50: pick(0.5), p90: pick(0.9), p99: pick(0.99) }
    }
}

/// One concurrency level's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Level {
    pub concurrency: usize,
    pub requests: usize,
    pub completed: usize,
    pub failed: usize,
    pub duration_s: f64,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub mean_input_tokens: f64,
    pub mean_output_tokens: f64,
    pub ttft_ms: Percentiles,
    pub tpot_ms: Percentiles,
    pub itl_ms: Percentiles,
    pub e2e_ms: Percentiles,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub label: String,
    pub url: String,
    pub model: String,
    pub input_len: u32,
    pub output_len: u32,
    pub request_rate: Option<f64>,
    #[serde(default)]
    pub temperature: f32,
    #[serde(default)]
    pub top_p: Option<f32>,
    pub levels: Vec<Level>,
}

/// What one request measured.
struct Outcome {
    ttft: Duration,
    e2e: Duration,
    gaps: Vec<Duration>,
    input_tokens: u32,
    output_tokens: u32,
}

pub async fn run(bench: &ServeBench) -> anyhow::Result<Report> {
    if bench.concurrency.is_empty() || bench.concurrency.contains(&0) {
        bail!("--concurrency needs one or more levels, each at least 1 (e.g. 1,2,4,8)");
    }
    if bench.output_len == 0 {
        bail!("--output-len must be at least 1");
    }
    if let Some(rate) = bench.request_rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--request-rate must be a positive number of requests per second");
        }
    }
    let endpoint = completions_url(&bench.url);
    // No idle connections kept (see bench_workload::Client::new).
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
    let file_prompts = match &bench.prompts_file {
        Some(p) => Some(read_prompts(p)?),
        None => None,
    };
    let mut rng = Lcg(bench.seed.max(1));
    let mut levels = Vec::new();
    for &concurrency in &bench.concurrency {
        let n = bench.requests.unwrap_or((4 * concurrency).max(8));
        let prompts: Vec<String> = (0..n)
            .map(|i| match &file_prompts {
                Some(list) => list[i % list.len()].clone(),
                None => synthetic_prompt(&mut rng, bench.input_len),
            })
            .collect();
        for w in 0..bench.warmup {
            let p = synthetic_prompt(&mut rng, bench.input_len.min(32));
            Target::new(&http, &endpoint, bench)
                .send(&p, bench.output_len.min(8))
                .await
                .with_context(|| format!("warm-up request {} to {endpoint} failed", w + 1))?;
        }
        eprintln!("concurrency {concurrency}: {n} requests ...");
        levels.push(run_level(&http, &endpoint, bench, concurrency, prompts, &mut rng).await?);
    }
    Ok(Report {
        label: bench.label.clone().unwrap_or_else(|| bench.url.clone()),
        url: bench.url.clone(),
        model: bench.model.clone(),
        input_len: bench.input_len,
        output_len: bench.output_len,
        request_rate: bench.request_rate,
        temperature: bench.temperature,
        top_p: bench.top_p,
        levels,
    })
}

async fn run_level(
    http: &reqwest::Client,
    endpoint: &str,
    bench: &ServeBench,
    concurrency: usize,
    prompts: Vec<String>,
    rng: &mut Lcg,
) -> anyhow::Result<Level> {
    let target = Target::new(http, endpoint, bench);
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let requests = prompts.len();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(requests);
    for prompt in prompts {
        if let Some(rate) = bench.request_rate {
            // Poisson arrivals: exponential gaps with mean 1/rate.
            let gap = -(1.0 - rng.unit()).ln() / rate;
            tokio::time::sleep(Duration::from_secs_f64(gap)).await;
        }
        let permit = permits.clone().acquire_owned().await?;
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let r = target.send(&prompt, target.output_len).await;
            drop(permit);
            r
        }));
    }
    let mut outcomes = Vec::new();
    let mut failed = 0;
    let mut first_error = None;
    for t in tasks {
        match t.await? {
            Ok(o) => outcomes.push(o),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let duration = start.elapsed().as_secs_f64();
    if outcomes.is_empty() {
        let e = first_error.map(|e| format!("{e:#}")).unwrap_or_default();
        bail!("every request at concurrency {concurrency} failed; the first: {e}");
    }
    if let Some(e) = first_error {
        eprintln!("warning: {failed} of {requests} requests failed; the first: {e:#}");
    }
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let output: u64 = outcomes.iter().map(|o| u64::from(o.output_tokens)).sum();
    let input: u64 = outcomes.iter().map(|o| u64::from(o.input_tokens)).sum();
    let n = outcomes.len() as f64;
    Ok(Level {
        concurrency,
        requests,
        completed: outcomes.len(),
        failed,
        duration_s: duration,
        request_throughput: n / duration,
        output_throughput: output as f64 / duration,
        total_token_throughput: (input + output) as f64 / duration,
        mean_input_tokens: input as f64 / n,
        mean_output_tokens: output as f64 / n,
        ttft_ms: Percentiles::of(outcomes.iter().map(|o| ms(&o.ttft)).collect()),
        tpot_ms: Percentiles::of(
            outcomes
                .iter()
                .filter(|o| o.output_tokens > 1)
                .map(|o| ms(&(o.e2e - o.ttft)) / f64::from(o.output_tokens - 1))
                .collect(),
        ),
        itl_ms: Percentiles::of(outcomes.iter().flat_map(|o| o.gaps.iter().map(ms)).collect()),
        e2e_ms: Percentiles::of(outcomes.iter().map(|o| ms(&o.e2e)).collect()),
    })
}

/// Where and how requests go.
#[derive(Clone)]
struct Target {
    http: reqwest::Client,
    endpoint: String,
    model: String,
    api_key: Option<String>,
    output_len: u32,
    temperature: f32,
    top_p: Option<f32>,
}

impl Target {
    fn new(http: &reqwest::Client, endpoint: &str, bench: &ServeBench) -> Self {
        Self {
            http: http.clone(),
            endpoint: endpoint.to_string(),
            model: bench.model.clone(),
            api_key: bench.api_key.clone(),
            output_len: bench.output_len,
            temperature: bench.temperature,
            top_p: bench.top_p,
        }
    }

    /// One streaming completion, timed token by token.
    async fn send(&self, prompt: &str, output_len: u32) -> anyhow::Result<Outcome> {
        let mut body = serde_json::json!({
            "model": self.model,
            "prompt": prompt,
            "max_tokens": output_len,
            "temperature": self.temperature,
            "stream": true,
            "stream_options": { "include_usage": true },
            "ignore_eos": true,
        });
        if let Some(p) = self.top_p {
            body["top_p"] = p.into();
        }
        let mut req = self.http.post(&self.endpoint).json(&body);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let t0 = Instant::now();
        let resp = req.send().await.with_context(|| format!("cannot reach {}", self.endpoint))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            bail!("{status}: {}", text.chars().take(300).collect::<String>());
        }
        let mut events = std::pin::pin!(hyperllama_protocol::stream::sse_events(resp.bytes_stream()));
        let mut arrivals = Vec::new();
        let (mut input_tokens, mut output_tokens) = (None, None);
        while let Some(event) = events.next().await {
            let now = Instant::now();
            let data = event?.data;
            if data.trim() == "[DONE]" {
                break;
            }
            if data.contains("\"error\"") {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) {
                    if let Some(err) = v.get("error") {
                        bail!("the server reported an error mid-stream: {err}");
                    }
                }
            }
            let chunk: CompletionChunk =
                serde_json::from_str(&data).with_context(|| format!("bad stream event {data:?}"))?;
            if chunk.choices.first().is_some_and(|c| !c.text.is_empty()) {
                arrivals.push(now);
            }
            if let Some(u) = chunk.usage {
                input_tokens = Some(u.prompt_tokens);
                output_tokens = Some(u.completion_tokens);
            }
        }
        let end = Instant::now();
        let Some(&first) = arrivals.first() else { bail!("the stream carried no tokens") };
        Ok(Outcome {
            ttft: first - t0,
            e2e: end - t0,
            gaps: arrivals.windows(2).map(|w| w[1] - w[0]).collect(),
            input_tokens: input_tokens.unwrap_or(0),
            output_tokens: output_tokens.unwrap_or(arrivals.len() as u32),
        })
    }
}

/// `http://host:port`, `.../v1` or the full endpoint -> the completions endpoint.
fn completions_url(url: &str) -> String {
    let u = url.trim().trim_end_matches('/');
    let u = if u.contains("://") { u.to_string() } else { format!("http://{u}") };
    if u.ends_with("/completions") {
        u
    } else if u.ends_with("/v1") {
        format!("{u}/completions")
    } else {
        format!("{u}/v1/completions")
    }
}

/// Prompts from a file: JSON lines with a `prompt` field, or one prompt per plain line.
pub fn read_prompts(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let prompts: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(v) if v["prompt"].is_string() => v["prompt"].as_str().unwrap_or_default().to_string(),
            _ => l.to_string(),
        })
        .collect();
    if prompts.is_empty() {
        bail!("{} holds no prompts", path.display());
    }
    Ok(prompts)
}

/// Common English words that most tokenizers keep as one token each (with their space).
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not", "he",
    "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were", "their",
    "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would", "who", "so", "no",
];

/// `n` random words: about `n` tokens, and a different sequence for every call.
fn synthetic_prompt(rng: &mut Lcg, n: u32) -> String {
    (0..n.max(1)).map(|_| WORDS[(rng.next() % WORDS.len() as u64) as usize]).collect::<Vec<_>>().join(" ")
}

/// A small deterministic generator (the benchmark must be repeatable with `--seed`).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The report as a table; with `baselines`, ratios against each at the same concurrency.
pub fn print_table(report: &Report, baselines: &[Report]) {
    println!(
        "{}  model {}  input ~{} tokens  output {} tokens  temperature {}{}{}",
        report.label,
        report.model,
        report.input_len,
        report.output_len,
        report.temperature,
        report.top_p.map(|p| format!("  top_p {p}")).unwrap_or_default(),
        report.request_rate.map(|r| format!("  rate {r}/s")).unwrap_or_default()
    );
    println!(
        "{:>5} {:>5} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "conc", "ok", "req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "ITL p50", "ITL p99", "E2E p50"
    );
    for l in &report.levels {
        println!(
            "{:>5} {:>5} {:>8.2} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.0}",
            l.concurrency,
            l.completed,
            l.request_throughput,
            l.output_throughput,
            l.ttft_ms.p50,
            l.ttft_ms.p99,
            l.tpot_ms.p50,
            l.itl_ms.p50,
            l.itl_ms.p99,
            l.e2e_ms.p50
        );
    }
    println!("(times in ms)");
    for base in baselines {
        println!("\n{} vs {}", report.label, base.label);
        println!("{:>5} {:>14} {:>14} {:>14}", "conc", "out tok/s x", "TTFT p50 x", "TPOT p50 x");
        for l in &report.levels {
            let Some(b) = base.levels.iter().find(|b| b.concurrency == l.concurrency) else { continue };
            let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.2}", a / b) } else { "-".into() };
            println!(
                "{:>5} {:>14} {:>14} {:>14}",
                l.concurrency,
                ratio(l.output_throughput, b.output_throughput),
                ratio(l.ttft_ms.p50, b.ttft_ms.p50),
                ratio(l.tpot_ms.p50, b.tpot_ms.p50)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p90, p.p99), (51.0, 90.0, 99.0));
        assert_eq!(p.mean, 50.5);
        assert_eq!(Percentiles::of(vec![]).p50, 0.0);
    }

    #[test]
    fn endpoints_are_normalised() {
        assert_eq!(completions_url("127.0.0.1:8080"), "http://127.0.0.1:8080/v1/completions");
        assert_eq!(completions_url("http://h:1/v1/"), "http://h:1/v1/completions");
        assert_eq!(completions_url("http://h:1/v1/completions"), "http://h:1/v1/completions");
    }

    #[test]
    fn synthetic_prompts_differ_and_have_the_asked_length() {
        let mut rng = Lcg(7);
        let a = synthetic_prompt(&mut rng, 50);
        let b = synthetic_prompt(&mut rng, 50);
        assert_ne!(a, b);
        assert_eq!(a.split(' ').count(), 50);
        let mut again = Lcg(7);
        assert_eq!(synthetic_prompt(&mut again, 50), a);
    }
}
