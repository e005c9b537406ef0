//! The prompt cache and speculative decoding with the real model: outputs are identical with
//! and without them (they only save work), conversations keep their cache when other
//! conversations take their lane, a new model instance (a restart) restores from disk, bad
//! disk entries are skipped, and a long embedding does not stall generation.

use std::time::{Duration, Instant};

use futures::StreamExt;
use hyperllama_core::{Message, Prompt, TokenEvent};
use hyperllama_engine::{Engine, LoadOptions};
use hyperllama_engine_llamacpp::LlamaCppEngine;

use crate::util::{greedy, load_with, model_path, run, valid};

fn options(parallel: u32, extra: &[(&str, &str)]) -> LoadOptions {
    LoadOptions {
        path: model_path(),
        ctx_size: Some(2048),
        parallel: Some(parallel),
        extra: extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..LoadOptions::default()
    }
}

/// A text the model is asked to repeat: what it writes is in its prompt, so n-gram drafts hit.
const QUOTE: &str = "The quick brown fox jumps over the lazy dog near the river bank, while the old \
    farmer watches from his porch and the sun sets slowly behind the distant purple hills.";

fn repeat_request(max_tokens: u32) -> hyperllama_core::GenerateRequest {
    let mut r = greedy(
        Prompt::Chat(vec![Message::user(format!("Repeat this text exactly, word for word:\n\n{QUOTE}"))]),
        max_tokens,
    );
    r.stop.ignore_eos = true;
    r
}

#[tokio::test]
async fn greedy_output_is_the_same_with_and_without_speculation() {
    let with = load_with(options(1, &[("speculative", "ngram"), ("cache_ram_mib", "0")])).await;
    let without = load_with(options(1, &[("speculative", "off"), ("cache_ram_mib", "0")])).await;
    let a = run(with.as_ref(), repeat_request(48)).await;
    let b = run(without.as_ref(), repeat_request(48)).await;
    assert_eq!(a.ids, b.ids, "{:?}\nvs\n{:?}", a.text, b.text);
    let s = with.stats();
    assert!(s.spec_drafted > 0 && s.spec_accepted > 0, "drafts were made and accepted: {s:?}");
    assert_eq!(without.stats().spec_drafted, 0);
    // A request may opt out.
    let mut r = repeat_request(16);
    r.speculate = false;
    let before = with.stats().spec_drafted;
    run(with.as_ref(), r).await;
    assert_eq!(with.stats().spec_drafted, before);
}

/// Turn 2 of a conversation: turn 1, its answer, a new question.
fn turn2(q1: &str, a1: &str, q2: &str) -> Prompt {
    Prompt::Chat(vec![Message::user(q1), Message::assistant(a1), Message::user(q2)])
}

#[tokio::test]
async fn more_conversations_than_lanes_keep_their_cache_and_outputs() {
    // Two lanes, four conversations, round robin: by the time a conversation comes back, its
    // lane has served two others.
    let model = load_with(options(2, &[("cache_ram_mib", "256")])).await;
    let questions: Vec<String> = (0..4)
        .map(|i| {
            format!("Conversation {i}: {} Tell me about the number {i}.", "Some background to remember. ".repeat(10))
        })
        .collect();
    let mut firsts = Vec::new();
    for q in &questions {
        let out = run(model.as_ref(), greedy(Prompt::Chat(vec![Message::user(q)]), 16)).await;
        firsts.push((out.usage.prompt_tokens, out.text));
    }
    for (i, q) in questions.iter().enumerate() {
        let p = turn2(q, &firsts[i].1, "And why?");
        let warm = run(model.as_ref(), greedy(p.clone(), 12)).await;
        assert!(
            warm.usage.cached_tokens >= firsts[i].0,
            "conversation {i}: {} cached of a first turn of {} tokens",
            warm.usage.cached_tokens,
            firsts[i].0
        );
        let mut cold = greedy(p, 12);
        cold.cache_prompt = false;
        let cold = run(model.as_ref(), cold).await;
        assert_eq!(cold.usage.cached_tokens, 0);
        assert_eq!(warm.ids, cold.ids, "conversation {i}: the cache changed the answer");
    }
    let s = model.stats();
    assert!(s.cache_ram_bytes > 0 && s.cache_hit_tokens > 0, "{s:?}");
}

