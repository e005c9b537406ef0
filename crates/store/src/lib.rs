//! The model store: `name:tag` manifests pointing at content-addressed blobs.
//!
//! Layout under the store root (`HYPERLLAMA_MODELS`, default `~/.hyperllama/models`):
//!
//! ```text
//! blobs/sha256-<hex>                 the bytes, named by their digest; shared by every name
//! manifests/<namespace>/<model>/<tag>.json
//! ```
//!
//! Every write goes to a temporary file in the same directory and is renamed into place only
//! after its digest is checked, so a crash or an interrupted copy never leaves a half-written
//! model under a real name. Names are validated so that none can escape the store directory.

mod digest;
pub mod hub;
mod measurements;
mod modelfile;
mod name;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use digest::Digest;
pub use measurements::{digest_of_file, Measurement, Measurements};
pub use modelfile::{Modelfile, ModelfileError};
pub use name::ModelName;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid model name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("model '{0}' not found")]
    NotFound(String),
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    InvalidDigest(String),
    #[error("blob {0} not found; upload it first (POST /api/blobs/{0})")]
    BlobNotFound(String),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl StoreError {
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::InvalidName { .. } => "invalid_name",
            StoreError::NotFound(_) => "model_not_found",
            StoreError::InvalidDigest(_) => "invalid_digest",
            StoreError::BlobNotFound(_) => "blob_not_found",
            StoreError::DigestMismatch { .. } => "digest_mismatch",
            StoreError::Io { .. } => "io",
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// What a name points at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `namespace/model:tag` as given (namespace omitted when it is the default).
    pub name: String,
    /// The GGUF weights.
    pub model: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Default request options (`PARAMETER` lines, `parameters` in /api/create).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<hyperllama_core::Message>,
    /// Where the weights came from (a path, another model, a hub revision).
    #[serde(default)]
    pub source: String,
    /// RFC 3339.
    pub modified_at: String,
}

/// Everything a create request can set besides the weights.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub template: Option<String>,
    pub system: Option<String>,
    pub license: Option<String>,
    pub parameters: BTreeMap<String, serde_json::Value>,
    pub messages: Vec<hyperllama_core::Message>,
}

