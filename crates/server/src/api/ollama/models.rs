//! Model management: list, show, running, create, copy, delete, blobs, pull.

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyperllama_store::{Digest, Manifest, ModelName, Overrides, Source};
use serde_json::{json, Value};

use super::types::{CopyBody, CreateBody, LicenseField, ModelBody};
use super::{Json, Result};
use crate::context::RequestContext;
use crate::error::{ApiError, ErrorKind};
use crate::extract::DialectJson;
use crate::registry::{Location, ModelFacts, Resolved};
use crate::AppState;

/// Ollama's `details` object.
fn details_json(facts: Option<&ModelFacts>, remote: bool) -> Value {
    if remote {
        return json!({
            "parent_model": "", "format": "remote", "family": "", "families": null,
            "parameter_size": "", "quantization_level": "",
        });
    }
    match facts {
        Some(d) => json!({
            "parent_model": "",
            "format": "gguf",
            "family": d.family,
            "families": [d.family],
            "parameter_size": d.parameter_size(),
            "quantization_level": d.quantization,
        }),
        None => json!({ "format": "gguf" }),
    }
}

/// Ollama's `model_info`: the GGUF metadata's scalars (not the tokenizer's arrays).
fn model_info(facts: &ModelFacts) -> serde_json::Map<String, Value> {
    let mut info = serde_json::Map::new();
    for (k, v) in &facts.file.metadata {
        if k.starts_with("tokenizer.") {
            continue;
        }
        let j = match v {
            hyperllama_gguf::Value::String(s) => Value::String(s.clone()),
            hyperllama_gguf::Value::Bool(b) => Value::Bool(*b),
            hyperllama_gguf::Value::Array(_) => continue,
            other => match (other.as_u64(), other.as_f64()) {
                (Some(n), _) => Value::from(n),
                (None, Some(f)) => Value::from(f),
                _ => continue,
            },
        };
        info.insert(k.clone(), j);
    }
    info.insert("general.parameter_count".into(), facts.parameter_count.into());
    info
}

/// What the model can do, as Ollama's `capabilities`: from its template and architecture.
pub fn capabilities(facts: &ModelFacts, template: Option<&str>) -> Vec<&'static str> {
    let mut caps = Vec::new();
    let embedding_only = matches!(facts.family.as_str(), "bert" | "nomic-bert" | "jina-bert-v2" | "t5encoder");
    if !embedding_only {
        caps.push("completion");
    }
    let t = template.unwrap_or_default();
    if !embedding_only && t.contains("tools") {
        caps.push("tools");
    }
    if t.contains("<think>")
        || t.contains("enable_thinking")
        || t.contains("reasoning_content")
        || t.contains("<|channel|>analysis")
    {
        caps.push("thinking");
    }
    caps.push("embedding");
    caps
}

/// A stored model as a resolved one (listing needs no name lookup).
fn local(state: &AppState, m: Manifest) -> Resolved {
    let blob = state.service.registry().store().blob_path(&m.model);
    Resolved { key: m.name.clone(), manifest: m, location: Location::Local { blob } }
}

async fn facts_of(state: &AppState, r: &Resolved) -> Option<std::sync::Arc<ModelFacts>> {
    if r.is_remote() {
        return None;
    }
    state.service.registry().facts(r).await.ok()
}

/// "2 minutes ago", as Ollama's `list` shows times (the API keeps RFC 3339).
pub async fn tags(State(state): State<AppState>) -> Result<Response> {
    let store = state.service.registry().store().clone();
    let manifests = tokio::task::spawn_blocking(move || store.list()).await.map_err(ApiError::from)??;
    let mut models = Vec::new();
    for m in manifests {
        let r = local(&state, m);
        let facts = facts_of(&state, &r).await;
        let m = &r.manifest;
        models.push(json!({
            "name": m.name, "model": m.name, "modified_at": m.modified_at, "size": m.size,
            "digest": m.model.hex(), "details": details_json(facts.as_deref(), false),
        }));
    }
    // The fleet's models, with Ollama's fields for models served elsewhere.
    for r in state.service.registry().remotes().list() {
        let m = r.manifest();
        models.push(json!({
            "name": m.name, "model": m.name, "modified_at": m.modified_at, "size": 0,
            "digest": m.model.hex(), "details": details_json(None, true),
            "remote_model": r.served.id, "remote_host": r.url,
        }));
    }
    Ok(axum::Json(json!({ "models": models })).into_response())
}

