//! The real router in process (`tower::ServiceExt::oneshot`) over the scripted mock engine:
//! every dialect's conversions and error shapes, golden stream transcripts, and the
//! registry's concurrency guarantees, without a model. (The real-model tests sit beside.)

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use hyperllama_engine::mock::{MockEngine, Script};
use hyperllama_server::{AppState, KeepAlive, Registry, RegistryConfig};
use hyperllama_store::{ModelName, Overrides, Source, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

/// A store with `fake` models (no real weights: the mock engine never reads them), a
/// registry over `engine`, and the router.
pub struct Harness {
    _dir: tempfile::TempDir,
    pub store: Store,
    pub registry: Arc<Registry>,
    pub state: AppState,
    pub engine: MockEngine,
}

impl Harness {
    pub fn new(script: Script) -> Self {
        Self::with(script, RegistryConfig { keep_alive: KeepAlive::Forever, ..RegistryConfig::default() })
    }

    pub fn with(script: Script, config: RegistryConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("models")).expect("store");
        // Different bytes, different blobs: a script can hold one model's load by its digest.
        for name in ["fake", "slow", "other"] {
            let weights = dir.path().join(format!("{name}.gguf"));
            std::fs::write(&weights, format!("GGUF not really: {name}")).expect("write");
            store
                .create(&ModelName::parse(name).expect("name"), Source::File(weights), Overrides::default())
                .expect("create");
        }
        let engine = MockEngine::new(script);
        let registry = Arc::new(Registry::new(Arc::new(engine.clone()), store.clone(), config));
        let state = AppState::new(registry.clone());
        Self { _dir: dir, store, registry, state, engine }
    }

    pub fn create(&self, name: &str, overrides: Overrides) {
        self.store
            .create(
                &ModelName::parse(name).expect("name"),
                Source::Model(ModelName::parse("fake").expect("n")),
                overrides,
            )
            .expect("create");
    }

    pub fn router(&self) -> Router {
        hyperllama_server::router(self.state.clone())
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, String) {
        send(self.router(), method, path, body).await
    }

    pub async fn json(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (s, text) = self.call(method, path, body).await;
        (s, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

pub async fn send(router: Router, method: &str, path: &str, body: Option<Value>) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty))
        .expect("request");
    let resp = router.oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Timestamps, durations and ids vary from run to run; a golden transcript does not.
fn normalise(text: &str) -> String {
    let mut out = Vec::new();
    for line in text.lines() {
        let (prefix, payload) = match line.strip_prefix("data: ") {
            Some(p) => ("data: ", p),
            None => ("", line),
        };
        let Ok(mut v) = serde_json::from_str::<Value>(payload) else {
            out.push(line.to_string());
            continue;
        };
        scrub(&mut v);
        out.push(format!("{prefix}{v}"));
    }
    out.join("\n") + "\n"
}

fn scrub(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match k.as_str() {
                    "created_at" | "created" | "id" | "item_id" | "call_id" | "completed_at" => *x = json!("<varies>"),
                    k if k.ends_with("_duration") => *x = json!("<ns>"),
                    _ => scrub(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(scrub),
        _ => {}
    }
}

/// Compares with `tests/golden/<name>`; `HYPERLLAMA_BLESS=1` writes it instead.
fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    let actual = normalise(actual);
    if std::env::var("HYPERLLAMA_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &actual).expect("bless");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: run with HYPERLLAMA_BLESS=1", path.display()));
    assert_eq!(actual, expected, "transcript {name} changed (HYPERLLAMA_BLESS=1 to accept)");
}

fn answer(text: &str) -> Script {
    Script { answer: Some(text.into()), per_token: Duration::ZERO, ..Script::default() }
}

