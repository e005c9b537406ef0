//! A model's Modelfile policy, applied once, the same way for every dialect (as Ollama does):
//! `PARAMETER`s under the request's own knobs, `SYSTEM` before the conversation unless it has
//! a system message, `MESSAGE`s before the request's, and `TEMPLATE` (a classic Go template)
//! instead of the model's Jinja chat template. Pure: no I/O, so the fuzz target runs it too.

use hyperllama_core::{GenerateRequest, Message, Penalties, Prompt, Role, Sampling, SamplingParams, ToolRequirement};
use hyperllama_store::Manifest;

use super::go_template;
use super::request::{Input, Knobs, ServiceRequest, ToolChoice};
use crate::error::ApiError;
use crate::registry::LoadOverrides;

/// What the policy makes of a request for one model.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub request: GenerateRequest,
    pub load: LoadOverrides,
    /// Oldest messages may be dropped to fit the context (the request's or the Modelfile's
    /// `truncate`).
    pub truncate: bool,
}

/// `req` for the model of `manifest`: knobs merged, prompt built, tools chosen.
pub fn prepare(req: &ServiceRequest, manifest: &Manifest) -> Result<Prepared, ApiError> {
    let knobs = Knobs::from_parameters(&manifest.parameters).under(req.knobs.clone());
    req.knobs.warn_unknown();
    let prompt = prompt(&req.input, manifest)?;
    let mut request = GenerateRequest::new(prompt);
    request.sampling = sampling(&knobs)?;
    request.stop.max_tokens = max_tokens(knobs.max_tokens)?;
    request.stop.stop = knobs.stop.clone().unwrap_or_default();
    request.stop.ignore_eos = knobs.ignore_eos.unwrap_or(false);
    request.cache_prompt = knobs.cache_prompt.unwrap_or(true);
    request.speculate = knobs.speculative.unwrap_or(true);
    request.format = req.format.clone();
    request.logprobs = req.logprobs;
    request.parallel_tool_calls = req.parallel_tool_calls;
    (request.tools, request.tool_requirement) = match &req.tool_choice {
        ToolChoice::None => (Vec::new(), ToolRequirement::Auto),
        ToolChoice::Auto => (req.tools.clone(), ToolRequirement::Auto),
        ToolChoice::Required if req.tools.is_empty() => {
            return Err(ApiError::bad_request("tool_choice \"required\" needs `tools`").with_param("tool_choice"))
        }
        ToolChoice::Required => (req.tools.clone(), ToolRequirement::Required),
        ToolChoice::Named(name) => {
            let tools: Vec<_> = req.tools.iter().filter(|t| &t.name == name).cloned().collect();
            if tools.is_empty() {
                return Err(ApiError::bad_request(format!("tool_choice names {name:?}, which is not in `tools`"))
                    .with_param("tool_choice"));
            }
            (tools, ToolRequirement::Named(name.clone()))
        }
    };
    Ok(Prepared { request, load: load_overrides(&knobs)?, truncate: knobs.truncate.unwrap_or(req.overflow.truncate) })
}

fn prompt(input: &Input, manifest: &Manifest) -> Result<Prompt, ApiError> {
    match input {
        Input::Chat(request_messages) => {
            let mut messages = manifest.messages.clone();
            messages.extend(request_messages.iter().cloned());
            // As Ollama: the SYSTEM prompt goes first unless the request brings its own.
            if let Some(system) = &manifest.system {
                if request_messages.first().is_none_or(|m| m.role != Role::System) {
                    messages.insert(0, Message::system(system.clone()));
                }
            }
            match &manifest.template {
                Some(t) => Ok(Prompt::Raw(go_template::render_chat(t, &messages)?)),
                None => Ok(Prompt::Chat(messages)),
            }
        }
        Input::Prompt(p) if p.raw => Ok(Prompt::Raw(p.text.clone())),
        Input::Prompt(p) => {
            let system = p.system.clone().or_else(|| manifest.system.clone());
            let template = p.template.clone().filter(|t| !t.is_empty()).or_else(|| manifest.template.clone());
            let mut messages = manifest.messages.clone();
            if let Some(s) = system {
                messages.insert(0, Message::system(s));
            }
            messages.push(Message::user(p.text.clone()));
            match template {
                Some(t) => Ok(Prompt::Raw(go_template::render_chat(&t, &messages)?)),
                None => Ok(Prompt::Chat(messages)),
            }
        }
    }
}

fn sampling(k: &Knobs) -> Result<SamplingParams, ApiError> {
    let sampling = Sampling::from_knobs(
        k.temperature,
        k.top_k.or(Some(Sampling::DEFAULT_TOP_K)),
        k.top_p.or(Some(Sampling::DEFAULT_TOP_P)),
        k.min_p,
    )?;
    let penalties = Penalties::new(k.repeat_penalty, k.presence_penalty, k.frequency_penalty, k.repeat_last_n)?;
    // A negative seed means "random", as in Ollama and llama.cpp.
    Ok(SamplingParams { sampling, penalties, seed: k.seed.and_then(|s| u64::try_from(s).ok()) })
}

