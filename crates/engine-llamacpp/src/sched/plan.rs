//! The scheduler's decisions, as pure functions of what the lanes and the queue look like:
//! which waiting request goes to which lane, which lane moves where, and what each lane puts
//! into the next decode step. No llama.cpp here, so every rule has fast unit tests; the
//! executor (`worker.rs`) carries the plan out.
//!
//! The rules come from how llama.cpp splits a batch with one KV stream per sequence
//! (`split_equal(sequential)`): a micro-batch ("ubatch") holds consecutive ascending sequence
//! ids taking equal numbers of tokens, and each extra ubatch costs ~4 ms per step on a 2-core
//! CPU. So: tokens go into the batch in lane order, new requests take the lowest free lane,
//! active lanes are kept contiguous, and every drafting lane drafts the same number of tokens.

/// How the scheduler is sized and tuned.
#[derive(Debug, Clone, Copy)]
pub struct PlanConfig {
    pub lanes: usize,
    /// llama.cpp's micro-batch size.
    pub n_ubatch: usize,
    /// Tokens a step may hold when no lane is decoding.
    pub max_step_tokens: usize,
    /// Prompt tokens a step may add while lanes decode (keeps inter-token latency bounded).
    pub prefill_while_decoding: usize,
    /// How many of the oldest waiting requests compete on their cached prefix length.
    pub fairness_window: usize,
    /// A request passed over this many times is admitted next, whatever its cache.
    pub max_skips: u32,
    /// Speculation only while at most this many lanes decode.
    pub spec_max_decoders: usize,
}

/// One lane, as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneView {
    Free,
    /// Prompt tokens still to compute; `order` is the request's arrival order.
    Prefill {
        remaining: usize,
        order: u64,
    },
    /// Generating; `draft_avail` draft tokens the n-gram lookup found (0: none, or drafting
    /// is off for this lane).
    Decode {
        draft_avail: usize,
    },
}

/// One waiting request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitingView {
    /// Tokens of its prompt the prompt cache holds.
    pub cached: usize,
    /// Times a younger request was admitted before it.
    pub skips: u32,
}

/// What one lane does in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Its next token, and `draft` drafted tokens to verify.
    Decode { draft: usize },
    /// The next `tokens` prompt tokens.
    Prefill { tokens: usize },
}

impl Work {
    pub fn tokens(&self) -> usize {
        match self {
            Work::Decode { draft } => 1 + draft,
            Work::Prefill { tokens } => *tokens,
        }
    }
}

/// Which waiting requests (indexes into the queue, oldest first) go to which lanes.
pub fn admit(config: &PlanConfig, lanes: &[LaneView], waiting: &[WaitingView]) -> Vec<(usize, usize)> {
    let mut free: Vec<usize> = (0..lanes.len()).filter(|&i| lanes[i] == LaneView::Free).collect();
    free.reverse(); // pop() gives the lowest
    let mut left: Vec<usize> = (0..waiting.len()).collect();
    let mut out = Vec::new();
    while let Some(&lane) = free.last() {
        let Some(&oldest) = left.first() else { break };
        let pick = if waiting[oldest].skips >= config.max_skips {
            oldest
        } else {
            // The longest cached prefix among the oldest few; ties go to the oldest.
            *left
                .iter()
                .take(config.fairness_window.max(1))
                .max_by(|&&a, &&b| waiting[a].cached.cmp(&waiting[b].cached).then(b.cmp(&a)))
                .unwrap_or(&oldest)
        };
        left.retain(|&i| i != pick);
        free.pop();
        out.push((pick, lane));
    }
    out
}

/// Moves that close gaps below active lanes (the highest active lane into the lowest free
/// one), so that active lanes are contiguous. Only when nothing waits (a waiting request
/// fills the lowest free lane instead).
pub fn compact(lanes: &[LaneView], waiting: usize) -> Vec<(usize, usize)> {
    if waiting > 0 {
        return Vec::new();
    }
    let mut state: Vec<bool> = lanes.iter().map(|l| *l != LaneView::Free).collect();
    let mut moves = Vec::new();
    while let (Some(high), Some(low)) = (state.iter().rposition(|&a| a), state.iter().position(|&a| !a)) {
        if low > high {
            break;
        }
        state[high] = false;
        state[low] = true;
        moves.push((high, low));
    }
    moves
}

