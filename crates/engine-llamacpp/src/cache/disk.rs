//! The prompt cache's disk tier: conversations' KV kept across unloads, keep-alive expiries
//! and restarts. One file per cached conversation (its tokens and the KV of every position),
//! in a directory per model (`<cache_dir>/<model digest>/`). Files are written by a thread of
//! their own (a temporary file, then a rename), so decoding never waits for the disk; a file a
//! newer one extends is removed, and the oldest go when the tier is over its size.
//!
//! A file that is truncated, corrupt (its sha256 does not match), from another model, or from
//! a context whose KV layout differs is skipped with a warning and removed, never loaded.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use super::kvstate::{self, Layout, Segment};

const MAGIC: &[u8] = b"HLKVCACHE2\n";

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    /// The model (and KV layout) the entry belongs to.
    key: String,
    tokens: Vec<i32>,
    payload_len: u64,
    payload_sha256: String,
}

struct Entry {
    tokens: Vec<i32>,
    file: PathBuf,
    bytes: u64,
    /// Write order: the oldest goes first when the tier is full.
    seq: u64,
}

struct Shared {
    entries: Vec<Entry>,
    next_seq: u64,
}

enum Job {
    Write {
        tokens: Vec<i32>,
        layout: Layout,
        seg: Arc<Segment>,
    },
    /// Answered when every earlier write is done (tests, shutdown).
    Flush(mpsc::Sender<()>),
}

pub struct DiskTier {
    dir: PathBuf,
    key: String,
    shared: Arc<Mutex<Shared>>,
    jobs: mpsc::Sender<Job>,
}

impl DiskTier {
    /// The tier of model `key` under `root`, indexing the entries already there (headers only).
    pub fn open(root: &Path, key: &str, budget: u64) -> std::io::Result<Self> {
        let dir = root.join(sanitize(key));
        std::fs::create_dir_all(&dir)?;
        let mut entries = Vec::new();
        let mut seq = 0;
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&dir)?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".kv"))
            .map(|e| (e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH), e.path()))
            .collect();
        files.sort();
        for (_, file) in files {
            match read_header(&file) {
                Ok((h, _)) if h.key == key => {
                    let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                    entries.push(Entry { tokens: h.tokens, file, bytes, seq });
                    seq += 1;
                }
                Ok(_) => {
                    tracing::warn!(file = %file.display(), "prompt cache: an entry of another model; skipped");
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "prompt cache: an unreadable entry; removed");
                    let _ = std::fs::remove_file(&file);
                }
            }
        }
        // Leftovers of interrupted writes.
        for e in std::fs::read_dir(&dir)?.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let shared = Arc::new(Mutex::new(Shared { entries, next_seq: seq }));
        let (jobs, rx) = mpsc::channel();
        let (w_dir, w_key, w_shared) = (dir.clone(), key.to_string(), shared.clone());
        std::thread::Builder::new()
            .name("prompt-cache-disk".into())
            .spawn(move || writer(rx, &w_dir, &w_key, &w_shared, budget))?;
        Ok(Self { dir, key: key.to_string(), shared, jobs })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.shared.lock().map(|s| s.entries.iter().map(|e| e.bytes).sum()).unwrap_or(0)
    }

    /// The longest prefix of `tokens` an entry holds.
    pub fn longest(&self, tokens: &[i32]) -> usize {
        let Ok(s) = self.shared.lock() else { return 0 };
        s.entries.iter().map(|e| common(&e.tokens, tokens)).max().unwrap_or(0)
    }

    /// Loads the entry that holds the longest prefix of `tokens`: its tokens and KV, checked.
    /// A bad entry is removed and `None` returned.
    pub fn load(&self, tokens: &[i32], layout: Option<&Layout>) -> Option<(Vec<i32>, Layout, Segment)> {
        let file = {
            let s = self.shared.lock().ok()?;
            let best = s.entries.iter().max_by_key(|e| common(&e.tokens, tokens))?;
            best.file.clone()
        };
        match read_entry(&file, &self.key) {
            Ok((t, l, seg)) if layout.is_none_or(|want| *want == l) && seg.cells >= t.len() => Some((t, l, seg)),
            Ok(_) => {
                tracing::warn!(file = %file.display(), "prompt cache: an entry with another KV layout; removed");
                self.forget(&file);
                None
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "prompt cache: a corrupt entry; removed");
                self.forget(&file);
                None
            }
        }
    }

    fn forget(&self, file: &Path) {
        if let Ok(mut s) = self.shared.lock() {
            s.entries.retain(|e| e.file != file);
        }
        let _ = std::fs::remove_file(file);
    }

    /// Writes `tokens` with their KV, in the background.
    pub fn store(&self, tokens: Vec<i32>, layout: Layout, seg: Arc<Segment>) {
        let covered = self
            .shared
            .lock()
            .map(|s| s.entries.iter().any(|e| common(&e.tokens, &tokens) == tokens.len()))
            .unwrap_or(false);
        if !covered {
            let _ = self.jobs.send(Job::Write { tokens, layout, seg });
        }
    }

    /// Waits until every write asked for so far is on disk.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.jobs.send(Job::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

