//! Keep-alive, eviction and the memory check, on a registry of its own (real engine and model).

mod util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyperllama_server::registry::LoadRequest;
use hyperllama_server::{ErrorKind, KeepAlive, Registry, RegistryConfig};
use hyperllama_store::{ModelName, Overrides, Source, Store};

fn registry(max_loaded: usize, memory_limit: Option<u64>) -> (tempfile::TempDir, Arc<Registry>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("models")).expect("store");
    let a = ModelName::parse("a").expect("name");
    store.create(&a, Source::File(util::model_path()), Overrides::default()).expect("import");
    store.copy(&a, &ModelName::parse("b").expect("name")).expect("copy");
    let reg = Arc::new(Registry::new(
        Arc::new(hyperllama_engine_llamacpp::LlamaCppEngine::new()),
        store,
        RegistryConfig { ctx_size: Some(512), max_loaded, memory_limit, ..RegistryConfig::default() },
    ));
    (dir, reg)
}

fn loaded(names: &[hyperllama_server::registry::Running]) -> Vec<String> {
    names.iter().map(|r| r.name.clone()).collect()
}

#[tokio::test]
async fn least_recently_used_idle_model_is_evicted() {
    let (_d, reg) = registry(1, None);
    drop(reg.acquire("a", LoadRequest::default()).await.expect("a"));
    assert_eq!(loaded(&reg.running().await), ["a:latest"]);
    drop(reg.acquire("b", LoadRequest::default()).await.expect("b"));
    assert_eq!(loaded(&reg.running().await), ["b:latest"]);
}

#[tokio::test]
async fn keep_alive_expires_and_busy_models_stay() {
    let (_d, reg) = registry(3, None);
    let reaper = reg.clone().spawn_reaper();
    let short = LoadRequest { keep_alive: Some(KeepAlive::For(Duration::from_millis(300))), ..LoadRequest::default() };
    let held = reg.acquire("a", short.clone()).await.expect("a");
    drop(reg.acquire("b", short.clone()).await.expect("b"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // b expired and went; a is still in use, so it stays past its keep-alive.
    assert_eq!(loaded(&reg.running().await), ["a:latest"]);
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !reg.running().await.is_empty() {
        assert!(Instant::now() < deadline, "a was never unloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // keep_alive -1 keeps it with no expiry.
    drop(
        reg.acquire("a", LoadRequest { keep_alive: Some(KeepAlive::Forever), ..LoadRequest::default() })
            .await
            .expect("a"),
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = reg.running().await;
    assert_eq!(loaded(&r), ["a:latest"]);
    assert!(r[0].expires_at.is_none());
    reaper.abort();
    reg.unload_all().await;
    assert!(reg.running().await.is_empty());
}

#[tokio::test]
async fn a_load_that_would_not_fit_is_refused_with_both_numbers() {
    let (_d, reg) = registry(3, Some(50 << 20));
    let err = reg.acquire("a", LoadRequest::default()).await.err().expect("refused");
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert!(err.message.contains("requires") && err.message.contains("available"), "{}", err.message);
    assert!(err.message.contains("0.05 GiB"), "names the limit: {}", err.message);
    assert!(reg.running().await.is_empty());
    // The estimate grows with the context and is dominated by weights for a small one.
    let (_, m) = reg.manifest("a").expect("manifest");
    let (ctx, small) = reg.memory_estimate(&m, Some(512)).expect("estimate");
    let (_, big) = reg.memory_estimate(&m, Some(8192)).expect("estimate");
    assert_eq!(ctx, 512);
    assert!(small.weights > 90_000_000 && small.weights < 110_000_000, "{small:?}");
    // SmolLM2: 30 layers x 3 KV heads x (64 + 64) x 2 bytes per token, for every sequence.
    assert_eq!(small.kv_cache, 512 * u64::from(hyperllama_server::DEFAULT_PARALLEL) * 30 * 3 * 128 * 2);
    assert!(big.total > small.total);
}