fn max_tokens(n: Option<i64>) -> Result<Option<u32>, ApiError> {
    match n {
        None => Ok(None),
        Some(n) if n < 0 => Ok(None), // -1: until done; -2: until the context is full
        Some(0) => Err(ApiError::bad_request("`num_predict` must not be 0").with_param("num_predict")),
        Some(n) if n > i64::from(i32::MAX) => {
            Err(ApiError::bad_request(format!("`num_predict` must be at most {}, got {n}", i32::MAX))
                .with_param("num_predict"))
        }
        Some(n) => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
    }
}

/// The load-time knobs, checked.
pub fn load_overrides(k: &Knobs) -> Result<LoadOverrides, ApiError> {
    let positive =
        |v: Option<i64>, field: &'static str| -> Result<Option<u32>, ApiError> {
            match v {
                None => Ok(None),
                Some(n) if (1..=1 << 20).contains(&n) => Ok(Some(n as u32)),
                Some(n) => Err(ApiError::bad_request(format!("`{field}` must be between 1 and 1048576, got {n}"))
                    .with_param(field)),
            }
        };
    let num_gpu = match k.num_gpu {
        None => None,
        Some(n) if n < 0 => None, // -1: all layers
        Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
    };
    Ok(LoadOverrides {
        num_ctx: positive(k.num_ctx, "num_ctx")?,
        num_thread: positive(k.num_thread, "num_thread")?,
        num_gpu,
        engine: k.engine.clone().filter(|e| !e.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::request::PromptInput;

    fn manifest() -> Manifest {
        Manifest {
            name: "m:latest".into(),
            model: hyperllama_store::Digest::parse(&format!("sha256:{}", "0".repeat(64))).expect("digest"),
            size: 0,
            template: None,
            system: Some("You are terse.".into()),
            license: None,
            parameters: [
                ("temperature".to_string(), serde_json::json!(0.0)),
                ("num_ctx".to_string(), serde_json::json!(512)),
            ]
            .into(),
            messages: vec![Message::user("earlier"), Message::assistant("reply")],
            source: String::new(),
            modified_at: String::new(),
        }
    }

    #[test]
    fn system_messages_and_parameters_apply_to_chats() {
        let req = ServiceRequest::new("m", Input::Chat(vec![Message::user("hi")]));
        let p = prepare(&req, &manifest()).expect("prepared");
        let Prompt::Chat(m) = &p.request.prompt else { panic!("a chat") };
        assert_eq!(
            m.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
            ["You are terse.", "earlier", "reply", "hi"]
        );
        assert_eq!(p.request.sampling.sampling, Sampling::Greedy, "PARAMETER temperature 0");
        assert_eq!(p.load.num_ctx, Some(512));
        // The request's own system message and knobs win.
        let mut req = ServiceRequest::new("m", Input::Chat(vec![Message::system("Mine."), Message::user("hi")]));
        req.knobs.temperature = Some(0.5);
        let p = prepare(&req, &manifest()).expect("prepared");
        let Prompt::Chat(m) = &p.request.prompt else { panic!("a chat") };
        assert_eq!(m[0].content, "earlier", "MESSAGEs first, then the request's system message");
        assert!(matches!(p.request.sampling.sampling, Sampling::Random { temperature, .. } if temperature == 0.5));
    }

    #[test]
    fn a_template_renders_chats_and_prompts_alike() {
        let mut m = manifest();
        m.template = Some("[{{ .System }}|{{ .Prompt }}|{{ .Response }}]".into());
        let chat = prepare(&ServiceRequest::new("m", Input::Chat(vec![Message::user("hi")])), &m).expect("chat");
        let prompt = prepare(
            &ServiceRequest::new("m", Input::Prompt(PromptInput { text: "hi".into(), ..PromptInput::default() })),
            &m,
        )
        .expect("prompt");
        assert_eq!(chat.request.prompt, Prompt::Raw("[You are terse.|earlier|reply][|hi|".into()));
        assert_eq!(chat.request.prompt, prompt.request.prompt);
        let raw = prepare(
            &ServiceRequest::new(
                "m",
                Input::Prompt(PromptInput { text: "x".into(), raw: true, ..PromptInput::default() }),
            ),
            &m,
        )
        .expect("raw");
        assert_eq!(raw.request.prompt, Prompt::Raw("x".into()));
    }

    #[test]
    fn bad_knobs_are_400s() {
        let mut req = ServiceRequest::new("m", Input::Chat(vec![Message::user("hi")]));
        req.knobs.max_tokens = Some(0);
        assert!(prepare(&req, &manifest()).is_err());
        req.knobs.max_tokens = None;
        req.knobs.num_ctx = Some(0);
        assert_eq!(prepare(&req, &manifest()).unwrap_err().param, Some("num_ctx"));
        req.knobs.num_ctx = None;
        req.knobs.top_k = Some(-5);
        assert_eq!(prepare(&req, &manifest()).unwrap_err().param, Some("top_k"));
        req.knobs.top_k = None;
        req.tool_choice = ToolChoice::Named("nope".into());
        assert_eq!(prepare(&req, &manifest()).unwrap_err().param, Some("tool_choice"));
    }
}
