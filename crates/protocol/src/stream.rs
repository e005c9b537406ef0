//! The decoders over an async byte stream (an HTTP response body).

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::ndjson::NdjsonDecoder;
use crate::sse::{SseDecoder, SseEvent};

/// The SSE events of a byte stream; a transport error ends it with that error.
pub fn sse_events<S, E>(bytes: S) -> impl Stream<Item = Result<SseEvent, E>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Send + 'static,
{
    decode(bytes, SseDecoder::new(), |d, b| d.push(b), |d| d.finish().into_iter().collect())
}

/// The NDJSON lines of a byte stream (a last line without its newline included).
pub fn ndjson_lines<S, E>(bytes: S) -> impl Stream<Item = Result<Vec<u8>, E>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Send + 'static,
{
    decode(bytes, NdjsonDecoder::new(), |d, b| d.push(b), |d| d.finish().into_iter().collect())
}

fn decode<S, E, D, T>(
    bytes: S,
    decoder: D,
    push: fn(&mut D, &[u8]) -> Vec<T>,
    finish: fn(&mut D) -> Vec<T>,
) -> impl Stream<Item = Result<T, E>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Send + 'static,
    D: Send + 'static,
    T: Send + 'static,
{
    let state = (Box::pin(bytes), decoder, std::collections::VecDeque::new(), false);
    futures::stream::unfold(state, move |(mut bytes, mut decoder, mut ready, mut ended)| async move {
        loop {
            if let Some(item) = ready.pop_front() {
                return Some((Ok(item), (bytes, decoder, ready, ended)));
            }
            if ended {
                return None;
            }
            match bytes.next().await {
                Some(Ok(chunk)) => ready.extend(push(&mut decoder, &chunk)),
                Some(Err(e)) => return Some((Err(e), (bytes, decoder, ready, true))),
                None => {
                    ended = true;
                    ready.extend(finish(&mut decoder));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn decodes_a_chunked_body_and_keeps_the_error() {
        let chunks: Vec<Result<Bytes, String>> =
            vec![Ok(Bytes::from("data: a\n")), Ok(Bytes::from("\ndata: b\n\n")), Err("reset".into())];
        let got: Vec<Result<SseEvent, String>> = sse_events(futures::stream::iter(chunks)).collect().await;
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_ref().map(|e| e.data.as_str()), Ok("a"));
        assert_eq!(got[1].as_ref().map(|e| e.data.as_str()), Ok("b"));
        assert_eq!(got[2], Err("reset".to_string()));
        let lines: Vec<Result<Vec<u8>, String>> =
            ndjson_lines(futures::stream::iter(vec![Ok(Bytes::from("{}\n{\"x\""))])).collect().await;
        assert_eq!(lines, vec![Ok(b"{}".to_vec()), Ok(b"{\"x\"".to_vec())]);
    }
}
