//! A deterministic engine without a model, for tests of the layers above engines (API
//! dialects, the service, the registry). Never a substitute for end-to-end tests with a real
//! model.
//!
//! By default it "generates" the words of the rendered prompt back, one token per word,
//! honouring `max_tokens`, stop strings and cancellation like a real engine. A [`Script`]
//! makes it behave otherwise: a fixed answer (a tool call, say), a delay per token, a load
//! that takes a while or waits for the test to release it, a load or generation that fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyperllama_core::{FinishReason, Prompt, Timings, TokenEvent, Usage, ValidRequest};

use crate::{
    ChatTemplate, EngineError, EngineInfo, Health, LoadOptions, LoadedModel, MemoryEstimate, ModelInfo, ModelStats,
    PromptRenderer, StopMatcher, TokenStream, Tokenizer,
};

/// How a [`MockEngine`] behaves.
#[derive(Clone)]
pub struct Script {
    /// The engine's id (tests of engine choice use several).
    pub id: &'static str,
    /// Delay before each token.
    pub per_token: Duration,
    /// Delay of every load.
    pub load_delay: Duration,
    /// When set, a load of a path containing `.0` waits for one permit of `.1` (the test
    /// releases it), so a test can hold a load in progress as long as it needs.
    pub load_gate: Option<(String, Arc<tokio::sync::Semaphore>)>,
    /// Loads of a path containing this fail with [`EngineError::Load`].
    pub fail_load: Option<String>,
    /// Answer this text (one token per word, spaces kept) instead of echoing the prompt.
    pub answer: Option<String>,
    /// Fail the generation with this error after the first token.
    pub fail_after_first: Option<String>,
    /// The memory every load reports needing.
    pub memory: Option<MemoryEstimate>,
    /// The model's trained context.
    pub context_length: u32,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            id: "mock",
            per_token: Duration::from_millis(1),
            load_delay: Duration::ZERO,
            load_gate: None,
            fail_load: None,
            answer: None,
            fail_after_first: None,
            memory: None,
            context_length: 2048,
        }
    }
}

/// What a [`MockEngine`] was asked to do, for assertions.
#[derive(Debug, Default)]
pub struct Calls {
    pub loads: AtomicU64,
    pub unloads: AtomicU64,
    pub generations: AtomicU64,
    pub shutdowns: AtomicU64,
    /// The options of every load, in order.
    pub load_options: Mutex<Vec<LoadOptions>>,
}

#[derive(Clone, Default)]
pub struct MockEngine {
    script: Script,
    calls: Arc<Calls>,
}

impl MockEngine {
    pub fn new(script: Script) -> Self {
        Self { script, calls: Arc::default() }
    }

    pub fn calls(&self) -> &Arc<Calls> {
        &self.calls
    }
}