fn parameters_text(m: &Manifest) -> String {
    let mut out = String::new();
    for (k, v) in &m.parameters {
        match v {
            Value::Array(items) => {
                for i in items {
                    out.push_str(&format!(
                        "{k:<30} {}\n",
                        i.as_str().map(|s| format!("{s:?}")).unwrap_or(i.to_string())
                    ));
                }
            }
            Value::String(s) => out.push_str(&format!("{k:<30} {s:?}\n")),
            other => out.push_str(&format!("{k:<30} {other}\n")),
        }
    }
    out
}

fn modelfile(state: &AppState, m: &Manifest) -> String {
    let blob = state.service.registry().store().blob_path(&m.model);
    let mut out = format!("# Modelfile generated by \"hyperllama show\"\nFROM {}\n", blob.display());
    if let Some(t) = &m.template {
        out.push_str(&format!("TEMPLATE \"\"\"{t}\"\"\"\n"));
    }
    if let Some(s) = &m.system {
        out.push_str(&format!("SYSTEM \"\"\"{s}\"\"\"\n"));
    }
    for line in parameters_text(m).lines() {
        out.push_str(&format!("PARAMETER {line}\n"));
    }
    if let Some(l) = &m.license {
        out.push_str(&format!("LICENSE \"\"\"{l}\"\"\"\n"));
    }
    out
}

pub async fn show(State(state): State<AppState>, DialectJson(body, _): Json<ModelBody>) -> Result<Response> {
    let registry = state.service.registry();
    let r = registry.resolve(&body.model).await?;
    let m = &r.manifest;
    if r.is_remote() {
        // Served by a node: what it says about the model is all there is.
        return Ok(axum::Json(json!({
            "license": "", "modelfile": format!("# served by {}\nFROM {}\n", m.source, m.name), "parameters": "",
            "template": "", "system": "", "details": details_json(None, true),
            "model_info": { "general.architecture": "remote" }, "capabilities": ["completion"],
            "remote_model": m.name, "remote_host": m.source, "modified_at": m.modified_at,
        }))
        .into_response());
    }
    let facts = registry.facts(&r).await?;
    let template = m.template.clone().or(facts.chat_template.clone());
    let messages: Vec<Value> =
        m.messages.iter().map(|x| json!({ "role": x.role.as_str(), "content": x.content })).collect();
    let load = crate::service::policy::load_overrides(
        &crate::service::Knobs::from_parameters(&m.parameters).under(body.options.clone()),
    )?;
    let plan = registry.plan(&r, &load, None)?;
    let estimate = registry.memory_estimate(&plan).await?;
    let memory = estimate.map(|est| {
        json!({ "engine": plan.engine.id(), "context_length": est.context, "parallel": est.parallel, "weights": est.weights,
                "kv_cache": est.kv_cache, "compute": est.compute, "total": est.total })
    });
    Ok(axum::Json(json!({
        "license": m.license.clone().unwrap_or_default(),
        "modelfile": modelfile(&state, m),
        "parameters": parameters_text(m),
        // Without a chat template: prompts pass through (Ollama's default template) and chats
        // are rendered as a plain transcript; `chat_format` says which is in use.
        "template": template.clone().unwrap_or_else(|| "{{ .Prompt }}".into()),
        "chat_format": if template.is_some() { "template" } else { hyperllama_engine::FALLBACK_TEMPLATE_NAME },
        "system": m.system.clone().unwrap_or_default(),
        "details": details_json(Some(&facts), false),
        "messages": messages,
        "model_info": model_info(&facts),
        "capabilities": capabilities(&facts, template.as_deref()),
        "memory_estimate": memory,
        "modified_at": m.modified_at,
    }))
    .into_response())
}

