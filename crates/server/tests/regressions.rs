//! The bugs a design review and a new user found (issue 11), each pinned with the real engine
//! and model (the mock-engine versions live in `mock`).

use futures::StreamExt;
use serde_json::{json, Value};

use crate::util::{post, server, url};

/// A 400-token stream, then a request for the same model with another `num_ctx`: the stream
/// runs to its end (it used to be cut with "the model was unloaded").
#[tokio::test]
async fn another_num_ctx_does_not_break_a_running_stream() {
    server();
    let (s, _) = post("/api/copy", json!({ "source": "smol", "destination": "smol-busy" })).await;
    assert_eq!(s, 200);
    let resp = reqwest::Client::new()
        .post(url("/api/generate"))
        .json(&json!({ "model": "smol-busy", "prompt": "Tell me a long story.",
                       "options": { "num_predict": 400, "ignore_eos": true, "temperature": 0 } }))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = Vec::new();
    // Wait for the first tokens, so the second request comes mid-stream.
    while !text.windows(1).any(|w| w[0] == b'\n') {
        text.extend_from_slice(&body.next().await.expect("a chunk").expect("bytes"));
    }
    let (s, v) = post(
        "/api/generate",
        json!({ "model": "smol-busy", "prompt": "Hi", "stream": false, "options": { "num_ctx": 1024, "num_predict": 4 } }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    while let Some(chunk) = body.next().await {
        text.extend_from_slice(&chunk.expect("the stream is not cut"));
    }
    let text = String::from_utf8(text).expect("utf-8");
    let last: Value = serde_json::from_str(text.lines().last().expect("lines")).expect("json");
    assert!(!text.contains("\"error\""), "{text}");
    assert_eq!(last["done"], true, "{last}");
    assert_eq!(last["eval_count"], 400, "{last}");
}

/// A model created with a `SYSTEM` answers the same through both dialects.
#[tokio::test]
async fn a_system_prompt_answers_alike_in_both_dialects() {
    server();
    let (s, v) = post(
        "/api/create",
        json!({ "model": "smol-pirate", "from": "smol", "system": "You are a pirate. Always say Arr.", "stream": false }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let q = "Who are you? Answer in one sentence.";
    let (_, ollama) = post(
        "/api/chat",
        json!({ "model": "smol-pirate", "stream": false, "messages": [{ "role": "user", "content": q }],
                "options": { "temperature": 0, "num_predict": 24 } }),
    )
    .await;
    let (_, openai) = post(
        "/v1/chat/completions",
        json!({ "model": "smol-pirate", "messages": [{ "role": "user", "content": q }], "temperature": 0, "max_tokens": 24 }),
    )
    .await;
    let (_, plain) = post(
        "/v1/chat/completions",
        json!({ "model": "smol", "messages": [{ "role": "user", "content": q }], "temperature": 0, "max_tokens": 24 }),
    )
    .await;
    let a = ollama["message"]["content"].as_str().expect("ollama");
    let b = openai["choices"][0]["message"]["content"].as_str().expect("openai");
    let c = plain["choices"][0]["message"]["content"].as_str().expect("plain");
    assert_eq!(a, b, "the same greedy answer through both dialects");
    assert_ne!(b, c, "and the SYSTEM prompt changed it");
    assert_eq!(ollama["prompt_eval_count"], openai["usage"]["prompt_tokens"], "the same prompt");
}
