//! The scheduler over HTTP, with the real model: continuous batching, joining mid-way,
//! disconnects, admission limits and prefix reuse. Each test starts its own server (on an
//! ephemeral loopback port) so that slot counts are exactly what the test says.

use std::time::{Duration, Instant};

use crate::util::TestServer;
use futures::future::join_all;
use hyperllama_server::RegistryConfig;
use serde_json::{json, Value};

fn config(parallel: u32, max_queue: u32) -> RegistryConfig {
    RegistryConfig { ctx_size: Some(1024), parallel, max_queue, ..crate::util::test_config() }
}

/// The `scheduler` object `/api/ps` shows for the test model.
async fn scheduler(server: &TestServer) -> Value {
    let ps: Value = reqwest::get(format!("{}/api/ps", server.base)).await.expect("ps").json().await.expect("json");
    ps["models"].as_array().and_then(|m| m.first()).map(|m| m["scheduler"].clone()).unwrap_or(Value::Null)
}

/// Polls `/api/ps` until `pred` holds (a liveness guard, not a timing assertion).
async fn wait_for(server: &TestServer, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = scheduler(server).await;
        if pred(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A streaming request whose NDJSON/SSE body is read chunk by chunk.
struct Streaming {
    resp: reqwest::Response,
    buf: String,
}

impl Streaming {
    async fn post(server: &TestServer, path: &str, body: Value) -> Self {
        let resp =
            reqwest::Client::new().post(format!("{}{path}", server.base)).json(&body).send().await.expect("request");
        assert_eq!(resp.status(), 200, "{path} {body}");
        Self { resp, buf: String::new() }
    }

    /// The next NDJSON line (Ollama) as JSON; `None` at the end of the body.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(nl) = self.buf.find('\n') {
                let line: String = self.buf.drain(..=nl).collect();
                if line.trim().is_empty() {
                    continue;
                }
                return Some(serde_json::from_str(line.trim()).expect("ndjson line"));
            }
            match self.resp.chunk().await.expect("chunk") {
                Some(bytes) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }
}

/// A long generation that cannot stop early.
fn long_request(num_predict: u32) -> Value {
    json!({ "model": "smol", "prompt": "Write a long essay about the history of the Roman Empire.",
            "options": { "temperature": 0, "num_predict": num_predict, "ignore_eos": true } })
}

/// Completes a non-streaming Ollama generation; returns the response.
async fn generate(server: &TestServer, body: Value) -> Value {
    let r = reqwest::Client::new().post(format!("{}/api/generate", server.base)).json(&body).send().await.expect("req");
    assert_eq!(r.status(), 200);
    r.json().await.expect("json")
}

/// Prompts whose continuations are determined and different from each other (see the
/// engine's batching tests for why free-form answers are not compared bit for bit).
const PROMPTS: [&str; 8] = [
    "Count from 1 to 30, separated by commas: 1, 2, 3,",
    "Count up from 100: 100, 101, 102,",
    "The days of the week: Monday, Tuesday,",
    "The months of the year: January, February,",
    "Count down from 30: 30, 29, 28,",
    "Even numbers: 2, 4, 6, 8,",
    "Multiples of ten: 10, 20, 30,",
    "Odd numbers: 1, 3, 5, 7,",
];

/// The text of one raw greedy generation, streamed through `/api/generate` (even indices) or
/// `/v1/completions` (odd), so that both dialects run in the same batch.
async fn complete(server: &TestServer, i: usize) -> String {
    let prompt = PROMPTS[i];
    if i.is_multiple_of(2) {
        let mut s = Streaming::post(
            server,
            "/api/generate",
            json!({ "model": "smol", "prompt": prompt, "raw": true,
                    "options": { "temperature": 0, "num_predict": 24, "cache_prompt": false } }),
        )
        .await;
        let mut text = String::new();
        while let Some(v) = s.next().await {
            text.push_str(v["response"].as_str().unwrap_or_default());
            if v["done"] == true {
                assert_eq!(v["eval_count"], 24, "{v}");
                return text;
            }
        }
        panic!("stream ended without done");
    }
    let r = reqwest::Client::new()
        .post(format!("{}/v1/completions", server.base))
        .json(&json!({ "model": "smol", "prompt": prompt, "max_tokens": 24, "temperature": 0, "stream": true,
                       "cache_prompt": false }))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("body");
    let mut text = String::new();
    for data in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(data).expect("event");
        text.push_str(v["choices"][0]["text"].as_str().unwrap_or_default());
    }
    text
}