#[async_trait::async_trait]
impl crate::Engine for MockEngine {
    fn id(&self) -> &'static str {
        self.script.id
    }
    fn info(&self) -> EngineInfo {
        EngineInfo { id: self.script.id, version: "0".into(), formats: vec!["mock"], devices: vec!["cpu".into()] }
    }
    async fn health(&self) -> Health {
        Health::Ready
    }
    async fn estimate_memory(&self, _options: &LoadOptions) -> Result<Option<MemoryEstimate>, EngineError> {
        Ok(self.script.memory)
    }
    async fn load(&self, options: LoadOptions) -> Result<Arc<dyn LoadedModel>, EngineError> {
        let path = options.path.display().to_string();
        if let Some((needle, gate)) = &self.script.load_gate {
            if path.contains(needle.as_str()) {
                let permit = gate.acquire().await.map_err(|_| EngineError::Load("the load gate closed".into()))?;
                permit.forget();
            }
        }
        tokio::time::sleep(self.script.load_delay).await;
        if self.script.fail_load.as_ref().is_some_and(|f| path.contains(f.as_str())) {
            return Err(EngineError::Load(format!("scripted load failure for {path}")));
        }
        self.calls.loads.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut o) = self.calls.load_options.lock() {
            o.push(options.clone());
        }
        let template = ChatTemplate::new(
            "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}",
            "",
            "",
        )
        .ok();
        Ok(Arc::new(MockModel {
            info: ModelInfo {
                name: path,
                architecture: "mock".into(),
                context_length: self.script.context_length,
                loaded_context: options.ctx_size.unwrap_or(self.script.context_length),
                embedding_length: 2,
                ..ModelInfo::default()
            },
            script: self.script.clone(),
            calls: self.calls.clone(),
            template,
            finished: Arc::new(AtomicU64::new(0)),
            cancelled: Arc::new(AtomicU64::new(0)),
            active: Arc::new(AtomicU64::new(0)),
            unloaded: std::sync::atomic::AtomicBool::new(false),
        }))
    }
    async fn shutdown(&self) {
        self.calls.shutdowns.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct MockModel {
    info: ModelInfo,
    script: Script,
    calls: Arc<Calls>,
    template: Option<ChatTemplate>,
    finished: Arc<AtomicU64>,
    cancelled: Arc<AtomicU64>,
    active: Arc<AtomicU64>,
    unloaded: std::sync::atomic::AtomicBool,
}

impl MockModel {
    fn words(&self, request: &ValidRequest) -> Result<(Vec<String>, u32), EngineError> {
        let text = self.render_request(request)?;
        let prompt_tokens = text.split_whitespace().count() as u32;
        if prompt_tokens >= self.info.loaded_context {
            return Err(EngineError::PromptTooLong { prompt_tokens, ctx_size: self.info.loaded_context });
        }
        let source = self.script.answer.clone().unwrap_or(text);
        let mut words: Vec<String> = source.split_inclusive(' ').map(str::to_string).collect();
        if self.script.answer.is_none() {
            words = source.split_whitespace().map(|w| format!("{w} ")).collect();
        }
        Ok((words, prompt_tokens))
    }
}

impl Tokenizer for MockModel {
    fn tokenize(&self, text: &str, _special: bool) -> Result<Vec<u32>, EngineError> {
        Ok(text.split_whitespace().map(|w| w.len() as u32).collect())
    }
    fn token_bytes(&self, id: u32) -> Result<Vec<u8>, EngineError> {
        Ok(vec![b'x'; id as usize])
    }
}

impl PromptRenderer for MockModel {
    fn render_prompt(&self, prompt: &Prompt, tools: &[hyperllama_core::ToolSpec]) -> Result<String, EngineError> {
        crate::render_prompt(self.template.as_ref(), prompt, tools)
    }
    fn template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }
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
            active: self.active.load(Ordering::Relaxed) as u32,
            parallel: 1,
            ..ModelStats::default()
        }
    }
    fn tokenizer(&self) -> Option<&dyn Tokenizer> {
        Some(self)
    }
    fn renderer(&self) -> Option<&dyn PromptRenderer> {
        Some(self)
    }
    async fn embed(&self, inputs: Vec<String>, _truncate: bool) -> Result<crate::Embeddings, EngineError> {
        let vectors = inputs
            .iter()
            .map(|s| {
                let v = [s.len() as f32, 1.0];
                let n = (v[0] * v[0] + 1.0).sqrt();
                vec![v[0] / n, v[1] / n]
            })
            .collect();
        Ok(crate::Embeddings {
            vectors,
            prompt_tokens: inputs.iter().map(|s| s.split_whitespace().count() as u32).sum(),
        })
    }
    async fn generate(&self, request: ValidRequest) -> Result<TokenStream, EngineError> {
        if self.unloaded.load(Ordering::Relaxed) {
            return Err(EngineError::Unavailable("the model was unloaded".into()));
        }
        self.calls.generations.fetch_add(1, Ordering::Relaxed);
        let (words, prompt_tokens) = self.words(&request)?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let (script, finished, cancelled, active) =
            (self.script.clone(), self.finished.clone(), self.cancelled.clone(), self.active.clone());
        active.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let mut stop = StopMatcher::new(&request.stop.stop);
            let max = request.stop.max_tokens.unwrap_or(u32::MAX) as usize;
            let mut n = 0u32;
            let mut reason = FinishReason::Stop;
            let mut ok = true;
            for (i, w) in words.iter().enumerate() {
                if i >= max {
                    reason = FinishReason::Length;
                    break;
                }
                tokio::time::sleep(script.per_token).await;
                if n == 1 {
                    if let Some(msg) = &script.fail_after_first {
                        let _ = tx.send(Err(EngineError::Internal(msg.clone()))).await;
                        ok = false;
                        break;
                    }
                }
                n += 1;
                let step = stop.push(w);
                if tx.send(Ok(TokenEvent::token(i as u32, step.emit))).await.is_err() {
                    cancelled.fetch_add(1, Ordering::Relaxed);
                    ok = false;
                    break;
                }
                if step.stopped {
                    break;
                }
            }
            if ok {
                let rest = stop.flush();
                if !rest.is_empty() {
                    let _ = tx.send(Ok(TokenEvent::Text(rest))).await;
                }
                let usage = Usage { prompt_tokens, cached_tokens: 0, completion_tokens: n };
                let done =
                    TokenEvent::Done { finish_reason: reason, usage, timings: Timings::default(), stop_sequence: None };
                let _ = tx.send(Ok(done)).await;
                finished.fetch_add(1, Ordering::Relaxed);
            }
            active.fetch_sub(1, Ordering::Relaxed);
        });
        Ok(Box::pin(crate::receiver_stream(rx)))
    }
    async fn unload(&self) -> Result<(), EngineError> {
        self.unloaded.store(true, Ordering::Relaxed);
        self.calls.unloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn is_healthy(&self) -> bool {
        !self.unloaded.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use hyperllama_core::{GenerateRequest, Prompt};

    use super::*;
    use crate::Engine;

    #[tokio::test]
    async fn echoes_and_honours_max_tokens_and_stop() {
        let model = MockEngine::default().load(LoadOptions::default()).await.expect("load");
        let mut req = GenerateRequest::new(Prompt::Raw("a b c d e".into()));
        req.stop.max_tokens = Some(3);
        let events: Vec<_> = model.generate(req.validate().expect("valid")).await.expect("gen").collect().await;
        assert_eq!(events.len(), 4);
        assert!(matches!(events.last(), Some(Ok(TokenEvent::Done { finish_reason: FinishReason::Length, .. }))));

        let mut req = GenerateRequest::new(Prompt::Raw("a b c d e".into()));
        req.stop.stop = vec!["c".into()];
        let text: String = model
            .generate(req.validate().expect("valid"))
            .await
            .expect("gen")
            .filter_map(|e| async move {
                match e {
                    Ok(TokenEvent::Token { text, .. }) | Ok(TokenEvent::Text(text)) => Some(text),
                    _ => None,
                }
            })
            .collect()
            .await;
        assert_eq!(text, "a b ");
    }

    #[tokio::test]
    async fn a_scripted_answer_and_a_gated_load() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let engine = MockEngine::new(Script {
            answer: Some("<tool_call>{} </tool_call>".into()),
            load_gate: Some(("slow".into(), gate.clone())),
            ..Script::default()
        });
        let slow = tokio::spawn({
            let e = engine.clone();
            async move { e.load(LoadOptions { path: "slow.gguf".into(), ..LoadOptions::default() }).await.is_ok() }
        });
        let fast = engine.load(LoadOptions::default()).await.expect("an ungated load goes through");
        assert!(!slow.is_finished(), "the gated load waits for its permit");
        gate.add_permits(1);
        assert!(slow.await.expect("join"));
        let req = GenerateRequest::new(Prompt::Raw("x".into())).validate().expect("valid");
        let text: String = fast
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
        assert_eq!(text, "<tool_call>{} </tool_call>");
        assert_eq!(engine.calls().loads.load(Ordering::Relaxed), 2);
    }
}
