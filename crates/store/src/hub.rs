//! Pulls GGUF models from the Hugging Face hub (or a mirror: `HF_ENDPOINT`), the way the hub's
//! own tools do: list the repo's files with their LFS sha256 through the API, then download
//! `resolve/<commit>/<file>`.
//!
//! Downloads are resumable (each part is kept as `blobs/.partial-<sha>-<n>` and continued with
//! a `Range` request), split into parallel ranges for big files, retried with backoff, and
//! verified against the hub's sha256 before the blob appears under its digest. `HF_TOKEN` is
//! sent as a bearer token; `HF_HUB_OFFLINE=1` forbids network access.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::{Digest, Manifest, ModelName, Overrides, Source, Store, StoreError};

/// Where and how to reach the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub endpoint: String,
    pub token: Option<String>,
    pub offline: bool,
    /// Files larger than this are fetched as several ranges at once.
    pub part_size: u64,
    pub max_parallel: usize,
    /// Retries of one range after a dropped connection or a 5xx, with exponential backoff.
    pub max_retries: u32,
}

impl HubConfig {
    /// `HF_ENDPOINT` (default `https://huggingface.co`), `HF_TOKEN`, `HF_HUB_OFFLINE`.
    pub fn from_env() -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self {
            endpoint: env("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".into())
                .trim_end_matches('/')
                .to_string(),
            token: env("HF_TOKEN").or_else(|| env("HUGGING_FACE_HUB_TOKEN")),
            offline: env("HF_HUB_OFFLINE").is_some_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes")),
            part_size: 64 << 20,
            max_parallel: 4,
            max_retries: 5,
        }
    }
}

/// `hf.co/owner/repo[:QUANT]` or `owner/repo[:QUANT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    pub repo: String,
    pub quant: Option<String>,
    pub revision: String,
    /// Whether the reference was written with the hub's host (`hf.co/...`), so the model is
    /// stored and listed under the name as the user wrote it.
    pub with_host: bool,
}

