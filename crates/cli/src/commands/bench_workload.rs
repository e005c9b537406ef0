//! `hyperllama bench --url --workload multi-turn|grounded`: the workloads where a server's
//! prompt cache and speculative decoding matter, against any OpenAI-compatible server
//! (streaming `/v1/chat/completions`, greedy, `ignore_eos`, the server's own `usage`).
//!
//! - **multi-turn**: `--conversations` conversations that share a system prompt of about
//!   `--system-tokens` tokens, `--turns` turns each, round robin (turn t of every conversation
//!   before turn t + 1), at most `--concurrency` requests at a time: with more conversations
//!   than the server has sequences, a conversation comes back after others used its sequence,
//!   so only a cache that outlives the sequences saves its prefill. Per turn: TTFT and the
//!   prompt tokens the server reports as cached; overall: the wall time.
//! - **grounded**: one stream, `--requests` times, "rewrite this text" over a ~300-token
//!   passage (or each prompt of `--prompts-file`): what the model writes is in its prompt, the
//!   case for n-gram drafting. Reported: decode tok/s (output tokens after the first over the
//!   time after the first) and TTFT.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use hyperllama_protocol::openai::ChatChunk;
use serde::{Deserialize, Serialize};

use super::bench_serve::Percentiles;

/// The passage the grounded workload rewrites (about 300 tokens).
pub const PASSAGE: &str = "The lighthouse stood on a narrow spit of rock at the mouth of the harbour, and for more \
than a hundred years its keepers had climbed the same iron stairs every evening to light the lamp. The last keeper, \
a quiet man named Tomas, kept a logbook in which he wrote down the weather, the ships that passed, and the birds \
that rested on the gallery railing. In winter the storms came from the north-west and the waves broke so high that \
spray reached the lantern room. In summer the sea was calm and the fishing boats went out before dawn and came back \
at noon, their decks full of silver fish and their crews singing. When the lamp was finally automated, Tomas stayed \
on in the cottage at the foot of the tower. He still climbed the stairs each evening, not to light the lamp, which \
now lit itself, but to watch the ships and to write in his logbook, because after so many years he could not \
imagine an evening without it. Visitors sometimes asked him whether he missed the work. He always answered that the \
work had never been the lamp; it had been the watching, and the watching was still his.";

/// One chat request's measurements.
#[derive(Debug, Clone, Default)]
pub struct Turn {
    pub ttft: Duration,
    pub e2e: Duration,
    pub prompt_tokens: u32,
    pub cached_tokens: u32,
    pub output_tokens: u32,
    pub text: String,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    model: String,
    api_key: Option<String>,
}

impl Client {
    pub fn new(url: &str, model: &str, api_key: Option<String>) -> anyhow::Result<Self> {
        let u = url.trim().trim_end_matches('/');
        let u = if u.contains("://") { u.to_string() } else { format!("http://{u}") };
        let endpoint = if u.ends_with("/chat/completions") {
            u
        } else if u.ends_with("/v1") {
            format!("{u}/chat/completions")
        } else {
            format!("{u}/v1/chat/completions")
        };
        // No idle connections kept: llama-server closes one idle for 5 s, and a request sent on
        // it as it closes fails ("connection closed before message completed").
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
        Ok(Self { http, endpoint, model: model.to_string(), api_key })
    }

