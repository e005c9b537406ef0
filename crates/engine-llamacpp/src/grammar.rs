//! Constrained decoding: `format: "json"` and JSON Schemas become llama.cpp GBNF grammars, so
//! the sampler can only pick tokens that keep the output valid, and the output always parses.

use hyperllama_core::{OutputFormat, ValidationError};

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
