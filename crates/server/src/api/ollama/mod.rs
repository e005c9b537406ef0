//! Ollama's REST API (`/api/...`), so that Ollama's official clients, and the tools built on
//! them, work against HyperLlama unchanged. Durations are nanoseconds; streams are NDJSON.

mod convert;
mod handlers;
mod models;
pub(crate) mod types;

use axum::response::{IntoResponse, Response};
use axum::routing::{get, head, post};
use axum::Router;

use crate::error::{finish_error, ApiError, Dialect, DialectError};
use crate::AppState;

pub struct Ollama;

impl Dialect for Ollama {
    fn error_response(err: &ApiError) -> Response {
        let response = (err.status(), axum::Json(serde_json::json!({ "error": err.message }))).into_response();
        finish_error(err, response)
    }
}

pub(crate) type Json<T> = crate::extract::DialectJson<T, Ollama>;
pub(crate) type Result<T> = std::result::Result<T, DialectError<Ollama>>;

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(handlers::root).head(handlers::root))
        .route("/api/version", get(handlers::version).head(handlers::version))
        .route("/api/generate", post(handlers::generate))
        .route("/api/chat", post(handlers::chat))
        .route("/api/embed", post(handlers::embed))
        .route("/api/embeddings", post(handlers::embeddings))
        .route("/api/tags", get(models::tags).head(models::tags))
        .route("/api/show", post(models::show))
        .route("/api/ps", get(models::ps))
        .route("/api/pull", post(models::pull))
        .route("/api/create", post(models::create))
        .route("/api/copy", post(models::copy))
        .route("/api/delete", axum::routing::delete(models::delete))
        .layer(axum::extract::DefaultBodyLimit::max(crate::MAX_JSON_BODY))
        // Blob uploads stream to disk (a GGUF is gigabytes): no JSON body limit.
        .route("/api/blobs/{digest}", head(models::blob_exists).post(models::blob_upload))
        .route_layer(axum::middleware::from_fn_with_state(state, crate::middleware::handle::<Ollama>))
}

pub use convert::keep_alive as parse_keep_alive;
