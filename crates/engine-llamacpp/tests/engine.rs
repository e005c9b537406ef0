//! End-to-end tests of the embedded llama.cpp engine with the real SmolLM2-135M model.

use std::time::{Duration, Instant};

use crate::util::{chat, greedy, load, load_with, model_path, run, valid};
use futures::StreamExt;
use hyperllama_core::{FinishReason, Message, OutputFormat, Prompt, Sampling, SamplingParams, TokenEvent, ToolSpec};
use hyperllama_engine::{EngineError, LoadOptions};

const LONG: &str = "Write a long essay about the history of the Roman Empire.";

#[tokio::test]
async fn greedy_generation_is_deterministic_and_coherent() {
    let model = load().await;
    let a = run(model.as_ref(), greedy(chat("What is the capital of France? Answer in one sentence."), 24)).await;
    let b = run(model.as_ref(), greedy(chat("What is the capital of France? Answer in one sentence."), 24)).await;
    assert_eq!(a.text, b.text);
    assert_eq!(a.ids, b.ids);
    assert!(a.text.contains("Paris"), "{:?}", a.text);
    // The second run shared the whole prompt with the first: all but one token came from cache.
    assert_eq!(b.usage.cached_tokens, b.usage.prompt_tokens - 1);
}

#[tokio::test]
async fn prefix_reuse_gives_the_same_output_as_a_cold_run() {
    let model = load().await;
    let mut cold = greedy(chat(LONG), 16);
    cold.cache_prompt = false;
    let a = run(model.as_ref(), cold.clone()).await;
    assert_eq!(a.usage.cached_tokens, 0);
    let b = run(model.as_ref(), greedy(chat(LONG), 16)).await;
    assert!(b.usage.cached_tokens > 0);
    assert_eq!(a.ids, b.ids);
    // A prompt that shares only the system prefix reuses that part.
    let c = run(model.as_ref(), greedy(chat("Something else entirely"), 4)).await;
    assert!(c.usage.cached_tokens > 5 && c.usage.cached_tokens < c.usage.prompt_tokens, "{:?}", c.usage);
}

#[tokio::test]
async fn max_tokens_is_honoured_exactly() {
    let model = load().await;
    for n in [1, 7, 20] {
        let out = run(model.as_ref(), greedy(chat(LONG), n)).await;
        assert_eq!(out.usage.completion_tokens, n);
        assert_eq!(out.ids.len(), n as usize);
        assert_eq!(out.finish, FinishReason::Length);
    }
}

#[tokio::test]
async fn stop_string_ends_generation_and_is_not_emitted() {
    let model = load().await;
    let full = run(model.as_ref(), greedy(chat(LONG), 40)).await.text;
    // Pick a word from the middle of the greedy answer as the stop string.
    let words: Vec<&str> = full.split_whitespace().filter(|w| w.len() >= 4).collect();
    assert!(words.len() > 4, "{full:?}");
    let stop = words[words.len() / 2].to_string();
    let cut = full.find(&stop).expect("word is in the text");

    let mut req = greedy(chat(LONG), 40);
    req.stop.stop = vec![stop.clone()];
    let out = run(model.as_ref(), req).await;
    assert_eq!(out.finish, FinishReason::Stop);
    assert_eq!(out.text, full[..cut]);
    assert!(!out.text.contains(&stop));
}

#[tokio::test]
async fn chat_template_is_applied_as_the_model_was_trained() {
    let model = load().await;
    let prompt = Prompt::Chat(vec![Message::user("Name a colour.")]);
    let rendered = model.renderer().expect("renders itself").render_prompt(&prompt, &[]).expect("renders");
    let by_hand =
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
                   <|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(rendered, by_hand);
    // <|im_start|> is one special token, not text.
    let ids = model.tokenizer().expect("tokenizes itself").tokenize(by_hand, true).expect("tokenizes");
    assert_eq!(ids.iter().filter(|&&t| t == ids[0]).count(), 3, "{ids:?}");
    let via_template = run(model.as_ref(), greedy(prompt, 12)).await;
    let via_raw = run(model.as_ref(), greedy(Prompt::Raw(by_hand.into()), 12)).await;
    assert_eq!(via_template.ids, via_raw.ids);
    assert!(model.info().chat_template.as_deref().is_some_and(|t| t.contains("<|im_start|>")));
}

