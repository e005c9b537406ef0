/// A request that cannot be served as written. Carries the offending value so the message
/// tells the user exactly what to change; API dialects map every variant to a 400.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("`{field}` must be {expected}, got {got}")]
    OutOfRange { field: &'static str, expected: &'static str, got: String },
    #[error("`{field}` must not be empty")]
    Empty { field: &'static str },
    #[error("{0}")]
    Invalid(String),
}

impl ValidationError {
    /// A stable, machine-readable name (metrics label, JSON `code`).
    pub fn kind(&self) -> &'static str {
        match self {
            ValidationError::OutOfRange { .. } => "out_of_range",
            ValidationError::Empty { .. } => "empty",
            ValidationError::Invalid(_) => "invalid",
        }
    }
}
