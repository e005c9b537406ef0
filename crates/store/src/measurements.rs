//! Engine speeds measured per model, by the digest of its weights: `hyperllama bench --record`
//! writes them; the server picks the fastest measured engine for a model that nobody asked a
//! particular engine for. Stored as `measurements.json` at the store root (written atomically).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{io, tempfile_in, Digest, Store, StoreError};

/// One engine's measured speed on one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Median decode speed, tokens per second.
    pub decode_tps: f64,
    /// Median time to first token, milliseconds.
    pub ttft_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// RFC 3339.
    pub measured_at: String,
}

/// Weights digest (hex) -> engine id -> its measurement.
pub type Measurements = BTreeMap<String, BTreeMap<String, Measurement>>;

const FILE: &str = "measurements.json";

impl Store {
    /// Every recorded measurement (none when the file is missing or unreadable).
    pub fn measurements(&self) -> Measurements {
        let path = self.root().join(FILE);
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable engine measurements");
                Measurements::new()
            }),
            Err(_) => Measurements::new(),
        }
    }

    /// When the measurements last changed (to cache them).
    pub fn measurements_modified(&self) -> Option<std::time::SystemTime> {
        fs::metadata(self.root().join(FILE)).and_then(|m| m.modified()).ok()
    }

    /// Records (or replaces) `engine`'s measurement for the weights `digest`.
    pub fn record_measurement(&self, digest: &Digest, engine: &str, m: Measurement) -> Result<(), StoreError> {
        if !m.decode_tps.is_finite() || m.decode_tps <= 0.0 {
            return Err(StoreError::Io {
                path: self.root().join(FILE),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "a measurement needs a decode speed"),
            });
        }
        let mut all = self.measurements();
        all.entry(digest.hex().to_string()).or_default().insert(engine.to_string(), m);
        let path = self.root().join(FILE);
        let tmp = tempfile_in(self.root())?;
        let text = serde_json::to_vec_pretty(&all)
            .map_err(|e| StoreError::Io { path: path.clone(), source: std::io::Error::other(e) })?;
        fs::write(&tmp.0, text).map_err(io(&tmp.0))?;
        fs::rename(&tmp.0, &path).map_err(io(&path))?;
        tmp.keep();
        Ok(())
    }
}

/// The sha256 of a file, as the store names it.
pub fn digest_of_file(path: &Path) -> Result<Digest, StoreError> {
    let mut file = fs::File::open(path).map_err(io(path))?;
    let mut hasher = crate::digest::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}
