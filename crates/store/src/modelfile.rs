//! Ollama's Modelfile: `FROM`, `PARAMETER`, `TEMPLATE`, `SYSTEM`, `LICENSE`, `MESSAGE`, with
//! `"""` multi-line values and `#` comments. Errors name the line.

use std::collections::BTreeMap;

use hyperllama_core::{Message, Role};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Modelfile {
    pub from: String,
    pub parameters: BTreeMap<String, serde_json::Value>,
    pub template: Option<String>,
    pub system: Option<String>,
    pub license: Option<String>,
    pub messages: Vec<Message>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("Modelfile line {line}: {message}")]
pub struct ModelfileError {
    pub line: usize,
    pub message: String,
}

/// Parameters whose value is a list (repeated lines accumulate).
const LIST_PARAMS: &[&str] = &["stop"];
const INT_PARAMS: &[&str] =
    &["num_ctx", "num_predict", "top_k", "seed", "repeat_last_n", "num_thread", "num_gpu", "num_batch", "num_keep"];
const FLOAT_PARAMS: &[&str] =
    &["temperature", "top_p", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty", "typical_p"];
const STRING_PARAMS: &[&str] = &["engine"];

impl Modelfile {
    pub fn parse(text: &str) -> Result<Self, ModelfileError> {
        let mut mf = Modelfile::default();
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let lineno = i + 1;
            let line = lines[i].trim();
            i += 1;
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| ModelfileError { line: lineno, message };
            let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim();
            // A value may be """multi-line""" (possibly spanning lines) or "quoted".
            let mut value = |rest: &str| -> Result<String, ModelfileError> {
                if let Some(body) = rest.strip_prefix("\"\"\"") {
                    if let Some(end) = body.find("\"\"\"") {
                        return Ok(body[..end].to_string());
                    }
                    let mut acc = body.to_string();
                    while i < lines.len() {
                        let l = lines[i];
                        i += 1;
                        if let Some(end) = l.find("\"\"\"") {
                            acc.push('\n');
                            acc.push_str(&l[..end]);
                            return Ok(acc);
                        }
                        acc.push('\n');
                        acc.push_str(l);
                    }
                    return Err(err("unterminated \"\"\" string".into()));
                }
                Ok(unquote(rest))
            };
            match cmd.to_ascii_uppercase().as_str() {
                "FROM" => {
                    if rest.is_empty() {
                        return Err(err("FROM needs a model name, a .gguf path or a blob digest".into()));
                    }
                    mf.from = unquote(rest);
                }
                "PARAMETER" => {
                    let (key, raw) = rest
                        .split_once(char::is_whitespace)
                        .ok_or_else(|| err("PARAMETER needs a name and a value".into()))?;
                    let key = key.to_ascii_lowercase();
                    let raw = value(raw.trim())?;
                    let v = if LIST_PARAMS.contains(&key.as_str()) {
                        let entry = mf.parameters.entry(key.clone()).or_insert_with(|| serde_json::json!([]));
                        if let Some(a) = entry.as_array_mut() {
                            a.push(raw.into());
                        }
                        continue;
                    } else if INT_PARAMS.contains(&key.as_str()) {
                        raw.parse::<i64>()
                            .map(serde_json::Value::from)
                            .map_err(|_| err(format!("PARAMETER {key} must be an integer, got {raw:?}")))?
                    } else if FLOAT_PARAMS.contains(&key.as_str()) {
                        let f = raw
                            .parse::<f64>()
                            .map_err(|_| err(format!("PARAMETER {key} must be a number, got {raw:?}")))?;
                        if !f.is_finite() {
                            return Err(err(format!("PARAMETER {key} must be finite, got {raw:?}")));
                        }
                        serde_json::Value::from(f)
                    } else if STRING_PARAMS.contains(&key.as_str()) {
                        serde_json::Value::from(raw)
                    } else {
                        return Err(err(format!("unknown parameter {key:?}")));
                    };
                    mf.parameters.insert(key, v);
                }
                "TEMPLATE" => mf.template = Some(value(rest)?),
                "SYSTEM" => mf.system = Some(value(rest)?),
                "LICENSE" => mf.license = Some(value(rest)?),
                "MESSAGE" => {
                    let (role, text) = rest
                        .split_once(char::is_whitespace)
                        .ok_or_else(|| err("MESSAGE needs a role and a text".into()))?;
                    let role = match role.to_ascii_lowercase().as_str() {
                        "system" => Role::System,
                        "user" => Role::User,
                        "assistant" => Role::Assistant,
                        other => {
                            return Err(err(format!("MESSAGE role must be system, user or assistant, got {other:?}")))
                        }
                    };
                    let text = value(text.trim())?;
                    mf.messages.push(Message::new(role, text));
                }
                "ADAPTER" => return Err(err("ADAPTER (LoRA) is not supported yet".into())),
                other => return Err(err(format!("unknown instruction {other:?}"))),
            }
        }
        if mf.from.is_empty() {
            return Err(ModelfileError { line: lines.len().max(1), message: "no FROM instruction".into() });
        }
        Ok(mf)
    }
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        s[1..s.len() - 1].replace("\\\"", "\"")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_instruction() {
        let mf = Modelfile::parse(
            "# comment\nFROM ./smol.gguf\nPARAMETER temperature 0.2\nPARAMETER stop \"<|im_end|>\"\nPARAMETER stop END\n\
             PARAMETER num_ctx 2048\nSYSTEM \"\"\"You are\nterse.\"\"\"\nTEMPLATE \"{{ .Prompt }}\"\nLICENSE MIT\n\
             MESSAGE user Hi\nMESSAGE assistant \"Hello!\"\n",
        )
        .expect("valid");
        assert_eq!(mf.from, "./smol.gguf");
        assert_eq!(mf.parameters["temperature"], 0.2);
        assert_eq!(mf.parameters["stop"], serde_json::json!(["<|im_end|>", "END"]));
        assert_eq!(mf.parameters["num_ctx"], 2048);
        assert_eq!(mf.system.as_deref(), Some("You are\nterse."));
        assert_eq!(mf.template.as_deref(), Some("{{ .Prompt }}"));
        assert_eq!(mf.license.as_deref(), Some("MIT"));
        assert_eq!(mf.messages.len(), 2);
        assert_eq!(mf.messages[1].content, "Hello!");
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("FROM x\nPARAMETER temperature hot\n", 2, "must be a number"),
            ("FROM x\nPARAMETER nonsense 1\n", 2, "unknown parameter"),
            ("FROM x\n\nFROBNICATE\n", 3, "unknown instruction"),
            ("PARAMETER top_k 5\n", 1, "no FROM"),
            ("FROM x\nSYSTEM \"\"\"never closed\nmore\n", 2, "unterminated"),
            ("FROM x\nMESSAGE robot hi\n", 2, "role"),
            ("FROM x\nPARAMETER num_ctx 1.5\n", 2, "integer"),
            ("FROM x\nPARAMETER temperature NaN\n", 2, "finite"),
        ];
        for (text, line, needle) in cases {
            let e = Modelfile::parse(text).expect_err(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("Modelfile line {line}:")));
        }
    }
}