#[tokio::test]
async fn eight_concurrent_streams_are_batched_and_match_their_solo_outputs() {
    let server = crate::util::start(config(8, 16));
    let mut solo = Vec::new();
    for i in 0..PROMPTS.len() {
        solo.push(complete(&server, i).await);
    }
    let before = scheduler(&server).await;
    let together = join_all((0..PROMPTS.len()).map(|i| complete(&server, i))).await;
    for (i, (a, b)) in solo.iter().zip(&together).enumerate() {
        assert_eq!(a, b, "{:?}: alone vs with 7 others", PROMPTS[i]);
    }
    assert!(together[2].contains("Wednesday"), "{:?}", together[2]);
    assert!(together[3].contains("March"), "{:?}", together[3]);
    let after = scheduler(&server).await;
    let steps = after["decode_steps"].as_u64().unwrap_or(0) - before["decode_steps"].as_u64().unwrap_or(0);
    let tokens = after["batched_tokens"].as_u64().unwrap_or(0) - before["batched_tokens"].as_u64().unwrap_or(0);
    // 8 x 24 tokens generated; batched, that takes far fewer than 192 steps.
    assert!(steps < 100, "{steps} decode steps for 192 generated tokens ({tokens} tokens batched)");
    assert_eq!(after["parallel"], 8);
    assert_eq!(after["active"], 0);
}

#[tokio::test]
async fn a_request_that_joins_mid_way_finishes_while_the_running_one_goes_on() {
    let server = crate::util::start(config(2, 16));
    let mut long = Streaming::post(&server, "/api/generate", long_request(400)).await;
    for _ in 0..3 {
        let v = long.next().await.expect("a token");
        assert_eq!(v["done"], false);
    }
    let short = generate(
        &server,
        json!({ "model": "smol", "prompt": "What is 2 + 2?", "stream": false, "options": { "num_predict": 4 } }),
    )
    .await;
    assert_eq!(short["done"], true);
    assert!(short["eval_count"].as_u64().unwrap_or(0) >= 1, "{short}");
    // The long one is still generating: it holds its sequence, and its stream has not ended.
    let s = scheduler(&server).await;
    assert_eq!(s["active"], 1, "{s}");
    let v = long.next().await.expect("the long stream goes on");
    assert_eq!(v["done"], false, "{v}");
}

#[tokio::test]
async fn a_disconnect_frees_the_sequence_for_the_next_request() {
    let server = crate::util::start(config(1, 4));
    // Streaming: read a few tokens, hang up.
    let mut s = Streaming::post(&server, "/api/generate", long_request(3000)).await;
    for _ in 0..3 {
        s.next().await.expect("a token");
    }
    drop(s);
    let after =
        wait_for(&server, "the streaming request is cancelled", |s| s["requests_cancelled"] == 1 && s["active"] == 0)
            .await;
    assert_eq!(after["requests_finished"], 0, "{after}");

    // Not streaming: the client goes away while the answer is being generated (no guess at
    // how long the generation takes: it is abandoned once the scheduler shows it running).
    let mut body = long_request(3000);
    body["stream"] = json!(false);
    let client = tokio::spawn({
        let url = format!("{}/api/generate", server.base);
        async move { reqwest::Client::new().post(url).json(&body).send().await }
    });
    wait_for(&server, "the non-streaming request runs", |s| s["active"] == 1).await;
    client.abort();
    wait_for(&server, "the non-streaming request is cancelled", |s| s["requests_cancelled"] == 2 && s["active"] == 0)
        .await;

    // The one sequence is free: the next request is served (it would wait behind 3000 tokens otherwise).
    let next =
        generate(&server, json!({ "model": "smol", "prompt": "Hi", "stream": false, "options": { "num_predict": 3 } }))
            .await;
    assert_eq!(next["done"], true);
    let s = scheduler(&server).await;
    assert_eq!(s["requests_finished"], 1, "{s}");
}

