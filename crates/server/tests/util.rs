//! One real server per test binary: the llama.cpp engine, the SmolLM2 model in a temporary
//! store as `smol`, on an ephemeral loopback port, served from its own runtime thread.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use hyperllama_server::{AppState, KeepAlive, Registry, RegistryConfig};
use hyperllama_store::{ModelName, Overrides, Source, Store};

pub use hyperllama_testutil::model_path;

pub struct TestServer {
    pub base: String,
    pub store: Store,
    pub registry: Arc<Registry>,
}

/// The configuration most tests use: 2048 tokens of context, kept loaded, and one sequence:
/// the tests of a binary run concurrently, and several of them compare two greedy runs of one
/// prompt, which is only bit-exact when no other sequence shares the batch (batched and
/// single decoding sum attention terms in a different order; see docs/ARCHITECTURE.md).
/// The scheduler's own tests start servers with several sequences.
pub fn test_config() -> RegistryConfig {
    RegistryConfig {
        ctx_size: Some(2048),
        threads: None,
        gpu_layers: None,
        engine_options: Vec::new(),
        parallel: 1,
        max_queue: hyperllama_server::DEFAULT_MAX_QUEUE,
        step_tokens: None,
        keep_alive: KeepAlive::Forever,
        max_loaded: 3,
        memory_limit: None,
        // No hub is reachable from these tests: pulls of hub names fail fast.
        hub: hyperllama_store::hub::HubConfig {
            endpoint: "http://127.0.0.1:9".into(),
            ..hyperllama_store::hub::HubConfig::from_env()
        },
    }
}

/// The binary's shared server, with [`test_config`].
pub fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| start(test_config()))
}

/// A new real server with `config`, on its own runtime thread, for the life of the process.
pub fn start(config: RegistryConfig) -> TestServer {
    start_with(config, |state| state)
}

/// [`start`], with the app state adjusted (keys, HTTP options) before serving.
pub fn start_with(config: RegistryConfig, adjust: impl FnOnce(AppState) -> AppState + Send + 'static) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let store = Store::open(dir.join("models")).expect("store");
    store
        .create(&ModelName::parse("smol").expect("name"), Source::File(model_path()), Overrides::default())
        .expect("import the test model");
    let registry =
        Arc::new(Registry::new(Arc::new(hyperllama_engine_llamacpp::LlamaCppEngine::new()), store.clone(), config));
    let (tx, rx) = std::sync::mpsc::channel();
    let state = adjust(AppState::new(registry.clone()));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            hyperllama_server::serve(listener, state, std::future::pending()).await.expect("serve");
        });
    });
    let addr = rx.recv().expect("server started");
    TestServer { base: format!("http://{addr}"), store, registry }
}

pub fn url(path: &str) -> String {
    format!("{}{path}", server().base)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// POSTs JSON to the shared server; returns status and body parsed as JSON (or
/// `Value::String` of the text).
pub async fn post(path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    hyperllama_testutil::http::post(&server().base, path, body).await
}

pub async fn post_raw(path: &str, body: &'static str) -> (u16, serde_json::Value) {
    hyperllama_testutil::http::post_raw(&server().base, path, body).await
}

pub async fn get(path: &str) -> (u16, serde_json::Value) {
    hyperllama_testutil::http::get(&server().base, path).await
}

/// POSTs and returns the NDJSON lines.
pub async fn post_ndjson(path: &str, body: serde_json::Value) -> (u16, String, Vec<serde_json::Value>) {
    hyperllama_testutil::http::post_ndjson(&server().base, path, body).await
}

/// POSTs and returns the SSE `data:` payloads.
pub async fn post_sse(path: &str, body: serde_json::Value) -> (u16, String, Vec<String>) {
    hyperllama_testutil::http::post_sse(&server().base, path, body).await
}
