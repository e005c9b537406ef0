use hyperllama_core::ValidationError;

/// What can go wrong below the API layer. Each variant maps to one HTTP status in each dialect
/// (see `kind`), and to one line on the CLI.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("the prompt is {prompt_tokens} tokens but the context holds {ctx_size}; shorten the prompt or raise the context size (num_ctx / --ctx-size)")]
    PromptTooLong { prompt_tokens: u32, ctx_size: u32 },
    #[error("cannot load model: {0}")]
    Load(String),
    #[error("unsupported model architecture {arch:?}: this llama.cpp build does not know it")]
    UnsupportedArchitecture { arch: String },
    #[error("chat template: {0}")]
    Template(#[from] crate::TemplateError),
    #[error("server busy: {waiting} requests are already waiting for this model; retry later")]
    Overloaded { waiting: u32 },
    #[error("the engine is unavailable: {0}")]
    Unavailable(String),
    #[error("engine failure: {0}")]
    Internal(String),
}

impl EngineError {
    /// A stable, machine-readable name (metrics label, JSON `code`).
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::Validation(e) => e.kind(),
            EngineError::PromptTooLong { .. } => "prompt_too_long",
            EngineError::Load(_) => "load_failed",
            EngineError::UnsupportedArchitecture { .. } => "unsupported_architecture",
            EngineError::Template(_) => "template_error",
            EngineError::Overloaded { .. } => "overloaded",
            EngineError::Unavailable(_) => "unavailable",
            EngineError::Internal(_) => "internal",
        }
    }

    /// Whether the caller's input is to blame (a 4xx), as opposed to the server (5xx).
    pub fn is_client_error(&self) -> bool {
        matches!(self, EngineError::Validation(_) | EngineError::PromptTooLong { .. } | EngineError::Template(_))
    }
}