impl HubRef {
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let stripped = ["https://huggingface.co/", "https://hf.co/", "huggingface.co/", "hf.co/"]
            .iter()
            .find_map(|p| s.strip_prefix(p));
        let with_host = stripped.is_some();
        let s = stripped.unwrap_or(s);
        let (repo, quant) = match s.rsplit_once(':') {
            Some((r, q)) => (r, Some(q.to_string())),
            None => (s, None),
        };
        let (owner, name) = repo.split_once('/')?;
        let ok = |p: &str| {
            !p.is_empty()
                && !p.starts_with('.')
                && !p.starts_with('-')
                && p.len() <= 96
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        };
        if !ok(owner) || !ok(name) || quant.as_deref().is_some_and(|q| !ok(q)) {
            return None;
        }
        Some(Self {
            repo: repo.to_string(),
            quant: quant.filter(|q| !q.eq_ignore_ascii_case("latest")),
            revision: "main".into(),
            with_host,
        })
    }

    /// The name a pulled model is stored and listed under: the reference as written
    /// (`hf.co/Org/Repo:Q4_1` or `Org/Repo:Q4_1`; `:latest` when no quantization was named,
    /// whichever file was picked for it), as Ollama names hub models.
    pub fn store_name(&self) -> Result<ModelName, StoreError> {
        let host = if self.with_host { "hf.co/" } else { "" };
        ModelName::parse(&format!("{host}{}:{}", self.repo, self.quant.as_deref().unwrap_or("latest")))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("HF_HUB_OFFLINE is set and {0} is not in the local store")]
    Offline(String),
    #[error("the hub refused access to {0} (401/403): set HF_TOKEN to a token that can read it")]
    Unauthorized(String),
    #[error("not found on the hub: {0}")]
    NotFound(String),
    #[error("{repo} has no GGUF file")]
    NoGguf { repo: String },
    #[error("{repo} has no {quant} GGUF; available: {available}")]
    QuantNotFound { repo: String, quant: String, available: String },
    #[error("the hub answered HTTP {status} for {url}")]
    Http { status: u16, url: String },
    #[error("cannot reach the hub at {endpoint}: {message}")]
    Network { endpoint: String, message: String },
    #[error("the hub sent an unexpected answer: {0}")]
    Protocol(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a pull reports as it goes (Ollama's `/api/pull` statuses).
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Status(String),
    /// Bytes of the weights file so far.
    Download {
        digest: String,
        total: u64,
        completed: u64,
    },
}

#[derive(serde::Deserialize)]
struct RepoInfo {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(serde::Deserialize, Clone)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    lfs: Option<Lfs>,
}

#[derive(serde::Deserialize, Clone)]
struct Lfs {
    sha256: String,
    size: u64,
}

/// Quantizations in order of preference when the requested (or default) one is missing.
const PREFERENCE: &[&str] = &[
    "Q4_K_M", "Q4_K_S", "Q4_0", "Q4_1", "Q5_K_M", "Q5_K_S", "Q5_0", "Q5_1", "IQ4_XS", "IQ4_NL", "Q3_K_M", "Q3_K_L",
    "Q6_K", "Q8_0", "Q3_K_S", "Q2_K", "F16", "BF16", "F32",
];

fn quant_of(file: &str) -> Option<String> {
    let upper = file.to_ascii_uppercase();
    let stem = upper.trim_end_matches(".GGUF");
    PREFERENCE
        .iter()
        .filter(|q| stem.ends_with(*q) || stem.contains(&format!("{q}.")))
        .max_by_key(|q| q.len())
        .map(|q| q.to_string())
        .or_else(|| stem.rsplit(['.', '-']).next().map(str::to_string))
}

/// Picks the GGUF for `quant` (default Q4_K_M, then the nearest available). Returns the file
/// and the quantization it has, and whether that was a fallback.
fn choose(repo: &str, siblings: &[Sibling], quant: Option<&str>) -> Result<(Sibling, String, bool), HubError> {
    let ggufs: Vec<&Sibling> = siblings
        .iter()
        .filter(|s| {
            s.rfilename.to_ascii_lowercase().ends_with(".gguf") && !s.rfilename.to_ascii_lowercase().contains("mmproj")
        })
        .collect();
    if ggufs.is_empty() {
        return Err(HubError::NoGguf { repo: repo.into() });
    }
    let with_q: Vec<(&Sibling, String)> =
        ggufs.iter().map(|s| (*s, quant_of(&s.rfilename).unwrap_or_default())).collect();
    if let Some(q) = quant {
        let want = q.to_ascii_uppercase();
        return with_q.iter().find(|(_, fq)| *fq == want).map(|(s, fq)| ((*s).clone(), fq.clone(), false)).ok_or_else(
            || HubError::QuantNotFound {
                repo: repo.into(),
                quant: want,
                available: with_q.iter().map(|(_, q)| q.as_str()).collect::<Vec<_>>().join(", "),
            },
        );
    }
    for (i, q) in PREFERENCE.iter().enumerate() {
        if let Some((s, fq)) = with_q.iter().find(|(_, fq)| fq == q) {
            return Ok(((*s).clone(), fq.clone(), i > 0));
        }
    }
    let (s, fq) = &with_q[0];
    Ok(((*s).clone(), fq.clone(), true))
}

fn client(cfg: &HubConfig) -> Result<reqwest::Client, HubError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = &cfg.token {
        let v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| HubError::Protocol("HF_TOKEN is not a valid header value".into()))?;
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .user_agent(concat!("hyperllama/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| HubError::Protocol(e.to_string()))
}

fn network(cfg: &HubConfig, e: reqwest::Error) -> HubError {
    HubError::Network { endpoint: cfg.endpoint.clone(), message: e.to_string() }
}

fn status_error(status: reqwest::StatusCode, what: &str, url: &str) -> HubError {
    match status.as_u16() {
        401 | 403 => HubError::Unauthorized(what.into()),
        404 => HubError::NotFound(what.into()),
        s => HubError::Http { status: s, url: url.into() },
    }
}

/// What a pull will fetch, settled before any byte of the weights moves.
#[derive(Debug, Clone)]
pub struct Plan {
    pub r: HubRef,
    pub commit: String,
    pub file: String,
    pub quant: String,
    pub digest: Digest,
    pub size: u64,
    /// The requested (or default) quantization was missing and this is the nearest.
    pub fallback: bool,
}

/// Lists the repo and picks the file: every "not found", "unauthorized" or "unreachable"
/// surfaces here, so a server can answer it with a real status.
pub async fn plan(cfg: &HubConfig, r: &HubRef) -> Result<Plan, HubError> {
    if cfg.offline {
        return Err(HubError::Offline(format!("hf.co/{}", r.repo)));
    }
    let http = client(cfg)?;
    let url = format!("{}/api/models/{}/revision/{}?blobs=true", cfg.endpoint, r.repo, r.revision);
    let resp = http.get(&url).send().await.map_err(|e| network(cfg, e))?;
    if !resp.status().is_success() {
        return Err(status_error(resp.status(), &r.repo, &url));
    }
    let info: RepoInfo = resp.json().await.map_err(|e| HubError::Protocol(format!("repo listing: {e}")))?;
    let commit = info.sha.clone().unwrap_or_else(|| r.revision.clone());
    let (file, quant, fallback) = choose(&r.repo, &info.siblings, r.quant.as_deref())?;
    let lfs = file.lfs.clone().ok_or_else(|| HubError::Protocol(format!("{} has no LFS sha256", file.rfilename)))?;
    let digest = Digest::parse(&format!("sha256:{}", lfs.sha256))
        .map_err(|_| HubError::Protocol("bad sha256 in listing".into()))?;
    Ok(Plan {
        r: r.clone(),
        commit,
        file: file.rfilename.clone(),
        quant,
        digest,
        size: file.size.unwrap_or(lfs.size),
        fallback,
    })
}

/// Pulls `r` into `store`, reporting progress; returns the new manifest.
pub async fn pull(
    store: &Store,
    cfg: &HubConfig,
    r: &HubRef,
    mut progress: impl FnMut(Progress) + Send,
) -> Result<Manifest, HubError> {
    progress(Progress::Status("pulling manifest".into()));
    let plan = plan(cfg, r).await?;
    fetch(store, cfg, &plan, progress).await
}

/// Downloads and verifies what `plan` names, then writes the manifest.
pub async fn fetch(
    store: &Store,
    cfg: &HubConfig,
    plan: &Plan,
    mut progress: impl FnMut(Progress) + Send,
) -> Result<Manifest, HubError> {
    let http = client(cfg)?;
    let r = &plan.r;
    let (digest, total, quant, commit) = (plan.digest.clone(), plan.size, plan.quant.clone(), plan.commit.clone());
    if plan.fallback {
        progress(Progress::Status(format!("Q4_K_M is not in {}; using {} ({})", r.repo, quant, plan.file)));
    }
    let file = Sibling { rfilename: plan.file.clone(), size: Some(total), lfs: None };
    if !store.has_blob(&digest) {
        let file_url = format!("{}/{}/resolve/{}/{}", cfg.endpoint, r.repo, commit, file.rfilename);
        download(store, cfg, &http, &file_url, &digest, total, &mut progress).await?;
    } else {
        // Already here (another name shares the blob); it was verified when it was written.
        progress(Progress::Download { digest: digest.to_string(), total, completed: total });
        progress(Progress::Status("verifying sha256 digest".into()));
    }

    progress(Progress::Status("writing manifest".into()));
    let name = r.store_name()?;
    let store2 = store.clone();
    let source = format!("hf.co/{}@{}/{}", r.repo, commit, file.rfilename);
    let d2 = digest.clone();
    let manifest = tokio::task::spawn_blocking(move || -> Result<Manifest, StoreError> {
        let mut m = store2.create(&name, Source::Blob(d2), Overrides::default())?;
        m.source = source;
        store2.put_manifest(&name, &m)?;
        Ok(m)
    })
    .await
    .map_err(|e| HubError::Protocol(e.to_string()))??;
    progress(Progress::Status("success".into()));
    Ok(manifest)
}

async fn download(
    store: &Store,
    cfg: &HubConfig,
    http: &reqwest::Client,
    url: &str,
    digest: &Digest,
    total: u64,
    progress: &mut (impl FnMut(Progress) + Send),
) -> Result<(), HubError> {
    let parts = total.div_ceil(cfg.part_size.max(1)).max(1);
    let dir = store.root().join("blobs");
    let part_path = |i: u64| dir.join(format!(".partial-{}-{i}", digest.hex()));
    let done = Arc::new(AtomicU64::new(0));
    for i in 0..parts {
        done.fetch_add(std::fs::metadata(part_path(i)).map(|m| m.len()).unwrap_or(0), Ordering::Relaxed);
    }
    let tasks = futures::stream::iter((0..parts).map(|i| {
        let start = i * cfg.part_size;
        let end = ((i + 1) * cfg.part_size).min(total);
        fetch_part(cfg, http.clone(), url.to_string(), part_path(i), start, end, done.clone())
    }))
    .buffer_unordered(cfg.max_parallel.max(1));
    tokio::pin!(tasks);
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            next = tasks.next() => match next {
                Some(r) => r?,
                None => break,
            },
            _ = ticker.tick() => {
                progress(Progress::Download { digest: digest.to_string(), total, completed: done.load(Ordering::Relaxed).min(total) });
            }
        }
    }
    progress(Progress::Download { digest: digest.to_string(), total, completed: total });
    progress(Progress::Status("verifying sha256 digest".into()));
    let paths: Vec<PathBuf> = (0..parts).map(part_path).collect();
    let store2 = store.clone();
    let d2 = digest.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
        let mut reader: Box<dyn std::io::Read + Send> = Box::new(std::io::empty());
        for p in &paths {
            let f = std::fs::File::open(p).map_err(|source| StoreError::Io { path: p.clone(), source })?;
            reader = Box::new(<Box<dyn std::io::Read + Send> as std::io::Read>::chain(reader, f));
        }
        let r = store2.write_blob(reader, Some(&d2));
        // A mismatch means the parts are bad: drop them so the next pull starts clean.
        if r.is_ok() || matches!(r, Err(StoreError::DigestMismatch { .. })) {
            for p in &paths {
                let _ = std::fs::remove_file(p);
            }
        }
        r.map(|_| ())
    })
    .await
    .map_err(|e| HubError::Protocol(e.to_string()))?;
    result?;
    Ok(())
}

