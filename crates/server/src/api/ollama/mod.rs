//! Ollama's REST API (`/api/...`), so that Ollama's official clients, and the tools built on
//! them, work against HyperLlama unchanged. Durations are nanoseconds; streams are NDJSON.

mod convert;
mod handlers;
mod models;
pub(crate) mod types;

use axum::response::{IntoResponse, Response};

use crate::error::{finish_error, ApiError, Dialect, DialectError};
use crate::routes::Routes;
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

pub fn routes(state: AppState) -> Routes {
    Routes::default()
        .get("/", handlers::root)
        .head("/", handlers::root)
        .get("/api/version", handlers::version)
        .head("/api/version", handlers::version)
        .post("/api/generate", handlers::generate)
        .post("/api/chat", handlers::chat)
        .post("/api/embed", handlers::embed)
        .post("/api/embeddings", handlers::embeddings)
        .get("/api/tags", models::tags)
        .head("/api/tags", models::tags)
        .post("/api/show", models::show)
        .get("/api/ps", models::ps)
        .post("/api/pull", models::pull)
        .post("/api/create", models::create)
        .post("/api/copy", models::copy)
        .delete("/api/delete", models::delete)
        .map(|r| r.layer(axum::extract::DefaultBodyLimit::max(crate::MAX_JSON_BODY)))
        // Blob uploads stream to disk (a GGUF is gigabytes): no JSON body limit.
        .head("/api/blobs/{digest}", models::blob_exists)
        .post("/api/blobs/{digest}", models::blob_upload)
        .map(|r| r.route_layer(axum::middleware::from_fn_with_state(state, crate::middleware::handle::<Ollama>)))
}

pub use convert::keep_alive as parse_keep_alive;
