//! The one neutral request every dialect converts its body into (`TryFrom<Body>` in each
//! dialect's `convert` module), before anything looks at a model.

use std::collections::BTreeMap;

use hyperllama_core::{KeepAlive, Message, OutputFormat, ToolSpec};
use serde::{Deserialize, Deserializer};

/// The sampling, stopping and load knobs a request (or a Modelfile's `PARAMETER`s) may set.
/// `None` means "not set here": the Modelfile's value, else the default, applies.
///
/// It deserializes from Ollama's names (`num_predict`, `num_ctx`, ...), which are also the
/// Modelfile's; other dialects fill it field by field.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Knobs {
    pub temperature: Option<f32>,
    pub top_k: Option<i64>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    /// Generated tokens at most (Ollama's `num_predict`; negative: until done).
    #[serde(rename = "num_predict")]
    pub max_tokens: Option<i64>,
    #[serde(deserialize_with = "one_or_many")]
    pub stop: Option<Vec<String>>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub num_ctx: Option<i64>,
    pub num_thread: Option<i64>,
    pub num_gpu: Option<i64>,
    /// Extensions shared with llama-server and vLLM: reuse cached KV for a shared prompt
    /// prefix (default true), and keep generating past end-of-sequence (benchmarks).
    pub cache_prompt: Option<bool>,
    pub ignore_eos: Option<bool>,
    /// The engine to serve the model with ("llamacpp", "max", ...).
    pub engine: Option<String>,
    /// `false` opts this request out of speculative decoding (the output is the same either way).
    pub speculative: Option<bool>,
    /// A prompt longer than the context loses its oldest non-system messages instead of being
    /// refused (Ollama's `truncate`; a Modelfile `PARAMETER truncate true`).
    pub truncate: Option<bool>,
    /// Keys no knob knows (reported, then ignored, as Ollama does).
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// Load-time keys that are not knobs; not reported as unknown.
const KNOWN_LOAD_KEYS: &[&str] = &["main_gpu", "use_mmap", "use_mlock", "num_batch", "num_keep", "numa", "low_vram"];

impl Knobs {
    /// `self` with every knob `over` sets replaced.
    pub fn under(self, over: Knobs) -> Knobs {
        Knobs {
            temperature: over.temperature.or(self.temperature),
            top_k: over.top_k.or(self.top_k),
            top_p: over.top_p.or(self.top_p),
            min_p: over.min_p.or(self.min_p),
            seed: over.seed.or(self.seed),
            max_tokens: over.max_tokens.or(self.max_tokens),
            stop: over.stop.or(self.stop),
            repeat_penalty: over.repeat_penalty.or(self.repeat_penalty),
            repeat_last_n: over.repeat_last_n.or(self.repeat_last_n),
            presence_penalty: over.presence_penalty.or(self.presence_penalty),
            frequency_penalty: over.frequency_penalty.or(self.frequency_penalty),
            num_ctx: over.num_ctx.or(self.num_ctx),
            num_thread: over.num_thread.or(self.num_thread),
            num_gpu: over.num_gpu.or(self.num_gpu),
            cache_prompt: over.cache_prompt.or(self.cache_prompt),
            ignore_eos: over.ignore_eos.or(self.ignore_eos),
            engine: over.engine.or(self.engine),
            speculative: over.speculative.or(self.speculative),
            truncate: over.truncate.or(self.truncate),
            unknown: over.unknown,
        }
    }

    /// Knobs from a Modelfile's stored `PARAMETER`s; one of a wrong type is skipped with a
    /// warning (it was accepted when the model was created by an older version, say).
    pub fn from_parameters(params: &BTreeMap<String, serde_json::Value>) -> Knobs {
        let obj: serde_json::Map<String, serde_json::Value> = params.clone().into_iter().collect();
        if let Ok(k) = serde_json::from_value::<Knobs>(serde_json::Value::Object(obj)) {
            return Knobs { unknown: BTreeMap::new(), ..k };
        }
        let mut knobs = Knobs::default();
        for (k, v) in params {
            let one = serde_json::json!({ k.clone(): v.clone() });
            match serde_json::from_value::<Knobs>(one) {
                Ok(single) => knobs = knobs.under(Knobs { unknown: BTreeMap::new(), ..single }),
                Err(e) => tracing::warn!(parameter = %k, error = %e, "ignoring a stored parameter"),
            }
        }
        knobs
    }

