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
        }
    }

    /// Checks what can be checked without the model (the engine checks the context length).
    pub fn validate(&self) -> Result<(), ValidationError> {
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
        assert!(r.validate().is_ok());
        r.stop.stop = vec![String::new()];
        assert!(r.validate().is_err());
        r.stop.stop.clear();
        r.stop.max_tokens = Some(0);
        assert!(r.validate().is_err());
    }
}
