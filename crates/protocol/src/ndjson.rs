//! Newline-delimited JSON (Ollama's streams, the MAX sidecar's): a decoder that takes bytes in
//! chunks of any size and yields whole lines.

/// Feeds bytes in, takes complete non-blank lines out (without their newline).
#[derive(Debug, Default)]
pub struct NdjsonDecoder {
    buf: Vec<u8>,
}

impl NdjsonDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                out.push(line);
            }
        }
        out
    }

    /// A last line without its newline.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let rest = std::mem::take(&mut self.buf);
        (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest)
    }
}

/// One value as an NDJSON line (with its newline).
pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_else(|e| {
        // Only a map with non-string keys fails; say so in the stream rather than panic.
        serde_json::to_vec(&serde_json::json!({ "error": e.to_string() })).unwrap_or_default()
    });
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_survive_any_chunking() {
        let wire = b"{\"a\":1}\n\n{\"b\":2}\r\n{\"c\":3}";
        for size in 1..wire.len() {
            let mut d = NdjsonDecoder::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(size) {
                got.extend(d.push(chunk));
            }
            got.extend(d.finish());
            let got: Vec<String> = got.into_iter().map(|l| String::from_utf8(l).unwrap()).collect();
            assert_eq!(got, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"], "chunk size {size}");
        }
    }
}
