//! The request-decoding entry point of the `request_json` fuzz target (`fuzz/`).

use super::{ollama, openai};
use crate::generation::{parse_format, tool_specs};

/// Decodes `data` as every request body the dialects accept and converts what decodes into
/// the internal request, without a model: for the fuzz target (`fuzz/`). Whatever the bytes,
/// this returns (errors are values); a panic is a bug.
#[doc(hidden)]
pub fn decode_for_fuzzing(data: &[u8]) {
    use hyperllama_core::Prompt;
    if let Ok(b) = serde_json::from_slice::<ollama::types::GenerateBody>(data) {
        let _ = parse_format(b.format.as_ref());
        let _ = b.options.load_request(None);
        let _ = b.options.into_request(Prompt::Raw(b.prompt)).map(|r| r.validate());
    }
    if let Ok(b) = serde_json::from_slice::<ollama::types::ChatBody>(data) {
        let _ = tool_specs(&b.tools);
        let _ = parse_format(b.format.as_ref());
        let messages: Result<Vec<hyperllama_core::Message>, _> =
            b.messages.into_iter().map(hyperllama_core::Message::try_from).collect();
        if let Ok(m) = messages {
            let _ = b.options.into_request(Prompt::Chat(m)).map(|r| r.validate());
        }
    }
    if let Ok(b) = serde_json::from_slice::<openai::types::ChatCompletionBody>(data) {
        let _ = tool_specs(&b.tools);
        if let Ok(m) = openai::convert_messages_for_fuzzing(b.messages) {
            let _ = b.sampling.into_options(b.max_tokens).into_request(Prompt::Chat(m)).map(|r| r.validate());
        }
    }
    if let Ok(b) = serde_json::from_slice::<openai::types::CompletionBody>(data) {
        let _ = b.sampling.into_options(b.max_tokens).into_request(Prompt::Raw(String::new()));
    }
    let _ = serde_json::from_slice::<ollama::types::EmbedBody>(data);
    let _ = serde_json::from_slice::<ollama::types::CreateBody>(data);
    let _ = serde_json::from_slice::<openai::types::EmbeddingsBody>(data);
}
