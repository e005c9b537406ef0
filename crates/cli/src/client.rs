//! A small client of HyperLlama's own Ollama-compatible API, for the CLI verbs that talk to a
//! running server (`run`, `list`, `ps`, `show`, `rm`, `cp`, `stop`, `pull`, `create`).

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::Value;

/// The server's base URL, from `--host`, `HYPERLLAMA_HOST` (`host:port` or a URL, like
/// `OLLAMA_HOST`), or `127.0.0.1:11434`.
pub fn base_url(host: Option<&str>) -> String {
    let raw = host.map(str::to_string).or_else(|| std::env::var("HYPERLLAMA_HOST").ok()).unwrap_or_default();
    let raw = raw.trim().trim_end_matches('/');
    if raw.is_empty() {
        return "http://127.0.0.1:11434".into();
    }
    let with_scheme = if raw.contains("://") { raw.to_string() } else { format!("http://{raw}") };
    // "host" alone gets the default port; "0.0.0.0" means "this machine" to a client.
    let after = with_scheme.split_once("://").map(|(_, h)| h).unwrap_or("");
    let with_port = if after.contains(':') { with_scheme.clone() } else { format!("{with_scheme}:11434") };
    with_port.replace("://0.0.0.0", "://127.0.0.1")
}

pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the server at `host`; with `HYPERLLAMA_API_KEY` set, every request carries
    /// it as a bearer token (servers started with API keys need it).
    pub fn new(host: Option<&str>) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(key) = std::env::var("HYPERLLAMA_API_KEY") {
            if let Ok(mut v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.trim())) {
                v.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, v);
            }
        }
        let http = reqwest::Client::builder().default_headers(headers).build().unwrap_or_default();
        Self { base: base_url(host), http }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn check(&self, resp: reqwest::Result<reqwest::Response>) -> anyhow::Result<reqwest::Response> {
        let resp = resp.with_context(|| {
            format!("could not reach the HyperLlama server at {} (start it with `hyperllama serve`)", self.base)
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let msg = hyperllama_protocol::openai::error_message(&resp.text().await.unwrap_or_default());
        bail!("{msg} (HTTP {})", status.as_u16())
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self.check(self.http.get(self.url(path)).send().await).await?;
        Ok(resp.json().await?)
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<reqwest::Response> {
        self.check(self.http.post(self.url(path)).json(body).send().await).await
    }

    pub async fn delete(&self, path: &str, body: &Value) -> anyhow::Result<()> {
        self.check(self.http.delete(self.url(path)).json(body).send().await).await?;
        Ok(())
    }

    /// POSTs and calls `on_line` for every NDJSON line; an `{"error": ...}` line is an error.
    pub async fn stream(
        &self,
        path: &str,
        body: &Value,
        mut on_line: impl FnMut(Value) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let resp = self.post(path, body).await?;
        let mut lines = std::pin::pin!(hyperllama_protocol::stream::ndjson_lines(resp.bytes_stream()));
        while let Some(line) = lines.next().await {
            let line = line.context("the server closed the stream")?;
            let v: Value = serde_json::from_slice(&line).context("the server sent a malformed line")?;
            if let Some(e) = v.get("error").and_then(Value::as_str) {
                bail!("{e}");
            }
            on_line(v)?;
        }
        Ok(())
    }

    /// Uploads a file as a blob (skipped when the server has it) and returns its digest.
    pub async fn upload_blob(&self, path: &std::path::Path) -> anyhow::Result<String> {
        let digest = {
            let path = path.to_path_buf();
            tokio::task::spawn_blocking(move || sha256_file(&path)).await??
        };
        let url = self.url(&format!("/api/blobs/{digest}"));
        let head = self.http.head(&url).send().await.with_context(|| format!("could not reach {}", self.base))?;
        if head.status().is_success() {
            return Ok(digest);
        }
        let file = tokio::fs::File::open(path).await.with_context(|| format!("opening {}", path.display()))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        self.check(self.http.post(url).body(body).send().await).await?;
        Ok(digest)
    }
}

fn sha256_file(path: &std::path::Path) -> anyhow::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", h.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_forms() {
        assert_eq!(super::base_url(Some("127.0.0.1:8080")), "http://127.0.0.1:8080");
        assert_eq!(super::base_url(Some("http://example:1/")), "http://example:1");
        assert_eq!(super::base_url(Some("0.0.0.0")), "http://127.0.0.1:11434");
        assert_eq!(super::base_url(Some("localhost")), "http://localhost:11434");
    }
}