#[tokio::test]
async fn end_of_turn_stops_generation() {
    let model = load().await;
    let out = run(model.as_ref(), greedy(chat("Say just the word yes."), 200)).await;
    assert_eq!(out.finish, FinishReason::Stop);
    assert!(out.usage.completion_tokens < 200);
    assert!(!out.text.contains("<|im_end|>"), "{:?}", out.text);
}

#[tokio::test]
async fn same_seed_same_sample() {
    let model = load().await;
    let sampled = |seed| {
        let mut r = greedy(chat("Tell me a story about a dragon."), 24);
        r.sampling = SamplingParams {
            sampling: Sampling::Random { temperature: 1.0, top_k: Some(40), top_p: Some(0.95), min_p: None },
            seed: Some(seed),
            ..SamplingParams::default()
        };
        r
    };
    let a = run(model.as_ref(), sampled(42)).await;
    let b = run(model.as_ref(), sampled(42)).await;
    assert_eq!(a.ids, b.ids);
    // Different seeds explore: among a few, at least one differs from seed 42.
    let mut differs = false;
    for seed in [1, 2, 3] {
        differs |= run(model.as_ref(), sampled(seed)).await.ids != a.ids;
    }
    assert!(differs);
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_work() {
    let model = load().await;
    let mut req = greedy(chat(LONG), 2000);
    req.stop.ignore_eos = true;
    let mut stream = model.generate(valid(req)).await.expect("starts");
    for _ in 0..3 {
        match stream.next().await {
            Some(Ok(TokenEvent::Token { .. })) => {}
            other => panic!("expected a token, got {other:?}"),
        }
    }
    drop(stream);

    // The compute thread notices within a token and records the cancellation.
    let deadline = Instant::now() + Duration::from_secs(20);
    while model.stats().requests_cancelled == 0 {
        assert!(Instant::now() < deadline, "cancellation not observed: {:?}", model.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = model.stats();
    assert_eq!(stats.requests_cancelled, 1);
    assert!(stats.last_cancelled_tokens < 100, "{stats:?}");

    // The next request is served at once, not after 2000 tokens of abandoned work.
    let out = run(model.as_ref(), greedy(chat("Hi"), 3)).await;
    assert_eq!(out.usage.completion_tokens, 3);
    assert_eq!(model.stats().requests_finished, 1);
}

#[tokio::test]
async fn prompt_longer_than_context_is_rejected_before_streaming() {
    let model = load_with(LoadOptions { path: model_path(), ctx_size: Some(64), ..LoadOptions::default() }).await;
    let long = "word ".repeat(400);
    let err = match model.generate(valid(greedy(Prompt::Raw(long), 4))).await {
        Err(e) => e,
        Ok(_) => panic!("a 400-token prompt fits a small context?"),
    };
    // llama.cpp pads the context to a multiple of 256; the error names the real size.
    let ctx = model.info().loaded_context;
    assert!((64..400).contains(&ctx), "{ctx}");
    assert!(matches!(err, EngineError::PromptTooLong { ctx_size, .. } if ctx_size == ctx), "{err}");
    assert!(err.is_client_error());
}

#[tokio::test]
async fn generation_at_the_context_limit_ends_with_length() {
    let model = load_with(LoadOptions { path: model_path(), ctx_size: Some(64), ..LoadOptions::default() }).await;
    let mut req = greedy(chat(LONG), 1000);
    req.stop.ignore_eos = true;
    let out = run(model.as_ref(), req).await;
    assert_eq!(out.finish, FinishReason::Length);
    // Every position of the context is used; the last sampled token needs no slot.
    let ctx = model.info().loaded_context;
    assert_eq!(out.usage.prompt_tokens + out.usage.completion_tokens, ctx + 1, "{:?}", out.usage);
}

#[tokio::test]
async fn model_info_comes_from_the_gguf() {
    let model = load().await;
    let info = model.info();
    assert_eq!(info.architecture, "llama");
    assert_eq!(info.quantization, "Q4_1");
    assert_eq!(info.embedding_length, 576);
    assert_eq!(info.loaded_context, 1024);
    assert!(info.context_length >= 2048);
    assert!((100_000_000..200_000_000).contains(&info.parameter_count), "{}", info.parameter_count);
}

#[tokio::test]
async fn unloaded_model_refuses_work() {
    let model = load().await;
    model.unload().await.expect("unloads");
    let err = model.generate(valid(greedy(chat("hi"), 2))).await.err().expect("refused");
    assert!(matches!(err, EngineError::Unavailable(_)), "{err}");
}

#[tokio::test]
async fn embeddings_are_normalised_and_meaningful() {
    let model = load().await;
    let inputs = ["The cat sat on the mat.", "A cat is sitting on a rug.", "Quarterly revenue grew by 4 percent."];
    let e = model.embed(inputs.iter().map(|s| s.to_string()).collect(), true).await.expect("embeds");
    assert_eq!(e.vectors.len(), 3);
    assert!(e.prompt_tokens > 10);
    for v in &e.vectors {
        assert_eq!(v.len(), model.info().embedding_length as usize);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    }
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!(cos(&e.vectors[0], &e.vectors[1]) > cos(&e.vectors[0], &e.vectors[2]));
    // Deterministic, and independent of batching.
    let alone = model.embed(vec![inputs[0].to_string()], true).await.expect("embeds");
    assert!(cos(&alone.vectors[0], &e.vectors[0]) > 0.9999);
    // Too long without truncation is the caller's error.
    let long = "word ".repeat(3000);
    assert!(matches!(model.embed(vec![long], false).await, Err(EngineError::PromptTooLong { .. })));
}

#[tokio::test]
async fn json_format_always_parses() {
    let model = load().await;
    let mut req = greedy(chat("Describe a cat as JSON with a name and an age."), 120);
    req.format = Some(OutputFormat::Json);
    let out = run(model.as_ref(), req).await;
    let v: serde_json::Value = serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("{e}: {:?}", out.text));
    assert!(v.is_object());
}

#[tokio::test]
async fn json_schema_is_followed() {
    let model = load().await;
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": false
    });
    let mut req = greedy(chat("Invent a person."), 120);
    req.format = Some(OutputFormat::JsonSchema(schema));
    let out = run(model.as_ref(), req).await;
    let v: serde_json::Value = serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("{e}: {:?}", out.text));
    assert!(v["name"].is_string() && v["age"].is_i64(), "{v}");
    assert_eq!(v.as_object().map(|o| o.len()), Some(2));

    let mut bad = greedy(chat("x"), 8);
    bad.format = Some(OutputFormat::JsonSchema(serde_json::json!("not a schema")));
    assert!(bad.validate().is_err(), "not a schema: refused before any engine sees it");
    // A schema object llama.cpp cannot turn into a grammar is the caller's error too.
    let mut unusable = greedy(chat("x"), 8);
    unusable.format = Some(OutputFormat::JsonSchema(serde_json::json!({ "type": "nonsense-type" })));
    assert!(matches!(model.generate(valid(unusable)).await, Err(EngineError::Validation(_))));
}

#[tokio::test]
async fn tools_are_described_to_a_template_without_tool_support() {
    let model = load().await;
    let tools = vec![ToolSpec {
        name: "get_weather".into(),
        description: "Current weather in a city".into(),
        parameters: serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    }];
    let text =
        model.renderer().expect("renders itself").render_prompt(&chat("Weather in Paris?"), &tools).expect("renders");
    assert!(text.starts_with("<|im_start|>system\n") && text.contains("get_weather") && text.contains("<tool_call>"));
    assert!(!text.contains("named SmolLM"), "the tool instructions replace the default system prompt");
}
