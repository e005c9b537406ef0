//! What every request passes through before its handler: a request id (`x-request-id` in and
//! out, on every log line of the request), API-key checks and per-key rate limits, and the
//! counters of `/metrics`. It is generic over the dialect (each dialect's router applies
//! `handle::<ItsDialect>`), so its refusals come in that dialect's error shape and it names
//! no dialect itself.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::auth::{format_reset, Key, RateState};
use crate::context::{ErrorCode, RequestContext};
use crate::error::{ApiError, Dialect, ErrorKind};
use crate::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Paths that never need a key: liveness checks.
fn is_open(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD) && matches!(path, "/" | "/api/version" | "/health")
}

/// The key a client sent: `Authorization: Bearer <key>` or `x-api-key: <key>`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim))
}

/// A client's request id if it is sane (visible ASCII, at most 128 bytes), else a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(new_id)
}

fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    format!("req-{:016x}", h.finish())
}

fn set_rate_headers(headers: &mut HeaderMap, rate: &RateState) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    if let Some(r) = rate.requests {
        put("x-ratelimit-limit-requests", r.limit.to_string());
        put("x-ratelimit-remaining-requests", r.remaining.to_string());
        put("x-ratelimit-reset-requests", format_reset(r.reset));
    }
    if let Some(t) = rate.tokens {
        put("x-ratelimit-limit-tokens", t.limit.to_string());
        put("x-ratelimit-remaining-tokens", t.remaining.to_string());
        put("x-ratelimit-reset-tokens", format_reset(t.reset));
    }
    if let Some(wait) = rate.retry_after {
        put("retry-after", wait.as_secs_f64().ceil().max(1.0).to_string());
    }
}

pub async fn handle<D: Dialect>(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = request_id(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let peer =
        req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0).or_else(|| {
            req.extensions().get::<axum::extract::connect_info::MockConnectInfo<SocketAddr>>().map(|m| m.0)
        });
    let span = tracing::info_span!("request", request_id = %id, method = %method, path = %path);
    async move {
        let started = Instant::now();
        let mut key = None;
        let mut rate = None;
        let mut early = None;
        if state.auth.enabled() && !is_open(&method, &path) && method != Method::OPTIONS {
            let presented = presented_key(req.headers());
            match presented.and_then(|p| state.auth.identify(p)) {
                None => {
                    let msg = if presented.is_some() {
                        "invalid API key"
                    } else {
                        "missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`"
                    };
                    early = Some(D::error_response(&ApiError::new(ErrorKind::Unauthorized, "invalid_api_key", msg)));
                }
                Some(k) => {
                    let r = k.admit();
                    if let Some(wait) = r.retry_after {
                        state.metrics.count_rate_limited(&k.name);
                        let err = ApiError::new(
                            ErrorKind::RateLimited,
                            "rate_limit_exceeded",
                            format!(
                                "rate limit reached for this key ({}); retry in {:.1} s",
                                describe(&k),
                                wait.as_secs_f64()
                            ),
                        );
                        let mut resp = D::error_response(&err);
                        set_rate_headers(resp.headers_mut(), &r);
                        early = Some(resp);
                    } else {
                        tracing::debug!(key = %k.name, "authenticated");
                        key = Some(k);
                        rate = Some(r);
                    }
                }
            }
        }
        let mut resp = match early {
            Some(resp) => resp,
            None => {
                req.extensions_mut().insert(RequestContext { id: id.clone(), key, peer, started });
                next.run(req).await
            }
        };
        if let Some(r) = &rate {
            set_rate_headers(resp.headers_mut(), r);
        }
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        let status = resp.status().as_u16();
        state.metrics.count_http(status);
        if let Some(code) = resp.extensions().get::<ErrorCode>() {
            state.metrics.count_error(code.0);
        }
        tracing::info!(status, ms = started.elapsed().as_millis() as u64, "response");
        resp
    }
    .instrument(span)
    .await
}

fn describe(k: &Key) -> String {
    let mut parts = Vec::new();
    if let Some(n) = k.limits.requests_per_minute {
        parts.push(format!("{n} requests/min"));
    }
    if let Some(n) = k.limits.tokens_per_minute {
        parts.push(format!("{n} tokens/min"));
    }
    parts.join(", ")
}