/// What each lane puts into the next step, in lane order.
pub fn schedule(config: &PlanConfig, lanes: &[LaneView]) -> Vec<(usize, Work)> {
    let decoders: Vec<usize> = (0..lanes.len()).filter(|&i| matches!(lanes[i], LaneView::Decode { .. })).collect();
    let draft = if decoders.len() <= config.spec_max_decoders { draft_len(lanes, &decoders) } else { 0 };
    let mut work: Vec<(usize, Work)> = decoders
        .iter()
        .map(|&i| {
            let avail = match lanes[i] {
                LaneView::Decode { draft_avail } => draft_avail,
                _ => 0,
            };
            (i, Work::Decode { draft: if draft > 0 && avail >= draft { draft } else { 0 } })
        })
        .collect();
    let used: usize = work.iter().map(|(_, w)| w.tokens()).sum();
    let cap = if decoders.is_empty() { config.max_step_tokens } else { config.prefill_while_decoding };
    let mut budget = cap.min(config.max_step_tokens).saturating_sub(used);
    // Prompt chunks, oldest request first, while the budget lasts.
    let mut prefill: Vec<(usize, usize, u64)> = (0..lanes.len())
        .filter_map(|i| match lanes[i] {
            LaneView::Prefill { remaining, order } if remaining > 0 => Some((i, remaining, order)),
            _ => None,
        })
        .collect();
    prefill.sort_by_key(|p| p.2);
    for (i, remaining, _) in prefill {
        if budget == 0 {
            break;
        }
        let n = remaining.min(budget);
        budget -= n;
        work.push((i, Work::Prefill { tokens: n }));
    }
    work.sort_by_key(|(i, _)| *i);
    work
}

/// The draft length every drafting lane uses this step: 7 or 3 (k + 1 a multiple of 4, the
/// cheapest shapes for the repacked kernels), the longest all drafting lanes can fill; lanes
/// that cannot fill 3 do not draft.
fn draft_len(lanes: &[LaneView], decoders: &[usize]) -> usize {
    let avail: Vec<usize> = decoders
        .iter()
        .filter_map(|&i| match lanes[i] {
            LaneView::Decode { draft_avail } if draft_avail >= 3 => Some(draft_avail),
            _ => None,
        })
        .collect();
    match avail.iter().min() {
        None => 0,
        Some(&m) if m >= 7 => 7,
        Some(_) => 3,
    }
}

