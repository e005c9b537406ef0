//! Shapes more than one dialect shares.

use hyperllama_core::{OutputFormat, ToolSpec};
use serde::Deserialize;

use crate::error::ApiError;

/// Tools in the shape Ollama and OpenAI chat send: `[{"type": "function", "function": {...}}]`.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolDto {
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionDto,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FunctionDto {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub parameters: serde_json::Value,
}

fn function_type() -> String {
    "function".into()
}

pub fn tool_specs(tools: &[ToolDto]) -> Result<Vec<ToolSpec>, ApiError> {
    tools
        .iter()
        .map(|t| {
            if t.kind != "function" {
                return Err(ApiError::bad_request(format!("unsupported tool type {:?}: only \"function\"", t.kind))
                    .with_param("tools"));
            }
            if t.function.name.trim().is_empty() {
                return Err(ApiError::bad_request("every tool needs a function name").with_param("tools"));
            }
            Ok(ToolSpec {
                name: t.function.name.clone(),
                description: t.function.description.clone(),
                parameters: t.function.parameters.clone(),
            })
        })
        .collect()
}

/// Ollama's `format`: `"json"`, a JSON Schema object, or absent/empty.
pub fn parse_format(v: Option<&serde_json::Value>) -> Result<Option<OutputFormat>, ApiError> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) if s == "json" => Ok(Some(OutputFormat::Json)),
        Some(schema @ serde_json::Value::Object(_)) => Ok(Some(OutputFormat::JsonSchema(schema.clone()))),
        Some(other) => {
            Err(ApiError::bad_request(format!("invalid format {other}: use \"json\" or a JSON Schema object"))
                .with_param("format"))
        }
    }
}

/// An id for a response or a call: `prefix-` and 20 hex digits, unique in this process.
pub fn new_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}{:x}{:04x}", nanos, N.fetch_add(1, Ordering::Relaxed) & 0xffff)
}
