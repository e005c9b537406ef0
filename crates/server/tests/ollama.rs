//! Ollama's API against the real server, engine and model.

use crate::util::{get, post, post_ndjson, server, url};
use serde_json::json;

fn greedy(n: u32) -> serde_json::Value {
    json!({ "temperature": 0, "num_predict": n })
}

#[tokio::test]
async fn root_and_version() {
    let r = reqwest::get(url("/")).await.expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("text"), "HyperLlama is running");
    let head = crate::util::client().head(url("/")).send().await.expect("head");
    assert_eq!(head.status(), 200);
    let (s, v) = get("/api/version").await;
    assert_eq!(s, 200);
    assert!(v["version"].is_string());
}

#[tokio::test]
async fn generate_streams_ndjson_with_final_stats() {
    let (s, ct, lines) = post_ndjson(
        "/api/generate",
        json!({ "model": "smol", "prompt": "Why is the sky blue?", "options": greedy(12) }),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(ct, "application/x-ndjson");
    let last = lines.last().expect("lines");
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "length");
    assert_eq!(last["eval_count"], 12);
    for k in ["total_duration", "prompt_eval_count", "prompt_eval_duration", "eval_duration"] {
        assert!(last[k].as_u64().expect(k) > 0, "{k}");
    }
    assert!(last.get("load_duration").is_some());
    let streamed: String = lines[..lines.len() - 1].iter().map(|l| l["response"].as_str().expect("response")).collect();
    assert!(lines[..lines.len() - 1].iter().all(|l| l["done"] == false && l["model"] == "smol"));

    // Non-streaming gives the same text in one object.
    let (s, v) = post(
        "/api/generate",
        json!({ "model": "smol", "prompt": "Why is the sky blue?", "options": greedy(12), "stream": false }),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["response"].as_str().expect("response"), streamed);
    assert_eq!(v["done"], true);
}

#[tokio::test]
async fn generate_raw_system_and_stop() {
    let (_, v) = post("/api/generate", json!({ "model": "smol", "prompt": "The capital of France is", "raw": true, "stream": false, "options": greedy(4) })).await;
    assert!(v["response"].as_str().expect("r").contains("Paris"), "{v}");
    let (_, full) = post(
        "/api/generate",
        json!({ "model": "smol", "prompt": "Write about Rome.", "stream": false, "options": greedy(30) }),
    )
    .await;
    let full = full["response"].as_str().expect("r").to_string();
    let word = full.split_whitespace().filter(|w| w.len() > 4).nth(2).expect("a word").to_string();
    let (_, cut) = post(
        "/api/generate",
        json!({ "model": "smol", "prompt": "Write about Rome.", "stream": false,
        "options": { "temperature": 0, "num_predict": 30, "stop": [word] } }),
    )
    .await;
    assert_eq!(cut["response"].as_str().expect("r"), &full[..full.find(&word).expect("word")]);
    assert_eq!(cut["done_reason"], "stop");
    let (_, a) = post(
        "/api/generate",
        json!({ "model": "smol", "prompt": "Who are you?", "stream": false, "options": greedy(10) }),
    )
    .await;
    let (_, b) = post("/api/generate", json!({ "model": "smol", "prompt": "Who are you?", "system": "You are a pirate.", "stream": false, "options": greedy(10) })).await;
    assert_ne!(a["response"], b["response"]);
    // A Go-style template override.
    let (s, t) = post(
        "/api/generate",
        json!({ "model": "smol", "prompt": "The capital of France is", "stream": false,
        "template": "{{ .Prompt }}", "options": greedy(4) }),
    )
    .await;
    assert_eq!(s, 200);
    assert!(t["response"].as_str().expect("r").contains("Paris"), "{t}");
}

#[tokio::test]
async fn chat_streaming_and_not() {
    let body = json!({ "model": "smol", "messages": [
        { "role": "system", "content": "Answer in one short sentence." },
        { "role": "user", "content": "What is the capital of France?" }], "options": greedy(30) });
    let (s, ct, lines) = post_ndjson("/api/chat", body.clone()).await;
    assert_eq!((s, ct.as_str()), (200, "application/x-ndjson"));
    let text: String = lines.iter().map(|l| l["message"]["content"].as_str().unwrap_or_default()).collect();
    assert!(text.contains("Paris"), "{text}");
    assert!(lines.iter().all(|l| l["message"]["role"] == "assistant"));
    let last = lines.last().expect("last");
    assert_eq!(last["done"], true);
    let mut body = body;
    body["stream"] = json!(false);
    let (_, v) = post("/api/chat", body).await;
    assert_eq!(v["message"]["content"].as_str().expect("content"), text);
}