    pub fn warn_unknown(&self) {
        for k in self.unknown.keys().filter(|k| !KNOWN_LOAD_KEYS.contains(&k.as_str())) {
            tracing::warn!(option = %k, "invalid option provided; ignoring it");
        }
    }
}

/// `stop` as one string or a list.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(Option::<OneOrMany>::deserialize(d)?.map(|v| match v {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    }))
}

/// What the model is asked to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A conversation, rendered by the model's chat template (or its Modelfile `TEMPLATE`).
    Chat(Vec<Message>),
    /// One prompt to complete.
    Prompt(PromptInput),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PromptInput {
    pub text: String,
    /// Use the text as it is: no template, no system prompt (Ollama's `raw`, OpenAI's
    /// `/v1/completions`).
    pub raw: bool,
    /// Overrides the Modelfile's `SYSTEM` (Ollama's `system`).
    pub system: Option<String>,
    /// Overrides the Modelfile's `TEMPLATE` (Ollama's `template`).
    pub template: Option<String>,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ToolChoice {
    #[default]
    Auto,
    /// Tools are not offered at all.
    None,
    /// Some call must be made.
    Required,
    /// This function must be called.
    Named(String),
}

/// What the request asks of the model's reasoning ("thinking").
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Think {
    /// `Some(false)`: no reasoning (the template is told so and reasoning is not shown);
    /// `Some(true)`: reason; `None`: the model's default.
    pub enabled: Option<bool>,
    /// "low", "medium", "high" (passed to the template; sets a budget when none is given).
    pub effort: Option<String>,
    /// At most this many reasoning tokens.
    pub budget: Option<u32>,
    /// Asking a model that does not reason is an error (Ollama's `think`), not ignored.
    pub strict: bool,
}

impl Think {
    /// From an effort level ("none" and "minimal" turn reasoning off).
    pub fn effort(level: &str) -> Result<Think, crate::error::ApiError> {
        match level {
            "none" | "minimal" => Ok(Think { enabled: Some(false), ..Think::default() }),
            "low" | "medium" | "high" => {
                Ok(Think { enabled: Some(true), effort: Some(level.to_string()), ..Think::default() })
            }
            other => Err(crate::error::ApiError::bad_request(format!(
                "reasoning effort {other:?}: use none, minimal, low, medium or high"
            ))),
        }
    }

    /// The token budget: the one given, else one for the effort (high: none).
    pub fn budget(&self) -> Option<u32> {
        self.budget.or(match self.effort.as_deref() {
            Some("low") => Some(1024),
            Some("medium") => Some(4096),
            _ => None,
        })
    }
}

/// What happens when the prompt and the requested output do not fit the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Overflow {
    /// A `max_tokens` larger than what fits after the prompt is cut to fit (Ollama) instead
    /// of refused with a 400 (OpenAI, Anthropic).
    pub clamp_output: bool,
    /// Whether a chat that does not fit drops its oldest messages when neither the request
    /// nor the Modelfile says (`truncate`): Ollama does, OpenAI and Anthropic refuse.
    pub truncate: bool,
}

/// One generation, as every dialect asks for it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRequest {
    pub model: String,
    pub input: Input,
    pub knobs: Knobs,
    pub format: Option<OutputFormat>,
    pub tools: Vec<ToolSpec>,
    pub tool_choice: ToolChoice,
    pub keep_alive: Option<KeepAlive>,
    /// Log-probabilities: `None` off, `Some(n)` with the `n` most likely alternatives.
    pub logprobs: Option<u8>,
    /// Independent answers to generate (OpenAI's `n`).
    pub n: u32,
    pub think: Think,
    pub overflow: Overflow,
    /// More than one tool call may be made in one answer.
    pub parallel_tool_calls: bool,
}

impl ServiceRequest {
    pub fn new(model: impl Into<String>, input: Input) -> Self {
        Self {
            model: model.into(),
            input,
            knobs: Knobs::default(),
            format: None,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            keep_alive: None,
            logprobs: None,
            n: 1,
            think: Think::default(),
            overflow: Overflow::default(),
            parallel_tool_calls: true,
        }
    }
}
