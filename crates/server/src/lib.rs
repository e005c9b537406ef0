//! HyperLlama's HTTP server: an Ollama-compatible API (`/api/...`) and an OpenAI-compatible
//! API (`/v1/...`) over one internal request type.
//!
//! Each dialect is a thin folder of its own (DTOs, conversion into
//! [`hyperllama_core::GenerateRequest`], stream encoding, error body); model lookup, loading,
//! keep-alive and generation live below them in [`registry`] and [`generation`], shared.
//! The server never names a concrete engine: the binary hands it an `Arc<dyn Engine>`.
//!
//! Requests are validated (and the model loaded) before the first byte of a response, so bad
//! input gets a real 4xx in the dialect's error shape; an error after streaming began goes out
//! as one more line in the dialect's stream format.

pub mod api;
mod error;
mod extract;
pub mod generation;
mod keep_alive;
pub mod registry;

use std::sync::Arc;

use axum::Router;

pub use error::{ApiError, ErrorKind};
pub use keep_alive::KeepAlive;
pub use registry::{Registry, RegistryConfig, DEFAULT_MAX_QUEUE, DEFAULT_PARALLEL};

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
}

/// Bodies larger than this are refused with 413 (blob uploads have their own limit).
pub const MAX_JSON_BODY: usize = 8 << 20;

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(api::ollama::routes())
        .merge(api::openai::routes())
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let registry = state.registry.clone();
    let reaper = registry.clone().spawn_reaper();
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    };
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(shutdown);
    // In-flight streams get a grace period to finish; then they are cut.
    let grace = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        r = server => r,
        _ = grace => {
            tracing::warn!(seconds = SHUTDOWN_GRACE.as_secs(), "streams still running after the grace period; closing them");
            Ok(())
        }
    };
    reaper.abort();
    registry.unload_all().await;
    result
}

/// How long shutdown waits for in-flight responses.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
