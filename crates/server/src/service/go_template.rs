//! The small part of Go's text/template that Ollama's classic prompt templates (a Modelfile's
//! `TEMPLATE`, a request's `template`) use: `{{ .System }}`, `{{ .Prompt }}`,
//! `{{ .Response }}`, `{{ if .X }}…{{ else }}…{{ end }}`, and the `{{-`/`-}}` whitespace
//! trims. Anything else (`range .Messages`, functions) is a clear 400: for full chat
//! formatting HyperLlama uses the model's own Jinja template.
//!
//! As in Ollama, a template renders a whole conversation turn by turn ([`render_chat`]): each
//! user turn with its answer as `.Response`, and the last one cut where `.Response` would go,
//! so the model writes it.

use hyperllama_core::{Message, Role};

use crate::ApiError;

pub struct Vars<'a> {
    pub system: &'a str,
    pub prompt: &'a str,
    /// The answer of a past turn; `None` for the turn the model is to answer, where rendering
    /// stops at `{{ .Response }}`.
    pub response: Option<&'a str>,
}

/// A conversation through a classic template: system messages go to the first turn's
/// `.System`, each user message is a turn's `.Prompt`, the assistant message after it its
/// `.Response`; the last turn is cut at `.Response`.
pub fn render_chat(template: &str, messages: &[Message]) -> Result<String, ApiError> {
    let mut system = String::new();
    let mut turns: Vec<(String, Option<String>)> = Vec::new();
    for m in messages {
        match m.role {
            Role::System => {
                if !system.is_empty() {
                    system.push('\n');
                }
                system.push_str(&m.content);
            }
            Role::User | Role::Tool => turns.push((m.content.clone(), None)),
            Role::Assistant => match turns.last_mut() {
                Some((_, response @ None)) => *response = Some(m.content.clone()),
                _ => turns.push((String::new(), Some(m.content.clone()))),
            },
        }
    }
    if turns.last().is_none_or(|(_, r)| r.is_some()) {
        turns.push((String::new(), None));
    }
    let last = turns.len() - 1;
    let mut out = String::new();
    for (i, (prompt, response)) in turns.iter().enumerate() {
        let sys = if i == 0 { system.as_str() } else { "" };
        let response = if i == last { None } else { Some(response.as_deref().unwrap_or("")) };
        out.push_str(&render(template, &Vars { system: sys, prompt, response })?);
    }
    Ok(out)
}

enum Node {
    Text(String),
    Var(String),
    If { var: String, then: Vec<Node>, otherwise: Vec<Node> },
}

pub fn render(template: &str, vars: &Vars<'_>) -> Result<String, ApiError> {
    let tokens = lex(template)?;
    let mut pos = 0;
    let nodes = parse(&tokens, &mut pos, false)?;
    if pos != tokens.len() {
        return Err(unsupported("an unmatched {{ end }}"));
    }
    let mut out = String::new();
    emit(&nodes, vars, &mut out)?;
    Ok(out)
}

/// Rendering stopped at the `.Response` of the turn being answered.
struct Cut;

fn unsupported(what: &str) -> ApiError {
    ApiError::bad_request(format!(
        "template uses {what}, which HyperLlama's Go-template subset does not support \
         (.System, .Prompt, .Response, if/else/end); omit `template` to use the model's own chat template"
    ))
    .with_param("template")
}

enum Tok {
    Text(String),
    Action(String),
}

fn lex(src: &str) -> Result<Vec<Tok>, ApiError> {
    let mut toks = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = rest[..start].to_string();
        if trim_next {
            text = text.trim_start().to_string();
        }
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| unsupported("an unclosed {{"))?;
        let mut action = &after[..end];
        if let Some(a) = action.strip_prefix('-') {
            text = text.trim_end().to_string();
            action = a;
        }
        trim_next = false;
        if let Some(a) = action.strip_suffix('-') {
            trim_next = true;
            action = a;
        }
        toks.push(Tok::Text(text));
        toks.push(Tok::Action(action.trim().to_string()));
        rest = &after[end + 2..];
    }
    toks.push(Tok::Text(if trim_next { rest.trim_start().to_string() } else { rest.to_string() }));
    Ok(toks)
}

