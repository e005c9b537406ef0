//! Bad input gets a clear 4xx in the dialect's error shape, and the server keeps serving.

use crate::util::{post, post_raw};
use serde_json::json;

async fn still_serving() {
    let (s, v) = post(
        "/api/generate",
        json!({ "model": "smol", "prompt": "hi", "stream": false, "options": { "num_predict": 2 } }),
    )
    .await;
    assert_eq!(s, 200, "server stopped serving: {v}");
}

fn ollama_error(v: &serde_json::Value) -> &str {
    v["error"].as_str().unwrap_or_else(|| panic!("not Ollama's error shape: {v}"))
}

fn openai_error(v: &serde_json::Value) -> &str {
    assert!(v["error"]["type"].is_string(), "not OpenAI's error shape: {v}");
    v["error"]["message"].as_str().unwrap_or_else(|| panic!("no message: {v}"))
}

#[tokio::test]
async fn ollama_bad_requests() {
    let cases: Vec<(&str, serde_json::Value, u16, &str)> = vec![
        ("/api/generate", json!({ "prompt": "hi" }), 400, "model"),
        ("/api/generate", json!({ "model": "", "prompt": "hi" }), 400, "model is required"),
        ("/api/generate", json!({ "model": "nope", "prompt": "hi" }), 404, "model 'nope' not found"),
        ("/api/generate", json!({ "model": "smol", "prompt": 42 }), 400, "prompt"),
        (
            "/api/generate",
            json!({ "model": "smol", "prompt": "hi", "options": { "temperature": "hot" } }),
            400,
            "temperature",
        ),
        (
            "/api/generate",
            json!({ "model": "smol", "prompt": "hi", "options": { "temperature": -1 } }),
            400,
            "temperature",
        ),
        ("/api/generate", json!({ "model": "smol", "prompt": "hi", "options": { "top_p": 7 } }), 400, "top_p"),
        ("/api/generate", json!({ "model": "smol", "prompt": "hi", "options": { "num_ctx": 0 } }), 400, "num_ctx"),
        ("/api/generate", json!({ "model": "smol", "prompt": "hi", "suffix": "end" }), 400, "suffix"),
        ("/api/generate", json!({ "model": "smol", "prompt": "hi", "format": 5 }), 400, "format"),
        (
            "/api/generate",
            json!({ "model": "smol", "prompt": "hi", "format": { "type": "object", "properties": { "a": { "type": "nonsense-type" } } } }),
            400,
            "format",
        ),
        ("/api/generate", json!({ "model": "smol", "prompt": "hi", "keep_alive": "soon" }), 400, "keep_alive"),
        (
            "/api/generate",
            json!({ "model": "smol", "prompt": "hi", "template": "{{ range .Messages }}{{ end }}" }),
            400,
            "template",
        ),
        ("/api/generate", json!({ "model": "smol", "prompt": "hi", "think": true }), 400, "thinking"),
        ("/api/generate", json!({ "model": "../../etc/passwd", "prompt": "hi" }), 400, "invalid model name"),
        ("/api/generate", json!({ "model": "/etc/passwd", "prompt": "hi" }), 400, "invalid model name"),
        ("/api/chat", json!({ "model": "smol", "messages": [{ "role": "wizard", "content": "hi" }] }), 400, "role"),
        ("/api/chat", json!({ "model": "smol", "messages": "hi" }), 400, "messages"),
        (
            "/api/chat",
            json!({ "model": "smol", "messages": [{ "role": "user", "content": "hi", "images": ["aGk="] }] }),
            400,
            "images",
        ),
        (
            "/api/chat",
            json!({ "model": "smol", "messages": [{ "role": "user", "content": "hi" }], "tools": [{ "type": "retrieval", "function": { "name": "x" } }] }),
            400,
            "tool type",
        ),
        ("/api/embed", json!({ "model": "smol", "input": [] }), 400, "input"),
        ("/api/embed", json!({ "model": "smol", "input": "x", "dimensions": 100000 }), 400, "dimensions"),
        ("/api/show", json!({ "model": "missing" }), 404, "not found"),
        ("/api/copy", json!({ "source": "missing", "destination": "x" }), 404, "not found"),
        ("/api/copy", json!({ "source": "smol", "destination": "../x" }), 400, "invalid model name"),
        ("/api/create", json!({ "model": "x" }), 400, "from"),
        ("/api/create", json!({ "model": "x", "from": "/etc/passwd" }), 400, "invalid model name"),
        ("/api/create", json!({ "model": "x", "from": "smol", "quantize": "q4_K_M" }), 400, "quantize"),
        ("/api/create", json!({ "model": "x", "files": { "a.gguf": "sha256:123" } }), 400, "digest"),
        (
            "/api/create",
            json!({ "model": "x", "files": { "a.gguf": format!("sha256:{}", "1".repeat(64)) } }),
            400,
            "not found",
        ),
        ("/api/create", json!({ "model": "a b", "from": "smol" }), 400, "invalid model name"),
        (
            "/api/generate",
            json!({ "model": "smol", "prompt": "hi", "options": { "num_predict": 1_000_000_000_000i64 } }),
            400,
            "num_predict",
        ),
        ("/api/generate", json!({ "model": "smol", "prompt": "hi", "options": { "top_k": -5 } }), 400, "top_k"),
        (
            "/api/generate",
            json!({ "model": "smol", "prompt": "hi", "options": { "repeat_penalty": -1 } }),
            400,
            "penalty",
        ),
        ("/api/show", json!({ "model": "../../../etc/shadow" }), 400, "invalid model name"),
        ("/api/pull", json!({ "model": "..%2f..%2fetc" }), 400, "invalid model name"),
    ];
    for (path, body, status, needle) in cases {
        let (s, v) = post(path, body.clone()).await;
        assert_eq!(s, status, "{path} {body}: {v}");
        assert!(ollama_error(&v).contains(needle), "{path} {body}: {v} lacks {needle:?}");
    }
    let r = crate::util::client()
        .delete(crate::util::url("/api/delete"))
        .json(&json!({ "model": "missing" }))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 404);
    still_serving().await;
}

