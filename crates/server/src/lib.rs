//! HyperLlama's HTTP server: an Ollama-compatible API (`/api/...`) and an OpenAI-compatible
//! API (`/v1/...`) over one service.
//!
//! Each dialect is a thin folder of its own ([`api`]: DTOs, conversion into the one
//! [`service::ServiceRequest`], stream encoding, error body); everything between a converted
//! request and the engine's tokens is the [`service`]'s (name resolution, Modelfile policy,
//! validation, acquisition, retry, observation), and which models are loaded is the
//! [`registry`]'s. The server never names a concrete engine: the binary hands it `Engines`.
//! `docs/ARCHITECTURE.md` follows one request through these files.
//!
//! Requests are validated (and the model loaded) before the first byte of a response, so bad
//! input gets a real 4xx in the dialect's error shape; an error after streaming began goes out
//! as one more line in the dialect's stream format.

pub mod api;
pub mod auth;
pub mod context;
pub mod engines;
pub mod error;
mod extract;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod registry;
pub mod remotes;
pub mod response_store;
mod routes;
pub mod service;
pub mod webui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

pub use context::RequestContext;
pub use engines::Engines;
pub use error::{ApiError, ErrorKind};
pub use hyperllama_core::KeepAlive;
pub use registry::{Registry, RegistryConfig, DEFAULT_MAX_QUEUE, DEFAULT_PARALLEL};
pub use remotes::Remotes;
pub use service::Service;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub metrics: Arc<metrics::Metrics>,
    pub auth: Arc<auth::Auth>,
    pub http: Arc<HttpOptions>,
    /// The Responses API's stored responses.
    pub responses: Arc<response_store::ResponseStore>,
}

impl AppState {
    /// An open server (no keys) with default HTTP options.
    pub fn new(registry: Arc<Registry>) -> Self {
        let metrics: Arc<metrics::Metrics> = Arc::default();
        Self {
            service: Arc::new(Service::new(registry, metrics.clone())),
            metrics,
            auth: Arc::default(),
            http: Arc::new(HttpOptions::default()),
            responses: Arc::default(),
        }
    }

    pub fn with_responses(mut self, store: response_store::ResponseStore) -> Self {
        self.responses = Arc::new(store);
        self
    }

    pub fn registry(&self) -> &Arc<Registry> {
        self.service.registry()
    }

    pub fn with_auth(mut self, auth: auth::Auth) -> Self {
        self.auth = Arc::new(auth);
        self
    }

    pub fn with_http(mut self, http: HttpOptions) -> Self {
        self.http = Arc::new(http);
        self
    }
}

/// HTTP-level settings.
#[derive(Clone)]
pub struct HttpOptions {
    /// Browser origins allowed by CORS (`*` for any), like `OLLAMA_ORIGINS`.
    pub origins: Vec<String>,
    /// The longest a request may take until its response begins (streams, once started, run on).
    pub request_timeout: Option<Duration>,
    /// How long shutdown waits for in-flight responses.
    pub shutdown_grace: Duration,
    /// Serve HTTPS with this certificate and key (see [`tls_config`]); plain HTTP when `None`.
    pub tls: Option<axum_server::tls_rustls::RustlsConfig>,
    /// Let any client create models from paths on the server's disk (`/api/create` with an
    /// absolute `from`); without it, only this machine's own user may (loopback, no keys).
    pub allow_local_paths: bool,
    /// Serve the web chat and dashboard under `/ui/` (and send browsers at `/` there).
    pub webui: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            origins: default_origins(),
            request_timeout: None,
            shutdown_grace: SHUTDOWN_GRACE,
            tls: None,
            allow_local_paths: false,
            webui: true,
        }
    }
}

/// Reads a PEM certificate chain and private key for HTTPS (rustls, with ring's primitives).
pub async fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> std::io::Result<axum_server::tls_rustls::RustlsConfig> {
    // The process-wide provider; a second call finds it installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await
}