fn parse(toks: &[Tok], pos: &mut usize, in_if: bool) -> Result<Vec<Node>, ApiError> {
    let mut nodes = Vec::new();
    while *pos < toks.len() {
        match &toks[*pos] {
            Tok::Text(t) => {
                nodes.push(Node::Text(t.clone()));
                *pos += 1;
            }
            Tok::Action(a) if a == "end" || a == "else" => {
                if !in_if {
                    return Err(unsupported(&format!("a stray {{{{ {a} }}}}")));
                }
                return Ok(nodes);
            }
            Tok::Action(a) => {
                *pos += 1;
                if let Some(var) = a.strip_prefix("if ") {
                    let var = var.trim().to_string();
                    let then = parse(toks, pos, true)?;
                    let mut otherwise = Vec::new();
                    if matches!(toks.get(*pos), Some(Tok::Action(x)) if x == "else") {
                        *pos += 1;
                        otherwise = parse(toks, pos, true)?;
                    }
                    match toks.get(*pos) {
                        Some(Tok::Action(x)) if x == "end" => *pos += 1,
                        _ => return Err(unsupported("an {{ if }} without {{ end }}")),
                    }
                    nodes.push(Node::If { var, then, otherwise });
                } else {
                    nodes.push(Node::Var(a.clone()));
                }
            }
        }
    }
    if in_if {
        return Err(unsupported("an {{ if }} without {{ end }}"));
    }
    Ok(nodes)
}

fn lookup<'a>(var: &str, vars: &Vars<'a>) -> Result<Result<&'a str, Cut>, ApiError> {
    match var {
        ".System" => Ok(Ok(vars.system)),
        ".Prompt" => Ok(Ok(vars.prompt)),
        ".Response" => Ok(vars.response.ok_or(Cut)),
        other => Err(unsupported(&format!("{{{{ {other} }}}}"))),
    }
}

/// Emits `nodes`; `Ok(false)` when rendering was cut at `.Response`.
fn emit(nodes: &[Node], vars: &Vars<'_>, out: &mut String) -> Result<bool, ApiError> {
    for n in nodes {
        let go_on = match n {
            Node::Text(t) => {
                out.push_str(t);
                true
            }
            Node::Var(v) => match lookup(v, vars)? {
                Ok(s) => {
                    out.push_str(s);
                    true
                }
                Err(Cut) => false,
            },
            Node::If { var, then, otherwise } => {
                // `{{ if .Response }}` in the turn being answered: not yet written, so false.
                let empty = lookup(var, vars)?.map(str::is_empty).unwrap_or(true);
                emit(if empty { otherwise } else { then }, vars, out)?
            }
        };
        if !go_on {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n{{ .Response }}<|im_end|>\n";

    #[test]
    fn chatml_style_template() {
        let out = render(CHATML, &Vars { system: "S", prompt: "P", response: None }).expect("renders");
        assert_eq!(out, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nP<|im_end|>\n<|im_start|>assistant\n");
        let out = render(CHATML, &Vars { system: "", prompt: "P", response: Some("R") }).expect("renders");
        assert_eq!(out, "<|im_start|>user\nP<|im_end|>\n<|im_start|>assistant\nR<|im_end|>\n");
    }

    #[test]
    fn a_conversation_renders_turn_by_turn_and_stops_at_the_answer() {
        let msgs = [Message::system("S"), Message::user("a"), Message::assistant("b"), Message::user("c")];
        let out = render_chat(CHATML, &msgs).expect("renders");
        assert_eq!(
            out,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n\
             <|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn trims_and_else() {
        let out = render(
            "A  {{- if .System -}}  [{{ .System }}]  {{- else -}} none {{- end }}  B",
            &Vars { system: "", prompt: "", response: Some("") },
        )
        .expect("renders");
        assert_eq!(out, "Anone  B");
    }

    #[test]
    fn unsupported_constructs_are_clear_errors() {
        for t in ["{{ range .Messages }}x{{ end }}", "{{ if .System }}x", "{{ .Foo }}", "{{ end }}", "{{ .Prompt "] {
            let e = render(t, &Vars { system: "", prompt: "", response: None }).expect_err("rejected");
            assert!(e.message.contains("template"), "{t}: {}", e.message);
        }
    }
}
