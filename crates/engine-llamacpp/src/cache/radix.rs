//! A token-level prefix tree (radix tree) over KV segments: each node holds the tokens of a
//! run of positions and their KV, so a prefix shared by many conversations (a system prompt)
//! is stored once, and any request finds its longest cached prefix in one walk.
//!
//! The tree is bounded in bytes: the least recently used node that no cached child depends on
//! goes first, so shared prefixes outlive the conversations that branch off them.

use std::collections::BTreeMap;

use super::kvstate::{Layout, Segment};

struct Node {
    /// The tokens of positions `seg.start..seg.start + tokens.len()`.
    tokens: Vec<i32>,
    seg: Segment,
    children: BTreeMap<i32, usize>,
    parent: usize,
    last_used: u64,
}

/// The longest cached prefix of a token sequence: its length and the nodes holding it (the
/// last one perhaps only in part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub len: usize,
    nodes: Vec<usize>,
}

pub struct Radix {
    /// Slot 0 is the root (no tokens); freed slots are `None` and reused.
    nodes: Vec<Option<Node>>,
    free: Vec<usize>,
    bytes: usize,
    clock: u64,
    evictions: u64,
}

const ROOT: usize = 0;

impl Radix {
    pub fn new() -> Self {
        let root =
            Node { tokens: Vec::new(), seg: Segment::empty(), children: BTreeMap::new(), parent: ROOT, last_used: 0 };
        Self { nodes: vec![Some(root)], free: Vec::new(), bytes: 0, clock: 0, evictions: 0 }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Nodes holding tokens.
    pub fn len(&self) -> usize {
        self.nodes.iter().filter(|n| n.is_some()).count() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().unwrap_or_else(|| unreachable!("a live node index"))
    }

    fn node_mut(&mut self, i: usize) -> &mut Node {
        self.nodes[i].as_mut().unwrap_or_else(|| unreachable!("a live node index"))
    }

    /// The longest cached prefix of `tokens`; the nodes on its path count as used now.
    pub fn longest(&mut self, tokens: &[i32]) -> Match {
        self.clock += 1;
        let now = self.clock;
        let (mut at, mut len, mut nodes) = (ROOT, 0, Vec::new());
        while len < tokens.len() {
            let Some(&child) = self.node(at).children.get(&tokens[len]) else { break };
            let node = self.node_mut(child);
            node.last_used = now;
            let common = node.tokens.iter().zip(&tokens[len..]).take_while(|(a, b)| a == b).count();
            nodes.push(child);
            len += common;
            if common < node.tokens.len() {
                break;
            }
            at = child;
        }
        Match { len, nodes }
    }

    /// The segments that hold the first `m.len` positions, in order.
    pub fn segments(&self, layout: &Layout, m: &Match) -> Vec<Segment> {
        let mut out = Vec::with_capacity(m.nodes.len());
        for &i in &m.nodes {
            let n = self.node(i);
            let end = (n.seg.start as usize + n.tokens.len()).min(m.len);
            if end <= n.seg.start as usize {
                break;
            }
            if end == n.seg.start as usize + n.tokens.len() {
                out.push(n.seg.clone());
            } else {
                out.push(n.seg.slice(layout, n.seg.start, end as u32));
            }
        }
        out
    }

    /// Caches `tokens` with their KV (`full` covers positions `0..tokens.len()`): only the
    /// part the tree lacks is stored. Returns the bytes added.
    pub fn insert(&mut self, layout: &Layout, tokens: &[i32], full: &Segment) -> usize {
        debug_assert!(full.start == 0 && full.cells >= tokens.len());
        self.clock += 1;
        let now = self.clock;
        let (mut at, mut len) = (ROOT, 0);
        while len < tokens.len() {
            let Some(&child) = self.node(at).children.get(&tokens[len]) else { break };
            let common = {
                let n = self.node_mut(child);
                n.last_used = now;
                n.tokens.iter().zip(&tokens[len..]).take_while(|(a, b)| a == b).count()
            };
            if common < self.node(child).tokens.len() {
                self.split(layout, child, common);
            }
            len += common;
            at = child;
        }
        if len == tokens.len() {
            return 0;
        }
        let seg = full.slice(layout, len as u32, tokens.len() as u32);
        let added = seg.bytes();
        let node = Node { tokens: tokens[len..].to_vec(), seg, children: BTreeMap::new(), parent: at, last_used: now };
        let i = self.alloc(node);
        self.node_mut(at).children.insert(tokens[len], i);
        self.bytes += added;
        added
    }

    /// Splits node `i` after its first `keep` tokens: `i` keeps them, a new child the rest.
    fn split(&mut self, layout: &Layout, i: usize, keep: usize) {
        let (head_seg, tail_seg, tail_tokens, children, last_used) = {
            let n = self.node(i);
            let cut = n.seg.start + keep as u32;
            let end = n.seg.start + n.tokens.len() as u32;
            (
                n.seg.slice(layout, n.seg.start, cut),
                n.seg.slice(layout, cut, end),
                n.tokens[keep..].to_vec(),
                n.children.clone(),
                n.last_used,
            )
        };
        let tail = Node { tokens: tail_tokens, seg: tail_seg, children, parent: i, last_used };
        let first = tail.tokens[0];
        let grandchildren: Vec<usize> = tail.children.values().copied().collect();
        let t = self.alloc(tail);
        for g in grandchildren {
            self.node_mut(g).parent = t;
        }
        let n = self.node_mut(i);
        n.tokens.truncate(keep);
        n.seg = head_seg;
        n.children = BTreeMap::from([(first, t)]);
    }

    fn alloc(&mut self, node: Node) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.nodes[i] = Some(node);
                i
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        }
    }

    /// Evicts least recently used leaves until the tree holds at most `budget` bytes.
    pub fn evict_to(&mut self, budget: usize) {
        while self.bytes > budget {
            let victim = self
                .nodes
                .iter()
                .enumerate()
                .skip(1)
                .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
                .filter(|(_, n)| n.children.is_empty())
                .min_by_key(|(_, n)| n.last_used)
                .map(|(i, _)| i);
            let Some(i) = victim else { break };
            self.remove_leaf(i);
            self.evictions += 1;
        }
    }

    fn remove_leaf(&mut self, i: usize) {
        let Some(n) = self.nodes[i].take() else { return };
        self.bytes -= n.seg.bytes();
        self.free.push(i);
        if let Some(p) = self.nodes[n.parent].as_mut() {
            p.children.retain(|_, c| *c != i);
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        *self = Self { evictions: self.evictions, ..Self::new() };
    }
}

