use std::time::Duration;

use crate::ApiError;

/// How long a model stays loaded after a request: Ollama's `keep_alive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    Forever,
    For(Duration),
}

impl KeepAlive {
    pub const DEFAULT: KeepAlive = KeepAlive::For(Duration::from_secs(300));

    /// Accepts Go-style durations ("5m", "1h30m", "10s", "500ms"), bare seconds (number or
    /// string), negative values (forever) and 0 (unload now).
    pub fn parse(v: &serde_json::Value) -> Result<Self, ApiError> {
        let bad =
            || ApiError::bad_request(format!("invalid keep_alive {v}: use a duration like \"5m\", seconds, or -1"));
        match v {
            serde_json::Value::Number(n) => {
                let secs = n.as_f64().ok_or_else(bad)?;
                Ok(Self::from_secs(secs))
            }
            serde_json::Value::String(s) => Self::parse_str(s).ok_or_else(bad),
            _ => Err(bad()),
        }
    }

    pub fn parse_str(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Ok(secs) = s.parse::<f64>() {
            return Some(Self::from_secs(secs));
        }
        let (negative, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let mut total = 0.0f64;
        let mut num = String::new();
        let mut chars = body.chars().peekable();
        if body.is_empty() {
            return None;
        }
        while let Some(c) = chars.next() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
                continue;
            }
            let value: f64 = num.parse().ok()?;
            num.clear();
            let unit = match c {
                'h' => 3600.0,
                'm' if chars.peek() == Some(&'s') => {
                    chars.next();
                    0.001
                }
                'm' => 60.0,
                's' => 1.0,
                _ => return None,
            };
            total += value * unit;
        }
        if !num.is_empty() {
            return None;
        }
        Some(if negative { KeepAlive::Forever } else { Self::from_secs(total) })
    }

    fn from_secs(secs: f64) -> Self {
        if secs.is_nan() {
            return Self::DEFAULT;
        }
        if secs < 0.0 {
            KeepAlive::Forever
        } else {
            KeepAlive::For(Duration::from_secs_f64(secs.min(1e9)))
        }
    }

    pub fn is_zero(&self) -> bool {
        matches!(self, KeepAlive::For(d) if d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ollama_forms() {
        assert_eq!(KeepAlive::parse_str("5m"), Some(KeepAlive::For(Duration::from_secs(300))));
        assert_eq!(KeepAlive::parse_str("1h30m"), Some(KeepAlive::For(Duration::from_secs(5400))));
        assert_eq!(KeepAlive::parse_str("500ms"), Some(KeepAlive::For(Duration::from_millis(500))));
        assert_eq!(KeepAlive::parse_str("-1"), Some(KeepAlive::Forever));
        assert_eq!(KeepAlive::parse_str("-1m"), Some(KeepAlive::Forever));
        assert!(KeepAlive::parse_str("0").is_some_and(|k| k.is_zero()));
        assert_eq!(KeepAlive::parse(&serde_json::json!(30)).ok(), Some(KeepAlive::For(Duration::from_secs(30))));
        assert!(KeepAlive::parse(&serde_json::json!(0)).is_ok_and(|k| k.is_zero()));
        for bad in ["", "5x", "m", "abc"] {
            assert_eq!(KeepAlive::parse_str(bad), None, "{bad}");
        }
        assert!(KeepAlive::parse(&serde_json::json!(true)).is_err());
    }
}
