use crate::{Message, SamplingParams, ToolSpec, ValidationError};

/// What the model is asked to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Used verbatim: no chat template (Ollama's `raw`, the CLI's `--raw`, OpenAI completions).
    Raw(String),
    /// Rendered through the model's own chat template by the engine that owns the tokenizer.
    Chat(Vec<Message>),
}

/// A constraint on the shape of the output, enforced token by token (llama.cpp grammars), so
/// the result always parses.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputFormat {
    /// Any JSON object.
    Json,
    /// JSON matching this JSON Schema.
    JsonSchema(serde_json::Value),
}

/// Whether the model must call one of the offered tools (OpenAI's `tool_choice`). Engines
/// that decode locally enforce it with a grammar, so the call always parses.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum ToolRequirement {
    /// The model decides.
    #[default]
    Auto,
    /// Some call must be made.
    Required,
    /// This function must be called.
    Named(String),
}

/// The model's reasoning ("thinking"): what the request asks of it, and how the model marks it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reasoning {
    /// Passed to the chat template as `enable_thinking` (Qwen3 and others read it); `None`
    /// leaves the template's default.
    pub enabled: Option<bool>,
    /// Passed to the chat template as `reasoning_effort` ("low", "medium", "high").
    pub effort: Option<String>,
    /// At most this many reasoning tokens: then the engine writes `close` itself and the
    /// answer follows.
    pub budget: Option<u32>,
    /// The delimiters the model writes around its reasoning (`<think>`, `</think>`).
    pub open: String,
    pub close: String,
}

/// When to stop generating.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StopConditions {
    /// At most this many generated tokens; `None` runs until end-of-generation or the context is full.
    pub max_tokens: Option<u32>,
    /// Generation ends before any of these strings; they are never emitted.
    pub stop: Vec<String>,
    /// Keep going past the model's end-of-generation token (benchmarks want exact lengths).
    pub ignore_eos: bool,
}

/// The one internal request type. Every API dialect converts into it; every engine serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    pub stop: StopConditions,
    /// Reuse KV already computed for a shared prompt prefix (llama-server's `cache_prompt`).
    /// Benchmarks of cold prefill turn it off.
    pub cache_prompt: bool,
    pub format: Option<OutputFormat>,
    /// Functions the model may call (rendered through the chat template).
    pub tools: Vec<ToolSpec>,
    /// Log-probabilities to report with each token: `None` for none, `Some(n)` for the sampled
    /// token's and the `n` most likely alternatives' (0..=20).
    pub logprobs: Option<u8>,
    /// Whether an engine may decode speculatively (drafts verified by the model: the output is
    /// the same either way). A per-request opt-out.
    pub speculate: bool,
    /// Whether a tool call is required (only with `tools`).
    pub tool_requirement: ToolRequirement,
    /// More than one call may be made in one answer.
    pub parallel_tool_calls: bool,
    /// The model's reasoning, when it reasons.
    pub reasoning: Option<Reasoning>,
}

/// The most alternatives a request may ask log-probabilities for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u8 = 20;

/// A [`GenerateRequest`] that passed [`GenerateRequest::validate`]: engines take only this, so
/// a request is validated once, above them.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRequest(GenerateRequest);

impl ValidRequest {
    pub fn into_inner(self) -> GenerateRequest {
        self.0
    }

    /// The same request with its prompt rendered (the tools are in the text now; they stay
    /// listed for what enforces a required call).
    pub fn with_raw_prompt(self, text: String) -> Self {
        Self(GenerateRequest { prompt: Prompt::Raw(text), ..self.0 })
    }
}

impl std::ops::Deref for ValidRequest {
    type Target = GenerateRequest;
    fn deref(&self) -> &GenerateRequest {
        &self.0
    }
}

impl GenerateRequest {
    pub fn new(prompt: Prompt) -> Self {
        Self {
            prompt,
            sampling: SamplingParams::default(),
            stop: StopConditions::default(),
            cache_prompt: true,
            format: None,
            tools: Vec::new(),
            logprobs: None,
            speculate: true,
            tool_requirement: ToolRequirement::Auto,
            parallel_tool_calls: true,
            reasoning: None,
        }
    }

    /// Checks what can be checked without the model (the engine checks the context length).
    pub fn validate(self) -> Result<ValidRequest, ValidationError> {
        self.check()?;
        Ok(ValidRequest(self))
    }

    fn check(&self) -> Result<(), ValidationError> {
        match &self.prompt {
            Prompt::Chat(messages) if messages.is_empty() => return Err(ValidationError::Empty { field: "messages" }),
            _ => {}
        }
        if self.stop.stop.iter().any(String::is_empty) {
            return Err(ValidationError::Invalid("stop strings must not be empty".into()));
        }
        if let Some(OutputFormat::JsonSchema(schema)) = &self.format {
            if !schema.is_object() && !schema.is_boolean() {
                return Err(ValidationError::Invalid(format!(
                    "format must be \"json\" or a JSON Schema object, got {schema}"
                )));
            }
        }
        if self.tools.iter().any(|t| t.name.trim().is_empty()) {
            return Err(ValidationError::Empty { field: "tools[].function.name" });
        }
        if self.stop.max_tokens == Some(0) {
            return Err(ValidationError::OutOfRange { field: "max_tokens", expected: "at least 1", got: "0".into() });
        }
        if let ToolRequirement::Named(name) = &self.tool_requirement {
            if !self.tools.iter().any(|t| &t.name == name) {
                return Err(ValidationError::Invalid(format!("tool_choice names {name:?}, which is not in `tools`")));
            }
        }
        if self.tool_requirement != ToolRequirement::Auto && self.tools.is_empty() {
            return Err(ValidationError::Invalid("a required tool call needs `tools`".into()));
        }
        if let Some(n) = self.logprobs.filter(|n| *n > MAX_TOP_LOGPROBS) {
            return Err(ValidationError::OutOfRange {
                field: "top_logprobs",
                expected: "between 0 and 20",
                got: n.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_chat_and_empty_stop_are_rejected() {
        assert!(GenerateRequest::new(Prompt::Chat(vec![])).validate().is_err());
        let mut r = GenerateRequest::new(Prompt::Raw("hi".into()));
        assert!(r.clone().validate().is_ok());
        r.stop.stop = vec![String::new()];
        assert!(r.clone().validate().is_err());
        r.stop.stop.clear();
        r.stop.max_tokens = Some(0);
        assert!(r.clone().validate().is_err());
        r.stop.max_tokens = None;
        r.logprobs = Some(21);
        assert!(r.validate().is_err());
    }
}