#[tokio::test]
async fn golden_transcripts_of_every_stream() {
    let h = Harness::new(answer("Paris is the capital."));
    let (s, t) =
        h.call("POST", "/api/generate", Some(json!({ "model": "fake", "prompt": "Capital of France?" }))).await;
    assert_eq!(s, 200);
    golden("ollama_generate.ndjson", &t);
    let (s, t) = h
        .call(
            "POST",
            "/api/chat",
            Some(json!({ "model": "fake", "messages": [{ "role": "user", "content": "Capital?" }] })),
        )
        .await;
    assert_eq!(s, 200);
    golden("ollama_chat.ndjson", &t);
    let (s, t) = h
        .call(
            "POST",
            "/v1/chat/completions",
            Some(json!({ "model": "fake", "stream": true, "stream_options": { "include_usage": true },
                         "messages": [{ "role": "user", "content": "Capital?" }] })),
        )
        .await;
    assert_eq!(s, 200);
    golden("openai_chat.sse", &t);
    let (s, t) = h
        .call(
            "POST",
            "/v1/completions",
            Some(json!({ "model": "fake", "stream": true, "prompt": "Capital?", "max_tokens": 3 })),
        )
        .await;
    assert_eq!(s, 200);
    golden("openai_completions.sse", &t);
    let tools =
        json!([{ "type": "function", "function": { "name": "get_weather", "parameters": { "type": "object" } } }]);
    let h = Harness::new(answer(
        "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}</tool_call>",
    ));
    let (s, t) = h
        .call(
            "POST",
            "/v1/chat/completions",
            Some(json!({ "model": "fake", "stream": true, "tools": tools, "messages": [{ "role": "user", "content": "Weather?" }] })),
        )
        .await;
    assert_eq!(s, 200);
    golden("openai_tool_call.sse", &t);
    // Two calls in one answer: each its own index and id, arguments as deltas.
    let h = Harness::new(answer(
        "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}</tool_call>\n\
         <tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}</tool_call>",
    ));
    let ask = json!([{ "role": "user", "content": "Weather in Paris and Rome?" }]);
    let (s, t) = h
        .call(
            "POST",
            "/v1/chat/completions",
            Some(json!({ "model": "fake", "stream": true, "tools": tools, "messages": ask })),
        )
        .await;
    assert_eq!(s, 200);
    golden("openai_two_tool_calls.sse", &t);
    let mut calls: Vec<(String, String)> = Vec::new();
    for line in t.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|l| *l != "[DONE]") {
        let v: Value = serde_json::from_str(line).expect("chunk");
        for d in v["choices"][0]["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let i = d["index"].as_u64().expect("index") as usize;
            if let Some(id) = d["id"].as_str() {
                assert_eq!(i, calls.len(), "calls are announced in order");
                calls.push((id.to_string(), String::new()));
            }
            calls[i].1.push_str(d["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(calls.len(), 2);
    assert_ne!(calls[0].0, calls[1].0);
    assert_eq!(serde_json::from_str::<Value>(&calls[1].1).expect("args"), json!({ "city": "Rome" }));
    let (s, t) = h
        .call(
            "POST",
            "/v1/messages",
            Some(json!({ "model": "fake", "stream": true, "max_tokens": 64,
            "tools": [{ "name": "get_weather", "input_schema": { "type": "object" } }], "messages": ask })),
        )
        .await;
    assert_eq!(s, 200);
    golden("anthropic_two_tool_uses.sse", &t);
    let (s, t) = h
        .call(
            "POST",
            "/v1/responses",
            Some(json!({ "model": "fake", "stream": true, "input": "Weather?",
            "tools": [{ "type": "function", "name": "get_weather", "parameters": { "type": "object" } }] })),
        )
        .await;
    assert_eq!(s, 200);
    golden("openai_responses_calls.sse", &t);
    let h = Harness::new(answer("Paris is the capital."));
    let (s, t) = h
        .call(
            "POST",
            "/v1/messages",
            Some(json!({ "model": "fake", "stream": true, "max_tokens": 64,
            "messages": [{ "role": "user", "content": "Capital?" }] })),
        )
        .await;
    assert_eq!(s, 200);
    golden("anthropic_messages.sse", &t);
    let (s, t) =
        h.call("POST", "/v1/responses", Some(json!({ "model": "fake", "stream": true, "input": "Capital?" }))).await;
    assert_eq!(s, 200);
    golden("openai_responses.sse", &t);
}

#[tokio::test]
async fn the_openapi_document_covers_exactly_the_routes() {
    let h = Harness::new(Script::default());
    let mut routes: Vec<(String, String)> =
        hyperllama_server::route_table(&h.state).into_iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    let mut documented: Vec<(String, String)> =
        hyperllama_server::openapi::operations().into_iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    routes.sort();
    documented.sort();
    let missing: Vec<_> = routes.iter().filter(|r| !documented.contains(r)).collect();
    let extra: Vec<_> = documented.iter().filter(|d| !routes.contains(d)).collect();
    assert!(missing.is_empty(), "routes without an operation in the OpenAPI document: {missing:?}");
    assert!(extra.is_empty(), "documented operations without a route: {extra:?}");
    // And the server serves the document.
    let (s, v) = h.json("GET", "/openapi.json", None).await;
    assert_eq!(s, 200);
    assert!(v["paths"]["/v1/messages"]["post"]["requestBody"].is_object(), "{}", v["paths"]["/v1/messages"]);
    assert!(v["paths"]["/v1/models/{id}"]["get"]["parameters"].is_array());
}

#[tokio::test]
async fn every_dialect_answers_bad_input_in_its_own_shape() {
    let h = Harness::new(Script::default());
    // (path, body, status, what the message names)
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("/api/generate", json!({ "prompt": "x" }), 400, "model"),
        ("/api/generate", json!({ "model": "nope", "prompt": "x" }), 404, "not found"),
        ("/api/generate", json!({ "model": "fake", "prompt": "x", "options": { "num_ctx": 0 } }), 400, "num_ctx"),
        ("/api/generate", json!({ "model": "fake", "prompt": "x", "options": { "top_k": -4 } }), 400, "top_k"),
        ("/api/generate", json!({ "model": "fake", "prompt": "x", "keep_alive": "soon" }), 400, "keep_alive"),
        ("/api/generate", json!({ "model": "fake", "prompt": "x", "format": 7 }), 400, "format"),
        ("/api/chat", json!({ "model": "fake", "messages": [{ "role": "wizard", "content": "x" }] }), 400, "role"),
        (
            "/api/chat",
            json!({ "model": "../../etc", "messages": [{ "role": "user", "content": "x" }] }),
            400,
            "invalid model name",
        ),
        ("/api/embed", json!({ "model": "fake", "input": [] }), 400, "input"),
        ("/v1/chat/completions", json!({ "model": "fake", "messages": [] }), 400, "messages"),
        (
            "/v1/chat/completions",
            json!({ "model": "nope", "messages": [{ "role": "user", "content": "x" }] }),
            404,
            "not found",
        ),
        (
            "/v1/chat/completions",
            json!({ "model": "fake", "n": 1000, "messages": [{ "role": "user", "content": "x" }] }),
            400,
            "`n`",
        ),
        (
            "/v1/chat/completions",
            json!({ "model": "fake", "max_tokens": 0, "messages": [{ "role": "user", "content": "x" }] }),
            400,
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            json!({ "model": "fake", "temperature": -1, "messages": [{ "role": "user", "content": "x" }] }),
            400,
            "temperature",
        ),
        (
            "/v1/chat/completions",
            json!({ "model": "fake", "tool_choice": { "function": { "name": "f" } }, "messages": [{ "role": "user", "content": "x" }] }),
            400,
            "tool_choice",
        ),
        ("/v1/completions", json!({ "model": "fake", "prompt": "" }), 400, "prompt"),
        (
            "/v1/chat/completions",
            json!({ "model": "fake", "logprobs": true, "top_logprobs": 21, "messages": [{ "role": "user", "content": "x" }] }),
            400,
            "top_logprobs",
        ),
        ("/v1/responses", json!({ "model": "fake" }), 400, "input"),
        (
            "/v1/responses",
            json!({ "model": "fake", "input": "x", "previous_response_id": "resp_nope" }),
            404,
            "resp_nope",
        ),
        ("/v1/responses", json!({ "model": "fake", "input": [{ "type": "mystery" }] }), 400, "mystery"),
        (
            "/v1/messages",
            json!({ "model": "fake", "messages": [{ "role": "user", "content": "x" }] }),
            400,
            "max_tokens",
        ),
        (
            "/v1/messages",
            json!({ "model": "fake", "max_tokens": 5, "messages": [{ "role": "user", "content": [{ "type": "hologram" }] }] }),
            400,
            "hologram",
        ),
        (
            "/v1/messages",
            json!({ "model": "nope", "max_tokens": 5, "messages": [{ "role": "user", "content": "x" }] }),
            404,
            "not found",
        ),
        (
            "/v1/messages",
            json!({ "model": "fake", "max_tokens": 5, "tool_choice": { "type": "sometimes" }, "messages": [{ "role": "user", "content": "x" }] }),
            400,
            "tool_choice",
        ),
        ("/v1/messages/count_tokens", json!({ "model": "fake", "messages": [] }), 400, "messages"),
        ("/tokenize", json!({ "model": "nope", "content": "x" }), 404, "not found"),
        ("/detokenize", json!({ "model": "fake", "tokens": [-3] }), 400, "token"),
        ("/v1/embeddings", json!({ "model": "fake", "input": "x", "encoding_format": "hex" }), 400, "encoding_format"),
    ];
    for (path, body, status, needle) in cases {
        let (s, v) = h.json("POST", path, Some(body.clone())).await;
        assert_eq!(s.as_u16(), status, "{path} {body}: {v}");
        let message = if path.starts_with("/v1/messages") {
            assert!(v["type"] == "error" && v["error"]["type"].is_string(), "Anthropic's shape: {v}");
            v["error"]["message"].as_str().expect("message")
        } else if path.starts_with("/v1") || !path.starts_with("/api") {
            assert!(v["error"]["type"].is_string() && v["error"]["code"].is_string(), "OpenAI's shape: {v}");
            v["error"]["message"].as_str().expect("message")
        } else {
            v["error"].as_str().expect("Ollama's shape")
        };
        assert!(message.contains(needle), "{path} {body}: {message:?} lacks {needle:?}");
    }
    // Malformed JSON: the dialect's shape, naming the problem.
    let (s, t) = send(h.router(), "POST", "/v1/chat/completions", None).await;
    assert_eq!(s, 400);
    assert!(t.contains("\"error\"") && t.contains("empty"), "{t}");
    let (s, v) = h.json("POST", "/api/chat", Some(json!({ "model": 5 }))).await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().is_some_and(|m| m.contains("model")), "{v}");
}

#[tokio::test]
async fn a_modelfile_system_prompt_applies_in_every_dialect() {
    let h = Harness::new(Script { per_token: Duration::ZERO, ..Script::default() });
    h.create("sys", Overrides { system: Some("Answer like a pirate.".into()), ..Overrides::default() });
    let (_, ollama) = h
        .json(
            "POST",
            "/api/chat",
            Some(json!({ "model": "sys", "stream": false, "messages": [{ "role": "user", "content": "Hi" }] })),
        )
        .await;
    let (_, openai) = h
        .json(
            "POST",
            "/v1/chat/completions",
            Some(json!({ "model": "sys", "messages": [{ "role": "user", "content": "Hi" }] })),
        )
        .await;
    let a = ollama["message"]["content"].as_str().expect("ollama answer");
    let b = openai["choices"][0]["message"]["content"].as_str().expect("openai answer");
    // The mock echoes the rendered prompt: both saw the SYSTEM line.
    assert!(a.contains("pirate"), "{a}");
    assert_eq!(a, b);
    // A TEMPLATE applies to chats through /v1 too.
    h.create("tmpl", Overrides { template: Some("<<{{ .Prompt }}>>{{ .Response }}".into()), ..Overrides::default() });
    let (_, v) = h
        .json(
            "POST",
            "/v1/chat/completions",
            Some(json!({ "model": "tmpl", "messages": [{ "role": "user", "content": "Hi" }] })),
        )
        .await;
    assert_eq!(v["choices"][0]["message"]["content"], "<<Hi>> ", "{v}");
}

#[tokio::test]
async fn a_request_with_other_load_options_never_breaks_a_running_stream() {
    let h = Harness::new(Script { per_token: Duration::from_millis(20), ..Script::default() });
    let long = "word ".repeat(60);
    let first = tokio::spawn(send(
        h.router(),
        "POST",
        "/api/generate",
        Some(json!({ "model": "fake", "prompt": long, "raw": true })),
    ));
    // Wait until it streams, then ask for the same model with another context size.
    let reg = h.registry.clone();
    hyperllama_testutil::eventually(Duration::from_secs(5), "the first stream to start", || {
        let reg = reg.clone();
        async move { reg.running().iter().any(|r| r.busy) }
    })
    .await;
    let (s, v) = h
        .json(
            "POST",
            "/api/generate",
            Some(json!({ "model": "fake", "prompt": "short", "stream": false, "options": { "num_ctx": 1024 } })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(!first.is_finished(), "the second request was served beside the first, which still streams");
    let (s, text) = first.await.expect("join");
    assert_eq!(s, 200);
    let last: Value = serde_json::from_str(text.lines().last().expect("lines")).expect("json");
    assert_eq!(last["done"], true, "the first stream ended normally: {last}");
    assert!(!text.contains("\"error\""), "{text}");
    assert_eq!(h.engine.calls().loads.load(Ordering::Relaxed), 2, "two variants, loaded side by side");
    // Once idle, the old variant goes when the next request for the new options comes.
    let (s, _) = h
        .json(
            "POST",
            "/api/generate",
            Some(json!({ "model": "fake", "prompt": "again", "stream": false, "options": { "num_ctx": 1024 } })),
        )
        .await;
    assert_eq!(s, 200);
    let ctxs: Vec<u32> = h.registry.running().iter().map(|r| r.context_length).collect();
    assert_eq!(ctxs, [1024], "the idle copy with the old options was unloaded");
}

/// The blob digest of a model of a harness's store (a load's path contains it).
fn blob_hex(store: &Store, name: &str) -> String {
    store.get(&ModelName::parse(name).expect("name")).expect("stored").model.hex().to_string()
}

#[tokio::test]
async fn a_slow_load_stalls_nothing_else() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let dir = tempfile::tempdir().expect("tempdir");
    let probe = Store::open(dir.path().join("models")).expect("store");
    let slow_file = dir.path().join("slow.gguf");
    std::fs::write(&slow_file, "GGUF not really: slow").expect("write");
    let slow_hex =
        probe.write_blob(std::fs::File::open(&slow_file).expect("open"), None).expect("blob").hex().to_string();
    let h = Harness::new(Script {
        load_gate: Some((slow_hex.clone(), gate.clone())),
        per_token: Duration::ZERO,
        ..Script::default()
    });
    assert_eq!(blob_hex(&h.store, "slow"), slow_hex, "the same bytes, the same digest");
    let held = tokio::spawn(send(
        h.router(),
        "POST",
        "/api/generate",
        Some(json!({ "model": "slow", "prompt": "x", "stream": false })),
    ));
    hyperllama_testutil::eventually(Duration::from_secs(5), "the slow load to start", || {
        let loads = h.registry.residents().loads();
        async move { loads >= 1 }
    })
    .await;
    // While it is held, everything else answers: another model loads and generates, and
    // /api/ps, /metrics and the model lists are served.
    let other = tokio::time::timeout(
        Duration::from_secs(5),
        h.json("POST", "/api/generate", Some(json!({ "model": "fake", "prompt": "hello there", "stream": false }))),
    )
    .await
    .expect("another model is served while a load is in progress");
    assert_eq!(other.0, 200, "{}", other.1);
    for path in ["/api/ps", "/metrics", "/api/tags", "/v1/models"] {
        let r = tokio::time::timeout(Duration::from_secs(5), h.call("GET", path, None)).await;
        assert!(matches!(r, Ok((StatusCode::OK, _))), "{path} answered while a load is in progress");
    }
    let (_, ps) = h.json("GET", "/api/ps", None).await;
    assert_eq!(ps["models"].as_array().map(Vec::len), Some(1), "only the loaded model is listed: {ps}");
    assert!(!held.is_finished(), "the slow load is still held");
    // A second request for the held model waits for the same load (one load, not two).
    let second = tokio::spawn(send(
        h.router(),
        "POST",
        "/api/generate",
        Some(json!({ "model": "slow", "prompt": "y", "stream": false })),
    ));
    gate.add_permits(1);
    assert_eq!(held.await.expect("join").0, 200);
    assert_eq!(second.await.expect("join").0, 200);
    let slow_loads = h
        .engine
        .calls()
        .load_options
        .lock()
        .expect("lock")
        .iter()
        .filter(|o| o.path.display().to_string().contains(&slow_hex))
        .count();
    assert_eq!(slow_loads, 1, "waiters share the one load");
}

#[tokio::test]
async fn creating_from_a_server_path_is_for_local_users_or_an_explicit_flag() {
    let h = Harness::new(Script::default());
    let path = hyperllama_testutil::model_path();
    let body = json!({ "model": "frompath", "from": path.display().to_string(), "stream": false });
    // No peer address known (not loopback): refused.
    let (s, v) = h.json("POST", "/api/create", Some(body.clone())).await;
    assert_eq!(s, 403, "{v}");
    assert!(v["error"].as_str().is_some_and(|m| m.contains("allow-local-paths")), "{v}");
    let loopback = MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000)));
    let remote = MockConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000)));
    let (s, v) = send(h.router().layer(remote), "POST", "/api/create", Some(body.clone())).await;
    assert_eq!(s, 403, "a remote client: {v}");
    let (s, v) = send(h.router().layer(loopback), "POST", "/api/create", Some(body.clone())).await;
    assert_eq!(s, 200, "this machine's own user: {v}");
    // With keys on, loopback alone is not enough; the operator's flag is.
    let keyed = AppState {
        auth: Arc::new(
            hyperllama_server::auth::Auth::new(vec![hyperllama_server::auth::KeySpec {
                name: "k".into(),
                key: "0123456789abcdef0123".into(),
                limits: Default::default(),
            }])
            .expect("keys"),
        ),
        ..h.state.clone()
    };
    let req = |router: Router| async move {
        let r = Request::builder()
            .method("POST")
            .uri("/api/create")
            .header("content-type", "application/json")
            .header("authorization", "Bearer 0123456789abcdef0123")
            .body(Body::from(json!({ "model": "frompath2", "from": hyperllama_testutil::model_path().display().to_string(), "stream": false }).to_string()))
            .expect("request");
        router.oneshot(r).await.expect("infallible").status()
    };
    assert_eq!(req(hyperllama_server::router(keyed.clone()).layer(loopback)).await, 403);
    let allowed = AppState {
        http: Arc::new(hyperllama_server::HttpOptions {
            allow_local_paths: true,
            ..hyperllama_server::HttpOptions::default()
        }),
        ..keyed
    };
    assert_eq!(req(hyperllama_server::router(allowed).layer(remote)).await, 200);
}

#[tokio::test]
async fn without_the_web_ui_nothing_is_served_under_ui_and_browsers_get_the_liveness_text() {
    let h = Harness::new(Script::default());
    let state = AppState {
        http: Arc::new(hyperllama_server::HttpOptions { webui: false, ..hyperllama_server::HttpOptions::default() }),
        ..h.state.clone()
    };
    let router = hyperllama_server::router(state);
    let r = Request::get("/ui/").body(Body::empty()).expect("request");
    assert_eq!(router.clone().oneshot(r).await.expect("infallible").status(), StatusCode::NOT_FOUND);
    let r = Request::get("/").header("accept", "text/html").body(Body::empty()).expect("request");
    let resp = router.oneshot(r).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    // And with it on (the default), the same request is sent to the UI.
    let r = Request::get("/").header("accept", "text/html").body(Body::empty()).expect("request");
    let resp = hyperllama_server::router(h.state.clone()).oneshot(r).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
}