fn common(a: &[i32], b: &[i32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A directory name from a key: its safe characters only.
fn sanitize(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).take(120).collect()
}

fn writer(rx: mpsc::Receiver<Job>, dir: &Path, key: &str, shared: &Mutex<Shared>, budget: u64) {
    for job in rx {
        match job {
            Job::Flush(done) => {
                let _ = done.send(());
            }
            Job::Write { tokens, layout, seg } => {
                let payload = kvstate::encode(&layout, &seg);
                let sha = hex(&Sha256::digest(&payload));
                let name = {
                    let mut h = Sha256::new();
                    for t in &tokens {
                        h.update(t.to_le_bytes());
                    }
                    format!("{}.kv", &hex(&h.finalize())[..32])
                };
                let file = dir.join(name);
                let header = Header {
                    key: key.to_string(),
                    tokens: tokens.clone(),
                    payload_len: payload.len() as u64,
                    payload_sha256: sha,
                };
                match write_atomic(dir, &file, &header, &payload) {
                    Ok(bytes) => {
                        let Ok(mut s) = shared.lock() else { continue };
                        // Entries this one extends are redundant now.
                        let stale: Vec<PathBuf> = s
                            .entries
                            .iter()
                            .filter(|e| e.file != file && common(&e.tokens, &tokens) == e.tokens.len())
                            .map(|e| e.file.clone())
                            .collect();
                        s.entries.retain(|e| !stale.contains(&e.file) && e.file != file);
                        let seq = s.next_seq;
                        s.next_seq += 1;
                        s.entries.push(Entry { tokens, file, bytes, seq });
                        let mut total: u64 = s.entries.iter().map(|e| e.bytes).sum();
                        let mut gone = stale;
                        while total > budget && s.entries.len() > 1 {
                            let oldest =
                                s.entries.iter().enumerate().min_by_key(|(_, e)| e.seq).map(|(i, _)| i).unwrap_or(0);
                            let e = s.entries.remove(oldest);
                            total -= e.bytes;
                            gone.push(e.file);
                        }
                        drop(s);
                        for f in gone {
                            let _ = std::fs::remove_file(f);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "prompt cache: could not write an entry to disk"),
                }
            }
        }
    }
}

fn write_atomic(dir: &Path, file: &Path, header: &Header, payload: &[u8]) -> std::io::Result<u64> {
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    let head = serde_json::to_vec(header).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&(head.len() as u32).to_le_bytes())?;
        f.write_all(&head)?;
        f.write_all(payload)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, file)?;
    Ok((MAGIC.len() + 4 + head.len() + payload.len()) as u64)
}

fn read_header(file: &Path) -> Result<(Header, std::fs::File), String> {
    let mut f = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let mut magic = vec![0u8; MAGIC.len()];
    f.read_exact(&mut magic).map_err(|e| format!("header: {e}"))?;
    if magic != MAGIC {
        return Err("not a prompt cache entry".into());
    }
    let mut len = [0u8; 4];
    f.read_exact(&mut len).map_err(|e| format!("header: {e}"))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > 64 << 20 {
        return Err(format!("a {len}-byte header"));
    }
    let mut head = vec![0u8; len];
    f.read_exact(&mut head).map_err(|e| format!("header: {e}"))?;
    let h: Header = serde_json::from_slice(&head).map_err(|e| format!("header: {e}"))?;
    Ok((h, f))
}

