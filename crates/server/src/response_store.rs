//! Stored responses of the Responses API (`store: true`, the default): kept so that a
//! conversation can continue by `previous_response_id`, and fetched or deleted by id. Bounded
//! in memory (least recently used out first) and, when given a directory, kept on disk too
//! (one JSON file per response, written to a temporary file and renamed), so that they
//! survive a restart; the disk keeps at most `disk_capacity` of them, oldest out first.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One stored response: the response object as the client saw it, and the conversation it
/// ended (input items, then output items), which a continuation starts from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredResponse {
    pub response: serde_json::Value,
    pub conversation: Vec<serde_json::Value>,
}

pub struct ResponseStore {
    inner: Mutex<Inner>,
    dir: Option<PathBuf>,
    capacity: usize,
    disk_capacity: usize,
}

#[derive(Default)]
struct Inner {
    memory: HashMap<String, StoredResponse>,
    /// Least recently used first.
    order: VecDeque<String>,
    /// Ids on disk, oldest first.
    disk: VecDeque<String>,
}

/// Response ids are `resp_` and alphanumerics: nothing else names a file.
pub fn valid_id(id: &str) -> bool {
    id.strip_prefix("resp_")
        .is_some_and(|rest| !rest.is_empty() && rest.len() <= 64 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

impl Default for ResponseStore {
    fn default() -> Self {
        Self::in_memory(1024)
    }
}

impl ResponseStore {
    pub fn in_memory(capacity: usize) -> Self {
        Self { inner: Mutex::default(), dir: None, capacity: capacity.max(1), disk_capacity: 0 }
    }

    /// A store that also keeps responses in `dir` (created if missing).
    pub fn with_dir(dir: &Path, capacity: usize, disk_capacity: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut found: Vec<(std::time::SystemTime, String)> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match name.strip_suffix(".json") {
                Some(id) if valid_id(id) => {
                    let modified = entry.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
                    found.push((modified, id.to_string()));
                }
                // Left over from a write that did not finish.
                _ if name.ends_with(".tmp") => {
                    let _ = std::fs::remove_file(entry.path());
                }
                _ => {}
            }
        }
        found.sort();
        let inner = Inner { disk: found.into_iter().map(|(_, id)| id).collect(), ..Inner::default() };
        Ok(Self { inner: Mutex::new(inner), dir: Some(dir.to_path_buf()), capacity: capacity.max(1), disk_capacity })
    }

    fn path(&self, id: &str) -> Option<PathBuf> {
        self.dir.as_ref().filter(|_| valid_id(id)).map(|d| d.join(format!("{id}.json")))
    }

    pub fn put(&self, id: &str, stored: StoredResponse) {
        if !valid_id(id) {
            return;
        }
        if let Some(path) = self.path(id) {
            if let Err(e) = write_atomic(&path, &stored) {
                tracing::warn!(path = %path.display(), error = %e, "could not store a response on disk");
            }
        }
        let Ok(mut inner) = self.inner.lock() else { return };
        inner.order.retain(|x| x != id);
        inner.order.push_back(id.to_string());
        inner.memory.insert(id.to_string(), stored);
        while inner.memory.len() > self.capacity {
            let Some(old) = inner.order.pop_front() else { break };
            inner.memory.remove(&old);
        }
        if self.dir.is_some() {
            inner.disk.retain(|x| x != id);
            inner.disk.push_back(id.to_string());
            while inner.disk.len() > self.disk_capacity.max(1) {
                let Some(old) = inner.disk.pop_front() else { break };
                if let Some(p) = self.path(&old) {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<StoredResponse> {
        if !valid_id(id) {
            return None;
        }
        if let Ok(mut inner) = self.inner.lock() {
            if let Some(s) = inner.memory.get(id).cloned() {
                inner.order.retain(|x| x != id);
                inner.order.push_back(id.to_string());
                return Some(s);
            }
        }
        let path = self.path(id)?;
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice::<StoredResponse>(&bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable stored response");
                None
            }
        }
    }

    /// Whether it was there.
    pub fn delete(&self, id: &str) -> bool {
        if !valid_id(id) {
            return false;
        }
        let mut found = false;
        if let Ok(mut inner) = self.inner.lock() {
            found = inner.memory.remove(id).is_some();
            inner.order.retain(|x| x != id);
            inner.disk.retain(|x| x != id);
        }
        if let Some(p) = self.path(id) {
            found |= std::fs::remove_file(p).is_ok();
        }
        found
    }
}

fn write_atomic(path: &Path, stored: &StoredResponse) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(stored)?)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(n: i64) -> StoredResponse {
        StoredResponse { response: serde_json::json!({ "n": n }), conversation: vec![] }
    }

    #[test]
    fn memory_is_bounded_least_recently_used_first() {
        let s = ResponseStore::in_memory(2);
        s.put("resp_a", stored(1));
        s.put("resp_b", stored(2));
        assert!(s.get("resp_a").is_some()); // a is now the most recent
        s.put("resp_c", stored(3));
        assert!(s.get("resp_b").is_none());
        assert!(s.get("resp_a").is_some() && s.get("resp_c").is_some());
        assert!(s.delete("resp_a"));
        assert!(!s.delete("resp_a"));
    }

    #[test]
    fn disk_survives_a_restart_and_ids_cannot_name_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = ResponseStore::with_dir(dir.path(), 1, 2).unwrap();
        s.put("resp_a", stored(1));
        s.put("resp_b", stored(2));
        s.put("resp_c", stored(3));
        let again = ResponseStore::with_dir(dir.path(), 8, 2).unwrap();
        assert_eq!(again.get("resp_b"), Some(stored(2)));
        assert!(again.get("resp_a").is_none(), "the disk keeps the newest two");
        assert!(again.get("../resp_b").is_none() && !valid_id("resp_../x") && !valid_id("resp_"));
        std::fs::write(dir.path().join("resp_bad.json"), b"{not json").unwrap();
        assert!(again.get("resp_bad").is_none());
    }
}
