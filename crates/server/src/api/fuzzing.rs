//! The request-decoding entry point of the `request_json` fuzz target (`fuzz/`).

use super::{anthropic, ollama, openai};
use crate::service::{policy, ServiceRequest};

/// Decodes `data` as every request body the dialects accept and runs what decodes through
/// the same conversion (`TryFrom`) and Modelfile policy the server uses, against a model with
/// a `SYSTEM`, `MESSAGE`s, `PARAMETER`s and a `TEMPLATE`, then validates the result. Whatever
/// the bytes, this returns (errors are values); a panic is a bug.
#[doc(hidden)]
pub fn decode_for_fuzzing(data: &[u8]) {
    let manifest = fuzz_manifest();
    let check = |req: Result<ServiceRequest, crate::error::ApiError>| {
        if let Ok(req) = req {
            let mut plain = manifest.clone();
            plain.template = None;
            for m in [&manifest, &plain] {
                if let Ok(p) = policy::prepare(&req, m) {
                    let _ = p.request.validate();
                }
            }
        }
    };
    if let Ok(b) = serde_json::from_slice::<ollama::types::GenerateBody>(data) {
        check(ServiceRequest::try_from(b));
    }
    if let Ok(b) = serde_json::from_slice::<ollama::types::ChatBody>(data) {
        check(ServiceRequest::try_from(b));
    }
    if let Ok(b) = serde_json::from_slice::<openai::types::ChatCompletionBody>(data) {
        check(ServiceRequest::try_from(b));
    }
    if let Ok(b) = serde_json::from_slice::<openai::types::CompletionBody>(data) {
        check(ServiceRequest::try_from(b));
    }
    if let Ok(b) = serde_json::from_slice::<anthropic::types::MessagesBody>(data) {
        check(ServiceRequest::try_from(b));
    }
    if let Ok(b) = serde_json::from_slice::<anthropic::types::CountTokensBody>(data) {
        check(ServiceRequest::try_from(b));
    }
    if let Ok(b) = serde_json::from_slice::<openai::responses::ResponsesBody>(data) {
        check(openai::responses::convert(|_| None, b).map(|(req, _, _)| req));
    }
    // The output parser, on the bytes as generated text, in every family's call format, fed
    // in pieces of several sizes; typed by a schema for the formats that write text values.
    use hyperllama_engine::parse::ToolFormat;
    let text = String::from_utf8_lossy(data);
    let tools = [hyperllama_core::ToolSpec {
        name: "get_weather".into(),
        description: String::new(),
        parameters: serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}),
    }];
    let format = match data.first().map(|b| (b >> 1) % 4) {
        Some(1) => ToolFormat::Mistral,
        Some(2) => ToolFormat::DeepSeekR1,
        Some(3) => ToolFormat::Harmony,
        _ => ToolFormat::Hermes,
    };
    for piece in [1usize, 3, 7, 64] {
        let mut parser = hyperllama_engine::parse::OutputParser::new(
            true,
            Some(hyperllama_engine::parse::ReasoningDelimiters::think()),
            data.first().is_some_and(|b| b & 1 == 1),
        )
        .with_tools(format, &tools);
        let mut rest: &str = &text;
        while !rest.is_empty() {
            let mut cut = piece.min(rest.len());
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            let _ = parser.push(&rest[..cut]);
            rest = &rest[cut..];
        }
        let _ = parser.finish();
    }
    let _ = serde_json::from_slice::<ollama::types::EmbedBody>(data);
    let _ = serde_json::from_slice::<ollama::types::CreateBody>(data);
    let _ = serde_json::from_slice::<openai::types::EmbeddingsBody>(data);
}

fn fuzz_manifest() -> hyperllama_store::Manifest {
    use hyperllama_core::Message;
    hyperllama_store::Manifest {
        name: "fuzz:latest".into(),
        model: hyperllama_store::Digest::parse(&format!("sha256:{}", "f".repeat(64)))
            .unwrap_or_else(|_| unreachable!()),
        size: 0,
        template: Some("{{ if .System }}S:{{ .System }}\n{{ end }}U:{{ .Prompt }}\nA:{{ .Response }}\n".into()),
        system: Some("be brief".into()),
        license: None,
        parameters: [
            ("temperature".to_string(), serde_json::json!(0.2)),
            ("stop".to_string(), serde_json::json!(["\n\n"])),
        ]
        .into(),
        messages: vec![Message::user("hi"), Message::assistant("hello")],
        source: String::new(),
        modified_at: String::new(),
    }
}
