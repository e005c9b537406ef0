//! n-gram (prompt lookup) drafting for speculative decoding: the text a model is about to
//! write often repeats text already in its context (a summary quoting its source, an edit of
//! code, a conversation quoting itself). The longest recent n-gram of the sequence is looked
//! up earlier in it, and the tokens that followed it there are the draft.

/// The n-gram sizes tried, longest first.
const MAX_N: usize = 4;
const MIN_N: usize = 2;
/// How far back the lookup searches (tokens), bounding its cost on long contexts.
const WINDOW: usize = 8192;

/// Up to `k` tokens that followed the most recent earlier occurrence of the longest suffix
/// n-gram of `history` (n from 4 down to 2); empty when there is none.
pub fn draft(history: &[i32], k: usize) -> Vec<i32> {
    if k == 0 || history.len() < MIN_N + 1 {
        return Vec::new();
    }
    let lo = history.len().saturating_sub(WINDOW);
    for n in (MIN_N..=MAX_N.min(history.len() - 1)).rev() {
        let suffix = &history[history.len() - n..];
        // The most recent occurrence that is followed by at least one token.
        let found = (lo..history.len() - n).rev().find(|&i| &history[i..i + n] == suffix);
        if let Some(i) = found {
            let from = i + n;
            let to = (from + k).min(history.len());
            if to > from {
                return history[from..to].to_vec();
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_what_followed_the_longest_recent_ngram() {
        // "a b c d e f ... a b c" -> "d e f"
        let h = [1, 2, 3, 4, 5, 6, 9, 9, 1, 2, 3];
        assert_eq!(draft(&h, 3), vec![4, 5, 6]);
        assert_eq!(draft(&h, 7), vec![4, 5, 6, 9, 9, 1, 2]);
        // The most recent occurrence wins.
        let h = [1, 2, 7, 1, 2, 8, 1, 2];
        assert_eq!(draft(&h, 1), vec![8]);
        // Nothing repeats: no draft.
        assert!(draft(&[1, 2, 3, 4, 5], 3).is_empty());
        assert!(draft(&[1, 2], 3).is_empty());
        assert!(draft(&h, 0).is_empty());
    }
}
