//! Hub pulls against a local HTTP server that serves files in the Hugging Face hub's URL
//! layout (API listing with LFS sha256, `resolve/<rev>/<file>` with ranges), holding the real
//! SmolLM2 GGUF. It can drop connections half-way, refuse without a token, and lie about a sha.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyperllama_store::hub::{self, HubConfig, HubError, HubRef, Progress};
use hyperllama_store::{ModelName, Store, StoreError};
use sha2::Digest as _;

fn model_path() -> PathBuf {
    if let Ok(p) = std::env::var("HYPERLLAMA_TEST_MODEL") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/hyperllama/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "test model missing: run scripts/fetch-model.sh or set HYPERLLAMA_TEST_MODEL");
    p
}

struct Hub {
    bytes: Arc<Vec<u8>>,
    sha: String,
    /// Bytes the server will still send before it starts failing; negative = unlimited.
    budget: AtomicI64,
    served: AtomicU64,
    ranges: Mutex<Vec<String>>,
    /// Drop each new range request half-way once.
    drop_once: Mutex<HashMap<u64, bool>>,
    drop_mode: std::sync::atomic::AtomicBool,
    /// Answer every range request with 206 and no bytes (a broken mirror).
    empty_mode: std::sync::atomic::AtomicBool,
}

type Shared = Arc<Hub>;

fn listing(repo: &str, hub: &Hub) -> Option<serde_json::Value> {
    let (files, sha): (Vec<&str>, String) = match repo {
        "smol/SmolLM2-GGUF" | "private/SmolLM2-GGUF" => {
            (vec!["SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct.Q8_0.gguf"], hub.sha.clone())
        }
        "bad/sha" => (vec!["m-Q4_K_M.gguf"], "ab".repeat(32)),
        "nogguf/repo" => (vec![], hub.sha.clone()),
        _ => return None,
    };
    let mut siblings: Vec<serde_json::Value> = files
        .iter()
        .map(|f| serde_json::json!({ "rfilename": f, "size": hub.bytes.len(), "lfs": { "sha256": sha, "size": hub.bytes.len() } }))
        .collect();
    siblings.push(serde_json::json!({ "rfilename": "README.md", "size": 10 }));
    Some(serde_json::json!({ "id": repo, "sha": "0123456789abcdef0123456789abcdef01234567", "siblings": siblings }))
}

fn authorized(repo: &str, headers: &HeaderMap) -> bool {
    !repo.starts_with("private/") || headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer secret")
}

