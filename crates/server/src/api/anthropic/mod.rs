//! Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`), so that the
//! official `anthropic` clients and the coding agents built on them work against HyperLlama.
//! Streams are server-sent events with named events (`message_start`, `content_block_delta`,
//! ...); errors are `{"type": "error", "error": {"type", "message"}}`.

pub(crate) mod convert;
mod handlers;
pub(crate) mod types;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::{finish_error, ApiError, Dialect, DialectError, ErrorKind};
use crate::routes::Routes;
use crate::AppState;

pub struct Anthropic;

/// Anthropic's status for "overloaded".
const OVERLOADED: u16 = 529;

impl Dialect for Anthropic {
    fn error_response(err: &ApiError) -> Response {
        let (status, kind) = match err.kind {
            ErrorKind::BadRequest => (StatusCode::BAD_REQUEST, "invalid_request_error"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found_error"),
            ErrorKind::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large"),
            ErrorKind::Unauthorized => (StatusCode::UNAUTHORIZED, "authentication_error"),
            ErrorKind::Forbidden => (StatusCode::FORBIDDEN, "permission_error"),
            ErrorKind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
            ErrorKind::Overloaded => {
                (StatusCode::from_u16(OVERLOADED).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), "overloaded_error")
            }
            ErrorKind::Unavailable | ErrorKind::BadGateway | ErrorKind::Internal | ErrorKind::NotImplemented => {
                (err.status(), "api_error")
            }
        };
        let body = serde_json::json!({ "type": "error", "error": { "type": kind, "message": err.message } });
        finish_error(err, (status, axum::Json(body)).into_response())
    }
}

/// An error event's `error.type` in a stream (the status line was sent already).
pub(crate) fn error_type(err: &ApiError) -> &'static str {
    match err.kind {
        ErrorKind::Overloaded => "overloaded_error",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::BadRequest => "invalid_request_error",
        _ => "api_error",
    }
}

pub(crate) type Json<T> = crate::extract::DialectJson<T, Anthropic>;
pub(crate) type Result<T> = std::result::Result<T, DialectError<Anthropic>>;

pub fn routes(state: AppState) -> Routes {
    Routes::default()
        .post("/v1/messages", handlers::messages)
        .post("/v1/messages/count_tokens", handlers::count_tokens)
        .map(|r| {
            r.layer(axum::extract::DefaultBodyLimit::max(crate::MAX_JSON_BODY))
                .route_layer(axum::middleware::from_fn_with_state(state, crate::middleware::handle::<Anthropic>))
        })
}
