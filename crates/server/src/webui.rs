//! The web chat (`/ui/`) and dashboard (`/ui/dashboard`): static files from
//! `crates/server/web/`, embedded in the binary at build time, so the UI works with no network
//! at all. The pages are clients of the public API (`/api/tags`, `/api/chat`, `/api/ps`,
//! `/metrics`, `/api/fleet`), with the browser session's API key like any client; the files
//! themselves are not secret and need no key (the page must load to ask for one).
//!
//! Every response carries a Content-Security-Policy that allows only this server's own
//! scripts, styles and connections (no inline script, no other origin), and
//! `X-Content-Type-Options`, `Referrer-Policy` and `X-Frame-Options`. Model output is turned
//! into DOM nodes by `web/markdown.js` without ever parsing it as HTML.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

struct Asset {
    name: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $mime:expr) => {
        Asset { name: $name, mime: $mime, body: include_bytes!(concat!("../web/", $name)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("dashboard.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("api.js", JS),
    asset!("chat.js", JS),
    asset!("markdown.js", JS),
    asset!("dashboard.js", JS),
    asset!("chart.js", JS),
    asset!("icon.svg", "image/svg+xml"),
];

/// Only this origin's scripts, styles and connections; images from here or data/blob URLs.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The headers every UI response carries.
fn secure(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    resp
}

/// Each asset's entity tag: a digest of its bytes, so a new build's files are never stale.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let d = Sha256::digest(a.body);
                format!("\"{}\"", d[..12].iter().map(|b| format!("{b:02x}")).collect::<String>())
            })
            .collect()
    })
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return secure((StatusCode::NOT_FOUND, "no such file in the web UI").into_response());
    };
    let asset = &ASSETS[i];
    let tag = &etags()[i];
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let common = [(header::ETAG, tag.clone()), (header::CACHE_CONTROL, "no-cache".to_string())];
    if matches {
        return secure((StatusCode::NOT_MODIFIED, common).into_response());
    }
    secure((common, [(header::CONTENT_TYPE, asset.mime)], asset.body).into_response())
}

async fn chat(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn dashboard(headers: HeaderMap) -> Response {
    serve("dashboard.html", &headers)
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    // The names are a fixed list: nothing a path could say reaches the disk.
    serve(&name, &headers)
}

/// The UI's routes (no API key: the pages ask for one when the API needs it).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(chat))
        .route("/ui/dashboard", get(dashboard))
        .route("/ui/{file}", get(file))
}

/// Whether a request for `/` comes from a browser (which is sent to the UI).
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_pages_name_is_embedded() {
        // Each `/ui/<name>` a page or script refers to must be served, or the page breaks offline.
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".html") || a.name.ends_with(".js")) {
            let text = std::str::from_utf8(asset.body).expect("utf-8");
            for (i, _) in text.match_indices("/ui/") {
                let rest = &text[i + 4..];
                let name: String =
                    rest.chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')).collect();
                if name.is_empty() || name == "dashboard" {
                    continue;
                }
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{} refers to /ui/{name}, which is not embedded",
                    asset.name
                );
            }
            for (i, _) in text.match_indices("from './") {
                let name: String = text[i + 8..].chars().take_while(|c| *c != '\'').collect();
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{} imports ./{name}, which is not embedded",
                    asset.name
                );
            }
            if asset.name.ends_with(".html") {
                // No inline script, style or handler: the Content-Security-Policy would block it.
                assert!(
                    !text.contains("<script>") && !text.contains("<style") && !text.contains(" style=\""),
                    "{}",
                    asset.name
                );
                assert!(!text.contains(" onclick=") && !text.contains(" onload="), "{}", asset.name);
                assert!(
                    !text.contains("http://") && !text.contains("https://"),
                    "{} loads from another origin",
                    asset.name
                );
            } else {
                // Nothing is ever parsed as HTML (model output reaches the page only as text nodes).
                for sink in [".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
                    assert!(!text.contains(sink), "{} uses {sink}", asset.name);
                }
            }
        }
    }

    #[test]
    fn etags_differ_by_content_and_revalidate() {
        let mut headers = HeaderMap::new();
        let first = serve("chat.js", &headers);
        assert_eq!(first.status(), StatusCode::OK);
        let tag = first.headers()[header::ETAG].clone();
        assert_ne!(tag, serve("api.js", &headers).headers()[header::ETAG]);
        headers.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(serve("chat.js", &headers).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(serve("../Cargo.toml", &HeaderMap::new()).status(), StatusCode::NOT_FOUND);
    }
}