#[tokio::test]
async fn malformed_and_oversized_bodies() {
    for (path, body) in [
        ("/api/generate", "{\"model\": \"smol\", \"prompt\": "),
        ("/api/chat", "not json"),
        ("/api/generate", ""),
        ("/api/embed", "[1,2,3]"),
        // JSON has no NaN or infinities; numbers beyond f64 are not numbers either.
        ("/api/generate", "{\"model\": \"smol\", \"prompt\": \"hi\", \"options\": {\"temperature\": NaN}}"),
        ("/api/generate", "{\"model\": \"smol\", \"prompt\": \"hi\", \"options\": {\"top_p\": 1e400}}"),
        ("/api/chat", "{\"model\": \"smol\", \"messages\": [{\"role\": \"user\", \"content\": \"\\ud800\"}]"),
    ] {
        let (s, v) = post_raw(path, body).await;
        assert_eq!(s, 400, "{path} {body:?}: {v}");
        ollama_error(&v);
    }
    for (path, body) in [("/v1/chat/completions", "{\"model\":"), ("/v1/completions", "[]"), ("/v1/embeddings", "nope")]
    {
        let (s, v) = post_raw(path, body).await;
        assert_eq!(s, 400, "{path}: {v}");
        openai_error(&v);
    }
    let huge = "x".repeat(9 << 20);
    let (s, v) = post("/api/generate", json!({ "model": "smol", "prompt": huge })).await;
    assert_eq!(s, 413, "{v}");
    ollama_error(&v);
    let (s, v) = post("/v1/completions", json!({ "model": "smol", "prompt": "x".repeat(9 << 20) })).await;
    assert_eq!(s, 413);
    openai_error(&v);
    still_serving().await;
}

#[tokio::test]
async fn corrupt_and_truncated_gguf_files_are_refused_at_create() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "this is not a model").expect("write");
    let real = std::fs::read(crate::util::model_path()).expect("model");
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &real[..real.len() / 2]).expect("write");
    for (path, needle) in [(&text, "GGUF"), (&truncated, "truncated")] {
        let (s, v) = post("/api/create", json!({ "model": "broken", "from": path.to_str().expect("utf-8") })).await;
        assert_eq!(s, 400, "{}: {v}", path.display());
        assert!(ollama_error(&v).contains(needle), "{}: {v} lacks {needle:?}", path.display());
    }
    let (s, _) = post("/api/show", json!({ "model": "broken" })).await;
    assert_eq!(s, 404, "nothing half-created");
    still_serving().await;
}

#[tokio::test]
async fn prompt_past_the_context() {
    let long = "word ".repeat(3000);
    let (s, v) = post("/api/generate", json!({ "model": "smol", "prompt": long, "raw": true })).await;
    assert_eq!(s, 400);
    assert!(ollama_error(&v).contains("context"), "{v}");
    let (s, v) =
        post("/v1/chat/completions", json!({ "model": "smol", "messages": [{ "role": "user", "content": long }] }))
            .await;
    assert_eq!(s, 400);
    assert!(openai_error(&v).contains("context"));
    assert_eq!(v["error"]["code"], "prompt_too_long");
    still_serving().await;
}