pub async fn ps(State(state): State<AppState>) -> Result<Response> {
    let registry = state.service.registry();
    let mut models = Vec::new();
    for r in registry.running() {
        let resolved = local(&state, r.manifest.clone());
        let remote = r.engine == "openai" && r.manifest.size == 0;
        let facts = if remote { None } else { facts_of(&state, &resolved).await };
        // A model kept forever has no expiry; Ollama shows a date far in the future.
        let expires = r.expires_at.unwrap_or_else(|| chrono::Utc::now() + chrono::Duration::days(365 * 100));
        models.push(json!({
            "name": r.name, "model": r.name, "size": r.size, "digest": r.manifest.model.hex(),
            "details": details_json(facts.as_deref(), remote),
            "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            "size_vram": 0, "context_length": r.context_length,
            // HyperLlama's additions (Ollama clients ignore them): the engine and the scheduler's state.
            "engine": r.engine,
            "scheduler": {
                "parallel": r.stats.parallel, "active": r.stats.active, "waiting": r.stats.waiting,
                "requests_finished": r.stats.requests_finished, "requests_cancelled": r.stats.requests_cancelled,
                "prompt_tokens": r.stats.prompt_tokens, "cached_prompt_tokens": r.stats.cached_prompt_tokens,
                "generated_tokens": r.stats.generated_tokens, "decode_steps": r.stats.decode_steps,
                "batched_tokens": r.stats.batched_tokens, "ubatches": r.stats.ubatches,
                "cache_hit_tokens": r.stats.cache_hit_tokens, "cache_ram_bytes": r.stats.cache_ram_bytes,
                "spec_drafted": r.stats.spec_drafted, "spec_accepted": r.stats.spec_accepted,
            },
        }));
    }
    Ok(axum::Json(json!({ "models": models })).into_response())
}

/// Pulls a model. A hub reference (`owner/repo[:QUANT]`, `hf.co/owner/repo[:QUANT]`) is fetched
/// from the Hugging Face hub (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`) with Ollama's
/// progress statuses; a plain name already in the store answers at once.
pub async fn pull(State(state): State<AppState>, DialectJson(body, _): Json<ModelBody>) -> Result<Response> {
    let registry = state.service.registry();
    let Some(hub_ref) = hyperllama_store::hub::HubRef::parse(&body.model) else {
        let m = registry.resolve(&body.model).await.map(|r| r.manifest).map_err(|e| {
            if e.kind == ErrorKind::NotFound {
                ApiError::new(
                    ErrorKind::NotFound,
                    "model_not_found",
                    format!("model '{}' is not in the local store; pull hub models as owner/repo[:QUANT]", body.model),
                )
            } else {
                e
            }
        })?;
        let lines = vec![
            json!({ "status": "pulling manifest" }),
            json!({ "status": format!("pulling {}", &m.model.hex()[..12]), "digest": m.model.to_string(), "total": m.size, "completed": m.size }),
            json!({ "status": "verifying sha256 digest" }),
            json!({ "status": "writing manifest" }),
            json!({ "status": "success" }),
        ];
        return status_response(body.stream, lines);
    };
    let cfg = registry.hub_config().clone();
    let store = registry.store().clone();
    if cfg.offline {
        // Offline: a model pulled before is fine; anything else is an error.
        let name = hub_ref.store_name()?;
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.resolve(&name))
            .await
            .map_err(ApiError::from)?
            .map_err(|_| hub_error(hyperllama_store::hub::HubError::Offline(body.model.clone())))?;
        return status_response(body.stream, vec![json!({ "status": "success" })]);
    }
    // The listing first: a missing repo, a bad token or an unreachable hub is a real status.
    let plan = hyperllama_store::hub::plan(&cfg, &hub_ref).await.map_err(hub_error)?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let _ = tx.send(json!({ "status": "pulling manifest" }));
    let task = tokio::spawn(async move {
        let progress_tx = tx.clone();
        let result = hyperllama_store::hub::fetch(&store, &cfg, &plan, move |p| {
            let line = match p {
                hyperllama_store::hub::Progress::Status(s) => json!({ "status": s }),
                hyperllama_store::hub::Progress::Download { digest, total, completed } => json!({
                    "status": format!("pulling {}", digest.trim_start_matches("sha256:").chars().take(12).collect::<String>()),
                    "digest": digest, "total": total, "completed": completed,
                }),
            };
            let _ = progress_tx.send(line);
        })
        .await;
        if let Err(e) = &result {
            let _ = tx.send(json!({ "error": e.to_string() }));
        }
        result.map_err(hub_error)
    });
    if body.stream == Some(false) {
        task.await.map_err(ApiError::from)??;
        return Ok(axum::Json(json!({ "status": "success" })).into_response());
    }
    let lines = tokio_stream_lines(rx);
    Ok(([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response())
}

fn tokio_stream_lines(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Value>,
) -> impl futures::Stream<Item = std::result::Result<String, std::convert::Infallible>> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(|v| Ok(format!("{v}\n")))
}

