use std::fmt;

use crate::StoreError;

/// `[host/][namespace/]model[:tag]`: Ollama's model reference, and one grammar for every verb
/// and endpoint. The tag defaults to `latest`, the namespace to `library`. A host appears for
/// models pulled from a registry by a name that says so: `hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M`
/// (`huggingface.co` is written `hf.co`, as Ollama does). Names are shown as typed and matched
/// without regard to case.
///
/// Each part is 1-80 characters of `A-Za-z0-9`, `.`, `_`, `-` and may not start with `.` or
/// `-`; a host is a dotted DNS name. So no name can leave the store directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelName {
    pub host: Option<String>,
    pub namespace: String,
    pub model: String,
    pub tag: String,
}

pub(crate) const DEFAULT_NAMESPACE: &str = "library";
pub(crate) const DEFAULT_TAG: &str = "latest";

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
        let s = s.strip_prefix("https://").unwrap_or(s);
        let (path, tag) = match s.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, t),
            _ => (s, DEFAULT_TAG),
        };
        let parts: Vec<&str> = path.split('/').collect();
        let (host, namespace, model) = match parts[..] {
            [m] => (None, DEFAULT_NAMESPACE, m),
            [ns, m] => (None, ns, m),
            [h, ns, m] => (Some(h), ns, m),
            _ => return Err(bad("too many '/' (expected [host/][namespace/]model[:tag])")),
        };
        let host = match host {
            None => None,
            Some(h) => {
                check_host(h).map_err(bad)?;
                let h = h.to_ascii_lowercase();
                Some(if h == "huggingface.co" { "hf.co".to_string() } else { h })
            }
        };
        for part in [namespace, model, tag] {
            check_part(part).map_err(bad)?;
        }
        Ok(Self { host, namespace: namespace.to_string(), model: model.to_string(), tag: tag.to_string() })
    }

    /// Whether this names a model of the Hugging Face hub (`hf.co/owner/repo`).
    pub fn is_hub(&self) -> bool {
        self.host.as_deref() == Some("hf.co")
    }

    /// The other spelling of a hub model's name: `hf.co/owner/repo:tag` for `owner/repo:tag`
    /// and back; `None` for names in the default namespace or on other hosts.
    pub fn hub_alias(&self) -> Option<ModelName> {
        match self.host.as_deref() {
            Some("hf.co") => Some(ModelName { host: None, ..self.clone() }),
            None if self.namespace != DEFAULT_NAMESPACE => {
                Some(ModelName { host: Some("hf.co".into()), ..self.clone() })
            }
            _ => None,
        }
    }

    /// Whether two names are the same model, ignoring case (as Ollama matches names).
    pub fn matches(&self, other: &ModelName) -> bool {
        self.host == other.host
            && self.namespace.eq_ignore_ascii_case(&other.namespace)
            && self.model.eq_ignore_ascii_case(&other.model)
            && self.tag.eq_ignore_ascii_case(&other.tag)
    }

    /// The path components of its manifest under `manifests/`.
    pub(crate) fn components(&self) -> Vec<&str> {
        let mut c = Vec::with_capacity(4);
        if let Some(h) = &self.host {
            c.push(h.as_str());
        }
        c.extend([self.namespace.as_str(), self.model.as_str()]);
        c
    }
}

fn check_host(host: &str) -> Result<(), &'static str> {
    let ok = host.len() <= 253
        && host.contains('.')
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err("the first of three parts must be a host name like hf.co")
    }
}

fn check_part(part: &str) -> Result<(), &'static str> {
    if part.is_empty() {
        return Err("a part is empty (expected [host/][namespace/]model[:tag])");
    }
    if part.len() > 80 {
        return Err("a part is longer than 80 characters");
    }
    if part.starts_with('.') || part.starts_with('-') {
        return Err("a part starts with '.' or '-'");
    }
    if !part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err("only letters, digits, '.', '_' and '-' are allowed (with '/' between parts and one ':')");
    }
    Ok(())
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Some(h) => write!(f, "{h}/{}/{}:{}", self.namespace, self.model, self.tag),
            None if self.namespace == DEFAULT_NAMESPACE => write!(f, "{}:{}", self.model, self.tag),
            None => write!(f, "{}/{}:{}", self.namespace, self.model, self.tag),
        }
    }
}