fn read_entry(file: &Path, key: &str) -> Result<(Vec<i32>, Layout, Segment), String> {
    let (h, mut f) = read_header(file)?;
    if h.key != key {
        return Err(format!("the entry belongs to {:?}", h.key));
    }
    let mut payload = Vec::with_capacity(h.payload_len.min(1 << 34) as usize);
    f.read_to_end(&mut payload).map_err(|e| e.to_string())?;
    if payload.len() as u64 != h.payload_len {
        return Err(format!("{} payload bytes where {} were written (truncated)", payload.len(), h.payload_len));
    }
    if hex(&Sha256::digest(&payload)) != h.payload_sha256 {
        return Err("the payload's sha256 does not match".into());
    }
    let (layout, seg) = kvstate::decode(&payload).map_err(|e| e.to_string())?;
    Ok((h.tokens, layout, seg))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::super::kvstate::tests::blob;
    use super::*;

    fn seg(n: usize) -> (Layout, Arc<Segment>) {
        let order: Vec<i32> = (0..n as i32).collect();
        let (l, s) = kvstate::parse(&blob(2, 1, &order, 2, 8)).expect("parses");
        (l, Arc::new(s))
    }

    #[test]
    fn entries_survive_a_reopen_and_bad_ones_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (layout, full) = seg(10);
        let tier = DiskTier::open(dir.path(), "model-a", 1 << 30).expect("open");
        tier.store(vec![1, 2, 3, 4], layout.clone(), full.clone());
        tier.store(vec![1, 2, 3, 4, 5, 6], layout.clone(), full.clone());
        tier.flush();
        assert_eq!(std::fs::read_dir(tier.dir()).expect("dir").count(), 1, "the shorter entry is redundant");
        drop(tier);
        // Reopened (a restart): found by prefix, loaded whole.
        let tier = DiskTier::open(dir.path(), "model-a", 1 << 30).expect("reopen");
        assert_eq!(tier.longest(&[1, 2, 3, 9]), 3);
        let (tokens, l, s) = tier.load(&[1, 2, 3, 4, 5, 6, 7], Some(&layout)).expect("loads");
        assert_eq!((tokens, l), (vec![1, 2, 3, 4, 5, 6], layout.clone()));
        assert_eq!(s, *full);
        // Another model's directory does not see it.
        let other = DiskTier::open(dir.path(), "model-b", 1 << 30).expect("open");
        assert_eq!(other.longest(&[1, 2, 3]), 0);
        // A corrupted payload is skipped with a warning and removed.
        let file = std::fs::read_dir(tier.dir()).expect("dir").flatten().next().expect("entry").path();
        let mut bytes = std::fs::read(&file).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&file, &bytes).expect("write");
        assert!(tier.load(&[1, 2, 3], Some(&layout)).is_none());
        assert!(!file.exists());
        // A truncated one too, found at open.
        tier.store(vec![7, 8, 9], layout.clone(), full.clone());
        tier.flush();
        let file = std::fs::read_dir(tier.dir()).expect("dir").flatten().next().expect("entry").path();
        let bytes = std::fs::read(&file).expect("read");
        std::fs::write(&file, &bytes[..bytes.len() / 2]).expect("truncate");
        drop(tier);
        let tier = DiskTier::open(dir.path(), "model-a", 1 << 30).expect("reopen");
        assert_eq!(tier.longest(&[7, 8, 9]), 3, "the header is intact");
        assert!(tier.load(&[7, 8, 9], Some(&layout)).is_none(), "but the payload is short");
        assert_eq!(tier.longest(&[7, 8, 9]), 0);
    }

    #[test]
    fn the_oldest_entries_go_when_the_tier_is_full() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (layout, full) = seg(4);
        let one = {
            let t = DiskTier::open(dir.path(), "probe", u64::MAX).expect("open");
            t.store(vec![1], layout.clone(), full.clone());
            t.flush();
            t.bytes()
        };
        let tier = DiskTier::open(dir.path(), "m", 2 * one + one / 2).expect("open");
        for first in [10, 20, 30] {
            tier.store(vec![first], layout.clone(), full.clone());
        }
        tier.flush();
        assert_eq!(tier.longest(&[10]), 0, "the oldest went");
        assert_eq!((tier.longest(&[20]), tier.longest(&[30])), (1, 1));
    }
}
