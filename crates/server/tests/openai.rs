//! OpenAI's API against the real server, engine and model.

use crate::util::{get, post, post_sse};
use serde_json::json;

fn chat(n: u32) -> serde_json::Value {
    json!({ "model": "smol", "temperature": 0, "max_tokens": n,
            "messages": [{ "role": "system", "content": "Answer in one short sentence." }, { "role": "user", "content": "What is the capital of France?" }] })
}

#[tokio::test]
async fn chat_completion_non_streaming() {
    let (s, v) = post("/v1/chat/completions", chat(30)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().expect("id").starts_with("chatcmpl-"));
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(v["choices"][0]["message"]["content"].as_str().expect("c").contains("Paris"), "{v}");
    let u = &v["usage"];
    assert_eq!(
        u["total_tokens"],
        u["prompt_tokens"].as_u64().expect("p") + u["completion_tokens"].as_u64().expect("c")
    );
    assert!(u["prompt_tokens_details"]["cached_tokens"].is_u64());
    let (_, v2) = post("/v1/chat/completions", chat(30)).await;
    assert_ne!(v["id"], v2["id"], "ids are unique");
    assert_eq!(v["choices"][0]["message"]["content"], v2["choices"][0]["message"]["content"]);
    let (_, v3) = post("/v1/chat/completions", chat(3)).await;
    assert_eq!(v3["choices"][0]["finish_reason"], "length");
    assert_eq!(v3["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn chat_completion_streaming_sse() {
    let mut body = chat(30);
    body["stream"] = json!(true);
    body["stream_options"] = json!({ "include_usage": true });
    let (s, ct, data) = post_sse("/v1/chat/completions", body).await;
    assert_eq!(s, 200);
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<serde_json::Value> =
        data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).expect("json")).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    let (_, whole) = post("/v1/chat/completions", chat(30)).await;
    assert_eq!(text, whole["choices"][0]["message"]["content"].as_str().expect("c"));
    let usage = chunks.last().expect("usage chunk");
    assert_eq!(usage["choices"].as_array().expect("choices").len(), 0);
    assert!(usage["usage"]["completion_tokens"].as_u64().expect("n") > 0);
    let fin = &chunks[chunks.len() - 2];
    assert!(fin["choices"][0]["finish_reason"].is_string());
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
}

#[tokio::test]
async fn completions_and_defaults() {
    let (s, v) = post(
        "/v1/completions",
        json!({ "model": "smol", "prompt": "The capital of France is", "temperature": 0, "max_tokens": 4 }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert!(v["choices"][0]["text"].as_str().expect("t").contains("Paris"));
    // OpenAI's default max_tokens for completions is 16.
    let (_, v) = post(
        "/v1/completions",
        json!({ "model": "smol", "prompt": "Once upon a time", "temperature": 0, "stop": null }),
    )
    .await;
    assert!(v["usage"]["completion_tokens"].as_u64().expect("n") <= 16);
    let (s, _, data) = post_sse("/v1/completions", json!({ "model": "smol", "prompt": "The capital of France is", "temperature": 0, "max_tokens": 4, "stream": true })).await;
    assert_eq!(s, 200);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let text: String = data[..data.len() - 1]
        .iter()
        .map(|d| {
            serde_json::from_str::<serde_json::Value>(d).expect("json")["choices"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(text.contains("Paris"));
}

#[tokio::test]
async fn response_format_json_schema() {
    let schema = json!({ "type": "object", "properties": { "name": { "type": "string", "maxLength": 20 }, "age": { "type": "integer" } },
                         "required": ["name", "age"], "additionalProperties": false });
    let (s, v) = post(
        "/v1/chat/completions",
        json!({ "model": "smol", "temperature": 0, "max_tokens": 100,
        "messages": [{ "role": "user", "content": "Invent a person." }],
        "response_format": { "type": "json_schema", "json_schema": { "name": "person", "schema": schema } } }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let p: serde_json::Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().expect("c")).expect("parses");
    assert!(p["name"].is_string() && p["age"].is_i64(), "{p}");
    let (s, v) = post(
        "/v1/chat/completions",
        json!({ "model": "smol", "temperature": 0, "max_tokens": 120,
        "messages": [{ "role": "user", "content": "Describe a cat as JSON with a name and an age." }],
        "response_format": { "type": "json_object" } }),
    )
    .await;
    assert_eq!(s, 200);
    let p: serde_json::Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().expect("c")).expect("parses");
    assert!(p.is_object());
}

#[tokio::test]
async fn tool_calls_finish_with_tool_calls() {
    let tools = json!([{ "type": "function", "function": { "name": "get_weather", "description": "Weather in a city",
        "parameters": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] } } }]);
    let schema = json!({ "type": "object", "properties": { "name": { "const": "get_weather" },
        "arguments": { "type": "object", "properties": { "city": { "type": "string", "maxLength": 20 } }, "required": ["city"] } },
        "required": ["name", "arguments"] });
    let (s, v) = post(
        "/v1/chat/completions",
        json!({ "model": "smol", "temperature": 0, "max_tokens": 60, "tools": tools,
        "response_format": { "type": "json_schema", "json_schema": { "name": "call", "schema": schema } },
        "messages": [{ "role": "user", "content": "What is the weather in Paris?" }] }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: serde_json::Value =
        serde_json::from_str(call["function"]["arguments"].as_str().expect("string args")).expect("json args");
    assert!(args["city"].is_string());
    assert!(call["id"].as_str().expect("id").starts_with("call_"));
    // tool_choice "none" turns the tools off.
    let (s, v) = post(
        "/v1/chat/completions",
        json!({ "model": "smol", "temperature": 0, "max_tokens": 10, "tools": tools, "tool_choice": "none",
        "messages": [{ "role": "user", "content": "Hi" }] }),
    )
    .await;
    assert_eq!(s, 200);
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
}

#[tokio::test]
async fn embeddings_float_and_base64() {
    let (s, v) = post("/v1/embeddings", json!({ "model": "smol", "input": ["hello", "world"] })).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().expect("data").len(), 2);
    assert_eq!(v["data"][1]["index"], 1);
    let floats: Vec<f32> =
        v["data"][0]["embedding"].as_array().expect("e").iter().map(|x| x.as_f64().expect("f") as f32).collect();
    assert_eq!(floats.len(), 576);
    let (_, b) =
        post("/v1/embeddings", json!({ "model": "smol", "input": "hello", "encoding_format": "base64" })).await;
    let b64 = b["data"][0]["embedding"].as_str().expect("base64 string");
    let decoded = decode_base64(b64);
    assert_eq!(decoded.len(), 576 * 4);
    let from_b64: Vec<f32> = decoded.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    for (a, b) in from_b64.iter().zip(&floats) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[tokio::test]
async fn models_list_and_get() {
    let (s, v) = get("/v1/models").await;
    assert_eq!(s, 200);
    assert_eq!(v["object"], "list");
    let m = v["data"].as_array().expect("data").iter().find(|m| m["id"] == "smol:latest").expect("smol").clone();
    assert_eq!(m["object"], "model");
    assert_eq!(m["owned_by"], "library");
    let (s, v) = get("/v1/models/smol:latest").await;
    assert_eq!(s, 200);
    assert_eq!(v["id"], "smol:latest");
    let (s, v) = get("/v1/models/nope").await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk.iter().filter(|&&c| c != b'=').fold(0u32, |acc, &c| (acc << 6) | val(c)) << (6 * pad);
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}
