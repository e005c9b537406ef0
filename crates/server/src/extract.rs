//! JSON body extraction that answers malformed input in the dialect's own error shape.

use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Dialect, ErrorKind};

/// Like `axum::Json`, but a bad body is a 400 (413 when too large) rendered by dialect `D`.
pub struct DialectJson<T, D>(pub T, pub std::marker::PhantomData<D>);

/// Decodes a JSON body, naming the field at fault.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = if bytes.iter().all(u8::is_ascii_whitespace) {
            "request body is empty; send a JSON object".to_string()
        } else if path.is_empty() || path == "." {
            format!("invalid JSON body: {inner}")
        } else {
            format!("invalid value for `{path}`: {inner}")
        };
        ApiError::bad_request(msg)
    })
}

impl<T, D, S> FromRequest<S> for DialectJson<T, D>
where
    T: DeserializeOwned,
    D: Dialect,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(rejection) => {
                let status = rejection.status();
                let err = if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        ErrorKind::PayloadTooLarge,
                        "body_too_large",
                        format!("request body is larger than {} bytes", crate::MAX_JSON_BODY),
                    )
                } else {
                    ApiError::bad_request(rejection.body_text())
                };
                return Err(D::error_response(&err));
            }
        };
        decode(&bytes).map(|v| DialectJson(v, std::marker::PhantomData)).map_err(|e| D::error_response(&e))
    }
}

impl<T, D> IntoResponse for DialectJson<T, D>
where
    T: serde::Serialize,
{
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}
