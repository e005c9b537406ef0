//! The prompt cache: conversations' KV state kept beyond the compute lanes, so a conversation
//! that comes back after other conversations used its lane (or after an unload or a restart)
//! computes only what is new.
//!
//! - RAM: a token-level radix tree of KV segments ([`radix`]) under `--cache-ram`, least
//!   recently used first out; a prefix many conversations share is stored once.
//! - Disk (`--cache-dir`): whole conversations, per model, written in the background
//!   ([`disk`]); a request whose longest prefix is only on disk loads it into RAM first.
//! - The KV state itself is llama.cpp's per-sequence state, taken apart per token
//!   ([`kvstate`]) so any prefix can be restored into any lane.

pub mod disk;
pub mod kvstate;
pub mod radix;

use std::sync::Arc;

use kvstate::Layout;

/// Counters for `/metrics` and `/api/ps`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheStats {
    pub ram_bytes: u64,
    pub disk_bytes: u64,
    pub evictions: u64,
}

pub struct PromptCache {
    /// The KV layout of this context, learned from the first capture.
    layout: Option<Layout>,
    tree: radix::Radix,
    budget: usize,
    n_stream: u32,
    disk: Option<disk::DiskTier>,
    /// Set when this context's state cannot be taken apart (transposed V): the cache is off.
    broken: bool,
}

impl PromptCache {
    /// A cache of at most `budget` bytes in RAM for a context with `n_stream` KV streams.
    pub fn new(budget: usize, n_stream: u32, disk: Option<disk::DiskTier>) -> Self {
        Self { layout: None, tree: radix::Radix::new(), budget, n_stream, disk, broken: false }
    }

    /// Off: no RAM budget, or this context's state cannot be taken apart.
    pub fn enabled(&self) -> bool {
        !self.broken && (self.budget > 0 || self.disk.is_some())
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            ram_bytes: self.tree.bytes() as u64,
            disk_bytes: self.disk.as_ref().map(disk::DiskTier::bytes).unwrap_or(0),
            evictions: self.tree.evictions(),
        }
    }

    /// How many leading tokens of `tokens` the cache holds (RAM or disk).
    pub fn lookup(&mut self, tokens: &[i32]) -> usize {
        if !self.enabled() {
            return 0;
        }
        let ram = self.tree.longest(tokens).len;
        let disk = self.disk.as_ref().map(|d| d.longest(tokens)).unwrap_or(0);
        ram.max(disk)
    }

    /// The state of the first `len` tokens of `tokens` as a blob for `llama_state_seq_set`,
    /// reading the disk tier when RAM holds less; `None` when neither holds that much.
    pub fn blob(&mut self, tokens: &[i32], len: usize) -> Option<Vec<u8>> {
        if !self.enabled() || len == 0 {
            return None;
        }
        if self.tree.longest(tokens).len < len {
            let disk = self.disk.as_ref()?;
            let (held, layout, seg) = disk.load(tokens, self.layout.as_ref())?;
            self.layout.get_or_insert(layout.clone());
            self.tree.insert(&layout, &held, &seg);
            self.tree.evict_to(self.budget.max(seg.bytes()));
        }
        let layout = self.layout.clone()?;
        let mut m = self.tree.longest(tokens);
        if m.len < len {
            return None;
        }
        m.len = len;
        let segs = self.tree.segments(&layout, &m);
        let refs: Vec<&kvstate::Segment> = segs.iter().collect();
        kvstate::assemble(&layout, &refs, self.n_stream).ok()
    }

    /// Caches the state `blob` of a lane holding `tokens` (its KV positions, in order).
    pub fn capture(&mut self, tokens: &[i32], blob: &[u8]) {
        if !self.enabled() || tokens.is_empty() {
            return;
        }
        let (layout, full) = match kvstate::parse(blob) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "the prompt cache cannot take this context's state apart; it is off");
                self.broken = true;
                self.tree.clear();
                return;
            }
        };
        if full.cells < tokens.len() {
            return;
        }
        if self.layout.as_ref().is_some_and(|l| *l != layout) {
            self.tree.clear();
        }
        self.layout = Some(layout.clone());
        if self.budget > 0 {
            self.tree.insert(&layout, tokens, &full);
            self.tree.evict_to(self.budget);
        }
        if let Some(d) = &self.disk {
            d.store(tokens.to_vec(), layout, Arc::new(full));
        }
    }

    /// Waits for the disk tier's pending writes.
    pub fn flush(&self) {
        if let Some(d) = &self.disk {
            d.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::kvstate::tests::blob;
    use super::*;

    #[test]
    fn a_captured_conversation_comes_back_from_ram_and_from_disk() {
        let order: Vec<i32> = (0..8).collect();
        let state = blob(4, 3, &order, 2, 8);
        let tokens = [11, 12, 13, 14, 15, 16, 17, 18];
        let mut c = PromptCache::new(1 << 20, 4, None);
        assert_eq!(c.lookup(&tokens), 0);
        c.capture(&tokens, &state);
        assert_eq!(c.lookup(&[11, 12, 13, 99]), 3);
        let back = c.blob(&[11, 12, 13, 14, 15, 16, 17, 18, 19], 8).expect("restorable");
        assert_eq!(kvstate::parse(&back).expect("parses").1, kvstate::parse(&state).expect("parses").1);
        assert!(c.blob(&tokens, 9).is_none(), "not more than it holds");

        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut c =
                PromptCache::new(1 << 20, 4, Some(disk::DiskTier::open(dir.path(), "m", 1 << 30).expect("disk")));
            c.capture(&tokens, &state);
            c.flush();
        }
        // A new cache (a restart) with nothing in RAM finds it on disk.
        let mut c = PromptCache::new(1 << 20, 4, Some(disk::DiskTier::open(dir.path(), "m", 1 << 30).expect("disk")));
        assert_eq!(c.lookup(&tokens), 8);
        let back = c.blob(&tokens, 5).expect("from disk");
        assert_eq!(kvstate::parse(&back).expect("parses").1.cells, 5);
        assert_eq!(c.stats().ram_bytes as usize, 8 * c.layout.as_ref().expect("layout").bytes_per_token());
    }

    #[test]
    fn the_ram_budget_is_kept() {
        let order: Vec<i32> = (0..8).collect();
        let state = blob(1, 0, &order, 2, 64);
        let per_token = kvstate::parse(&state).expect("parses").0.bytes_per_token();
        let mut c = PromptCache::new(20 * per_token, 1, None);
        for conv in 0..5 {
            let tokens: Vec<i32> = (0..8).map(|i| 100 * conv + i).collect();
            c.capture(&tokens, &state);
            assert!(c.stats().ram_bytes as usize <= 20 * per_token);
        }
        assert_eq!(c.stats().evictions, 3, "8 tokens each, 20 tokens' room: two conversations stay");
        assert_eq!(c.lookup(&(0..8).map(|i| 400 + i).collect::<Vec<_>>()), 8, "the newest stays");
        assert_eq!(c.lookup(&(0..8).collect::<Vec<_>>()), 0, "the oldest went");
    }
}