/// How many micro-batches llama.cpp splits a batch into, given `(lane, tokens)` in batch
/// order: its `split_equal(n_ubatch, sequential = true)`, step for step.
pub fn ubatches(work: &[(usize, usize)], n_ubatch: usize) -> usize {
    let mut remaining: Vec<(usize, usize)> = work.iter().copied().filter(|(_, n)| *n > 0).collect();
    let mut count = 0;
    loop {
        // The sequences of this ubatch: consecutive ascending ids, in batch order.
        let mut set: Vec<usize> = Vec::new();
        let mut last: Option<usize> = None;
        for (k, &(lane, n)) in remaining.iter().enumerate() {
            if n > 0 && last.is_none_or(|l| lane == l + 1) {
                set.push(k);
                last = Some(lane);
            }
        }
        if set.is_empty() {
            return count;
        }
        count += 1;
        let mut taken = 0;
        loop {
            if set.iter().any(|&k| remaining[k].1 == 0) {
                break;
            }
            for &k in &set {
                remaining[k].1 -= 1;
            }
            taken += 1;
            if (taken + 1) * set.len() > n_ubatch.max(1) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PlanConfig {
        PlanConfig {
            lanes: 4,
            n_ubatch: 512,
            max_step_tokens: 2048,
            prefill_while_decoding: 128,
            fairness_window: 4,
            max_skips: 3,
            spec_max_decoders: 2,
        }
    }

    const FREE: LaneView = LaneView::Free;

    fn dec(draft_avail: usize) -> LaneView {
        LaneView::Decode { draft_avail }
    }

    fn wait(cached: usize) -> WaitingView {
        WaitingView { cached, skips: 0 }
    }

    #[test]
    fn new_requests_take_the_lowest_free_lanes() {
        let lanes = [dec(0), FREE, dec(0), FREE];
        assert_eq!(admit(&config(), &lanes, &[wait(0), wait(0), wait(0)]), vec![(0, 1), (1, 3)]);
        assert!(admit(&config(), &[dec(0); 4], &[wait(0)]).is_empty());
    }

    #[test]
    fn the_longest_cached_prefix_goes_first_within_the_fairness_window() {
        let c = config();
        let lanes = [FREE, dec(0), dec(0), dec(0)];
        // Within the window of 4, the best cached one wins; beyond it, the cache does not count.
        let q = [wait(0), wait(10), wait(500), wait(0), wait(9999)];
        assert_eq!(admit(&c, &lanes, &q), vec![(2, 0)]);
        // Ties go to the oldest.
        assert_eq!(admit(&c, &lanes, &[wait(5), wait(5)]), vec![(0, 0)]);
        // A request passed over max_skips times goes first.
        let starving = [WaitingView { cached: 0, skips: 3 }, wait(1000)];
        assert_eq!(admit(&c, &lanes, &starving), vec![(0, 0)]);
    }

    #[test]
    fn nobody_starves() {
        // One lane, a stream of requests each better cached than the oldest: the oldest is
        // admitted within max_skips + 1 admissions.
        let c = config();
        let mut queue = vec![wait(0)];
        let mut oldest_skips = 0;
        for round in 0..10 {
            queue.push(wait(100 + round));
            let got = admit(&c, &[FREE], &queue);
            let (pick, _) = got[0];
            if pick == 0 {
                assert!(oldest_skips <= c.max_skips, "admitted after {oldest_skips} skips");
                return;
            }
            oldest_skips += 1;
            queue[0].skips = oldest_skips;
            queue.remove(pick);
        }
        panic!("the oldest request starved");
    }

    #[test]
    fn gaps_below_active_lanes_are_closed_by_moving_the_highest() {
        assert_eq!(compact(&[dec(0), FREE, dec(0), dec(0)], 0), vec![(3, 1)]);
        assert_eq!(compact(&[FREE, FREE, dec(0), dec(0)], 0), vec![(3, 0), (2, 1)]);
        assert!(compact(&[dec(0), dec(0), FREE, FREE], 0).is_empty(), "contiguous already");
        assert!(compact(&[dec(0), FREE, dec(0), FREE], 2).is_empty(), "a waiting request fills the gap");
    }

    #[test]
    fn work_is_in_lane_order_with_decodes_first_in_the_budget() {
        let c = config();
        let lanes = [
            LaneView::Prefill { remaining: 300, order: 7 },
            dec(0),
            LaneView::Prefill { remaining: 100, order: 3 },
            dec(0),
        ];
        let w = schedule(&c, &lanes);
        // Decoding: the prompt budget is 128 - 2 decode tokens, the older prompt (lane 2) first.
        assert_eq!(
            w,
            vec![
                (0, Work::Prefill { tokens: 26 }),
                (1, Work::Decode { draft: 0 }),
                (2, Work::Prefill { tokens: 100 }),
                (3, Work::Decode { draft: 0 })
            ]
        );
        // Nothing decoding: the whole step budget.
        let w = schedule(&c, &[LaneView::Prefill { remaining: 3000, order: 1 }, FREE, FREE, FREE]);
        assert_eq!(w, vec![(0, Work::Prefill { tokens: 2048 })]);
    }

    #[test]
    fn drafting_lanes_draft_the_same_length_and_only_when_few_decode() {
        let c = config();
        assert_eq!(
            schedule(&c, &[dec(9), dec(12)]),
            vec![(0, Work::Decode { draft: 7 }), (1, Work::Decode { draft: 7 })]
        );
        assert_eq!(
            schedule(&c, &[dec(9), dec(4)]),
            vec![(0, Work::Decode { draft: 3 }), (1, Work::Decode { draft: 3 })]
        );
        assert_eq!(
            schedule(&c, &[dec(9), dec(1)]),
            vec![(0, Work::Decode { draft: 7 }), (1, Work::Decode { draft: 0 })]
        );
        // Three decoders: more than a couple; no speculation.
        assert!(schedule(&c, &[dec(9), dec(9), dec(9)]).iter().all(|(_, w)| *w == Work::Decode { draft: 0 }));
        for w in schedule(&c, &[dec(20), dec(30)]) {
            assert_eq!((w.1.tokens()) % 4, 0, "k + 1 a multiple of 4");
        }
    }

    #[test]
    fn ubatches_follow_llama_cpps_split() {
        // Contiguous decoders: one ubatch.
        assert_eq!(ubatches(&[(0, 1), (1, 1), (2, 1), (3, 1)], 512), 1);
        // A gap splits them.
        assert_eq!(ubatches(&[(0, 1), (2, 1), (3, 1)], 512), 2);
        // Out of order: {1, 2} (2 follows 1), then {0}, then {3}.
        assert_eq!(ubatches(&[(1, 1), (0, 1), (3, 1), (2, 1)], 512), 3);
        // A prompt chunk after decoders: one token with them, the rest alone.
        assert_eq!(ubatches(&[(0, 1), (1, 1), (2, 200)], 512), 2);
        // Equal drafts verify together; a long prompt spans ubatches of 512.
        assert_eq!(ubatches(&[(0, 4), (1, 4)], 512), 1);
        assert_eq!(ubatches(&[(0, 1200)], 512), 3);
        // The planner's own schedule is contiguous: one ubatch for decoders.
        let w = schedule(&config(), &[dec(0), dec(0), dec(0), dec(0)]);
        let shape: Vec<(usize, usize)> = w.iter().map(|(l, w)| (*l, w.tokens())).collect();
        assert_eq!(ubatches(&shape, 512), 1);
    }
}
