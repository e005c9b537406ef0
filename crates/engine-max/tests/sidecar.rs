//! The sidecar supervisor with the real sidecar (`python -m hyperllama_max` from the MAX
//! environment that scripts/setup-max.sh makes; no model is loaded, so MAX does not compile):
//! it starts and answers health with the shared secret, comes back as a new generation after a
//! `kill -9`, is checked when a caller reports it (kept when it answers, replaced when it hangs),
//! and stops for good on shutdown. A missing environment is a clear failure.

use std::time::Duration;

use hyperllama_engine::{Engine, Health, LoadOptions};
use hyperllama_engine_max::{MaxEngine, Sidecar, SidecarConfig, SidecarState};

fn config() -> SidecarConfig {
    let c = SidecarConfig::from_env();
    assert!(
        c.python.exists(),
        "{} missing: run scripts/setup-max.sh (or set HYPERLLAMA_MAX_PYTHON)",
        c.python.display()
    );
    SidecarConfig { url: None, secret: None, start_timeout: Duration::from_secs(120), ..c }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_restarts_a_killed_sidecar_and_stops_it_on_shutdown() {
    let sidecar = Sidecar::new(config());
    let (url, generation) = sidecar.ready().await.expect("sidecar starts");
    assert_eq!(generation, 1);
    let SidecarState::Ready { pid: Some(pid), .. } = sidecar.state() else { panic!("no pid: {:?}", sidecar.state()) };

    // The secret is required.
    let r = reqwest::get(format!("{url}/health")).await.expect("health");
    assert_eq!(r.status(), 401);
    let r = sidecar.request(reqwest::Method::GET, &format!("{url}/health")).send().await.expect("health");
    assert_eq!(r.status(), 200);

    // kill -9: the supervisor notices and starts generation 2.
    std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (url2, generation2) = loop {
        if let SidecarState::Ready { url, generation, .. } = sidecar.state() {
            if generation > 1 {
                break (url, generation);
            }
        }
        assert!(std::time::Instant::now() < deadline, "no restart: {:?}", sidecar.state());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(generation2, 2);
    assert_eq!(sidecar.restarts(), 1);
    let r = sidecar.request(reqwest::Method::GET, &format!("{url2}/health")).send().await.expect("health");
    assert_eq!(r.status(), 200);

    let SidecarState::Ready { pid: Some(pid2), .. } = sidecar.state() else { panic!("no pid") };
    sidecar.shutdown().await;
    assert_eq!(sidecar.state(), SidecarState::Stopped);
    assert!(!std::path::Path::new(&format!("/proc/{pid2}")).exists(), "the sidecar process is gone");
    assert!(sidecar.ready().await.is_err(), "a stopped sidecar stays stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_sidecar_is_kept_when_it_answers_and_replaced_when_it_hangs() {
    let sidecar = Sidecar::new(config());
    let (url, generation) = sidecar.ready().await.expect("sidecar starts");
    // A caller that could not reach generation 1 reports it; the supervisor finds it answering
    // and the caller gets the same one back.
    let (again, same) = sidecar.ready_after(generation).await.expect("ready");
    assert_eq!((again.as_str(), same), (url.as_str(), generation));
    assert_eq!(sidecar.restarts(), 0);

    // A hung sidecar (stopped, so it never answers) is killed and replaced once reported.
    let SidecarState::Ready { pid: Some(pid), .. } = sidecar.state() else { panic!("no pid") };
    std::process::Command::new("kill").args(["-STOP", &pid.to_string()]).status().expect("kill");
    let (url2, generation2) = sidecar.ready_after(generation).await.expect("a new sidecar");
    assert_eq!(generation2, 2);
    assert_eq!(sidecar.restarts(), 1);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the hung sidecar was killed");
    let r = sidecar.request(reqwest::Method::GET, &format!("{url2}/health")).send().await.expect("health");
    assert_eq!(r.status(), 200);
    sidecar.shutdown().await;
}

#[tokio::test]
async fn a_missing_environment_and_a_bad_model_are_clear_errors() {
    let engine = MaxEngine::new(SidecarConfig { python: "/nonexistent/bin/python".into(), ..config() });
    match engine.health().await {
        Health::Unavailable { reason } => assert!(reason.contains("setup-max.sh"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let model = std::env::var("HYPERLLAMA_TEST_MODEL").expect("HYPERLLAMA_TEST_MODEL");
    let err = engine.load(LoadOptions { path: model.into(), ..LoadOptions::default() }).await.err().expect("fails");
    assert!(err.to_string().contains("no MAX environment"), "{err}");

    // Not a GGUF: refused before any sidecar starts.
    let dir = std::env::temp_dir().join(format!("hl-max-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let junk = dir.join("junk.gguf");
    std::fs::write(&junk, b"not a gguf").expect("write");
    let engine = MaxEngine::new(config());
    let err = engine.load(LoadOptions { path: junk, ..LoadOptions::default() }).await.err().expect("fails");
    assert!(err.to_string().contains("junk.gguf"), "{err}");
    assert_eq!(engine.sidecar().state(), SidecarState::NotStarted);
}

/// Shutting MAX down through the `Engine` trait (as `serve`, `generate` and `bench` do, all
/// holding an `Arc<dyn Engine>`) stops the sidecar gracefully: the trait has no default no-op
/// that would skip it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_through_the_engine_trait_stops_the_sidecar() {
    let max = MaxEngine::new(config());
    let sidecar = max.sidecar().clone();
    sidecar.ready().await.expect("sidecar starts");
    let SidecarState::Ready { pid: Some(pid), .. } = sidecar.state() else { panic!("no pid: {:?}", sidecar.state()) };
    let engine: std::sync::Arc<dyn Engine> = std::sync::Arc::new(max);
    engine.shutdown().await;
    assert_eq!(sidecar.state(), SidecarState::Stopped);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the sidecar process is gone");
}

/// The memory guard asks the engine: MAX loads float32 weights (4 bytes a parameter) and a
/// float32 KV cache, several times what llama.cpp needs for the same Q4 file.
#[tokio::test]
async fn the_max_memory_estimate_is_for_float32() {
    let model = hyperllama_testutil::model_path();
    let options =
        LoadOptions { path: model.clone(), ctx_size: Some(1024), parallel: Some(2), ..LoadOptions::default() };
    let max = MaxEngine::new(config()).estimate_memory(&options).await.expect("estimate").expect("local");
    let llama = hyperllama_engine_llamacpp::LlamaCppEngine::new()
        .estimate_memory(&options)
        .await
        .expect("estimate")
        .expect("local");
    let params = hyperllama_gguf::GgufFile::open(&model).expect("gguf").parameter_count();
    assert_eq!(max.weights, params * 4);
    assert!(max.weights > 4 * llama.weights, "float32 {} vs Q4_1 {}", max.weights, llama.weights);
    assert_eq!(max.kv_cache, 2 * llama.kv_cache, "float32 vs f16 KV cache");
    assert_eq!((max.context, max.parallel), (1024, 2));
}
