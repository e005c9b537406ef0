//! The OpenAPI 3.1 document of every dialect (`GET /openapi.json`, `hyperllama openapi`),
//! generated from the table of operations below. A test checks it against the server's own
//! route table ([`crate::route_table`]): no route without an operation here, no operation
//! without a route.

use serde_json::{json, Map, Value};

/// One documented operation.
struct Op {
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    /// The request body's schema (a component name), if it takes one.
    request: Option<&'static str>,
    /// The response's schema (a component name) and media type.
    response: (&'static str, &'static str),
    /// Whether `stream: true` turns the response into a stream (and of what media type).
    streams: Option<&'static str>,
}

const JSON: &str = "application/json";
const SSE: &str = "text/event-stream";
const NDJSON: &str = "application/x-ndjson";
const TEXT: &str = "text/plain";

const OPS: &[Op] = &[
    // Ollama.
    Op { method: "GET", path: "/", tag: "ollama", summary: "Liveness: \"HyperLlama is running\" (a browser, by its Accept header, is sent to the web UI at /ui/)", request: None, response: ("Text", TEXT), streams: None },
    Op { method: "HEAD", path: "/", tag: "ollama", summary: "Liveness", request: None, response: ("Text", TEXT), streams: None },
    Op { method: "GET", path: "/api/version", tag: "ollama", summary: "Server version", request: None, response: ("Version", JSON), streams: None },
    Op { method: "HEAD", path: "/api/version", tag: "ollama", summary: "Server version", request: None, response: ("Version", JSON), streams: None },
    Op { method: "POST", path: "/api/generate", tag: "ollama", summary: "Complete a prompt (streams NDJSON unless stream is false); an empty prompt loads the model, with keep_alive 0 unloads it", request: Some("OllamaGenerateRequest"), response: ("OllamaGenerateResponse", JSON), streams: Some(NDJSON) },
    Op { method: "POST", path: "/api/chat", tag: "ollama", summary: "Chat (streams NDJSON unless stream is false); no messages loads the model", request: Some("OllamaChatRequest"), response: ("OllamaChatResponse", JSON), streams: Some(NDJSON) },
    Op { method: "POST", path: "/api/embed", tag: "ollama", summary: "Embeddings of one or more inputs", request: Some("OllamaEmbedRequest"), response: ("OllamaEmbedResponse", JSON), streams: None },
    Op { method: "POST", path: "/api/embeddings", tag: "ollama", summary: "Embedding of one prompt (legacy)", request: Some("OllamaLegacyEmbeddingsRequest"), response: ("OllamaLegacyEmbeddingsResponse", JSON), streams: None },
    Op { method: "GET", path: "/api/tags", tag: "ollama", summary: "Models in the store", request: None, response: ("OllamaTags", JSON), streams: None },
    Op { method: "HEAD", path: "/api/tags", tag: "ollama", summary: "Models in the store", request: None, response: ("OllamaTags", JSON), streams: None },
    Op { method: "POST", path: "/api/show", tag: "ollama", summary: "A model's details, Modelfile, template and parameters", request: Some("OllamaModelName"), response: ("OllamaShow", JSON), streams: None },
    Op { method: "GET", path: "/api/ps", tag: "ollama", summary: "Loaded models", request: None, response: ("OllamaPs", JSON), streams: None },
    Op { method: "POST", path: "/api/pull", tag: "ollama", summary: "Pull a model from the Hugging Face hub (progress as NDJSON)", request: Some("OllamaModelName"), response: ("OllamaProgress", JSON), streams: Some(NDJSON) },
    Op { method: "POST", path: "/api/create", tag: "ollama", summary: "Create a model from uploaded files, another model or a Modelfile's fields", request: Some("OllamaCreateRequest"), response: ("OllamaProgress", JSON), streams: Some(NDJSON) },
    Op { method: "POST", path: "/api/copy", tag: "ollama", summary: "Copy a model under another name", request: Some("OllamaCopyRequest"), response: ("Empty", JSON), streams: None },
    Op { method: "DELETE", path: "/api/delete", tag: "ollama", summary: "Delete a model", request: Some("OllamaModelName"), response: ("Empty", JSON), streams: None },
    Op { method: "HEAD", path: "/api/blobs/{digest}", tag: "ollama", summary: "Whether the store holds a blob (200) or not (404)", request: None, response: ("Empty", JSON), streams: None },
    Op { method: "POST", path: "/api/blobs/{digest}", tag: "ollama", summary: "Upload a blob (its sha256 is checked)", request: Some("Binary"), response: ("Empty", JSON), streams: None },
    // OpenAI.
    Op { method: "POST", path: "/v1/chat/completions", tag: "openai", summary: "Chat completion (SSE with stream: true)", request: Some("ChatCompletionRequest"), response: ("ChatCompletion", JSON), streams: Some(SSE) },
    Op { method: "POST", path: "/v1/completions", tag: "openai", summary: "Text completion (SSE with stream: true)", request: Some("CompletionRequest"), response: ("Completion", JSON), streams: Some(SSE) },
    Op { method: "POST", path: "/v1/embeddings", tag: "openai", summary: "Embeddings (float or base64)", request: Some("EmbeddingsRequest"), response: ("EmbeddingsResponse", JSON), streams: None },
    Op { method: "GET", path: "/v1/models", tag: "openai", summary: "Models (the store's and remote nodes')", request: None, response: ("ModelList", JSON), streams: None },
    Op { method: "GET", path: "/v1/models/{*id}", tag: "openai", summary: "One model", request: None, response: ("Model", JSON), streams: None },
    Op { method: "POST", path: "/v1/responses", tag: "openai", summary: "Create a response (SSE with stream: true); stored unless store is false", request: Some("ResponsesRequest"), response: ("Response", JSON), streams: Some(SSE) },
    Op { method: "GET", path: "/v1/responses/{id}", tag: "openai", summary: "A stored response", request: None, response: ("Response", JSON), streams: None },
    Op { method: "DELETE", path: "/v1/responses/{id}", tag: "openai", summary: "Delete a stored response", request: None, response: ("ResponseDeleted", JSON), streams: None },
    Op { method: "POST", path: "/tokenize", tag: "tokens", summary: "A text's tokens (llama-server's shape)", request: Some("TokenizeRequest"), response: ("TokenizeResponse", JSON), streams: None },
    Op { method: "POST", path: "/detokenize", tag: "tokens", summary: "The text of token ids", request: Some("DetokenizeRequest"), response: ("DetokenizeResponse", JSON), streams: None },
    Op { method: "POST", path: "/apply-template", tag: "tokens", summary: "The prompt a chat would be rendered to, and its token count", request: Some("ApplyTemplateRequest"), response: ("ApplyTemplateResponse", JSON), streams: None },
    // Anthropic.
    Op { method: "POST", path: "/v1/messages", tag: "anthropic", summary: "Create a message (named SSE events with stream: true)", request: Some("MessagesRequest"), response: ("Message", JSON), streams: Some(SSE) },
    Op { method: "POST", path: "/v1/messages/count_tokens", tag: "anthropic", summary: "Count a request's prompt tokens", request: Some("CountTokensRequest"), response: ("TokenCount", JSON), streams: None },
    // Operations.
    Op { method: "GET", path: "/health", tag: "ops", summary: "Liveness", request: None, response: ("Health", JSON), streams: None },
    Op { method: "GET", path: "/metrics", tag: "ops", summary: "Prometheus metrics", request: None, response: ("Text", TEXT), streams: None },
    Op { method: "GET", path: "/api/fleet", tag: "ops", summary: "The fleet's nodes: health and models", request: None, response: ("Fleet", JSON), streams: None },
    Op { method: "GET", path: "/openapi.json", tag: "ops", summary: "This document", request: None, response: ("Object", JSON), streams: None },
];

