//! API keys, rate limits, request ids, CORS and `/metrics`, against a real server with the
//! real model on an ephemeral loopback port.

use std::sync::OnceLock;

use crate::util::TestServer;
use hyperllama_server::auth::{Auth, KeySpec, Limits};
use hyperllama_server::HttpOptions;
use serde_json::{json, Value};

const OPEN_KEY: &str = "sk-test-0123456789abcdef";
const ROTATED_KEY: &str = "sk-test-rotated-fedcba9876";
const RPM_KEY: &str = "sk-test-two-requests-a-minute";
const TPM_KEY: &str = "sk-test-forty-tokens-a-minute";

fn server() -> &'static TestServer {
    static S: OnceLock<TestServer> = OnceLock::new();
    S.get_or_init(|| {
        let key = |name: &str, key: &str, rpm, tpm| KeySpec {
            name: name.into(),
            key: key.into(),
            limits: Limits { requests_per_minute: rpm, tokens_per_minute: tpm },
        };
        let auth = Auth::new(vec![
            key("main", OPEN_KEY, None, None),
            key("rotated", ROTATED_KEY, None, None),
            key("rpm", RPM_KEY, Some(2), None),
            key("tpm", TPM_KEY, None, Some(40)),
        ])
        .expect("keys");
        let http = HttpOptions { origins: vec!["https://app.example".into()], ..HttpOptions::default() };
        crate::util::start_with(crate::util::test_config(), move |state| {
            let mut http_all = HttpOptions::default();
            http_all.origins.extend(http.origins);
            state.with_auth(auth).with_http(http_all)
        })
    })
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn url(path: &str) -> String {
    format!("{}{path}", server().base)
}