fn hub_error(e: hyperllama_store::hub::HubError) -> ApiError {
    use hyperllama_store::hub::HubError as H;
    let (kind, code) = match &e {
        H::NotFound(_) | H::QuantNotFound { .. } => (ErrorKind::NotFound, "model_not_found"),
        H::Offline(_) | H::NoGguf { .. } => (ErrorKind::BadRequest, "pull_failed"),
        H::Unauthorized(_) => (ErrorKind::BadRequest, "unauthorized"),
        H::Network { .. } | H::Http { .. } | H::Protocol(_) => (ErrorKind::BadGateway, "hub_unavailable"),
        H::Store(_) => (ErrorKind::BadGateway, "pull_failed"),
    };
    ApiError::new(kind, code, e.to_string())
}

fn status_response(stream: Option<bool>, lines: Vec<Value>) -> Result<Response> {
    if stream == Some(false) {
        return Ok(axum::Json(json!({ "status": "success" })).into_response());
    }
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    Ok(([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

pub async fn create(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    DialectJson(body, _): Json<CreateBody>,
) -> Result<Response> {
    let name = ModelName::parse(&body.model)?;
    let store = state.service.registry().store().clone();
    if body.quantize.is_some() {
        return Err(ApiError::bad_request("quantize is not supported; create from an already quantized GGUF")
            .with_param("quantize")
            .into());
    }
    if !body.adapters.is_empty() {
        return Err(ApiError::bad_request("adapters (LoRA) are not supported yet").with_param("adapters").into());
    }
    let source = match (&body.from, body.files.len()) {
        (Some(_), n) if n > 0 => return Err(ApiError::bad_request("give either `from` or `files`, not both").into()),
        (Some(from), _) => {
            let path = PathBuf::from(from);
            if path.is_absolute() && path.extension().is_some_and(|e| e == "gguf") {
                // A path on the server's own disk: for the machine's own user only (loopback
                // without keys), or where the operator allowed it (`--allow-local-paths`).
                let local_user = ctx.is_loopback() && !state.auth.enabled();
                if !(local_user || state.http.allow_local_paths) {
                    return Err(ApiError::new(
                        ErrorKind::Forbidden,
                        "local_paths_forbidden",
                        "creating a model from a path on the server's disk is allowed only from this machine without API keys, \
                         or with `serve --allow-local-paths`; upload the file with POST /api/blobs/<digest> and use `files`",
                    )
                    .with_param("from")
                    .into());
                }
                let p = path.clone();
                tokio::task::spawn_blocking(move || hyperllama_gguf::GgufFile::open(&p))
                    .await
                    .map_err(ApiError::from)?
                    .map_err(|e| ApiError::new(ErrorKind::BadRequest, e.kind(), e.to_string()))?;
                Source::File(path)
            } else if let Some(d) = from.strip_prefix("sha256:").or_else(|| from.strip_prefix("sha256-")) {
                Source::Blob(Digest::parse(&format!("sha256:{d}"))?)
            } else {
                let from_name = ModelName::parse(from)?;
                let s = store.clone();
                let (stored, _) =
                    tokio::task::spawn_blocking(move || s.resolve(&from_name)).await.map_err(ApiError::from)??;
                Source::Model(stored)
            }
        }
        (None, 1) => {
            let digest = body.files.values().next().map(String::as_str).unwrap_or_default();
            Source::Blob(Digest::parse(digest)?)
        }
        (None, 0) => return Err(ApiError::bad_request("`from` or `files` is required").with_param("from").into()),
        (None, _) => return Err(ApiError::bad_request("only single-file GGUF models are supported in `files`").into()),
    };
    if let Source::Blob(d) = &source {
        let path = store.blob_path(d);
        if !path.is_file() {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                "blob_not_found",
                format!("blob {d} not found; upload it with POST /api/blobs/{d}"),
            )
            .into());
        }
        tokio::task::spawn_blocking(move || hyperllama_gguf::GgufFile::open(&path))
            .await
            .map_err(ApiError::from)?
            .map_err(|e| ApiError::new(ErrorKind::BadRequest, e.kind(), e.to_string()))?;
    }
    let mut messages = Vec::new();
    for m in body.messages {
        messages.push(hyperllama_core::Message::try_from(m)?);
    }
    let overrides = Overrides {
        template: body.template,
        system: body.system,
        license: body.license.map(|l| match l {
            LicenseField::One(s) => s,
            LicenseField::Many(v) => v.join("\n"),
        }),
        parameters: body.parameters.into_iter().collect(),
        messages,
    };
    let manifest =
        tokio::task::spawn_blocking(move || store.create(&name, source, overrides)).await.map_err(ApiError::from)??;
    let lines = vec![
        json!({ "status": "parsing GGUF" }),
        json!({ "status": format!("using existing layer sha256:{}", manifest.model.hex()) }),
        json!({ "status": "writing manifest" }),
        json!({ "status": "success" }),
    ];
    status_response(body.stream, lines)
}

pub async fn copy(State(state): State<AppState>, DialectJson(body, _): Json<CopyBody>) -> Result<Response> {
    let from = ModelName::parse(&body.source)?;
    let to = ModelName::parse(&body.destination)?;
    let store = state.service.registry().store().clone();
    tokio::task::spawn_blocking(move || {
        let (stored, _) = store.resolve(&from)?;
        store.copy(&stored, &to)
    })
    .await
    .map_err(ApiError::from)??;
    Ok(StatusCode::OK.into_response())
}

/// Deletes a model by any spelling of its name (case, `hf.co/` or not), unloading it first.
pub async fn delete(State(state): State<AppState>, DialectJson(body, _): Json<ModelBody>) -> Result<Response> {
    let name = ModelName::parse(&body.model)?;
    let store = state.service.registry().store().clone();
    let s = store.clone();
    let (stored, _) = tokio::task::spawn_blocking(move || s.resolve(&name)).await.map_err(ApiError::from)??;
    state.service.registry().unload(&stored.to_string()).await;
    tokio::task::spawn_blocking(move || store.delete(&stored)).await.map_err(ApiError::from)??;
    Ok(StatusCode::OK.into_response())
}

pub async fn blob_exists(State(state): State<AppState>, Path(digest): Path<String>) -> Result<Response> {
    let d = Digest::parse(&digest)?;
    Ok(if state.service.registry().store().has_blob(&d) { StatusCode::OK } else { StatusCode::NOT_FOUND }
        .into_response())
}

/// Streams the upload to disk through the store, which checks the digest before the blob
/// appears under its name.
pub async fn blob_upload(State(state): State<AppState>, Path(digest): Path<String>, body: Body) -> Result<Response> {
    let d = Digest::parse(&digest)?;
    if state.service.registry().store().has_blob(&d) {
        return Ok(StatusCode::OK.into_response());
    }
    let stream = body.into_data_stream().map(|r| r.map_err(std::io::Error::other));
    let reader = tokio_util::io::StreamReader::new(stream);
    let sync_reader = tokio_util::io::SyncIoBridge::new(reader);
    let store = state.service.registry().store().clone();
    tokio::task::spawn_blocking(move || store.write_blob(sync_reader, Some(&d))).await.map_err(ApiError::from)??;
    Ok(StatusCode::CREATED.into_response())
}