#[tokio::test]
async fn openai_bad_requests() {
    let msgs = json!([{ "role": "user", "content": "hi" }]);
    let cases: Vec<(&str, serde_json::Value, u16, &str)> = vec![
        ("/v1/chat/completions", json!({ "messages": msgs }), 400, "model"),
        ("/v1/chat/completions", json!({ "model": "nope", "messages": msgs }), 404, "not found"),
        ("/v1/chat/completions", json!({ "model": "smol", "messages": [] }), 400, "messages"),
        ("/v1/chat/completions", json!({ "model": "smol", "messages": msgs, "n": 17 }), 400, "`n`"),
        ("/v1/chat/completions", json!({ "model": "smol", "messages": msgs, "top_logprobs": 3 }), 400, "top_logprobs"),
        (
            "/v1/chat/completions",
            json!({ "model": "smol", "messages": msgs, "logprobs": true, "top_logprobs": 50 }),
            400,
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            json!({ "model": "smol", "messages": msgs, "reasoning_effort": "extreme" }),
            400,
            "reasoning effort",
        ),
        ("/v1/chat/completions", json!({ "model": "smol", "messages": msgs, "max_tokens": 100000 }), 400, "max_tokens"),
        (
            "/v1/chat/completions",
            json!({ "model": "smol", "messages": [{ "role": "user", "content": "word ".repeat(3000) }] }),
            400,
            "context",
        ),
        ("/v1/chat/completions", json!({ "model": "smol", "messages": msgs, "temperature": 5000 }), 400, "temperature"),
        ("/v1/chat/completions", json!({ "model": "smol", "messages": msgs, "max_tokens": -5 }), 400, "max_tokens"),
        (
            "/v1/chat/completions",
            json!({ "model": "smol", "messages": msgs, "response_format": { "type": "yaml" } }),
            400,
            "response_format",
        ),
        (
            "/v1/chat/completions",
            json!({ "model": "smol", "messages": [{ "role": "user", "content": [{ "type": "image_url", "image_url": { "url": "x" } }] }] }),
            400,
            "image_url",
        ),
        (
            "/v1/chat/completions",
            json!({ "model": "smol", "messages": msgs, "tools": [{ "type": "function", "function": { "name": "f" } }], "tool_choice": { "type": "function", "function": { "name": "g" } } }),
            400,
            "tool_choice",
        ),
        ("/v1/completions", json!({ "model": "smol", "prompt": "" }), 400, "prompt"),
        ("/v1/completions", json!({ "model": "smol", "prompt": "hi", "echo": true }), 400, "echo"),
        ("/v1/completions", json!({ "model": "smol", "prompt": ["a", "b"] }), 400, "prompt"),
        ("/v1/embeddings", json!({ "model": "smol", "input": [1, 2, 3] }), 400, "input"),
        ("/v1/embeddings", json!({ "model": "smol", "input": "x", "encoding_format": "hex" }), 400, "encoding_format"),
    ];
    for (path, body, status, needle) in cases {
        let (s, v) = post(path, body.clone()).await;
        assert_eq!(s, status, "{path} {body}: {v}");
        let msg = openai_error(&v);
        assert!(msg.contains(needle), "{path} {body}: {msg:?} lacks {needle:?}");
    }
    still_serving().await;
}

#[tokio::test]
async fn disconnect_mid_stream_cancels_generation() {
    let server = crate::util::server();
    let (s, _) = post("/api/copy", json!({ "source": "smol", "destination": "smol-cancel" })).await;
    assert_eq!(s, 200);
    let acquired = server.registry.load_model("smol-cancel", &Default::default(), None).await.expect("load");
    let model = acquired.model.clone();
    drop(acquired);
    let before = model.stats();
    let mut resp = crate::util::client()
        .post(crate::util::url("/api/generate"))
        .json(&json!({ "model": "smol-cancel", "prompt": "Write a very long story.", "options": { "num_predict": 3000, "temperature": 0 } }))
        .send()
        .await
        .expect("request");
    // Read a few chunks, then hang up.
    for _ in 0..3 {
        resp.chunk().await.expect("chunk").expect("data");
    }
    drop(resp);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while model.stats().requests_cancelled == before.requests_cancelled {
        assert!(std::time::Instant::now() < deadline, "the disconnect did not cancel the generation");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(model.stats().last_cancelled_tokens < 500, "{:?}", model.stats());
    still_serving().await;
}
