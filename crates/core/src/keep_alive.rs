use std::time::Duration;

use crate::ValidationError;

/// How long a model stays loaded after a request: Ollama's `keep_alive`, `--keep-alive` and
/// `HYPERLLAMA_KEEP_ALIVE` (one grammar for all of them: [`crate::units::parse_duration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    Forever,
    For(Duration),
}

impl KeepAlive {
    pub const DEFAULT: KeepAlive = KeepAlive::For(Duration::from_secs(300));

    /// A JSON `keep_alive`: a duration string, bare seconds (number or string), a negative
    /// value (forever) or 0 (unload now).
    pub fn from_json(v: &serde_json::Value) -> Result<Self, ValidationError> {
        let bad =
            || ValidationError::Invalid(format!("invalid keep_alive {v}: use a duration like \"5m\", seconds, or -1"));
        match v {
            serde_json::Value::Number(n) => Ok(Self::from_secs(n.as_f64().ok_or_else(bad)?)),
            serde_json::Value::String(s) => s.parse().map_err(|_| bad()),
            _ => Err(bad()),
        }
    }

    fn from_secs(secs: f64) -> Self {
        if secs.is_nan() {
            Self::DEFAULT
        } else if secs < 0.0 {
            KeepAlive::Forever
        } else {
            KeepAlive::For(Duration::from_secs_f64(secs.min(1e9)))
        }
    }

    pub fn is_zero(&self) -> bool {
        matches!(self, KeepAlive::For(d) if d.is_zero())
    }
}

impl std::str::FromStr for KeepAlive {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Ok(secs) = t.parse::<f64>() {
            return Ok(Self::from_secs(secs));
        }
        match t.strip_prefix('-') {
            // Any negative duration means "forever", as in Ollama.
            Some(rest) => crate::units::parse_duration(rest).map(|_| KeepAlive::Forever),
            None => crate::units::parse_duration(t).map(KeepAlive::For),
        }
    }
}

impl std::fmt::Display for KeepAlive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeepAlive::Forever => f.write_str("-1 (forever)"),
            KeepAlive::For(d) => f.write_str(&crate::units::format_duration(*d)),
        }
    }
}

impl serde::Serialize for KeepAlive {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            KeepAlive::Forever => s.serialize_str("-1"),
            KeepAlive::For(d) => s.serialize_str(&crate::units::format_duration(*d)),
        }
    }
}

impl<'de> serde::Deserialize<'de> for KeepAlive {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Self::from_json(&v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ollama_forms() {
        let p = |s: &str| s.parse::<KeepAlive>().ok();
        assert_eq!(p("5m"), Some(KeepAlive::For(Duration::from_secs(300))));
        assert_eq!(p("1h30m"), Some(KeepAlive::For(Duration::from_secs(5400))));
        assert_eq!(p("500ms"), Some(KeepAlive::For(Duration::from_millis(500))));
        assert_eq!(p("-1"), Some(KeepAlive::Forever));
        assert_eq!(p("-1m"), Some(KeepAlive::Forever));
        assert!(p("0").is_some_and(|k| k.is_zero()));
        assert_eq!(KeepAlive::from_json(&serde_json::json!(30)).ok(), Some(KeepAlive::For(Duration::from_secs(30))));
        assert!(KeepAlive::from_json(&serde_json::json!(0)).is_ok_and(|k| k.is_zero()));
        for bad in ["", "5x", "m", "abc"] {
            assert_eq!(p(bad), None, "{bad}");
        }
        assert!(KeepAlive::from_json(&serde_json::json!(true)).is_err());
    }
}
