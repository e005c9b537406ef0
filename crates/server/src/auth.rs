//! API keys and per-key rate limits.
//!
//! Keys arrive as `Authorization: Bearer <key>` (OpenAI's clients) or `x-api-key: <key>`.
//! Only SHA-256 digests of the keys are kept, and a presented key is compared with every
//! configured digest in constant time (no early exit, no length leak), so timing tells an
//! attacker nothing about how close a guess was. Keys are never logged: a key is named in logs
//! and metrics by its configured `name`.
//!
//! Limits are per key and per minute, as OpenAI's: requests, and tokens (prompt + generated,
//! charged when a generation ends). Each is a token bucket that refills continuously; a request
//! is admitted when a request is available and the token budget is not overdrawn. Refusals are
//! 429 with `Retry-After`; every authenticated response carries OpenAI's
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers for the limits that apply.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Limits of one key; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Limits {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
}

/// A key as configured: its secret, a name for logs and metrics, and its limits.
#[derive(Debug, Clone, Deserialize)]
pub struct KeySpec {
    pub name: String,
    pub key: String,
    #[serde(flatten, default)]
    pub limits: Limits,
}

/// The keys file: `[[keys]]` tables with `name`, `key`, `requests_per_minute`, `tokens_per_minute`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    pub keys: Vec<KeySpec>,
}

/// The shortest key accepted: anything shorter is guessable.
pub const MIN_KEY_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KeyError {
    #[error("API key {name:?} is {len} characters; use at least {MIN_KEY_LEN} (e.g. `openssl rand -hex 24`)")]
    TooShort { name: String, len: usize },
    #[error("two API keys are named {0:?}; names must be unique")]
    DuplicateName(String),
    #[error("API key {0:?} has a limit of 0; leave the limit out for unlimited")]
    ZeroLimit(String),
}

/// One configured key and its buckets.
pub struct Key {
    pub name: String,
    digest: [u8; 32],
    pub limits: Limits,
    requests: Option<Mutex<Bucket>>,
    tokens: Option<Mutex<Bucket>>,
}

/// The configured keys; empty means the server is open.
#[derive(Default)]
pub struct Auth {
    keys: Vec<Arc<Key>>,
}

/// What a rate-limit check found, for headers and refusals.
#[derive(Debug, Clone, Default)]
pub struct RateState {
    pub requests: Option<BucketState>,
    pub tokens: Option<BucketState>,
    /// Set when the request is refused: how long until it could succeed.
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
pub struct BucketState {
    pub limit: u32,
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
}

impl Auth {
    pub fn new(specs: Vec<KeySpec>) -> Result<Self, KeyError> {
        let mut keys: Vec<Arc<Key>> = Vec::with_capacity(specs.len());
        for s in specs {
            if s.key.len() < MIN_KEY_LEN {
                return Err(KeyError::TooShort { name: s.name, len: s.key.len() });
            }
            if keys.iter().any(|k| k.name == s.name) {
                return Err(KeyError::DuplicateName(s.name));
            }
            if s.limits.requests_per_minute == Some(0) || s.limits.tokens_per_minute == Some(0) {
                return Err(KeyError::ZeroLimit(s.name));
            }
            keys.push(Arc::new(Key {
                digest: Sha256::digest(s.key.as_bytes()).into(),
                requests: s.limits.requests_per_minute.map(|n| Mutex::new(Bucket::new(n))),
                tokens: s.limits.tokens_per_minute.map(|n| Mutex::new(Bucket::new(n))),
                limits: s.limits,
                name: s.name,
            }));
        }
        Ok(Self { keys })
    }

    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key `presented` matches, compared with every configured key in constant time.
    pub fn identify(&self, presented: &str) -> Option<Arc<Key>> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for key in &self.keys {
            // Every key is compared in full; the branch below depends only on the result.
            if ct_eq(&key.digest, &digest) {
                found = Some(key);
            }
        }
        found.cloned()
    }
}

/// Equality of two digests in time independent of where they differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for i in 0..32 {
        diff |= a[i] ^ b[i];
    }
    std::hint::black_box(diff) == 0
}

impl Key {
    /// Admits one request (taking one from the request bucket) or says when to retry.
    pub fn admit(&self) -> RateState {
        let now = Instant::now();
        let mut state = RateState::default();
        let mut tokens_guard = self.tokens.as_ref().and_then(|b| b.lock().ok());
        if let Some(t) = tokens_guard.as_mut() {
            t.refill(now);
            if t.level < 0.0 {
                // Overdrawn by an earlier long generation: wait until the debt is paid back.
                state.retry_after = Some(t.time_until(0.0));
            }
            state.tokens = Some(t.state());
        }
        if let Some(mut r) = self.requests.as_ref().and_then(|b| b.lock().ok()) {
            r.refill(now);
            if r.level < 1.0 {
                let wait = r.time_until(1.0);
                state.retry_after = Some(state.retry_after.map_or(wait, |w| w.max(wait)));
            } else if state.retry_after.is_none() {
                r.level -= 1.0;
            }
            state.requests = Some(r.state());
        }
        state
    }

