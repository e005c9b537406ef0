//! Names to models: one resolver for every endpoint (and the CLI's in-process commands).
//!
//! A name is looked up in the store as the user wrote it (any case), then as its hub alias
//! (`hf.co/owner/repo` for `owner/repo` and back), then in the fleet's catalogs. The CLI may
//! also name a `.gguf` file on its own disk; the server never resolves paths.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyperllama_store::{Digest, Manifest, ModelName, Store, StoreError};

use crate::error::{ApiError, ErrorKind};
use crate::remotes::{NodeId, Remotes};

/// Where a model's weights are.
#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    /// A blob of the store.
    Local { blob: PathBuf },
    /// A file on this machine named directly (the CLI's `generate model.gguf`).
    File { path: PathBuf },
    /// A fleet node serves it.
    Remote { node: NodeId },
}

/// A model name, resolved once per request.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The name it is loaded and shown under (the stored name, or the node's id).
    pub key: String,
    pub manifest: Manifest,
    pub location: Location,
}

impl Resolved {
    /// The path engines load (a node's model id for remote models).
    pub fn load_path(&self) -> PathBuf {
        match &self.location {
            Location::Local { blob } => blob.clone(),
            Location::File { path } => path.clone(),
            Location::Remote { .. } => PathBuf::from(&self.manifest.name),
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self.location, Location::Remote { .. })
    }
}

#[derive(Clone)]
pub struct Resolver {
    store: Store,
    remotes: Arc<Remotes>,
    /// Whether a path to a `.gguf` file names a model (the CLI; never the server).
    allow_paths: bool,
}

impl Resolver {
    pub fn new(store: Store, remotes: Arc<Remotes>, allow_paths: bool) -> Self {
        Self { store, remotes, allow_paths }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn remotes(&self) -> &Arc<Remotes> {
        &self.remotes
    }

    /// Resolves `name` (store reads happen on the blocking pool).
    pub async fn resolve(&self, name: &str) -> Result<Resolved, ApiError> {
        let this = self.clone();
        let name = name.to_string();
        tokio::task::spawn_blocking(move || this.resolve_blocking(&name)).await?
    }

    pub fn resolve_blocking(&self, name: &str) -> Result<Resolved, ApiError> {
        if name.trim().is_empty() {
            return Err(ApiError::bad_request("model is required").with_param("model"));
        }
        if self.allow_paths {
            let path = Path::new(name);
            if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) || path.is_file() {
                return file_model(path);
            }
        }
        let local =
            ModelName::parse(name).map_err(ApiError::from).and_then(|parsed| match self.store.resolve(&parsed) {
                Ok((stored, manifest)) => Ok(Resolved {
                    key: stored.to_string(),
                    location: Location::Local { blob: self.store.blob_path(&manifest.model) },
                    manifest,
                }),
                // Name the model as the user wrote it, in Ollama's wording.
                Err(StoreError::NotFound(_)) => Err(ApiError::model_not_found(name)),
                Err(e) => Err(e.into()),
            });
        match local {
            // Not in the store, or not a store name at all: a node may serve it.
            Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::BadRequest) => match self.remotes.find(name) {
                Some(remote) => Ok(Resolved {
                    key: remote.served.id.clone(),
                    manifest: remote.manifest(),
                    location: Location::Remote { node: remote.node },
                }),
                None => Err(e),
            },
            other => other,
        }
    }
}

/// A `.gguf` file named directly: a stand-in manifest whose digest is of the file's path, size
/// and modification time (the weights are not hashed for one command).
fn file_model(path: &Path) -> Result<Resolved, ApiError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        let why =
            if e.kind() == std::io::ErrorKind::NotFound { "model file not found".to_string() } else { e.to_string() };
        ApiError::new(ErrorKind::NotFound, "model_not_found", format!("{}: {why}", path.display()))
    })?;
    if !meta.is_file() {
        return Err(ApiError::bad_request(format!("{} is not a file", path.display())));
    }
    let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
    let digest = {
        use sha2::Digest as _;
        let h = sha2::Sha256::digest(format!("{}\0{}\0{}", path.display(), meta.len(), modified.as_nanos()).as_bytes());
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        Digest::parse(&format!("sha256:{hex}")).map_err(ApiError::from)?
    };
    let name = path.display().to_string();
    let manifest = Manifest {
        name: name.clone(),
        model: digest,
        size: meta.len(),
        template: None,
        system: None,
        license: None,
        parameters: Default::default(),
        messages: Vec::new(),
        source: name.clone(),
        modified_at: chrono::DateTime::<chrono::Utc>::from(std::time::UNIX_EPOCH + modified).to_rfc3339(),
    };
    Ok(Resolved { key: name, manifest, location: Location::File { path: path.to_path_buf() } })
}
