//! Constrained decoding: `format: "json"` and JSON Schemas become llama.cpp GBNF grammars, so
//! the sampler can only pick tokens that keep the output valid, and the output always parses.

use hyperllama_core::{OutputFormat, ToolRequirement, ToolSpec, ValidationError};

/// Any JSON object, with bounded whitespace (llama.cpp's `grammars/json.gbnf`).
const JSON_OBJECT: &str = r#"root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws     ::= | " " | "\n" [ \t]{0,20}
"#;

/// The GBNF grammar for `format`.
pub(crate) fn for_format(format: &OutputFormat) -> Result<String, ValidationError> {
    match format {
        OutputFormat::Json => Ok(JSON_OBJECT.to_string()),
        OutputFormat::JsonSchema(schema) => llama_cpp_2::json_schema_to_grammar(&schema.to_string())
            .map_err(|e| ValidationError::Invalid(format!("the JSON schema in `format` cannot be used: {e}"))),
    }
}

/// A grammar that makes the output tool calls in the `<tool_call>{json}</tool_call>`
/// convention ([`hyperllama_engine::tools`]): one of the named function, or (`Required`) of
/// any offered function, several in a row when `parallel`. The arguments follow each
/// function's parameter schema, and `name` comes before them, so they stream.
pub(crate) fn for_tools(
    tools: &[ToolSpec],
    requirement: &ToolRequirement,
    parallel: bool,
) -> Result<String, ValidationError> {
    let chosen: Vec<&ToolSpec> = match requirement {
        ToolRequirement::Auto => return Err(ValidationError::Invalid("no tool call is required".into())),
        ToolRequirement::Required => tools.iter().collect(),
        ToolRequirement::Named(name) => tools.iter().filter(|t| &t.name == name).collect(),
    };
    if chosen.is_empty() {
        return Err(ValidationError::Invalid("tool_choice names no offered tool".into()));
    }
    // Written by hand, not through a map: the converter keeps properties in the order written.
    let one = |t: &ToolSpec| {
        let params = match &t.parameters {
            serde_json::Value::Object(m) if !m.is_empty() => t.parameters.to_string(),
            _ => r#"{"type":"object"}"#.to_string(),
        };
        format!(
            r#"{{"type":"object","properties":{{"name":{{"const":{}}},"arguments":{params}}},"required":["name","arguments"],"additionalProperties":false}}"#,
            serde_json::Value::String(t.name.clone())
        )
    };
    let schema = match chosen.as_slice() {
        [t] => one(t),
        many => format!(r#"{{"anyOf":[{}]}}"#, many.iter().map(|t| one(t)).collect::<Vec<_>>().join(",")),
    };
    let call = llama_cpp_2::json_schema_to_grammar(&schema)
        .map_err(|e| ValidationError::Invalid(format!("a tool's parameters cannot be used as a schema: {e}")))?;
    let mut out = String::new();
    let block = r#""<tool_call>\n" tool-call "\n</tool_call>""#;
    if parallel && *requirement == ToolRequirement::Required {
        out.push_str(&format!("root ::= {block} (\"\\n\" {block})*\n"));
    } else {
        out.push_str(&format!("root ::= {block}\n"));
    }
    for line in call.lines() {
        match line.strip_prefix("root ::=") {
            Some(rest) => out.push_str(&format!("tool-call ::={rest}\n")),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(out)
}