/// Ollama's default: pages served from this machine, and desktop-app schemes.
pub fn default_origins() -> Vec<String> {
    ["http://localhost", "https://localhost", "http://127.0.0.1", "https://127.0.0.1", "app://", "file://", "tauri://"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    let base = CorsLayer::new().allow_methods(Any).allow_headers(Any);
    if origins.iter().any(|o| o == "*") {
        return base.allow_origin(Any);
    }
    let allowed = origins.to_vec();
    base.allow_origin(AllowOrigin::predicate(move |origin, _| {
        let Ok(origin) = origin.to_str() else { return false };
        allowed.iter().any(|a| {
            // An entry without a port allows every port of that host, as Ollama's defaults do.
            origin == a
                || origin.strip_prefix(a.as_str()).is_some_and(|rest| rest.starts_with(':'))
                || (a.ends_with("://") && origin.starts_with(a.as_str()))
        })
    }))
}

/// Bodies larger than this are refused with 413 (blob uploads have their own limit).
pub const MAX_JSON_BODY: usize = 8 << 20;

/// Every route, by dialect (each dialect's routes carry the middleware for its own dialect).
fn routes(state: &AppState) -> routes::Routes {
    let ops = routes::Routes::default()
        .get("/health", health)
        .get("/metrics", render_metrics)
        .get("/api/fleet", fleet)
        .get("/openapi.json", openapi_json)
        .map(|r| {
            r.route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                middleware::handle::<api::ollama::Ollama>,
            ))
        });
    api::ollama::routes(state.clone())
        .merge(api::openai::routes(state.clone()))
        .merge(api::anthropic::routes(state.clone()))
        .merge(ops)
}

/// The (method, path) of every route the server has, for checking the OpenAPI document.
pub fn route_table(state: &AppState) -> Vec<(&'static str, &'static str)> {
    routes(state).into_parts().1
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let (mut app, _) = routes(&state).into_parts();
    if state.http.webui {
        app = app.merge(webui::router());
    }
    if let Some(t) = state.http.request_timeout {
        app =
            app.layer(tower_http::timeout::TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, t));
    }
    app.layer(cors(&state.http.origins)).with_state(state)
}

/// The OpenAPI document of every dialect.
async fn openapi_json() -> axum::Json<serde_json::Value> {
    axum::Json(openapi::document())
}

/// The fleet's nodes: health and models (the dashboard's fleet table).
async fn fleet(axum::extract::State(state): axum::extract::State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "nodes": state.registry().remotes().status() }))
}

/// Liveness, as vLLM's and llama-server's `/health`.
async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn render_metrics(axum::extract::State(state): axum::extract::State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let gauges: Vec<metrics::ModelGauges> = state
        .registry()
        .running()
        .into_iter()
        .map(|r| metrics::ModelGauges {
            model: r.name,
            running: r.stats.active,
            waiting: r.stats.waiting,
            slots: r.stats.parallel,
            kv_tokens: r.stats.kv_tokens,
            kv_capacity: u64::from(r.context_length) * u64::from(r.stats.parallel),
            stats: r.stats,
        })
        .collect();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render(&gauges))
        .into_response()
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let registry = state.registry().clone();
    let grace_period = state.http.shutdown_grace;
    let reaper = registry.spawn_reaper();
    let remotes = registry.remotes().clone();
    // The fleet's catalogs before the first request, then in the background.
    remotes.refresh().await;
    let refresher = remotes.clone().spawn_refresher(REMOTE_REFRESH);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    };
    let tls = state.http.tls.clone();
    let app = router(state);
    let result = match tls {
        None => {
            let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(shutdown);
            // In-flight streams get a grace period to finish; then they are cut.
            let grace = async move {
                if stopping_rx.await.is_ok() {
                    tokio::time::sleep(grace_period).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                r = server => r,
                _ = grace => {
                    tracing::warn!(seconds = grace_period.as_secs(), "streams still running after the grace period; closing them");
                    Ok(())
                }
            }
        }
        Some(config) => {
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                // Stop accepting; in-flight responses get the grace period, then are cut.
                stopper.graceful_shutdown(Some(grace_period));
            });
            drop(stopping_rx);
            axum_server::from_tcp_rustls(listener.into_std()?, config)
                .handle(handle)
                .serve(app.into_make_service_with_connect_info::<SocketAddr>())
                .await
        }
    };
    reaper.abort();
    if let Some(r) = refresher {
        r.abort();
    }
    registry.unload_all().await;
    registry.engines().shutdown().await;
    remotes.shutdown().await;
    result
}

/// How often the remote nodes' model lists are fetched again.
pub const REMOTE_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// How long shutdown waits for in-flight responses.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
