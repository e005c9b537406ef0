//! The small part of Go's text/template that Ollama's classic prompt templates use:
//! `{{ .System }}`, `{{ .Prompt }}`, `{{ .Response }}`, `{{ if .X }}…{{ else }}…{{ end }}`,
//! and the `{{-`/`-}}` whitespace trims. Anything else (`range .Messages`, functions) is a
//! clear 400: for full chat formatting HyperLlama uses the model's own Jinja template.

use crate::ApiError;

pub struct Vars<'a> {
    pub system: &'a str,
    pub prompt: &'a str,
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

fn lookup<'a>(var: &str, vars: &Vars<'a>) -> Result<&'a str, ApiError> {
    match var {
        ".System" => Ok(vars.system),
        ".Prompt" => Ok(vars.prompt),
        ".Response" => Ok(""),
        other => Err(unsupported(&format!("{{{{ {other} }}}}"))),
    }
}

fn emit(nodes: &[Node], vars: &Vars<'_>, out: &mut String) -> Result<(), ApiError> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Var(v) => out.push_str(lookup(v, vars)?),
            Node::If { var, then, otherwise } => {
                if lookup(var, vars)?.is_empty() {
                    emit(otherwise, vars, out)?
                } else {
                    emit(then, vars, out)?
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_style_template() {
        let t = "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n";
        let out = render(t, &Vars { system: "S", prompt: "P" }).expect("renders");
        assert_eq!(out, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nP<|im_end|>\n<|im_start|>assistant\n");
        let out = render(t, &Vars { system: "", prompt: "P" }).expect("renders");
        assert!(out.starts_with("<|im_start|>user"));
    }

    #[test]
    fn trims_and_else() {
        let out = render(
            "A  {{- if .System -}}  [{{ .System }}]  {{- else -}} none {{- end }}  B",
            &Vars { system: "", prompt: "" },
        )
        .expect("renders");
        assert_eq!(out, "Anone  B");
    }

    #[test]
    fn unsupported_constructs_are_clear_errors() {
        for t in ["{{ range .Messages }}x{{ end }}", "{{ if .System }}x", "{{ .Foo }}", "{{ end }}", "{{ .Prompt "] {
            let e = render(t, &Vars { system: "", prompt: "" }).expect_err("rejected");
            assert!(e.message.contains("template"), "{t}: {}", e.message);
        }
    }
}