async fn body(r: reqwest::Response) -> Value {
    let text = r.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

#[tokio::test]
async fn keys_are_required_except_for_liveness_checks() {
    for path in ["/", "/api/version", "/health"] {
        let r = client().get(url(path)).send().await.expect("request");
        assert_eq!(r.status(), 200, "{path} stays open");
    }
    // No key: 401 in each dialect's shape.
    let r = client().get(url("/api/tags")).send().await.expect("request");
    assert_eq!(r.status(), 401);
    let b = body(r).await;
    assert!(b["error"].as_str().unwrap_or_default().contains("missing API key"), "{b}");
    let r = client().get(url("/v1/models")).send().await.expect("request");
    assert_eq!(r.status(), 401);
    let b = body(r).await;
    assert_eq!(b["error"]["code"], "invalid_api_key", "{b}");
    assert_eq!(b["error"]["type"], "authentication_error", "{b}");
    // A wrong key, or a right key's prefix, is refused too.
    for bad in ["sk-test-0123456789abcdeX", "sk-test-0123456789abcde", "", OPEN_KEY.to_uppercase().as_str()] {
        let r = client().get(url("/v1/models")).bearer_auth(bad).send().await.expect("request");
        assert_eq!(r.status(), 401, "{bad:?}");
    }
    // Both current keys work, as bearer tokens and as x-api-key.
    for key in [OPEN_KEY, ROTATED_KEY] {
        let r = client().get(url("/v1/models")).bearer_auth(key).send().await.expect("request");
        assert_eq!(r.status(), 200);
        let r = client().get(url("/api/tags")).header("x-api-key", key).send().await.expect("request");
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test]
async fn a_key_over_its_request_rate_gets_429_with_retry_after() {
    for left in ["1", "0"] {
        let r = client().get(url("/api/tags")).bearer_auth(RPM_KEY).send().await.expect("request");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-limit-requests"], "2");
        assert_eq!(r.headers()["x-ratelimit-remaining-requests"], left);
    }
    let r = client().get(url("/v1/models")).bearer_auth(RPM_KEY).send().await.expect("request");
    assert_eq!(r.status(), 429);
    let wait: f64 = r.headers()["retry-after"].to_str().unwrap_or_default().parse().expect("seconds");
    assert!((1.0..=30.0).contains(&wait), "{wait}");
    assert!(r.headers().contains_key("x-ratelimit-reset-requests"));
    let b = body(r).await;
    assert_eq!(b["error"]["code"], "rate_limit_exceeded", "{b}");
    let r = client().get(url("/api/tags")).bearer_auth(RPM_KEY).send().await.expect("request");
    assert_eq!(r.status(), 429);
    assert!(body(r).await["error"].as_str().unwrap_or_default().contains("2 requests/min"));
    // Other keys are not affected.
    let r = client().get(url("/api/tags")).bearer_auth(OPEN_KEY).send().await.expect("request");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_key_over_its_token_budget_is_refused_until_it_refills() {
    let generate = || {
        client()
            .post(url("/api/generate"))
            .bearer_auth(TPM_KEY)
            .json(&json!({ "model": "smol", "prompt": "Count to ten.", "stream": false,
                           "options": { "temperature": 0, "num_predict": 30, "ignore_eos": true } }))
            .send()
    };
    let r = generate().await.expect("request");
    assert_eq!(r.status(), 200);
    let b = body(r).await;
    let used = b["prompt_eval_count"].as_u64().unwrap_or(0) + b["eval_count"].as_u64().unwrap_or(0);
    assert!(used > 40, "{b}");
    // The budget (40 per minute) is now overdrawn: refused, with the token headers.
    let r = generate().await.expect("request");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-ratelimit-limit-tokens"], "40");
    assert_eq!(r.headers()["x-ratelimit-remaining-tokens"], "0");
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let r = client().get(url("/health")).header("x-request-id", "trace-42").send().await.expect("request");
    assert_eq!(r.headers()["x-request-id"], "trace-42");
    let r = client().get(url("/health")).send().await.expect("request");
    let made = r.headers()["x-request-id"].to_str().unwrap_or_default().to_string();
    assert!(made.starts_with("req-") && made.len() > 8, "{made}");
    // An id with control characters or of absurd length is replaced, not reflected.
    let r = client().get(url("/health")).header("x-request-id", "a".repeat(500)).send().await.expect("request");
    assert_ne!(r.headers()["x-request-id"], "a".repeat(500).as_str());
}

#[tokio::test]
async fn cors_allows_configured_and_local_origins_only() {
    let preflight = |origin: &'static str| {
        client()
            .request(reqwest::Method::OPTIONS, url("/v1/chat/completions"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    for ok in ["https://app.example", "http://localhost:5173", "http://127.0.0.1:8080"] {
        let r = preflight(ok).await.expect("request");
        assert_eq!(r.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()), Some(ok), "{ok}");
    }
    let r = preflight("https://evil.example").await.expect("request");
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // A look-alike of an allowed host is not allowed either.
    let r = preflight("http://localhost.evil.example").await.expect("request");
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn metrics_report_latencies_tokens_and_refusals() {
    let r = client()
        .post(url("/v1/chat/completions"))
        .bearer_auth(OPEN_KEY)
        .json(&json!({ "model": "smol", "max_tokens": 5, "temperature": 0, "stream": true,
                       "messages": [{ "role": "user", "content": "Say hello." }] }))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let _ = r.text().await.expect("stream");
    // A refused request, to be counted.
    let r = client().get(url("/v1/models")).bearer_auth("sk-wrong-wrong-wrong-wrong").send().await.expect("request");
    assert_eq!(r.status(), 401);

    let r = client().get(url("/metrics")).send().await.expect("request");
    assert_eq!(r.status(), 401, "metrics need a key when keys are configured");
    let r = client().get(url("/metrics")).bearer_auth(OPEN_KEY).send().await.expect("request");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap_or_default().starts_with("text/plain"));
    let text = r.text().await.expect("text");
    let value = |line_prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_prefix} in\n{text}"))
    };
    assert!(value("hyperllama_time_to_first_token_seconds_count{model=\"smol:latest\"}") >= 1.0);
    assert!(value("hyperllama_inter_token_latency_seconds_count{model=\"smol:latest\"}") >= 3.0);
    assert!(value("hyperllama_e2e_request_latency_seconds_count{model=\"smol:latest\"}") >= 1.0);
    assert!(value("hyperllama_request_queue_time_seconds_count{model=\"smol:latest\"}") >= 1.0);
    assert!(value("hyperllama_generation_tokens_total{model=\"smol:latest\"}") >= 5.0);
    assert!(value("hyperllama_prompt_tokens_total{model=\"smol:latest\"}") >= 5.0);
    assert!(value("hyperllama_request_success_total{model=\"smol:latest\",finished_reason=\"length\"}") >= 1.0);
    assert!(value("hyperllama_errors_total{code=\"invalid_api_key\"}") >= 1.0);
    assert_eq!(value("hyperllama_slots_total{model=\"smol:latest\"}"), 1.0);
    assert_eq!(value("hyperllama_models_loaded"), 1.0);
    assert!(text.contains("# TYPE hyperllama_num_requests_running gauge"));
    // Other tests share this server (one slot), so a request of theirs may be waiting right now.
    let waiting = value("hyperllama_num_requests_waiting{model=\"smol:latest\"}");
    assert!(waiting >= 0.0 && waiting.fract() == 0.0 && waiting <= 8.0, "waiting gauge {waiting}");
    assert!(!text.contains(OPEN_KEY), "keys never appear in metrics");
}

#[tokio::test]
async fn the_web_ui_loads_without_a_key_with_security_headers_while_its_api_needs_one() {
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    for (path, kind) in [("/ui/", "text/html"), ("/ui/dashboard", "text/html"), ("/ui/chat.js", "text/javascript")] {
        let r = client().get(url(path)).send().await.expect("request");
        assert_eq!(r.status(), 200, "{path} needs no key");
        let h = r.headers();
        assert!(h["content-type"].to_str().expect("ascii").starts_with(kind), "{path}: {:?}", h["content-type"]);
        let csp = h["content-security-policy"].to_str().expect("ascii");
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("connect-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(h.contains_key("etag"));
    }
    // A browser at / is sent to the UI; Ollama's clients still get the liveness text.
    let r = no_redirects.get(url("/")).header("accept", "text/html,application/xhtml+xml").send().await.expect("get");
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/");
    let r = no_redirects.get(url("/")).send().await.expect("get");
    assert_eq!(body(r).await, "HyperLlama is running");
    let r = client().get(url("/ui/no-such-file.js")).send().await.expect("get");
    assert_eq!(r.status(), 404);
    let r = client().get(url("/ui/..%2FCargo.toml")).send().await.expect("get");
    assert_eq!(r.status(), 404, "only the embedded files are served");
    // The data the pages show is the API's: keys apply.
    let r = client().get(url("/api/fleet")).send().await.expect("get");
    assert_eq!(r.status(), 401);
    let r = client().get(url("/api/fleet")).bearer_auth(OPEN_KEY).send().await.expect("get");
    assert_eq!(body(r).await, json!({ "nodes": [] }));
}