impl Default for Radix {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::super::kvstate::{self, tests::blob};
    use super::*;

    fn full(n: usize) -> (Layout, Segment) {
        let order: Vec<i32> = (0..n as i32).collect();
        kvstate::parse(&blob(1, 0, &order, 2, 4)).expect("parses")
    }

    #[test]
    fn shared_prefixes_are_stored_once_and_matched_longest() {
        let (layout, seg) = full(12);
        let per_token = layout.bytes_per_token();
        let mut t = Radix::new();
        let system = [1, 2, 3, 4, 5, 6];
        let a: Vec<i32> = system.iter().copied().chain([7, 8, 9]).collect();
        let b: Vec<i32> = system.iter().copied().chain([10, 11]).collect();
        assert_eq!(t.insert(&layout, &a, &seg), 9 * per_token);
        // Only b's own part is added: the shared system prompt is stored once.
        assert_eq!(t.insert(&layout, &b, &seg), 2 * per_token);
        assert_eq!(t.bytes(), 11 * per_token);
        assert_eq!(t.len(), 3, "the system prompt, and one branch each");
        let m = t.longest(&[1, 2, 3, 4, 5, 6, 10, 11, 99]);
        assert_eq!(m.len, 8);
        let segs = t.segments(&layout, &m);
        let refs: Vec<&Segment> = segs.iter().collect();
        let restored = kvstate::assemble(&layout, &refs, 3).expect("assembles");
        assert_eq!(kvstate::parse(&restored).expect("parses").1, seg.slice(&layout, 0, 8));
        // A match that ends inside a node takes part of it.
        let m = t.longest(&[1, 2, 3, 9]);
        assert_eq!(m.len, 3);
        assert_eq!(t.segments(&layout, &m).iter().map(|s| s.cells).sum::<usize>(), 3);
        assert_eq!(t.longest(&[42]).len, 0);
        // Inserting what is cached adds nothing.
        assert_eq!(t.insert(&layout, &a[..4], &seg), 0);
    }

    #[test]
    fn eviction_takes_least_recently_used_leaves_and_keeps_shared_prefixes() {
        let (layout, seg) = full(12);
        let per_token = layout.bytes_per_token();
        let mut t = Radix::new();
        t.insert(&layout, &[1, 2, 3, 4, 7, 8], &seg);
        t.insert(&layout, &[1, 2, 3, 4, 9, 10], &seg);
        t.insert(&layout, &[1, 2, 3, 4, 11, 12], &seg);
        t.longest(&[1, 2, 3, 4, 7, 8]); // the first conversation is the most recent now
        t.evict_to(8 * per_token);
        assert_eq!(t.bytes(), 8 * per_token);
        assert_eq!(t.evictions(), 1);
        assert_eq!(
            t.longest(&[1, 2, 3, 4, 9, 10]).len,
            4,
            "the least recently used branch went; the shared prefix stays"
        );
        assert_eq!(t.longest(&[1, 2, 3, 4, 7, 8]).len, 6, "the recently used branch stays");
        assert_eq!(t.longest(&[1, 2, 3, 4, 11, 12]).len, 6);
        t.evict_to(5 * per_token);
        assert_eq!(t.longest(&[1, 2, 3, 4]).len, 4, "a prefix others branch from goes last");
        t.evict_to(0);
        assert_eq!((t.bytes(), t.len()), (0, 0));
        // Freed slots are reused.
        t.insert(&layout, &[5, 6], &seg);
        assert_eq!(t.longest(&[5, 6]).len, 2);
    }
}