async fn api(
    State(hub): State<Shared>,
    Path((owner, repo, _rev)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let repo = format!("{owner}/{repo}");
    if !authorized(&repo, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match listing(&repo, &hub) {
        Some(v) => axum::Json(v).into_response(),
        None => (StatusCode::NOT_FOUND, "Repository not found").into_response(),
    }
}

async fn resolve(
    State(hub): State<Shared>,
    Path((owner, repo, _rev, _file)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let repo = format!("{owner}/{repo}");
    if !authorized(&repo, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if listing(&repo, &hub).is_none() {
        return StatusCode::NOT_FOUND.into_response();
    }
    if hub.budget.load(Ordering::SeqCst) == 0 {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let range = headers.get("range").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    hub.ranges.lock().expect("lock").push(range.clone());
    if hub.empty_mode.load(Ordering::SeqCst) {
        return Response::builder().status(StatusCode::PARTIAL_CONTENT).body(Body::empty()).expect("response");
    }
    let spec = range.strip_prefix("bytes=").unwrap_or("0-");
    let (a, b) = spec.split_once('-').unwrap_or(("0", ""));
    let start: u64 = a.parse().unwrap_or(0);
    let end: u64 = b.parse().map(|e: u64| e + 1).unwrap_or(hub.bytes.len() as u64).min(hub.bytes.len() as u64);
    let mut data = hub.bytes[start as usize..end as usize].to_vec();
    let mut fail = false;
    if hub.drop_mode.load(Ordering::SeqCst) {
        let mut seen = hub.drop_once.lock().expect("lock");
        // Keyed by the range's end, which a resumed request keeps: each part is cut once.
        if seen.insert(end, true).is_none() {
            data.truncate(data.len() / 2);
            fail = true;
        }
    }
    let budget = hub.budget.load(Ordering::SeqCst);
    if budget >= 0 && (data.len() as i64) > budget {
        data.truncate(budget as usize);
        fail = true;
    }
    if budget >= 0 {
        hub.budget.fetch_sub(data.len() as i64, Ordering::SeqCst);
    }
    hub.served.fetch_add(data.len() as u64, Ordering::SeqCst);
    let len = end - start;
    // Send what we have, then break the connection if this response is meant to fail.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = data.chunks(1 << 20).map(|c| Ok(c.to_vec())).collect();
    let tail: Vec<Result<Vec<u8>, std::io::Error>> =
        if fail { vec![Err(std::io::Error::other("dropped"))] } else { vec![] };
    let body = Body::from_stream(futures::stream::iter(chunks.into_iter().chain(tail)));
    Response::builder()
        .status(StatusCode::PARTIAL_CONTENT)
        .header("content-length", len.to_string())
        .header("content-range", format!("bytes {start}-{}/{}", end - 1, hub.bytes.len()))
        .body(body)
        .expect("response")
}

async fn start_hub() -> (String, Shared) {
    let bytes = std::fs::read(model_path()).expect("model");
    let sha = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let hub = Arc::new(Hub {
        bytes: Arc::new(bytes),
        sha,
        budget: AtomicI64::new(-1),
        served: AtomicU64::new(0),
        ranges: Mutex::new(Vec::new()),
        drop_once: Mutex::new(HashMap::new()),
        drop_mode: false.into(),
        empty_mode: false.into(),
    });
    let app = axum::Router::new()
        .route("/api/models/{owner}/{repo}/revision/{rev}", get(api))
        .route("/{owner}/{repo}/resolve/{rev}/{file}", get(resolve))
        .with_state(hub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (format!("http://{addr}"), hub)
}

fn config(endpoint: &str) -> HubConfig {
    HubConfig {
        endpoint: endpoint.into(),
        token: None,
        offline: false,
        part_size: 16 << 20,
        max_parallel: 3,
        max_retries: 3,
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().expect("tempdir");
    let s = Store::open(d.path().join("models")).expect("store");
    (d, s)
}

fn leftovers(store: &Store) -> Vec<String> {
    std::fs::read_dir(store.root().join("blobs"))
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_picks_the_quant_verifies_and_names_it() {
    let (endpoint, hub) = start_hub().await;
    let (_d, store) = store();
    let mut events = Vec::new();
    let r = HubRef::parse("hf.co/smol/SmolLM2-GGUF").expect("ref");
    let m = hub::pull(&store, &config(&endpoint), &r, |p| events.push(p)).await.expect("pull");
    assert_eq!(m.model.hex(), hub.sha);
    assert!(m.source.contains("smol/SmolLM2-GGUF@0123456789abcdef"), "{}", m.source);
    // Q4_K_M is not there: the nearest (Q4_1) is chosen, and said.
    assert!(events.iter().any(|e| matches!(e, Progress::Status(s) if s.contains("using Q4_1"))), "{events:?}");
    assert!(matches!(events.first(), Some(Progress::Status(s)) if s == "pulling manifest"));
    assert!(matches!(events.last(), Some(Progress::Status(s)) if s == "success"));
    assert!(events.iter().any(|e| matches!(e, Progress::Download { completed, total, .. } if completed == total)));
    assert_eq!(m.name, "hf.co/smol/SmolLM2-GGUF:latest", "stored as typed");
    for name in ["hf.co/smol/SmolLM2-GGUF:latest", "smol/SmolLM2-GGUF", "HF.CO/smol/smollm2-gguf"] {
        let (_, m) = store.resolve(&ModelName::parse(name).expect("name")).expect(name);
        hyperllama_gguf::GgufFile::open(store.blob_path(&m.model)).expect("a valid GGUF");
    }
    // Several ranges were fetched (16 MiB parts).
    assert!(hub.ranges.lock().expect("lock").len() >= 6);
    assert!(leftovers(&store).iter().all(|f| f.starts_with("sha256-")), "{:?}", leftovers(&store));
    // An explicit quant.
    let r = HubRef::parse("smol/SmolLM2-GGUF:Q8_0").expect("ref");
    let served = hub.served.load(Ordering::SeqCst);
    hub::pull(&store, &config(&endpoint), &r, |_| {}).await.expect("pull q8");
    assert_eq!(hub.served.load(Ordering::SeqCst), served, "same bytes: the blob is shared, nothing downloaded");
    assert!(store.get(&ModelName::parse("smol/SmolLM2-GGUF:q8_0").expect("n")).is_ok());
    assert!(store.list().expect("list").iter().any(|m| m.name == "smol/SmolLM2-GGUF:Q8_0"), "stored as typed");
    let e = hub::pull(&store, &config(&endpoint), &HubRef::parse("smol/SmolLM2-GGUF:Q2_K").expect("ref"), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, HubError::QuantNotFound { .. }) && e.to_string().contains("Q8_0"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_that_sends_empty_ranges_is_an_error_not_a_request_loop() {
    let (endpoint, hub) = start_hub().await;
    hub.empty_mode.store(true, Ordering::SeqCst);
    let (_d, store) = store();
    let cfg = config(&endpoint);
    let e = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        hub::pull(&store, &cfg, &HubRef::parse("smol/SmolLM2-GGUF:Q4_1").expect("ref"), |_| {}),
    )
    .await
    .expect("the pull gives up instead of spinning")
    .unwrap_err();
    assert!(matches!(&e, HubError::Protocol(m) if m.contains("no bytes")), "{e}");
    let parts = (hub.bytes.len() as u64).div_ceil(cfg.part_size);
    let requests = hub.ranges.lock().expect("lock").len() as u64;
    assert!(requests <= parts * u64::from(cfg.max_retries + 1), "{requests} range requests for {parts} parts");
    assert!(store.list().expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_resumed_with_ranges() {
    let (endpoint, hub) = start_hub().await;
    hub.drop_mode.store(true, Ordering::SeqCst);
    let (_d, store) = store();
    let m = hub::pull(&store, &config(&endpoint), &HubRef::parse("smol/SmolLM2-GGUF:Q4_1").expect("ref"), |_| {})
        .await
        .expect("pull");
    assert_eq!(m.model.hex(), hub.sha);
    // Every part was cut half-way once and continued from where it stopped, not restarted.
    let ranges = hub.ranges.lock().expect("lock").clone();
    let part = 16u64 << 20;
    assert!(
        ranges.iter().any(|r| r
            .strip_prefix("bytes=")
            .and_then(|s| s.split('-').next())
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|s| s % part != 0)),
        "{ranges:?}"
    );
    let total = hub.bytes.len() as u64;
    assert!(hub.served.load(Ordering::SeqCst) < total * 11 / 10, "resumed, not re-downloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_pull_leaves_no_model_and_the_next_pull_resumes() {
    let (endpoint, hub) = start_hub().await;
    let (_d, store) = store();
    hub.budget.store(40 << 20, Ordering::SeqCst);
    let mut cfg = config(&endpoint);
    cfg.max_retries = 1;
    let r = HubRef::parse("smol/SmolLM2-GGUF:Q4_1").expect("ref");
    let e = hub::pull(&store, &cfg, &r, |_| {}).await.unwrap_err();
    assert!(matches!(e, HubError::Http { status: 503, .. } | HubError::Network { .. }), "{e}");
    assert!(store.list().expect("list").is_empty(), "no half-written model");
    assert!(leftovers(&store).iter().any(|f| f.starts_with(".partial-")), "partial data kept for resuming");
    assert!(!leftovers(&store).iter().any(|f| f.starts_with("sha256-")));
    let first = hub.served.load(Ordering::SeqCst);
    hub.budget.store(-1, Ordering::SeqCst);
    hub::pull(&store, &cfg, &r, |_| {}).await.expect("resumed pull");
    let second = hub.served.load(Ordering::SeqCst) - first;
    assert!(second < hub.bytes.len() as u64, "the second pull resumed ({second} bytes)");
    assert!(first > 0);
    assert!(store.get(&ModelName::parse("smol/SmolLM2-GGUF:q4_1").expect("n")).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_mismatch_is_rejected_with_nothing_left_behind() {
    let (endpoint, _hub) = start_hub().await;
    let (_d, store) = store();
    let e = hub::pull(&store, &config(&endpoint), &HubRef::parse("bad/sha").expect("ref"), |_| {}).await.unwrap_err();
    assert!(matches!(e, HubError::Store(StoreError::DigestMismatch { .. })), "{e}");
    assert!(leftovers(&store).is_empty(), "{:?}", leftovers(&store));
    assert!(store.list().expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_unauthorized_offline_no_gguf() {
    let (endpoint, _hub) = start_hub().await;
    let (_d, store) = store();
    let cfg = config(&endpoint);
    let e = hub::pull(&store, &cfg, &HubRef::parse("nobody/nothing").expect("ref"), |_| {}).await.unwrap_err();
    assert!(matches!(e, HubError::NotFound(_)), "{e}");
    let e =
        hub::pull(&store, &cfg, &HubRef::parse("private/SmolLM2-GGUF:Q4_1").expect("ref"), |_| {}).await.unwrap_err();
    assert!(matches!(e, HubError::Unauthorized(_)) && e.to_string().contains("HF_TOKEN"), "{e}");
    let mut with_token = cfg.clone();
    with_token.token = Some("secret".into());
    hub::pull(&store, &with_token, &HubRef::parse("private/SmolLM2-GGUF:Q4_1").expect("ref"), |_| {})
        .await
        .expect("with token");
    let e = hub::pull(&store, &cfg, &HubRef::parse("nogguf/repo").expect("ref"), |_| {}).await.unwrap_err();
    assert!(matches!(e, HubError::NoGguf { .. }), "{e}");
    let mut offline = cfg.clone();
    offline.offline = true;
    let e = hub::pull(&store, &offline, &HubRef::parse("smol/SmolLM2-GGUF").expect("ref"), |_| {}).await.unwrap_err();
    assert!(matches!(e, HubError::Offline(_)), "{e}");
    let unreachable = config("http://127.0.0.1:9");
    let e =
        hub::pull(&store, &unreachable, &HubRef::parse("smol/SmolLM2-GGUF").expect("ref"), |_| {}).await.unwrap_err();
    assert!(matches!(e, HubError::Network { .. }), "{e}");
}
