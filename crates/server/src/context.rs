//! Facts about one request that every layer below the HTTP handlers may need: who sent it
//! (the key to charge), where from, when it arrived. A leaf module: it depends on nothing
//! else of the server's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::auth::Key;

/// Set by the middleware on every request; handlers pass it to the service.
#[derive(Clone)]
pub struct RequestContext {
    pub id: String,
    /// The API key that authenticated the request, when keys are configured.
    pub key: Option<Arc<Key>>,
    /// The client's address, when the server knows it (not in in-process router tests).
    pub peer: Option<SocketAddr>,
    /// When the request arrived (durations in responses count from here).
    pub started: Instant,
}

impl RequestContext {
    /// A context for calls that come from this process (the CLI, tests).
    pub fn local() -> Self {
        Self { id: "local".into(), key: None, peer: None, started: Instant::now() }
    }

    /// Whether the request came over loopback.
    pub fn is_loopback(&self) -> bool {
        self.peer.is_some_and(|p| p.ip().is_loopback())
    }
}

/// The error code of an error response, for `hyperllama_errors_total`.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCode(pub &'static str);