/// Where a new model's weights come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A GGUF file on this machine; it is copied into the store.
    File(PathBuf),
    /// A blob already in the store.
    Blob(Digest),
    /// Another model: its weights and settings, then the overrides.
    Model(ModelName),
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for dir in [root.join("blobs"), root.join("manifests")] {
            fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join(digest.file_name())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Streams `reader` into the blob store, hashing as it goes; the blob appears under its
    /// digest only when complete and, if `expected` is given, only when it matches.
    pub fn write_blob(&self, reader: impl Read, expected: Option<&Digest>) -> Result<Digest, StoreError> {
        let dir = self.root.join("blobs");
        let tmp = tempfile_in(&dir)?;
        let digest = {
            let mut hasher = digest::Hasher::new();
            let mut reader = reader;
            let mut file = fs::File::create(&tmp.0).map_err(io(&tmp.0))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = reader.read(&mut buf).map_err(io(&tmp.0))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n]).map_err(io(&tmp.0))?;
            }
            file.sync_all().map_err(io(&tmp.0))?;
            hasher.finish()
        };
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(StoreError::DigestMismatch { expected: expected.to_string(), actual: digest.to_string() });
            }
        }
        let dest = self.blob_path(&digest);
        fs::rename(&tmp.0, &dest).map_err(io(&dest))?;
        tmp.keep();
        Ok(digest)
    }

    fn manifest_path(&self, name: &ModelName) -> PathBuf {
        let mut p = self.root.join("manifests");
        for c in name.components() {
            p.push(c);
        }
        p.join(format!("{}.json", name.tag))
    }

    /// Where `name`'s manifest is: the exact path, else the one whose name matches it without
    /// regard to case (`Org/Repo:Q4_1` finds `org/repo:q4_1`).
    fn find_manifest(&self, name: &ModelName) -> Option<PathBuf> {
        let exact = self.manifest_path(name);
        if exact.is_file() {
            return Some(exact);
        }
        let mut dir = self.root.join("manifests");
        let wanted: Vec<String> =
            name.components().into_iter().map(str::to_string).chain([format!("{}.json", name.tag)]).collect();
        for (i, part) in wanted.iter().enumerate() {
            let entry = fs::read_dir(&dir).ok()?.flatten().find(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.eq_ignore_ascii_case(part) && (i + 1 == wanted.len()) == e.path().is_file()
            })?;
            dir = entry.path();
        }
        Some(dir)
    }

    pub fn get(&self, name: &ModelName) -> Result<Manifest, StoreError> {
        let Some(path) = self.find_manifest(name) else { return Err(StoreError::NotFound(name.to_string())) };
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::NotFound(name.to_string())),
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        serde_json::from_str(&text)
            .map_err(|e| StoreError::Io { path, source: std::io::Error::new(std::io::ErrorKind::InvalidData, e) })
    }

    /// The manifest `name` refers to, as the user may write it: the name itself (any case),
    /// else its hub alias (`hf.co/owner/repo` for `owner/repo` and back). Returns the name it
    /// is stored under with it.
    pub fn resolve(&self, name: &ModelName) -> Result<(ModelName, Manifest), StoreError> {
        match self.get(name) {
            Ok(m) => Ok((ModelName::parse(&m.name).unwrap_or_else(|_| name.clone()), m)),
            Err(StoreError::NotFound(_)) => match name.hub_alias().map(|a| self.get(&a)) {
                Some(Ok(m)) => Ok((ModelName::parse(&m.name).unwrap_or_else(|_| name.clone()), m)),
                _ => Err(StoreError::NotFound(name.to_string())),
            },
            Err(e) => Err(e),
        }
    }

    /// Writes `manifest` under `name` (atomically). A name that differs only in case from a
    /// stored one replaces it, as names match without regard to case.
    pub fn put_manifest(&self, name: &ModelName, manifest: &Manifest) -> Result<(), StoreError> {
        let path = self.manifest_path(name);
        if let Some(old) = self.find_manifest(name).filter(|p| *p != path) {
            fs::remove_file(&old).map_err(io(&old))?;
        }
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let tmp = tempfile_in(&dir)?;
        let text = serde_json::to_vec_pretty(manifest).map_err(|e| StoreError::Io {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        fs::write(&tmp.0, text).map_err(io(&tmp.0))?;
        fs::rename(&tmp.0, &path).map_err(io(&path))?;
        tmp.keep();
        Ok(())
    }

    /// Creates (or replaces) `name`.
    pub fn create(&self, name: &ModelName, source: Source, overrides: Overrides) -> Result<Manifest, StoreError> {
        let (model, size, base, source_text) = match source {
            Source::File(path) => {
                let file = fs::File::open(&path).map_err(io(&path))?;
                let digest = self.write_blob(file, None)?;
                let size = fs::metadata(self.blob_path(&digest)).map_err(io(&path))?.len();
                (digest, size, None, path.display().to_string())
            }
            Source::Blob(digest) => {
                let path = self.blob_path(&digest);
                let size = fs::metadata(&path).map_err(|_| StoreError::BlobNotFound(digest.to_string()))?.len();
                let text = digest.to_string();
                (digest, size, None, text)
            }
            Source::Model(from) => {
                let m = self.get(&from)?;
                (m.model.clone(), m.size, Some(m), from.to_string())
            }
        };
        let base = base.unwrap_or_else(|| Manifest {
            name: String::new(),
            model: model.clone(),
            size,
            template: None,
            system: None,
            license: None,
            parameters: BTreeMap::new(),
            messages: Vec::new(),
            source: String::new(),
            modified_at: String::new(),
        });
        let mut parameters = base.parameters;
        parameters.extend(overrides.parameters);
        let manifest = Manifest {
            name: name.to_string(),
            model,
            size,
            template: overrides.template.or(base.template),
            system: overrides.system.or(base.system),
            license: overrides.license.or(base.license),
            parameters,
            messages: if overrides.messages.is_empty() { base.messages } else { overrides.messages },
            source: source_text,
            modified_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        self.put_manifest(name, &manifest)?;
        Ok(manifest)
    }

    /// Every model, sorted by name.
    pub fn list(&self) -> Result<Vec<Manifest>, StoreError> {
        let mut out = Vec::new();
        let root = self.root.join("manifests");
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::Io { path: dir, source: e }),
            };
            for entry in entries.flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "json") {
                    if let Ok(m) = fs::read_to_string(&p).map(|t| serde_json::from_str::<Manifest>(&t)) {
                        match m {
                            Ok(m) => out.push(m),
                            Err(_) => continue,
                        }
                    }
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Another name for the same weights; no data is copied.
    pub fn copy(&self, from: &ModelName, to: &ModelName) -> Result<Manifest, StoreError> {
        let mut m = self.get(from)?;
        m.name = to.to_string();
        m.modified_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.put_manifest(to, &m)?;
        Ok(m)
    }

    /// Removes `name`, then every blob no manifest refers to.
    pub fn delete(&self, name: &ModelName) -> Result<(), StoreError> {
        let path = self.find_manifest(name).ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::NotFound(name.to_string())),
            Err(e) => return Err(StoreError::Io { path, source: e }),
        }
        self.collect_garbage()?;
        Ok(())
    }

    /// Deletes blobs that no manifest refers to (and stale temporary files).
    pub fn collect_garbage(&self) -> Result<u64, StoreError> {
        let used: std::collections::HashSet<String> = self.list()?.into_iter().map(|m| m.model.file_name()).collect();
        let dir = self.root.join("blobs");
        let mut removed = 0;
        for entry in fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.starts_with("sha256-") && !used.contains(&file) {
                fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// A temporary path next to its destination, removed on drop unless kept.
struct TempPath(PathBuf, bool);

impl TempPath {
    fn keep(mut self) {
        self.1 = true;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.1 {
            let _ = fs::remove_file(&self.0);
        }
    }
}

fn tempfile_in(dir: &Path) -> Result<TempPath, StoreError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let p = dir.join(format!(".tmp-{}-{nanos}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    Ok(TempPath(p, false))
}

#[cfg(test)]
mod tests;