#[tokio::test]
async fn a_new_instance_restores_from_disk_and_skips_a_corrupt_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_dir = dir.path().display().to_string();
    let extra = [("cache_ram_mib", "64"), ("cache_dir", cache_dir.as_str())];
    let long = format!(
        "{} Now answer: what is the capital of France?",
        "A long preamble about nothing in particular. ".repeat(40)
    );
    let prompt = || Prompt::Chat(vec![Message::user(&long)]);
    let first = load_with(options(1, &extra)).await;
    let cold = run(first.as_ref(), greedy(prompt(), 8)).await;
    assert!(cold.usage.prompt_tokens > 300);
    first.unload().await.expect("unload writes the pending entries");
    drop(first);
    // A new instance (as after a restart): nothing in RAM, the entry on disk.
    let second = load_with(options(1, &extra)).await;
    let warm = run(second.as_ref(), greedy(prompt(), 8)).await;
    assert!(warm.usage.cached_tokens >= cold.usage.prompt_tokens - 1, "{:?}", warm.usage);
    assert_eq!(warm.ids, cold.ids);
    assert!(second.stats().cache_disk_bytes > 0);
    second.unload().await.expect("unload");
    drop(second);
    // Corrupt every entry: skipped (with a warning) and the answer is still right.
    for model_dir in std::fs::read_dir(dir.path()).expect("dir").flatten() {
        for entry in std::fs::read_dir(model_dir.path()).expect("dir").flatten() {
            let mut bytes = std::fs::read(entry.path()).expect("read");
            let n = bytes.len();
            bytes[n - 100] ^= 0x5a;
            std::fs::write(entry.path(), &bytes).expect("write");
        }
    }
    let third = load_with(options(1, &extra)).await;
    let again = run(third.as_ref(), greedy(prompt(), 8)).await;
    assert_eq!(again.usage.cached_tokens, 0, "a corrupt entry is never loaded");
    assert_eq!(again.ids, cold.ids);
}

#[tokio::test]
async fn a_long_embedding_does_not_stall_generation() {
    let model = LlamaCppEngine::new().load(options(4, &[("cache_ram_mib", "0")])).await.expect("load");
    // Four streams generating.
    let mut streams = Vec::new();
    for i in 0..4 {
        let mut r = greedy(Prompt::Chat(vec![Message::user(format!("Count slowly from {i} to 500."))]), 400);
        r.stop.ignore_eos = true;
        streams.push(model.generate(valid(r)).await.expect("starts"));
    }
    for s in &mut streams {
        assert!(matches!(s.next().await, Some(Ok(TokenEvent::Token { .. }))));
    }
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            let arrivals = arrivals.clone();
            tokio::spawn(async move {
                while let Some(Ok(TokenEvent::Token { .. })) = s.next().await {
                    arrivals.lock().expect("lock").push(Instant::now());
                }
            })
        })
        .collect();
    // A large embedding request: many long inputs.
    let inputs: Vec<String> =
        (0..4).map(|i| format!("Document {i}. {}", "Lorem ipsum dolor sit amet. ".repeat(60))).collect();
    let t0 = Instant::now();
    let e = model.embed(inputs, true).await.expect("embeds");
    let t1 = Instant::now();
    assert_eq!(e.vectors.len(), 4);
    let during = arrivals.lock().expect("lock").iter().filter(|t| **t > t0 && **t < t1).count();
    assert!(
        t1 - t0 > Duration::from_millis(200) && during >= 4,
        "{during} tokens arrived during a {:?} embedding",
        t1 - t0
    );
    for r in readers {
        r.abort();
    }
}