/// Downloads bytes `start..end` into `path`, continuing whatever `path` already holds.
async fn fetch_part(
    cfg: &HubConfig,
    http: reqwest::Client,
    url: String,
    path: PathBuf,
    start: u64,
    end: u64,
    done: Arc<AtomicU64>,
) -> Result<(), HubError> {
    let want = end - start;
    let mut attempt = 0u32;
    loop {
        let have = tokio::fs::metadata(&path).await.map(|m| m.len()).unwrap_or(0);
        if have >= want {
            return Ok(());
        }
        let result: Result<(), HubError> = async {
            let resp = http
                .get(&url)
                .header(reqwest::header::RANGE, format!("bytes={}-{}", start + have, end - 1))
                .send()
                .await
                .map_err(|e| network(cfg, e))?;
            let status = resp.status();
            if status != reqwest::StatusCode::PARTIAL_CONTENT {
                return Err(status_error(status, &url, &url));
            }
            let mut f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await
                .map_err(|source| StoreError::Io { path: path.clone(), source })?;
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| network(cfg, e))?;
                f.write_all(&chunk).await.map_err(|source| StoreError::Io { path: path.clone(), source })?;
                done.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            f.flush().await.map_err(|source| StoreError::Io { path: path.clone(), source })?;
            Ok(())
        }
        .await;
        let now = tokio::fs::metadata(&path).await.map(|m| m.len()).unwrap_or(0);
        match result {
            // A short body is resumed from where it stopped, as long as it brought bytes.
            Ok(()) if now > have => attempt = 0,
            Ok(()) if now >= want => return Ok(()),
            // An empty answer to a range request: count it, back off, and give up in the end
            // (a mirror that always answers so must not make a tight request loop).
            Ok(()) if attempt < cfg.max_retries => {
                attempt += 1;
                tracing::warn!(attempt, "the hub answered a range request with no bytes; retrying");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            Ok(()) => {
                return Err(HubError::Protocol(format!(
                    "{url} answered {} range requests with no bytes (bytes {} of {want} of this part)",
                    attempt + 1,
                    now
                )))
            }
            Err(e @ (HubError::Network { .. } | HubError::Http { .. })) if attempt < cfg.max_retries => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "download interrupted; retrying");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_refs() {
        let r = HubRef::parse("hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M").expect("valid");
        assert_eq!(r.repo, "bartowski/SmolLM2-135M-Instruct-GGUF");
        assert_eq!(r.quant.as_deref(), Some("Q4_K_M"));
        assert_eq!(HubRef::parse("owner/repo").expect("valid").quant, None);
        for bad in ["repo", "hf.co/../x", "a/b/c", "a/b:c/d", "/a/b", "a/.b"] {
            assert!(HubRef::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(r.store_name().expect("name").to_string(), "hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M");
        let bare = HubRef::parse("Org/Repo").expect("valid");
        assert_eq!(bare.store_name().expect("name").to_string(), "Org/Repo:latest");
    }

    fn sib(name: &str) -> Sibling {
        Sibling { rfilename: name.into(), size: Some(1), lfs: Some(Lfs { sha256: "0".repeat(64), size: 1 }) }
    }

    #[test]
    fn chooses_quant_default_and_nearest() {
        let files = vec![
            sib("README.md"),
            sib("m-Q8_0.gguf"),
            sib("m-Q4_K_M.gguf"),
            sib("m-Q4_1.gguf"),
            sib("mmproj-F16.gguf"),
        ];
        let (f, q, fb) = choose("r", &files, None).expect("default");
        assert_eq!((f.rfilename.as_str(), q.as_str(), fb), ("m-Q4_K_M.gguf", "Q4_K_M", false));
        let (f, _, _) = choose("r", &files, Some("q8_0")).expect("explicit");
        assert_eq!(f.rfilename, "m-Q8_0.gguf");
        let e = choose("r", &files, Some("Q2_K")).err().expect("missing");
        assert!(e.to_string().contains("Q8_0"), "{e}");
        let (f, q, fb) = choose("r", &[sib("x.Q8_0.gguf"), sib("x.Q4_1.gguf")], None).expect("nearest");
        assert_eq!((f.rfilename.as_str(), q.as_str(), fb), ("x.Q4_1.gguf", "Q4_1", true));
        assert!(matches!(choose("r", &[sib("README.md")], None), Err(HubError::NoGguf { .. })));
    }
}
