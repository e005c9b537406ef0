use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::StoreError;

/// A sha256 content digest, written `sha256:<hex>` (Ollama's form; `sha256-<hex>` is accepted).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        let hex = s.strip_prefix("sha256:").or_else(|| s.strip_prefix("sha256-")).unwrap_or("");
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(hex.to_ascii_lowercase()))
        } else {
            Err(StoreError::InvalidDigest(s.to_string()))
        }
    }
    pub fn hex(&self) -> &str {
        &self.0
    }
    /// The blob's file name: `sha256-<hex>` (no colon, safe on every file system).
    pub fn file_name(&self) -> String {
        format!("sha256-{}", self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

pub(crate) struct Hasher(sha2::Sha256);

impl Hasher {
    pub fn new() -> Self {
        Self(sha2::Sha256::new())
    }
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    pub fn finish(self) -> Digest {
        let out = self.0.finalize();
        Digest(out.iter().map(|b| format!("{b:02x}")).collect())
    }
}
