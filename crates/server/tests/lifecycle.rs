//! Keep-alive, eviction and the memory check, on a registry of its own (real engine and model).

use std::sync::Arc;
use std::time::Duration;

use hyperllama_server::registry::LoadOverrides;
use hyperllama_server::{ErrorKind, KeepAlive, Registry, RegistryConfig};
use hyperllama_store::{ModelName, Overrides, Source, Store};
use hyperllama_testutil::eventually;

fn registry(max_loaded: usize, memory_limit: Option<u64>) -> (tempfile::TempDir, Arc<Registry>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("models")).expect("store");
    let a = ModelName::parse("a").expect("name");
    store.create(&a, Source::File(hyperllama_testutil::model_path()), Overrides::default()).expect("import");
    store.copy(&a, &ModelName::parse("b").expect("name")).expect("copy");
    let reg = Arc::new(Registry::new(
        Arc::new(hyperllama_engine_llamacpp::LlamaCppEngine::new()),
        store,
        RegistryConfig { ctx_size: Some(512), max_loaded, memory_limit, ..RegistryConfig::default() },
    ));
    (dir, reg)
}

fn loaded(reg: &Registry) -> Vec<String> {
    reg.running().iter().map(|r| r.name.clone()).collect()
}

fn keep(ka: KeepAlive) -> Option<KeepAlive> {
    Some(ka)
}

#[tokio::test]
async fn least_recently_used_idle_model_is_evicted() {
    let (_d, reg) = registry(1, None);
    let none = LoadOverrides::default();
    drop(reg.load_model("a", &none, None).await.expect("a"));
    assert_eq!(loaded(&reg), ["a:latest"]);
    drop(reg.load_model("b", &none, None).await.expect("b"));
    assert_eq!(loaded(&reg), ["b:latest"]);
}

#[tokio::test]
async fn keep_alive_expires_and_busy_models_stay() {
    let (_d, reg) = registry(3, None);
    let reaper = reg.spawn_reaper();
    let none = LoadOverrides::default();
    let short = keep(KeepAlive::For(Duration::from_millis(300)));
    let held = reg.load_model("a", &none, short).await.expect("a");
    drop(reg.load_model("b", &none, short).await.expect("b"));
    // b expires and goes; a is still in use, so it stays past its keep-alive.
    eventually(Duration::from_secs(5), "b to expire", || async { loaded(&reg) == ["a:latest"] }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(loaded(&reg), ["a:latest"], "a busy model outlives its keep-alive");
    drop(held);
    eventually(Duration::from_secs(5), "a to be unloaded once idle", || async { loaded(&reg).is_empty() }).await;
    // keep_alive -1 keeps it with no expiry.
    drop(reg.load_model("a", &none, keep(KeepAlive::Forever)).await.expect("a"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = reg.running();
    assert_eq!(r.len(), 1);
    assert!(r[0].expires_at.is_none());
    reaper.abort();
    reg.unload_all().await;
    assert!(reg.running().is_empty());
}

#[tokio::test]
async fn a_load_that_would_not_fit_is_refused_with_both_numbers() {
    let (_d, reg) = registry(3, Some(50 << 20));
    let err = reg.load_model("a", &LoadOverrides::default(), None).await.err().expect("refused");
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert!(err.message.contains("requires") && err.message.contains("available"), "{}", err.message);
    assert!(err.message.contains("50.00 MiB"), "names the limit: {}", err.message);
    assert!(reg.running().is_empty());
    // The estimate grows with the context and is dominated by weights for a small one.
    let r = reg.resolve("a").await.expect("resolves");
    let est = |ctx: u32| {
        let plan = reg.plan(&r, &LoadOverrides { num_ctx: Some(ctx), ..LoadOverrides::default() }, None).expect("plan");
        let reg = reg.clone();
        async move { reg.memory_estimate(&plan).await.expect("estimate").expect("local weights") }
    };
    let small = est(512).await;
    let big = est(8192).await;
    assert_eq!(small.context, 512);
    assert!(small.weights > 90_000_000 && small.weights < 110_000_000, "{small:?}");
    // SmolLM2: 30 layers x 3 KV heads x (64 + 64) x 2 bytes per token, for every sequence.
    assert_eq!(small.kv_cache, 512 * u64::from(hyperllama_server::DEFAULT_PARALLEL) * 30 * 3 * 128 * 2);
    assert!(big.total > small.total);
}