#[tokio::test]
async fn a_full_queue_is_refused_at_once_with_retry_after_in_both_dialects() {
    let server = crate::util::start(config(1, 1));
    let mut running = Streaming::post(&server, "/api/generate", long_request(3000)).await;
    running.next().await.expect("a token");
    // The second waits for the one sequence...
    let waiting = tokio::spawn({
        let base = server.base.clone();
        async move { reqwest::Client::new().post(format!("{base}/api/generate")).json(&long_request(5)).send().await }
    });
    wait_for(&server, "one request waits", |s| s["waiting"] == 1).await;

    // ...and the queue (1) is full: Ollama's dialect answers 503, OpenAI's 429, both with Retry-After.
    let r = reqwest::Client::new()
        .post(format!("{}/api/generate", server.base))
        .json(&json!({ "model": "smol", "prompt": "Hi", "stream": false }))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let body: Value = r.json().await.expect("json");
    assert!(body["error"].as_str().unwrap_or_default().contains("busy"), "{body}");

    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.base))
        .json(&json!({ "model": "smol", "messages": [{ "role": "user", "content": "Hi" }] }))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "overloaded", "{body}");

    // Hanging up the running one lets the waiting one through.
    drop(running);
    let waited = waiting.await.expect("task").expect("request");
    assert_eq!(waited.status(), 200);
    let text = waited.text().await.expect("body");
    assert!(text.contains("\"done\":true"), "{text}");
}

#[tokio::test]
async fn a_repeated_prefix_is_served_from_cache_with_identical_output() {
    let server = crate::util::start(config(2, 16));
    let system = "You are a helpful assistant who knows a lot about geography, history and science. ".repeat(12);
    let body = |cache: bool| {
        json!({ "model": "smol", "temperature": 0, "max_tokens": 16, "cache_prompt": cache,
                "messages": [{ "role": "system", "content": system },
                             { "role": "user", "content": "What is the capital of France? Answer in one sentence." }] })
    };
    let chat = |b: Value| {
        let base = server.base.clone();
        async move {
            let r =
                reqwest::Client::new().post(format!("{base}/v1/chat/completions")).json(&b).send().await.expect("req");
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.expect("json")
        }
    };
    let cold = chat(body(false)).await;
    let warm = chat(body(true)).await;
    let prompt_tokens = warm["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    assert!(prompt_tokens > 150, "{warm}");
    assert_eq!(cold["usage"]["prompt_tokens_details"]["cached_tokens"], 0, "{cold}");
    assert_eq!(warm["usage"]["prompt_tokens_details"]["cached_tokens"], prompt_tokens - 1, "{warm}");
    assert_eq!(cold["choices"][0]["message"]["content"], warm["choices"][0]["message"]["content"]);

    // Ollama's dialect reports it too, for a new question after the same system prompt.
    let r = generate(
        &server,
        json!({ "model": "smol", "system": system, "prompt": "Name a colour.", "stream": false,
                "options": { "temperature": 0, "num_predict": 4 } }),
    )
    .await;
    let cached = r["prompt_cache_count"].as_u64().unwrap_or(0);
    assert!(cached > 150 && cached < r["prompt_eval_count"].as_u64().unwrap_or(0), "{r}");
    let s = scheduler(&server).await;
    assert!(s["cached_prompt_tokens"].as_u64().unwrap_or(0) >= prompt_tokens - 1 + cached, "{s}");
}
