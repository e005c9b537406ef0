//! Continuous batching with the real model: several sequences in one llama.cpp context.

use crate::util::{chat, greedy, load_with, model_path, run, valid};
use futures::future::join_all;
use futures::{FutureExt, StreamExt};
use hyperllama_core::{Prompt, TokenEvent};
use hyperllama_engine::{EngineError, LoadOptions};

fn options(parallel: u32) -> LoadOptions {
    LoadOptions { path: model_path(), ctx_size: Some(1024), parallel: Some(parallel), ..LoadOptions::default() }
}

/// Prompts whose continuations are each determined and different from the others, so a
/// batching bug (crossed sequences, wrong positions, stale KV) shows as a wrong or swapped
/// output. (Free-form answers are not used here: batched and single decoding sum the same
/// attention terms in a different order, and a 135M model's near-ties can flip on that
/// last-bit difference, as in every batched engine without batch-invariant kernels.)
const PROMPTS: [&str; 6] = [
    "Count from 1 to 30, separated by commas: 1, 2, 3,",
    "Count up from 100: 100, 101, 102,",
    "The days of the week: Monday, Tuesday,",
    "The months of the year: January, February,",
    "Count down from 30: 30, 29, 28,",
    "Even numbers: 2, 4, 6, 8,",
];

#[tokio::test]
async fn concurrent_greedy_streams_match_the_same_prompts_run_alone() {
    let model = load_with(options(4)).await;
    let request = |p: &str| {
        let mut r = greedy(Prompt::Raw(p.to_string()), 24);
        r.cache_prompt = false;
        r
    };
    let mut solo = Vec::new();
    for p in PROMPTS {
        solo.push(run(model.as_ref(), request(p)).await);
    }
    let before = model.stats();
    // Six requests, four slots: four decode together, two wait and join as slots free up.
    let together = join_all(PROMPTS.iter().map(|p| run(model.as_ref(), request(p)))).await;
    for ((p, a), b) in PROMPTS.iter().zip(&solo).zip(&together) {
        assert_eq!(a.ids, b.ids, "{p:?}: alone {:?}, batched {:?}", a.text, b.text);
    }
    assert!(together[0].text.contains("8, 9, 10"), "{:?}", together[0].text);
    assert!(together[2].text.contains("Wednesday"), "{:?}", together[2].text);
    assert!(together[3].text.contains("March"), "{:?}", together[3].text);
    let after = model.stats();
    let steps = after.decode_steps - before.decode_steps;
    let tokens = after.batched_tokens - before.batched_tokens;
    // Batched: far fewer steps than tokens (alone, every generated token is its own step).
    let generated: u64 = together.iter().map(|o| u64::from(o.usage.completion_tokens)).sum();
    assert!(steps < generated, "{steps} steps for {generated} generated tokens ({tokens} batched)");
    assert_eq!(after.active, 0);
    assert_eq!(after.waiting, 0);
    assert_eq!(after.parallel, 4);
}

#[tokio::test]
async fn a_long_prompt_is_prefilled_in_chunks_while_running_streams_keep_going() {
    let model = load_with(LoadOptions { step_tokens: Some(64), ..options(2) }).await;
    let mut long_gen = greedy(chat("Write a long essay about the history of the Roman Empire."), 400);
    long_gen.stop.ignore_eos = true;
    let mut a = model.generate(valid(long_gen)).await.expect("starts");
    for _ in 0..3 {
        assert!(matches!(a.next().await, Some(Ok(TokenEvent::Token { .. }))));
    }
    // About 600 prompt tokens: ten steps of 64, each of which also decodes a token of `a`.
    let long_prompt = "The quick brown fox jumps over the lazy dog. ".repeat(60);
    let mut b = model.generate(valid(greedy(Prompt::Raw(long_prompt), 2))).await.expect("starts");
    let mut a_tokens = 0;
    loop {
        tokio::select! {
            ev = b.next() => {
                assert!(matches!(ev, Some(Ok(TokenEvent::Token { .. }))), "{ev:?}");
                break;
            }
            ev = a.next() => {
                assert!(matches!(ev, Some(Ok(TokenEvent::Token { .. }))), "{ev:?}");
                a_tokens += 1;
            }
        }
    }
    // Events of `a` sent before `b`'s first token are already in `a`'s channel.
    while let Some(Some(Ok(TokenEvent::Token { .. }))) = a.next().now_or_never() {
        a_tokens += 1;
    }
    assert!(a_tokens >= 8, "the running stream got only {a_tokens} tokens during a 600-token prefill");
}

