//! OpenAI's API (`/v1/...`), so that the official `openai` clients and everything built on
//! them work against HyperLlama. Streams are server-sent events ending in `data: [DONE]`.

pub(crate) mod convert;
mod handlers;
pub(crate) mod responses;
mod tokens;
pub(crate) mod types;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::{finish_error, ApiError, Dialect, DialectError, ErrorKind};
use crate::routes::Routes;
use crate::AppState;

pub struct OpenAi;

impl Dialect for OpenAi {
    fn error_response(err: &ApiError) -> Response {
        let kind = match err.kind {
            ErrorKind::BadRequest | ErrorKind::PayloadTooLarge | ErrorKind::NotFound => "invalid_request_error",
            ErrorKind::Unavailable | ErrorKind::BadGateway => "service_unavailable",
            ErrorKind::Overloaded | ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Unauthorized => "authentication_error",
            ErrorKind::Forbidden => "permission_error",
            ErrorKind::NotImplemented => "not_implemented",
            ErrorKind::Internal => "server_error",
        };
        let body = serde_json::json!({
            "error": { "message": err.message, "type": kind, "param": err.param, "code": err.code }
        });
        // OpenAI's clients retry a 429 with back-off (honouring Retry-After); a 503 they do too,
        // but 429 is what OpenAI itself sends for "too many requests right now".
        let status = if err.kind == ErrorKind::Overloaded { StatusCode::TOO_MANY_REQUESTS } else { err.status() };
        finish_error(err, (status, axum::Json(body)).into_response())
    }
}

pub(crate) use handlers::truncation_header;

pub(crate) type Json<T> = crate::extract::DialectJson<T, OpenAi>;
pub(crate) type Result<T> = std::result::Result<T, DialectError<OpenAi>>;

pub fn routes(state: AppState) -> Routes {
    Routes::default()
        .post("/v1/chat/completions", handlers::chat_completions)
        .post("/v1/completions", handlers::completions)
        .post("/v1/embeddings", handlers::embeddings)
        .get("/v1/models", handlers::list_models)
        .get("/v1/models/{*id}", handlers::get_model)
        .post("/v1/responses", responses::create)
        .get("/v1/responses/{id}", responses::get)
        .delete("/v1/responses/{id}", responses::delete)
        .post("/tokenize", tokens::tokenize)
        .post("/detokenize", tokens::detokenize)
        .post("/apply-template", tokens::apply_template)
        .map(|r| {
            r.layer(axum::extract::DefaultBodyLimit::max(crate::MAX_JSON_BODY))
                .route_layer(axum::middleware::from_fn_with_state(state, crate::middleware::handle::<OpenAi>))
        })
}