    /// Charges the tokens a generation used.
    pub fn charge(&self, tokens: u64) {
        if let Some(mut t) = self.tokens.as_ref().and_then(|b| b.lock().ok()) {
            t.refill(Instant::now());
            t.level -= tokens as f64;
        }
    }
}

/// A bucket of `limit` per minute that refills continuously; it may go negative (a debt) when
/// a generation used more tokens than were left.
struct Bucket {
    limit: u32,
    level: f64,
    at: Instant,
}

impl Bucket {
    fn new(limit: u32) -> Self {
        Self { limit, level: f64::from(limit), at: Instant::now() }
    }

    fn per_second(&self) -> f64 {
        f64::from(self.limit) / 60.0
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + dt * self.per_second()).min(f64::from(self.limit));
        self.at = now;
    }

    fn time_until(&self, level: f64) -> Duration {
        let missing = (level - self.level).max(0.0);
        Duration::from_secs_f64(missing / self.per_second())
    }

    fn state(&self) -> BucketState {
        BucketState {
            limit: self.limit,
            remaining: self.level.max(0.0).floor() as u32,
            reset: self.time_until(f64::from(self.limit)),
        }
    }
}

/// OpenAI's reset format: "1s", "6m0s", "20ms".
pub fn format_reset(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{}s", d.as_secs_f64().ceil() as u64)
    } else {
        let s = d.as_secs_f64().ceil() as u64;
        format!("{}m{}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, key: &str, rpm: Option<u32>, tpm: Option<u32>) -> KeySpec {
        KeySpec {
            name: name.into(),
            key: key.into(),
            limits: Limits { requests_per_minute: rpm, tokens_per_minute: tpm },
        }
    }

    #[test]
    fn keys_are_identified_by_their_secret_only() {
        let auth = Auth::new(vec![
            spec("a", "aaaaaaaaaaaaaaaaaaaa", None, None),
            spec("b", "bbbbbbbbbbbbbbbbbbbb", None, None),
        ])
        .unwrap();
        assert_eq!(auth.identify("bbbbbbbbbbbbbbbbbbbb").map(|k| k.name.clone()), Some("b".to_string()));
        assert!(auth.identify("bbbbbbbbbbbbbbbbbbb").is_none());
        assert!(auth.identify("").is_none());
        assert!(auth.identify("b").is_none());
    }

    #[test]
    fn bad_key_sets_are_refused() {
        assert!(matches!(Auth::new(vec![spec("a", "short", None, None)]), Err(KeyError::TooShort { .. })));
        let dup = vec![spec("a", "aaaaaaaaaaaaaaaaaaaa", None, None), spec("a", "cccccccccccccccccccc", None, None)];
        assert!(matches!(Auth::new(dup), Err(KeyError::DuplicateName(_))));
        assert!(matches!(
            Auth::new(vec![spec("a", "aaaaaaaaaaaaaaaaaaaa", Some(0), None)]),
            Err(KeyError::ZeroLimit(_))
        ));
    }

    #[test]
    fn request_bucket_admits_the_limit_then_refuses_with_a_wait() {
        let auth = Auth::new(vec![spec("a", "aaaaaaaaaaaaaaaaaaaa", Some(3), None)]).unwrap();
        let key = auth.identify("aaaaaaaaaaaaaaaaaaaa").unwrap();
        for left in [2, 1, 0] {
            let s = key.admit();
            assert!(s.retry_after.is_none());
            assert_eq!(s.requests.unwrap().remaining, left);
        }
        let s = key.admit();
        let wait = s.retry_after.expect("refused");
        // 3 per minute: one comes back every 20 s.
        assert!(wait > Duration::from_secs(15) && wait <= Duration::from_secs(20), "{wait:?}");
    }

    #[test]
    fn token_debt_blocks_until_repaid() {
        let auth = Auth::new(vec![spec("a", "aaaaaaaaaaaaaaaaaaaa", None, Some(600))]).unwrap();
        let key = auth.identify("aaaaaaaaaaaaaaaaaaaa").unwrap();
        assert!(key.admit().retry_after.is_none());
        key.charge(700);
        let s = key.admit();
        // 100 tokens of debt at 10 per second.
        let wait = s.retry_after.expect("refused while overdrawn");
        assert!(wait > Duration::from_secs(9) && wait <= Duration::from_secs(10), "{wait:?}");
        assert_eq!(s.tokens.unwrap().remaining, 0);
    }

    #[test]
    fn reset_format_is_openais() {
        assert_eq!(format_reset(Duration::from_millis(20)), "20ms");
        assert_eq!(format_reset(Duration::from_millis(1500)), "2s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
    }
}