#[tokio::test]
async fn a_full_queue_refuses_new_requests_at_once() {
    let model = load_with(LoadOptions { max_queue: Some(1), ..options(1) }).await;
    let mut req = greedy(chat("Write a long essay about the history of the Roman Empire."), 500);
    req.stop.ignore_eos = true;
    let mut running = model.generate(valid(req.clone())).await.expect("takes the slot");
    assert!(matches!(running.next().await, Some(Ok(TokenEvent::Token { .. }))));
    let waiting = model.generate(valid(req.clone())).await.expect("waits in the queue");
    match model.generate(valid(req.clone())).await {
        Err(EngineError::Overloaded { waiting }) => assert_eq!(waiting, 1),
        Err(e) => panic!("expected Overloaded, got {e}"),
        Ok(_) => panic!("a third request was accepted with 1 slot and a queue of 1"),
    }
    // Cancelling the waiting one makes room again.
    drop(waiting);
    let again = model.generate(valid(greedy(chat("Hi"), 2))).await.expect("room after a cancellation");
    drop(running);
    let out = futures::StreamExt::collect::<Vec<_>>(again).await;
    assert!(matches!(out.last(), Some(Ok(TokenEvent::Done { .. }))), "{out:?}");
}

#[tokio::test]
async fn a_prefix_cached_in_a_busy_slot_is_shared_with_a_new_request() {
    let model = load_with(options(2)).await;
    let system = "You are a helpful assistant who knows a lot about geography, history and science. ".repeat(8);
    let prompt =
        |q: &str| Prompt::Chat(vec![hyperllama_core::Message::system(&system), hyperllama_core::Message::user(q)]);
    let mut first = greedy(prompt("Tell me a long story."), 300);
    first.stop.ignore_eos = true;
    let mut a = model.generate(valid(first)).await.expect("starts");
    assert!(matches!(a.next().await, Some(Ok(TokenEvent::Token { .. }))));
    // The other slot is empty; the system prompt is only in the busy one.
    let b = run(model.as_ref(), greedy(prompt("What is the capital of France? Answer in one sentence."), 12)).await;
    assert!(b.usage.cached_tokens > 100, "{:?}", b.usage);
    drop(a);
    let mut cold = greedy(prompt("What is the capital of France? Answer in one sentence."), 12);
    cold.cache_prompt = false;
    let c = run(model.as_ref(), cold).await;
    assert_eq!(c.usage.cached_tokens, 0);
    assert_eq!(b.ids, c.ids, "{:?} vs {:?}", b.text, c.text);
}

#[tokio::test]
async fn a_panic_in_a_step_fails_its_batch_and_the_model_serves_on() {
    let model = load_with(options(2)).await;
    let mut long = greedy(chat("Write a long essay about the history of the Roman Empire."), 300);
    long.stop.ignore_eos = true;
    let mut a = model.generate(valid(long)).await.expect("starts");
    assert!(matches!(a.next().await, Some(Ok(TokenEvent::Token { .. }))));
    let mut faulty = greedy(chat("Hi"), 20);
    faulty.stop.stop.push(hyperllama_engine_llamacpp::FAULT_PANIC.to_string());
    let b = futures::StreamExt::collect::<Vec<_>>(model.generate(valid(faulty)).await.expect("starts")).await;
    match b.last() {
        Some(Err(EngineError::Internal(msg))) => assert!(msg.contains("panicked"), "{msg}"),
        other => panic!("expected an internal error, got {other:?}"),
    }
    // The other sequence of the same batch ends with the error too, never hangs.
    let rest = futures::StreamExt::collect::<Vec<_>>(a).await;
    assert!(matches!(rest.last(), Some(Err(EngineError::Internal(_)))), "{:?}", rest.last());
    // The thread lives on: the next requests are served, from a clean cache, with the same output.
    assert!(model.is_healthy());
    let x = run(model.as_ref(), greedy(chat("What is the capital of France? Answer in one sentence."), 12)).await;
    let y = run(model.as_ref(), greedy(chat("What is the capital of France? Answer in one sentence."), 12)).await;
    assert_eq!(x.ids, y.ids);
    assert!(x.text.contains("Paris"), "{:?}", x.text);
}