/// The (method, path) of every documented operation, paths as axum writes them.
pub fn operations() -> Vec<(&'static str, &'static str)> {
    OPS.iter().map(|o| (o.method, o.path)).collect()
}

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn obj(required: &[&str], props: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": props })
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn int() -> Value {
    json!({ "type": "integer" })
}

fn num() -> Value {
    json!({ "type": "number" })
}

fn boolean() -> Value {
    json!({ "type": "boolean" })
}

fn array(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

fn any() -> Value {
    json!({})
}

fn one_of(options: &[Value]) -> Value {
    json!({ "oneOf": options })
}

fn schemas() -> Map<String, Value> {
    let knobs = json!({
        "type": "object",
        "description": "Ollama's options (also a Modelfile's PARAMETERs); unknown keys are reported and ignored",
        "properties": {
            "temperature": num(), "top_k": int(), "top_p": num(), "min_p": num(), "seed": int(),
            "num_predict": { "type": "integer", "description": "Most tokens to generate; -1 until done" },
            "stop": one_of(&[string(), array(string())]), "repeat_penalty": num(), "repeat_last_n": int(),
            "presence_penalty": num(), "frequency_penalty": num(), "num_ctx": int(), "num_thread": int(),
            "num_gpu": int(), "cache_prompt": boolean(), "ignore_eos": boolean(), "engine": string(),
            "speculative": boolean(),
            "truncate": { "type": "boolean", "description": "Drop the oldest messages when the prompt does not fit (default: 400)" },
        },
        "additionalProperties": true,
    });
    let ollama_message = obj(
        &["role"],
        json!({
            "role": { "enum": ["system", "user", "assistant", "tool"] }, "content": string(), "thinking": string(),
            "images": array(string()), "tool_calls": array(r("OllamaToolCall")), "tool_name": string(),
            "tool_call_id": string(),
        }),
    );
    let logprob = obj(
        &["token", "logprob"],
        json!({
            "token": string(), "logprob": num(), "bytes": array(int()),
            "top_logprobs": array(obj(&["token", "logprob"], json!({ "token": string(), "logprob": num(), "bytes": array(int()) }))),
        }),
    );
    let final_stats = json!({
        "model": string(), "created_at": string(), "done": boolean(),
        "done_reason": { "enum": ["stop", "length", "load", "unload"] },
        "total_duration": int(), "load_duration": int(), "prompt_eval_count": int(), "prompt_eval_duration": int(),
        "eval_count": int(), "eval_duration": int(), "prompt_cache_count": int(), "logprobs": array(r("OllamaLogprob")),
    });
    let with = |base: &Value, extra: Value| {
        let mut m = base.as_object().cloned().unwrap_or_default();
        if let Value::Object(e) = extra {
            m.extend(e);
        }
        Value::Object(m)
    };
    let function_tool = obj(
        &["type", "function"],
        json!({
            "type": { "const": "function" },
            "function": obj(&["name"], json!({ "name": string(), "description": string(), "parameters": json!({ "type": "object" }) })),
        }),
    );
    let chat_message = obj(
        &["role"],
        json!({
            "role": { "enum": ["system", "developer", "user", "assistant", "tool"] },
            "content": one_of(&[string(), array(obj(&["type"], json!({ "type": { "const": "text" }, "text": string() }))), json!({ "type": "null" })]),
            "tool_calls": array(r("ToolCall")), "tool_call_id": string(), "name": string(), "reasoning_content": string(),
        }),
    );
    let usage = obj(
        &["prompt_tokens", "completion_tokens", "total_tokens"],
        json!({
            "prompt_tokens": int(), "completion_tokens": int(), "total_tokens": int(),
            "prompt_tokens_details": obj(&[], json!({ "cached_tokens": int() })),
        }),
    );
    let sampling = json!({
        "temperature": num(), "top_p": num(), "top_k": int(), "min_p": num(), "seed": int(),
        "stop": one_of(&[string(), array(string())]), "presence_penalty": num(), "frequency_penalty": num(),
        "repeat_penalty": num(), "repetition_penalty": num(), "ignore_eos": boolean(), "cache_prompt": boolean(),
        "speculative": boolean(), "truncate": boolean(), "n": { "type": "integer", "minimum": 1, "maximum": 16 },
        "stream": boolean(), "stream_options": obj(&[], json!({ "include_usage": boolean() })),
        "options": obj(&[], json!({ "num_ctx": int(), "num_thread": int(), "num_gpu": int(), "engine": string() })),
    });
    let chat_request = with(
        &json!({ "model": string(), "messages": array(chat_message) }),
        json!({
            "max_tokens": int(), "max_completion_tokens": int(),
            "response_format": obj(&["type"], json!({ "type": { "enum": ["text", "json_object", "json_schema"] }, "json_schema": obj(&[], json!({ "name": string(), "schema": { "type": "object" } })) })),
            "tools": array(function_tool.clone()),
            "tool_choice": one_of(&[json!({ "enum": ["none", "auto", "required"] }), obj(&["type", "function"], json!({ "type": { "const": "function" }, "function": obj(&["name"], json!({ "name": string() })) }))]),
            "parallel_tool_calls": boolean(), "logprobs": boolean(),
            "top_logprobs": { "type": "integer", "minimum": 0, "maximum": 20 },
            "reasoning_effort": { "enum": ["none", "minimal", "low", "medium", "high"] },
        }),
    );
    let chat_request = json!({ "type": "object", "required": ["model", "messages"], "properties": with(&chat_request, sampling.clone()) });
    let completion_request = json!({ "type": "object", "required": ["model", "prompt"], "properties": with(&json!({
        "model": string(), "prompt": one_of(&[string(), array(string())]), "max_tokens": int(),
        "logprobs": { "type": "integer", "minimum": 0, "maximum": 20 }, "echo": { "const": false }, "best_of": int(),
    }), sampling) });
    let anthropic_block = obj(
        &["type"],
        json!({
            "type": { "enum": ["text", "tool_use", "tool_result", "thinking", "redacted_thinking"] },
            "text": string(), "id": string(), "name": string(), "input": { "type": "object" }, "tool_use_id": string(),
            "content": one_of(&[string(), array(obj(&["type", "text"], json!({ "type": { "const": "text" }, "text": string() })))]),
            "is_error": boolean(), "thinking": string(), "signature": string(),
        }),
    );
    let anthropic_message = obj(
        &["role", "content"],
        json!({
            "role": { "enum": ["user", "assistant"] }, "content": one_of(&[string(), array(anthropic_block)]),
        }),
    );
    let anthropic_tool = obj(
        &["name", "input_schema"],
        json!({ "name": string(), "description": string(), "input_schema": { "type": "object" } }),
    );
    let anthropic_tool_choice = obj(
        &["type"],
        json!({ "type": { "enum": ["auto", "any", "tool", "none"] }, "name": string(), "disable_parallel_tool_use": boolean() }),
    );
    let thinking =
        obj(&["type"], json!({ "type": { "enum": ["enabled", "disabled", "adaptive"] }, "budget_tokens": int() }));
    let system =
        one_of(&[string(), array(obj(&["type", "text"], json!({ "type": { "const": "text" }, "text": string() })))]);
    let responses_item = obj(
        &[],
        json!({
            "type": { "enum": ["message", "function_call", "function_call_output", "reasoning"] },
            "role": { "enum": ["user", "assistant", "system", "developer"] },
            "content": one_of(&[string(), array(obj(&["type"], json!({ "type": { "enum": ["input_text", "output_text", "refusal"] }, "text": string() })))]),
            "call_id": string(), "name": string(), "arguments": string(), "output": string(),
        }),
    );
    let output_item = obj(
        &["type", "id"],
        json!({
            "type": { "enum": ["message", "function_call", "reasoning"] }, "id": string(), "status": string(),
            "role": { "const": "assistant" }, "content": array(any()), "summary": array(any()),
            "call_id": string(), "name": string(), "arguments": string(),
        }),
    );
    let progress =
        obj(&["status"], json!({ "status": string(), "digest": string(), "total": int(), "completed": int() }));
    let model_name = obj(
        &["model"],
        json!({ "model": string(), "name": string(), "verbose": boolean(), "insecure": boolean(), "stream": boolean() }),
    );

    let mut s = Map::new();
    let mut put = |name: &str, v: Value| {
        s.insert(name.to_string(), v);
    };
    put("Text", string());
    put("Object", json!({ "type": "object" }));
    put("Empty", json!({ "type": "object", "properties": {} }));
    put("Binary", json!({ "type": "string", "format": "binary" }));
    put("Health", obj(&["status"], json!({ "status": { "const": "ok" } })));
    put("Version", obj(&["version"], json!({ "version": string() })));
    put(
        "Fleet",
        obj(
            &["nodes"],
            json!({ "nodes": { "type": "array", "items": obj(
                &["url", "healthy", "models"],
                json!({
                    "url": string(), "healthy": { "type": "boolean" },
                    "error": { "type": ["string", "null"] },
                    "checked_secs_ago": { "type": ["number", "null"] },
                    "models": { "type": "array", "items": string() },
                }),
            ) } }),
        ),
    );
    put("Error", obj(&["error"], json!({ "error": any() })));
    put("OllamaOptions", knobs);
    put(
        "OllamaToolCall",
        obj(
            &["function"],
            json!({ "id": string(), "function": obj(&["name", "arguments"], json!({ "index": int(), "name": string(), "arguments": { "type": "object" } })) }),
        ),
    );
    put("OllamaMessage", ollama_message);
    put("OllamaLogprob", logprob);
    put(
        "OllamaGenerateRequest",
        obj(
            &["model"],
            json!({
                "model": string(), "prompt": string(), "suffix": string(), "system": string(), "template": string(),
                "raw": boolean(), "format": one_of(&[json!({ "const": "json" }), json!({ "type": "object" })]),
                "options": r("OllamaOptions"), "stream": boolean(), "keep_alive": one_of(&[string(), num()]),
                "images": array(string()), "think": one_of(&[boolean(), json!({ "enum": ["low", "medium", "high", "max"] })]),
                "truncate": boolean(), "logprobs": boolean(), "top_logprobs": { "type": "integer", "minimum": 0, "maximum": 20 },
            }),
        ),
    );
    put(
        "OllamaGenerateResponse",
        json!({ "type": "object", "properties": with(&final_stats, json!({ "response": string(), "thinking": string() })) }),
    );
    put(
        "OllamaChatRequest",
        obj(
            &["model"],
            json!({
                "model": string(), "messages": array(r("OllamaMessage")), "tools": array(function_tool.clone()),
                "format": one_of(&[json!({ "const": "json" }), json!({ "type": "object" })]), "options": r("OllamaOptions"),
                "stream": boolean(), "keep_alive": one_of(&[string(), num()]),
                "think": one_of(&[boolean(), json!({ "enum": ["low", "medium", "high", "max"] })]), "truncate": boolean(),
                "logprobs": boolean(), "top_logprobs": { "type": "integer", "minimum": 0, "maximum": 20 },
            }),
        ),
    );
    put(
        "OllamaChatResponse",
        json!({ "type": "object", "properties": with(&final_stats, json!({ "message": r("OllamaMessage") })) }),
    );
    put(
        "OllamaEmbedRequest",
        obj(
            &["model", "input"],
            json!({ "model": string(), "input": one_of(&[string(), array(string())]), "truncate": boolean(), "dimensions": int(), "options": r("OllamaOptions"), "keep_alive": one_of(&[string(), num()]) }),
        ),
    );
    put(
        "OllamaEmbedResponse",
        obj(
            &["model", "embeddings"],
            json!({ "model": string(), "embeddings": array(array(num())), "total_duration": int(), "load_duration": int(), "prompt_eval_count": int() }),
        ),
    );
    put(
        "OllamaLegacyEmbeddingsRequest",
        obj(
            &["model", "prompt"],
            json!({ "model": string(), "prompt": string(), "options": r("OllamaOptions"), "keep_alive": one_of(&[string(), num()]) }),
        ),
    );
    put("OllamaLegacyEmbeddingsResponse", obj(&["embedding"], json!({ "embedding": array(num()) })));
    put(
        "OllamaTags",
        obj(
            &["models"],
            json!({ "models": array(obj(&["name", "model", "digest"], json!({ "name": string(), "model": string(), "modified_at": string(), "size": int(), "digest": string(), "details": { "type": "object" } }))) }),
        ),
    );
    put(
        "OllamaShow",
        obj(
            &[],
            json!({ "modelfile": string(), "parameters": string(), "template": string(), "details": { "type": "object" }, "model_info": { "type": "object" }, "capabilities": array(string()) }),
        ),
    );
    put(
        "OllamaPs",
        obj(
            &["models"],
            json!({ "models": array(obj(&["name", "model"], json!({ "name": string(), "model": string(), "size": int(), "digest": string(), "expires_at": string(), "size_vram": int(), "context_length": int() }))) }),
        ),
    );
    put("OllamaModelName", model_name);
    put(
        "OllamaCreateRequest",
        obj(
            &["model"],
            json!({ "model": string(), "from": string(), "files": { "type": "object", "additionalProperties": string() }, "template": string(), "system": string(), "parameters": { "type": "object" }, "messages": array(r("OllamaMessage")), "license": one_of(&[string(), array(string())]), "quantize": string(), "stream": boolean() }),
        ),
    );
    put("OllamaCopyRequest", obj(&["source", "destination"], json!({ "source": string(), "destination": string() })));
    put("OllamaProgress", progress);
    put(
        "ToolCall",
        obj(
            &["type", "function"],
            json!({ "id": string(), "type": { "const": "function" }, "function": obj(&["name", "arguments"], json!({ "name": string(), "arguments": { "type": "string", "description": "JSON" } })) }),
        ),
    );
    put("ChatCompletionRequest", chat_request);
    put(
        "ChatCompletion",
        obj(
            &["id", "object", "created", "model", "choices"],
            json!({
                "id": string(), "object": { "const": "chat.completion" }, "created": int(), "model": string(),
                "choices": array(obj(&["index", "message", "finish_reason"], json!({
                    "index": int(), "finish_reason": { "enum": ["stop", "length", "tool_calls"] },
                    "message": obj(&["role"], json!({ "role": { "const": "assistant" }, "content": one_of(&[string(), json!({ "type": "null" })]), "reasoning_content": string(), "tool_calls": array(r("ToolCall")) })),
                    "logprobs": obj(&[], json!({ "content": array(obj(&["token", "logprob"], json!({ "token": string(), "logprob": num(), "bytes": array(int()), "top_logprobs": array(any()) }))) })),
                }))),
                "usage": usage.clone(),
            }),
        ),
    );
    put("CompletionRequest", completion_request);
    put(
        "Completion",
        obj(
            &["id", "object", "created", "model", "choices"],
            json!({
                "id": string(), "object": { "const": "text_completion" }, "created": int(), "model": string(),
                "choices": array(obj(&["index", "text"], json!({ "index": int(), "text": string(), "finish_reason": string(),
                    "logprobs": obj(&[], json!({ "tokens": array(string()), "token_logprobs": array(num()), "top_logprobs": array(json!({ "type": "object", "additionalProperties": num() })), "text_offset": array(int()) })) }))),
                "usage": usage,
            }),
        ),
    );
    put(
        "EmbeddingsRequest",
        obj(
            &["model", "input"],
            json!({ "model": string(), "input": one_of(&[string(), array(string())]), "encoding_format": { "enum": ["float", "base64"] }, "dimensions": int() }),
        ),
    );
    put(
        "EmbeddingsResponse",
        obj(
            &["object", "data", "model"],
            json!({ "object": { "const": "list" }, "model": string(), "data": array(obj(&["object", "index", "embedding"], json!({ "object": { "const": "embedding" }, "index": int(), "embedding": one_of(&[array(num()), string()]) }))), "usage": any() }),
        ),
    );
    put(
        "Model",
        obj(
            &["id", "object", "created", "owned_by"],
            json!({ "id": string(), "object": { "const": "model" }, "created": int(), "owned_by": string() }),
        ),
    );
    put("ModelList", obj(&["object", "data"], json!({ "object": { "const": "list" }, "data": array(r("Model")) })));
    put(
        "ResponsesRequest",
        obj(
            &["model", "input"],
            json!({
                "model": string(), "input": one_of(&[string(), array(responses_item)]), "instructions": string(),
                "max_output_tokens": int(), "temperature": num(), "top_p": num(), "tools": array(obj(&["type", "name"], json!({ "type": { "const": "function" }, "name": string(), "description": string(), "parameters": { "type": "object" }, "strict": boolean() }))),
                "tool_choice": one_of(&[json!({ "enum": ["none", "auto", "required"] }), obj(&["type", "name"], json!({ "type": { "const": "function" }, "name": string() }))]),
                "parallel_tool_calls": boolean(), "text": obj(&[], json!({ "format": obj(&["type"], json!({ "type": { "enum": ["text", "json_object", "json_schema"] }, "name": string(), "schema": { "type": "object" }, "strict": boolean() })) })),
                "reasoning": obj(&[], json!({ "effort": { "enum": ["none", "minimal", "low", "medium", "high", "xhigh", "max"] } })),
                "stream": boolean(), "store": boolean(), "previous_response_id": string(), "truncation": { "enum": ["auto", "disabled"] },
                "metadata": { "type": "object" },
            }),
        ),
    );
    put(
        "Response",
        obj(
            &["id", "object", "created_at", "model", "output", "parallel_tool_calls", "tool_choice", "tools"],
            json!({
                "id": string(), "object": { "const": "response" }, "created_at": int(),
                "status": { "enum": ["completed", "incomplete", "failed", "in_progress"] }, "model": string(),
                "output": array(output_item), "incomplete_details": any(), "error": any(), "previous_response_id": any(),
                "parallel_tool_calls": boolean(), "tool_choice": any(), "tools": array(any()), "usage": any(), "store": boolean(),
            }),
        ),
    );
    put(
        "ResponseDeleted",
        obj(
            &["id", "object", "deleted"],
            json!({ "id": string(), "object": { "const": "response.deleted" }, "deleted": boolean() }),
        ),
    );
    put(
        "TokenizeRequest",
        obj(
            &["content"],
            json!({ "model": string(), "content": string(), "add_special": boolean(), "with_pieces": boolean() }),
        ),
    );
    put(
        "TokenizeResponse",
        obj(
            &["tokens"],
            json!({ "tokens": array(one_of(&[int(), obj(&["id", "piece"], json!({ "id": int(), "piece": one_of(&[string(), array(int())]) }))])) }),
        ),
    );
    put("DetokenizeRequest", obj(&["tokens"], json!({ "model": string(), "tokens": array(int()) })));
    put("DetokenizeResponse", obj(&["content"], json!({ "content": string() })));
    put(
        "ApplyTemplateRequest",
        obj(&["messages"], json!({ "model": string(), "messages": array(any()), "tools": array(function_tool) })),
    );
    put("ApplyTemplateResponse", obj(&["prompt", "tokens"], json!({ "prompt": string(), "tokens": int() })));
    put(
        "MessagesRequest",
        obj(
            &["model", "max_tokens", "messages"],
            json!({
                "model": string(), "max_tokens": { "type": "integer", "minimum": 1 }, "messages": array(anthropic_message.clone()),
                "system": system.clone(), "stop_sequences": array(string()), "temperature": num(), "top_p": num(), "top_k": int(),
                "stream": boolean(), "tools": array(anthropic_tool.clone()), "tool_choice": anthropic_tool_choice.clone(),
                "metadata": { "type": "object" }, "thinking": thinking.clone(), "seed": int(), "truncate": boolean(),
            }),
        ),
    );
    put(
        "Message",
        obj(
            &["id", "type", "role", "model", "content", "usage"],
            json!({
                "id": string(), "type": { "const": "message" }, "role": { "const": "assistant" }, "model": string(),
                "content": array(obj(&["type"], json!({ "type": { "enum": ["text", "tool_use", "thinking"] }, "text": string(), "id": string(), "name": string(), "input": { "type": "object" }, "thinking": string(), "signature": string() }))),
                "stop_reason": { "enum": ["end_turn", "max_tokens", "stop_sequence", "tool_use"] }, "stop_sequence": one_of(&[string(), json!({ "type": "null" })]),
                "usage": obj(&["input_tokens", "output_tokens"], json!({ "input_tokens": int(), "output_tokens": int(), "cache_creation_input_tokens": int(), "cache_read_input_tokens": int() })),
            }),
        ),
    );
    put(
        "CountTokensRequest",
        obj(
            &["model", "messages"],
            json!({ "model": string(), "messages": array(anthropic_message), "system": system, "tools": array(anthropic_tool), "tool_choice": anthropic_tool_choice, "thinking": thinking }),
        ),
    );
    put("TokenCount", obj(&["input_tokens"], json!({ "input_tokens": int() })));
    s
}

/// The document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for op in OPS {
        let path = op.path.replace("{*", "{");
        let mut operation = json!({
            "tags": [op.tag],
            "summary": op.summary,
            "operationId": format!("{}_{}", op.method.to_lowercase(), path.trim_matches('/').replace(['/', '{', '}', '-', '.'], "_")),
        });
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        if !params.is_empty() {
            operation["parameters"] = params.into();
        }
        if let Some(req) = op.request {
            let media = if req == "Binary" { "application/octet-stream" } else { JSON };
            operation["requestBody"] = json!({ "required": true, "content": { (media): { "schema": r(req) } } });
        }
        let mut content = json!({ (op.response.1): { "schema": r(op.response.0) } });
        if let Some(stream) = op.streams {
            content[stream] =
                json!({ "schema": { "type": "string", "description": "the same objects, one per event or line" } });
        }
        let (error_media, error_schema) = (JSON, r("Error"));
        operation["responses"] = json!({
            "200": { "description": "OK", "content": content },
            "4XX": { "description": "The request is at fault, in the dialect's own error shape", "content": { (error_media): { "schema": error_schema.clone() } } },
            "5XX": { "description": "The server or a model is at fault", "content": { (error_media): { "schema": error_schema } } },
        });
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[op.method.to_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "HyperLlama",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Ollama's API (/api), OpenAI's chat completions, completions, embeddings, models and \
                            Responses (/v1), Anthropic's Messages (/v1/messages), llama-server's token utilities, \
                            and operations (health, metrics). docs/API.md describes every field, default and error.",
        },
        "tags": [
            { "name": "ollama" }, { "name": "openai" }, { "name": "anthropic" }, { "name": "tokens" }, { "name": "ops" },
        ],
        "paths": paths,
        "components": { "schemas": schemas() },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_reference_resolves() {
        let doc = super::document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().cloned().unwrap_or_default();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            assert!(schemas.contains_key(&name), "dangling $ref {name}");
        }
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
