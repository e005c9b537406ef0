//! Shared helpers for the end-to-end tests with the real SmolLM2 model.
#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;

use futures::StreamExt;
use hyperllama_core::{FinishReason, GenerateRequest, Prompt, SamplingParams, TokenEvent, Usage};
use hyperllama_engine::{Engine, LoadOptions, LoadedModel};
use hyperllama_engine_llamacpp::LlamaCppEngine;

pub use hyperllama_testutil::model_path;

pub async fn load_with(options: LoadOptions) -> Arc<dyn LoadedModel> {
    LlamaCppEngine::new().load(options).await.expect("the test model loads")
}

pub async fn load() -> Arc<dyn LoadedModel> {
    // Flash attention on: several tests compare greedy runs whose prompts were computed in
    // batches of different shapes (whole, or restored and the rest computed), bit for bit.
    // Without flash attention llama.cpp's batched attention matmuls (llamafile's sgemm) sum in
    // another order than one-row ones, so such runs may part at a near-tie (docs/PERFORMANCE.md).
    let extra = vec![("flash_attn".to_string(), "on".to_string())];
    load_with(LoadOptions { path: model_path(), ctx_size: Some(1024), extra, ..LoadOptions::default() }).await
}

/// `r`, validated as the service does before an engine sees it.
pub fn valid(r: GenerateRequest) -> hyperllama_core::ValidRequest {
    r.validate().expect("a valid request")
}

pub fn greedy(prompt: Prompt, max_tokens: u32) -> GenerateRequest {
    let mut r = GenerateRequest::new(prompt);
    r.sampling = SamplingParams::greedy();
    r.stop.max_tokens = Some(max_tokens);
    r
}

pub fn chat(user: &str) -> Prompt {
    Prompt::Chat(vec![hyperllama_core::Message::user(user)])
}

pub struct Output {
    pub text: String,
    pub ids: Vec<u32>,
    pub finish: FinishReason,
    pub usage: Usage,
}

pub async fn run(model: &dyn LoadedModel, request: GenerateRequest) -> Output {
    let mut stream = model.generate(request.validate().expect("a valid request")).await.expect("generation starts");
    let (mut text, mut ids) = (String::new(), Vec::new());
    while let Some(ev) = stream.next().await {
        match ev.expect("no engine error") {
            TokenEvent::Token { id, text: t, .. } => {
                ids.push(id);
                text.push_str(&t);
            }
            TokenEvent::Text(t) => text.push_str(&t),
            TokenEvent::ToolCall(c) => panic!("the engine does not parse tool calls itself: {c:?}"),
            TokenEvent::Done { finish_reason, usage, .. } => return Output { text, ids, finish: finish_reason, usage },
        }
    }
    panic!("stream ended without Done");
}
