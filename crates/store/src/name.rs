use std::fmt;

use crate::StoreError;

/// `[namespace/]model[:tag]`, Ollama's model reference. The tag defaults to `latest`, the
/// namespace to `library`. Each part is 1-80 characters of `A-Za-z0-9`, `.`, `_`, `-`, and may
/// not start with `.` or `-`, so no name can leave the store directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelName {
    pub namespace: String,
    pub model: String,
    pub tag: String,
}

const DEFAULT_NAMESPACE: &str = "library";

impl ModelName {
    pub fn parse(input: &str) -> Result<Self, StoreError> {
        let bad = |reason| StoreError::InvalidName { name: input.to_string(), reason };
        let s = input.trim();
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.len() > 200 {
            return Err(bad("it is longer than 200 characters"));
        }
        let (path, tag) = match s.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, t),
            _ => (s, "latest"),
        };
        let (namespace, model) = match path.split_once('/') {
            Some((ns, m)) => (ns, m),
            None => (DEFAULT_NAMESPACE, path),
        };
        for part in [namespace, model, tag] {
            check_part(part).map_err(bad)?;
        }
        Ok(Self { namespace: namespace.to_string(), model: model.to_string(), tag: tag.to_string() })
    }
}

fn check_part(part: &str) -> Result<(), &'static str> {
    if part.is_empty() {
        return Err("a part is empty (expected [namespace/]model[:tag])");
    }
    if part.len() > 80 {
        return Err("a part is longer than 80 characters");
    }
    if part.starts_with('.') || part.starts_with('-') {
        return Err("a part starts with '.' or '-'");
    }
    if !part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err("only letters, digits, '.', '_' and '-' are allowed (with one '/' and one ':')");
    }
    Ok(())
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace == DEFAULT_NAMESPACE {
            write!(f, "{}:{}", self.model, self.tag)
        } else {
            write!(f, "{}/{}:{}", self.namespace, self.model, self.tag)
        }
    }
}
