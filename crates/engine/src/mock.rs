//! A deterministic engine without a model, for unit tests of the layers above engines
//! (API dialects, scheduling policy). Never a substitute for end-to-end tests with a real model.
//!
//! It "generates" the words of the prompt back, one token per word, honouring `max_tokens`,
//! stop strings and cancellation like a real engine.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyperllama_core::{FinishReason, GenerateRequest, Prompt, Timings, TokenEvent, Usage};

use crate::{
    EngineError, EngineInfo, Health, LoadOptions, LoadedModel, ModelInfo, ModelStats, StopMatcher, TokenStream,
};

#[derive(Debug, Default)]
pub struct MockEngine;

#[async_trait::async_trait]
impl crate::Engine for MockEngine {
    fn info(&self) -> EngineInfo {
        EngineInfo { id: "mock", version: "0".into(), formats: vec!["mock"], devices: vec!["cpu".into()] }
    }
    async fn health(&self) -> Health {
        Health::Ready
    }
    async fn load(&self, options: LoadOptions) -> Result<Arc<dyn LoadedModel>, EngineError> {
        Ok(Arc::new(MockModel {
            info: ModelInfo {
                name: options.path.display().to_string(),
                architecture: "mock".into(),
                context_length: 2048,
                loaded_context: options.ctx_size.unwrap_or(2048),
                ..ModelInfo::default()
            },
            per_token: Duration::from_millis(1),
            cancelled: Arc::new(AtomicU64::new(0)),
            finished: Arc::new(AtomicU64::new(0)),
        }))
    }
}

pub struct MockModel {
    info: ModelInfo,
    per_token: Duration,
    cancelled: Arc<AtomicU64>,
    finished: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl LoadedModel for MockModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn stats(&self) -> ModelStats {
        ModelStats {
            requests_finished: self.finished.load(Ordering::Relaxed),
            requests_cancelled: self.cancelled.load(Ordering::Relaxed),
            ..ModelStats::default()
        }
    }
    async fn embed(&self, inputs: Vec<String>, _truncate: bool) -> Result<crate::Embeddings, EngineError> {
        let vectors = inputs.iter().map(|s| vec![s.len() as f32, 1.0]).collect();
        Ok(crate::Embeddings { vectors, prompt_tokens: inputs.len() as u32 })
    }
    fn render_prompt(&self, prompt: &Prompt, _tools: &[hyperllama_core::ToolSpec]) -> Result<String, EngineError> {
        Ok(match prompt {
            Prompt::Raw(s) => s.clone(),
            Prompt::Chat(m) => m.iter().map(|m| format!("{}: {}\n", m.role.as_str(), m.content)).collect(),
        })
    }
    fn tokenize(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        Ok(text.split_whitespace().enumerate().map(|(i, _)| i as u32).collect())
    }
    async fn generate(&self, request: GenerateRequest) -> Result<TokenStream, EngineError> {
        request.validate()?;
        let text = self.render_prompt(&request.prompt, &request.tools)?;
        let words: Vec<String> = text.split_whitespace().map(|w| format!("{w} ")).collect();
        let prompt_tokens = words.len() as u32;
        if prompt_tokens >= self.info.loaded_context {
            return Err(EngineError::PromptTooLong { prompt_tokens, ctx_size: self.info.loaded_context });
        }
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let (per_token, cancelled, finished) = (self.per_token, self.cancelled.clone(), self.finished.clone());
        tokio::spawn(async move {
            let mut stop = StopMatcher::new(&request.stop.stop);
            let max = request.stop.max_tokens.unwrap_or(u32::MAX) as usize;
            let mut n = 0u32;
            let mut reason = FinishReason::Stop;
            for (i, w) in words.iter().enumerate() {
                if i >= max {
                    reason = FinishReason::Length;
                    break;
                }
                tokio::time::sleep(per_token).await;
                n += 1;
                let step = stop.push(w);
                if tx.send(Ok(TokenEvent::Token { id: i as u32, text: step.emit })).await.is_err() {
                    cancelled.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if step.stopped {
                    break;
                }
            }
            let usage = Usage { prompt_tokens, cached_tokens: 0, completion_tokens: n };
            let done = TokenEvent::Done { finish_reason: reason, usage, timings: Timings::default() };
            let _ = tx.send(Ok(done)).await;
            finished.fetch_add(1, Ordering::Relaxed);
        });
        Ok(Box::pin(crate::receiver_stream(rx)))
    }
    async fn unload(&self) -> Result<(), EngineError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use hyperllama_core::Prompt;

    use super::*;
    use crate::Engine;

    #[tokio::test]
    async fn echoes_and_honours_max_tokens_and_stop() {
        let model = MockEngine.load(LoadOptions::default()).await.expect("load");
        let mut req = GenerateRequest::new(Prompt::Raw("a b c d e".into()));
        req.stop.max_tokens = Some(3);
        let events: Vec<_> = model.generate(req).await.expect("gen").collect().await;
        assert_eq!(events.len(), 4);
        assert!(matches!(events.last(), Some(Ok(TokenEvent::Done { finish_reason: FinishReason::Length, .. }))));

        let mut req = GenerateRequest::new(Prompt::Raw("a b c d e".into()));
        req.stop.stop = vec!["c".into()];
        let text: String = model
            .generate(req)
            .await
            .expect("gen")
            .filter_map(|e| async move {
                match e {
                    Ok(TokenEvent::Token { text, .. }) => Some(text),
                    _ => None,
                }
            })
            .collect()
            .await;
        assert_eq!(text, "a b ");
    }
}