#[tokio::test]
async fn chat_json_format_and_schema() {
    let (s, v) = post(
        "/api/chat",
        json!({ "model": "smol", "stream": false, "format": "json", "options": greedy(120),
        "messages": [{ "role": "user", "content": "Describe a cat as JSON with a name and an age." }] }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let parsed: serde_json::Value = serde_json::from_str(v["message"]["content"].as_str().expect("c")).expect("parses");
    assert!(parsed.is_object());
    let schema = json!({ "type": "object", "properties": { "city": { "type": "string", "maxLength": 30 }, "population": { "type": "integer" } },
                         "required": ["city", "population"] });
    let (s, v) = post(
        "/api/chat",
        json!({ "model": "smol", "stream": false, "format": schema, "options": greedy(100),
        "messages": [{ "role": "user", "content": "Tell me about Paris." }] }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let parsed: serde_json::Value = serde_json::from_str(v["message"]["content"].as_str().expect("c")).expect("parses");
    assert!(parsed["city"].is_string() && parsed["population"].is_i64(), "{parsed}");
}

#[tokio::test]
async fn chat_tools_are_offered_and_calls_parsed() {
    let tools = json!([{ "type": "function", "function": { "name": "get_weather", "description": "Get the current weather for a city",
        "parameters": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] } } }]);
    // A tool call constrained by a schema, so the 135M model reliably produces one.
    let schema = json!({ "type": "object", "properties": { "name": { "const": "get_weather" },
        "arguments": { "type": "object", "properties": { "city": { "type": "string", "maxLength": 20 } }, "required": ["city"] } },
        "required": ["name", "arguments"] });
    let (s, v) = post(
        "/api/chat",
        json!({ "model": "smol", "stream": false, "tools": tools, "format": schema, "options": greedy(60),
        "messages": [{ "role": "user", "content": "What is the weather in Paris?" }] }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let calls = v["message"]["tool_calls"].as_array().expect("tool_calls");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert!(calls[0]["function"]["arguments"]["city"].is_string());
    assert_eq!(v["message"]["content"], "");
    // A tool result goes back in the conversation.
    let (s, v) = post("/api/chat", json!({ "model": "smol", "stream": false, "tools": tools, "options": greedy(20),
        "messages": [{ "role": "user", "content": "What is the weather in Paris?" },
                     { "role": "assistant", "content": "", "tool_calls": [{ "function": { "name": "get_weather", "arguments": { "city": "Paris" } } }] },
                     { "role": "tool", "tool_name": "get_weather", "content": "22 degrees and sunny" }] })).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["message"]["content"].is_string());
}

#[tokio::test]
async fn embed_and_legacy_embeddings() {
    let (s, v) = post("/api/embed", json!({ "model": "smol", "input": ["a cat", "a dog", "tax law"] })).await;
    assert_eq!(s, 200, "{v}");
    let e = v["embeddings"].as_array().expect("embeddings");
    assert_eq!(e.len(), 3);
    let vecs: Vec<Vec<f64>> =
        e.iter().map(|x| x.as_array().expect("v").iter().map(|f| f.as_f64().expect("f")).collect()).collect();
    assert_eq!(vecs[0].len(), 576);
    let norm: f64 = vecs[0].iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3);
    assert!(v["prompt_eval_count"].as_u64().expect("count") > 3);
    let (_, one) = post("/api/embed", json!({ "model": "smol", "input": "a cat" })).await;
    assert_eq!(one["embeddings"].as_array().expect("e").len(), 1);
    let (_, d) = post("/api/embed", json!({ "model": "smol", "input": "a cat", "dimensions": 64 })).await;
    assert_eq!(d["embeddings"][0].as_array().expect("e").len(), 64);
    let (s, legacy) = post("/api/embeddings", json!({ "model": "smol", "prompt": "a cat" })).await;
    assert_eq!(s, 200);
    assert_eq!(legacy["embedding"].as_array().expect("e").len(), 576);
}

#[tokio::test]
async fn tags_show_copy_delete() {
    server();
    let (s, v) = get("/api/tags").await;
    assert_eq!(s, 200);
    let smol = v["models"]
        .as_array()
        .expect("models")
        .iter()
        .find(|m| m["name"] == "smol:latest")
        .expect("smol listed")
        .clone();
    assert_eq!(smol["details"]["format"], "gguf");
    assert_eq!(smol["details"]["family"], "llama");
    assert_eq!(smol["details"]["quantization_level"], "Q4_1");
    assert_eq!(smol["digest"].as_str().expect("digest").len(), 64);
    assert!(smol["size"].as_u64().expect("size") > 90_000_000);

    let (s, v) = post("/api/show", json!({ "model": "smol" })).await;
    assert_eq!(s, 200);
    assert!(v["template"].as_str().expect("template").contains("<|im_start|>"));
    assert_eq!(v["model_info"]["general.architecture"], "llama");
    assert_eq!(v["model_info"]["llama.embedding_length"], 576);
    assert!(v["modelfile"].as_str().expect("mf").starts_with("# Modelfile"));
    let mem = &v["memory_estimate"];
    assert_eq!(mem["context_length"], 2048);
    assert!(mem["total"].as_u64().expect("total") > mem["weights"].as_u64().expect("weights"));
    let (_, v4k) = post("/api/show", json!({ "model": "smol", "options": { "num_ctx": 8192 } })).await;
    assert_eq!(v4k["memory_estimate"]["kv_cache"].as_u64().expect("kv"), 4 * mem["kv_cache"].as_u64().expect("kv"));

    let (s, _) = post("/api/copy", json!({ "source": "smol", "destination": "me/smol-copy:v1" })).await;
    assert_eq!(s, 200);
    let (_, v) = get("/api/tags").await;
    let names: Vec<&str> = v["models"].as_array().expect("m").iter().filter_map(|m| m["name"].as_str()).collect();
    assert!(names.contains(&"me/smol-copy:v1"), "{names:?}");
    let r = crate::util::client()
        .delete(url("/api/delete"))
        .json(&json!({ "model": "me/smol-copy:v1" }))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 200);
    let r = crate::util::client()
        .delete(url("/api/delete"))
        .json(&json!({ "model": "me/smol-copy:v1" }))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 404);
    // The original's blob survived the copy's deletion.
    let (s, _) = post("/api/show", json!({ "model": "smol" })).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn blobs_create_and_pull() {
    let bytes = std::fs::read(crate::util::model_path()).expect("model");
    use sha2::Digest;
    let digest =
        format!("sha256:{}", sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect::<String>());
    let c = crate::util::client();
    // The server already holds this blob (smol), so HEAD finds it.
    assert_eq!(c.head(url(&format!("/api/blobs/{digest}"))).send().await.expect("head").status(), 200);
    let missing = format!("sha256:{}", "0".repeat(64));
    assert_eq!(c.head(url(&format!("/api/blobs/{missing}"))).send().await.expect("head").status(), 404);
    // A body whose digest does not match is refused, and nothing is stored.
    let r = c.post(url(&format!("/api/blobs/{missing}"))).body("not those bytes").send().await.expect("post");
    assert_eq!(r.status(), 400);
    assert_eq!(c.head(url(&format!("/api/blobs/{missing}"))).send().await.expect("head").status(), 404);
    let small = b"GGUF-ish but small";
    let small_digest =
        format!("sha256:{}", sha2::Sha256::digest(small).iter().map(|b| format!("{b:02x}")).collect::<String>());
    let r = c.post(url(&format!("/api/blobs/{small_digest}"))).body(&small[..]).send().await.expect("post");
    assert_eq!(r.status(), 201);
    // ...but creating a model from a blob that is not a GGUF is refused.
    let (s, v) =
        post("/api/create", json!({ "model": "bogus", "files": { "x.gguf": small_digest }, "stream": false })).await;
    assert_eq!(s, 400, "{v}");

    let (s, _, lines) = post_ndjson(
        "/api/create",
        json!({ "model": "smol-pirate", "files": { "smol.gguf": digest },
        "system": "You are a pirate.", "parameters": { "temperature": 0, "num_predict": 8 } }),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(lines.last().expect("lines")["status"], "success");
    let (_, v) = post("/api/show", json!({ "model": "smol-pirate" })).await;
    assert_eq!(v["system"], "You are a pirate.");
    assert!(v["parameters"].as_str().expect("p").contains("temperature"));
    // Stored parameters apply: num_predict 8.
    let (_, g) = post(
        "/api/generate",
        json!({ "model": "smol-pirate", "prompt": "Write a long essay about Rome.", "stream": false }),
    )
    .await;
    assert_eq!(g["eval_count"], 8, "{g}");
    assert_eq!(g["done_reason"], "length");
    // Create from another model.
    let (s, _) = post(
        "/api/create",
        json!({ "model": "smol-derived", "from": "smol-pirate", "system": "Be brief.", "stream": false }),
    )
    .await;
    assert_eq!(s, 200);
    let (_, v) = post("/api/show", json!({ "model": "smol-derived" })).await;
    assert_eq!(v["system"], "Be brief.");

    // Pull of a local model succeeds with Ollama's statuses; an unknown one is a clear 404.
    let (s, _, lines) = post_ndjson("/api/pull", json!({ "model": "smol" })).await;
    assert_eq!(s, 200);
    let statuses: Vec<&str> = lines.iter().filter_map(|l| l["status"].as_str()).collect();
    assert_eq!(statuses.first(), Some(&"pulling manifest"));
    assert_eq!(statuses.last(), Some(&"success"));
    let (s, v) = post("/api/pull", json!({ "model": "not-local" })).await;
    assert_eq!(s, 404);
    assert!(v["error"].as_str().expect("error").contains("not in the local store"), "{v}");
    // A hub name with no reachable hub is a 502 before any stream starts.
    let (s, v) = post("/api/pull", json!({ "model": "hf.co/nope/none" })).await;
    assert_eq!(s, 502, "{v}");
    assert!(v["error"].as_str().expect("error").contains("cannot reach the hub"), "{v}");
}

#[tokio::test]
async fn load_unload_and_ps() {
    server();
    let (s, _) = post("/api/copy", json!({ "source": "smol", "destination": "smol-ps" })).await;
    assert_eq!(s, 200);
    let (s, v) = post("/api/generate", json!({ "model": "smol-ps", "keep_alive": "10m" })).await;
    assert_eq!(s, 200);
    assert_eq!(v["done_reason"], "load");
    assert_eq!(v["response"], "");
    let (_, ps) = get("/api/ps").await;
    let entry = ps["models"]
        .as_array()
        .expect("models")
        .iter()
        .find(|m| m["name"] == "smol-ps:latest")
        .expect("loaded")
        .clone();
    assert_eq!(entry["context_length"], 2048);
    assert!(entry["expires_at"].is_string());
    assert!(entry["size"].as_u64().expect("size") > 0);
    let (s, v) = post("/api/chat", json!({ "model": "smol-ps", "messages": [], "keep_alive": 0 })).await;
    assert_eq!(s, 200);
    assert_eq!(v["done_reason"], "unload");
    let (_, ps) = get("/api/ps").await;
    assert!(ps["models"].as_array().expect("models").iter().all(|m| m["name"] != "smol-ps:latest"), "{ps}");
}

#[tokio::test]
async fn num_ctx_reloads_with_a_new_context() {
    server();
    let (s, _) = post("/api/copy", json!({ "source": "smol", "destination": "smol-ctx" })).await;
    assert_eq!(s, 200);
    let (s, _) = post("/api/generate", json!({ "model": "smol-ctx", "prompt": "hi", "stream": false, "options": { "num_ctx": 512, "num_predict": 2 } })).await;
    assert_eq!(s, 200);
    let (_, ps) = get("/api/ps").await;
    let e =
        ps["models"].as_array().expect("m").iter().find(|m| m["name"] == "smol-ctx:latest").expect("loaded").clone();
    assert_eq!(e["context_length"], 512);
    // A prompt longer than that context is the caller's error.
    let long = "word ".repeat(700);
    let (s, v) = post(
        "/api/generate",
        json!({ "model": "smol-ctx", "prompt": long, "raw": true, "stream": false, "options": { "num_ctx": 512 } }),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().expect("e").contains("context"), "{v}");
}
