/// Turns a stream of token byte pieces into text without ever splitting a UTF-8 character.
///
/// Byte-level tokenizers (GPT-2/Llama-3 BPE, SentencePiece byte fallback) emit one emoji or
/// CJK character as several tokens of partial bytes. Each call returns only complete
/// characters and keeps the incomplete tail for the next piece (as candle's
/// `TokenOutputStream`). Bytes that can never become valid UTF-8 come out as U+FFFD.
#[derive(Debug, Default, Clone)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token's bytes; returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // SAFETY-free: `valid` is valid UTF-8 by construction of `valid_up_to`.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            rest = after;
                            break;
                        }
                        // Bytes that can never be valid: replace and go on.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }

    /// Ends the stream: a dangling partial character becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        if self.pending.is_empty() {
            return String::new();
        }
        self.pending.clear();
        char::REPLACEMENT_CHARACTER.to_string()
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_passes_through() {
        let mut d = Utf8Decoder::new();
        assert_eq!(d.push(b"Hello"), "Hello");
        assert_eq!(d.push(b", world"), ", world");
        assert!(!d.has_pending());
    }

    #[test]
    fn multibyte_split_across_tokens() {
        let s = "é🦙中";
        let bytes = s.as_bytes();
        let mut d = Utf8Decoder::new();
        let mut out = String::new();
        for b in bytes {
            let piece = d.push(std::slice::from_ref(b));
            // Never half a character: every piece is valid UTF-8 by type, and is either
            // empty or a whole character.
            assert!(piece.is_empty() || s.contains(&piece), "{piece:?}");
            out.push_str(&piece);
        }
        assert_eq!(out, s);
        assert_eq!(d.finish(), "");
    }

    #[test]
    fn emoji_in_two_uneven_pieces() {
        let bytes = "🦙!".as_bytes();
        let mut d = Utf8Decoder::new();
        assert_eq!(d.push(&bytes[..3]), "");
        assert!(d.has_pending());
        assert_eq!(d.push(&bytes[3..]), "🦙!");
    }

    #[test]
    fn invalid_bytes_become_replacement() {
        let mut d = Utf8Decoder::new();
        assert_eq!(d.push(&[b'a', 0xFF, b'b']), "a\u{FFFD}b");
        assert_eq!(d.push(&[0xE4, 0xB8]), "");
        assert_eq!(d.finish(), "\u{FFFD}");
    }
}