    /// The sum of a HyperLlama counter or gauge (`hyperllama_<name>`) over its labels, from
    /// `/metrics`; `None` for servers without it.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let base = self.endpoint.trim_end_matches("/chat/completions").trim_end_matches("/v1");
        let mut req = self.http.get(format!("{base}/metrics"));
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let text = req.send().await.ok()?.error_for_status().ok()?.text().await.ok()?;
        let full = format!("hyperllama_{name}");
        let values: Vec<f64> = text
            .lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(full.as_str()))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// One greedy streaming chat turn of exactly `max_tokens` tokens.
    pub async fn chat(&self, messages: &[serde_json::Value], max_tokens: u32) -> anyhow::Result<Turn> {
        let body = serde_json::json!({
            "model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0,
            "stream": true, "stream_options": { "include_usage": true }, "ignore_eos": true,
        });
        let mut req = self.http.post(&self.endpoint).json(&body);
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let t0 = Instant::now();
        let resp = req.send().await.with_context(|| format!("cannot reach {}", self.endpoint))?;
        if !resp.status().is_success() {
            let status = resp.status();
            bail!("{status}: {}", hyperllama_protocol::openai::error_message(&resp.text().await.unwrap_or_default()));
        }
        let mut events = std::pin::pin!(hyperllama_protocol::stream::sse_events(resp.bytes_stream()));
        let mut turn = Turn::default();
        let mut first = None;
        while let Some(ev) = events.next().await {
            let data = ev?.data;
            if data.trim() == "[DONE]" {
                break;
            }
            let chunk: ChatChunk = serde_json::from_str(&data).with_context(|| format!("bad stream event {data:?}"))?;
            if let Some(c) = chunk.choices.first().and_then(|c| c.delta.content.as_deref()).filter(|c| !c.is_empty()) {
                first.get_or_insert_with(Instant::now);
                turn.text.push_str(c);
            }
            if let Some(u) = chunk.usage {
                turn.prompt_tokens = u.prompt_tokens;
                turn.output_tokens = u.completion_tokens;
                turn.cached_tokens = u.prompt_tokens_details.map(|d| d.cached_tokens).unwrap_or(0);
            }
            // llama-server reports its cache in `timings.cache_n`.
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) {
                if let Some(n) = v["timings"]["cache_n"].as_u64() {
                    turn.cached_tokens = turn.cached_tokens.max(n as u32);
                }
            }
        }
        let end = Instant::now();
        turn.ttft = first.unwrap_or(end) - t0;
        turn.e2e = end - t0;
        Ok(turn)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TurnStats {
    pub turn: usize,
    pub ttft_ms: Percentiles,
    pub mean_prompt_tokens: f64,
    pub mean_cached_tokens: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MultiTurnReport {
    pub label: String,
    pub conversations: usize,
    pub turns: usize,
    pub concurrency: usize,
    pub output_len: u32,
    pub total_s: f64,
    pub output_throughput: f64,
    pub per_turn: Vec<TurnStats>,
    /// TTFT p50 of turns after the first.
    pub later_ttft_p50_ms: f64,
}

/// Words of a deterministic pseudo-random text of about `n` tokens.
fn words(seed: u64, n: u32) -> String {
    const W: &[&str] = &[
        "river", "stone", "garden", "window", "orange", "silver", "market", "winter", "letter", "forest", "engine",
        "pocket", "candle", "harbor", "violin", "ladder", "meadow", "button", "castle", "pepper",
    ];
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            W[(x % W.len() as u64) as usize]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub struct MultiTurn {
    pub conversations: usize,
    pub turns: usize,
    pub system_tokens: u32,
    pub concurrency: usize,
    pub output_len: u32,
    pub label: String,
    pub seed: u64,
}

pub async fn multi_turn(client: &Client, w: &MultiTurn) -> anyhow::Result<MultiTurnReport> {
    if w.conversations == 0 || w.turns == 0 || w.concurrency == 0 {
        bail!("--conversations, --turns and --concurrency must be at least 1");
    }
    let system = format!("You are a helpful assistant. Keep these notes in mind: {}", words(w.seed, w.system_tokens));
    let mut histories: Vec<Vec<serde_json::Value>> =
        (0..w.conversations).map(|_| vec![serde_json::json!({ "role": "system", "content": system })]).collect();
    let permits = Arc::new(tokio::sync::Semaphore::new(w.concurrency));
    let mut per_turn = Vec::new();
    let mut later = Vec::new();
    let mut output = 0u64;
    let start = Instant::now();
    for turn in 0..w.turns {
        let mut tasks = Vec::new();
        for (c, h) in histories.iter_mut().enumerate() {
            let q = format!(
                "Question {turn} of conversation {c}: {} What do you make of it?",
                words(w.seed + (c * 100 + turn) as u64 + 1, 40)
            );
            h.push(serde_json::json!({ "role": "user", "content": q }));
            let msgs = h.clone();
            let client = client.clone();
            let permit = permits.clone().acquire_owned().await?;
            let max = w.output_len;
            tasks.push(tokio::spawn(async move {
                let r = client.chat(&msgs, max).await;
                drop(permit);
                r
            }));
        }
        let mut results = Vec::new();
        for (c, t) in tasks.into_iter().enumerate() {
            let r = t.await?.with_context(|| format!("turn {turn} of conversation {c}"))?;
            histories[c].push(serde_json::json!({ "role": "assistant", "content": r.text }));
            results.push(r);
        }
        let ms: Vec<f64> = results.iter().map(|r| r.ttft.as_secs_f64() * 1e3).collect();
        if turn > 0 {
            later.extend(ms.iter().copied());
        }
        output += results.iter().map(|r| u64::from(r.output_tokens)).sum::<u64>();
        let n = results.len() as f64;
        per_turn.push(TurnStats {
            turn: turn + 1,
            ttft_ms: Percentiles::of(ms),
            mean_prompt_tokens: results.iter().map(|r| f64::from(r.prompt_tokens)).sum::<f64>() / n,
            mean_cached_tokens: results.iter().map(|r| f64::from(r.cached_tokens)).sum::<f64>() / n,
        });
        eprintln!("turn {}/{} done", turn + 1, w.turns);
    }
    let total = start.elapsed().as_secs_f64();
    Ok(MultiTurnReport {
        label: w.label.clone(),
        conversations: w.conversations,
        turns: w.turns,
        concurrency: w.concurrency,
        output_len: w.output_len,
        total_s: total,
        output_throughput: output as f64 / total,
        later_ttft_p50_ms: Percentiles::of(later).p50,
        per_turn,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroundedReport {
    pub label: String,
    pub requests: usize,
    pub output_len: u32,
    pub mean_prompt_tokens: f64,
    pub decode_tps: Percentiles,
    pub ttft_ms: Percentiles,
    /// Drafted tokens the server accepted over the run (HyperLlama's `/metrics`), if it says.
    pub spec_acceptance: Option<f64>,
    pub spec_drafted: Option<f64>,
}

pub async fn grounded(
    client: &Client,
    requests: usize,
    output_len: u32,
    texts: &[String],
    label: &str,
) -> anyhow::Result<GroundedReport> {
    let mut tps = Vec::new();
    let mut ttft = Vec::new();
    let mut prompt = 0.0;
    let drafted0 = client.metric("spec_draft_tokens_total").await;
    let accepted0 = client.metric("spec_accepted_tokens_total").await;
    for i in 0..requests.max(1) {
        let text = texts.get(i % texts.len().max(1)).map(String::as_str).unwrap_or(PASSAGE);
        let msgs = [serde_json::json!({ "role": "user", "content": format!(
            "Rewrite the following text, keeping every sentence and changing only the spelling of British words to \
             American spelling:\n\n{text}") })];
        let t = client.chat(&msgs, output_len).await?;
        let decode = t.e2e.saturating_sub(t.ttft).as_secs_f64();
        if t.output_tokens > 1 && decode > 0.0 {
            tps.push(f64::from(t.output_tokens - 1) / decode);
        }
        ttft.push(t.ttft.as_secs_f64() * 1e3);
        prompt += f64::from(t.prompt_tokens);
        eprintln!("request {}/{}: {:.1} decode tok/s", i + 1, requests, tps.last().copied().unwrap_or(0.0));
    }
    let drafted = match (drafted0, client.metric("spec_draft_tokens_total").await) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let accepted = match (accepted0, client.metric("spec_accepted_tokens_total").await) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok(GroundedReport {
        spec_acceptance: drafted.zip(accepted).filter(|(d, _)| *d > 0.0).map(|(d, a)| a / d),
        spec_drafted: drafted,
        label: label.to_string(),
        requests,
        output_len,
        mean_prompt_tokens: prompt / requests.max(1) as f64,
        decode_tps: Percentiles::of(tps),
        ttft_ms: Percentiles::of(ttft),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn synthetic_words_are_deterministic_and_seeded() {
        assert_eq!(super::words(3, 5), super::words(3, 5));
        assert_ne!(super::words(3, 5), super::words(4, 5));
        assert_eq!(super::words(9, 7).split(' ').count(), 7);
    }
}
