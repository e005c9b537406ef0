//! End-to-end tests of the `hyperllama` binary with the real SmolLM2 model.

use std::path::PathBuf;
use std::process::{Command, Output};

fn model() -> PathBuf {
    hyperllama_testutil::model_path()
}

fn hyperllama(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hyperllama")).args(args).output().expect("binary runs")
}

fn ok_stdout(args: &[&str]) -> String {
    let out = hyperllama(args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn generate(extra: &[&str]) -> String {
    let m = model();
    let mut args = vec!["generate", m.to_str().expect("path"), "--ctx-size", "1024"];
    args.extend_from_slice(extra);
    ok_stdout(&args)
}

const LONG: &str = "Write a long essay about the history of the Roman Empire.";

#[test]
fn info_json_reports_hardware_and_engines() {
    let v: serde_json::Value = serde_json::from_str(&ok_stdout(&["info", "--json"])).expect("valid JSON");
    assert!(v["hardware"]["cpu"]["physical_cores"].as_u64().expect("cores") > 0);
    assert!(v["hardware"]["cpu"]["logical_cores"].as_u64().expect("cores") > 0);
    assert!(v["hardware"]["memory"]["total_bytes"].as_u64().expect("ram") > 0);
    assert!(v["hardware"]["memory"]["available_bytes"].as_u64().expect("ram") > 0);
    assert!(v["engines"].as_array().expect("engines").iter().any(|e| e["id"] == "llamacpp"));
    assert_eq!(v["default_gguf_engine"], "llamacpp");
}

#[test]
fn info_explains_the_choice_for_a_model() {
    let m = model();
    let v: serde_json::Value =
        serde_json::from_str(&ok_stdout(&["info", "--json", "--model", m.to_str().expect("path")])).expect("JSON");
    assert_eq!(v["model"]["engine"], "llamacpp");
    assert!(v["model"]["reason"].as_str().expect("reason").contains("Q4_1"));
    let text = ok_stdout(&["info"]);
    assert!(text.contains("Cores:") && text.contains("llamacpp"), "{text}");
    // vLLM is reported either way (installed with its version, or how to get it).
    assert!(text.lines().any(|l| l.trim_start().starts_with("vllm")), "{text}");

    // A Hugging Face model directory: vLLM's, and the reason names what this machine lacks or has.
    let dir = std::env::temp_dir().join(format!("hl-info-hf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("config.json"), "{}").expect("config");
    let v: serde_json::Value =
        serde_json::from_str(&ok_stdout(&["info", "--json", "--model", dir.to_str().expect("path")])).expect("JSON");
    let reason = v["model"]["reason"].as_str().expect("reason");
    assert!(reason.contains("safetensors") && reason.contains("vLLM"), "{reason}");
    let cuda = v["hardware"]["gpus"].as_array().expect("gpus").iter().any(|g| g["vendor"] == "nvidia");
    assert_eq!(reason.contains("has none"), !cuda, "{reason}");
}

#[test]
fn greedy_generation_is_deterministic_across_processes() {
    let a = generate(&[LONG, "--temperature", "0", "-n", "16"]);
    let b = generate(&[LONG, "--temperature", "0", "-n", "16"]);
    assert_eq!(a, b);
    assert!(a.trim().len() > 10, "{a:?}");
}

#[test]
fn json_output_and_exact_max_tokens() {
    let v: serde_json::Value =
        serde_json::from_str(&generate(&[LONG, "--temperature", "0", "--max-tokens", "9", "--json"])).expect("JSON");
    assert_eq!(v["eval_count"], 9);
    assert_eq!(v["done_reason"], "length");
    assert!(v["prompt_eval_count"].as_u64().expect("count") > 10);
    for key in ["load_duration", "prompt_eval_duration", "eval_duration", "total_duration"] {
        assert!(v[key].as_u64().expect(key) > 0, "{key}");
    }
    assert!(v["tokens_per_second"].as_f64().expect("tps") > 0.0);
    // --json gives the same text the stream would print.
    let streamed = generate(&[LONG, "--temperature", "0", "--max-tokens", "9"]);
    assert_eq!(streamed.trim_end_matches('\n'), v["response"].as_str().expect("response"));
}

#[test]
fn stop_string_is_not_printed() {
    let full = generate(&[LONG, "--temperature", "0", "-n", "40"]);
    let words: Vec<&str> = full.split_whitespace().filter(|w| w.len() >= 4).collect();
    let stop = words[words.len() / 2];
    let cut = full.find(stop).expect("in text");
    let out = generate(&[LONG, "--temperature", "0", "-n", "40", "--stop", stop]);
    assert_eq!(out.trim_end_matches('\n'), &full[..cut]);
    assert!(!out.contains(stop));
}

#[test]
fn same_seed_same_text() {
    let a = generate(&["Tell me a story.", "--seed", "11", "--temperature", "1", "-n", "16"]);
    let b = generate(&["Tell me a story.", "--seed", "11", "--temperature", "1", "-n", "16"]);
    assert_eq!(a, b);
}

#[test]
fn raw_and_system_prompts() {
    // --raw skips the template: the model just continues the text.
    let raw = generate(&["The capital of France is", "--raw", "--temperature", "0", "-n", "4"]);
    assert!(raw.contains("Paris"), "{raw:?}");
    // A system message changes the rendered prompt, hence the greedy answer.
    let plain = generate(&["Who are you?", "--temperature", "0", "-n", "12"]);
    let pirate =
        generate(&["Who are you?", "--system", "You are a pirate named Bob.", "--temperature", "0", "-n", "12"]);
    assert_ne!(plain, pirate);
}

#[test]
fn prompt_from_stdin() {
    use std::io::Write;
    let m = model();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hyperllama"))
        .args(["generate", m.to_str().expect("path"), "-", "--raw", "--temperature", "0", "-n", "4"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(b"The capital of France is").expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Paris"));
}

fn assert_fails_with(args: &[&str], needle: &str) {
    let out = hyperllama(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{args:?}: stderr {err:?} lacks {needle:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "one clear line: {err:?}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_model_files_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "just some text, renamed\n").expect("write");
    let truncated = dir.path().join("cut.gguf");
    let bytes = std::fs::read(model()).expect("model");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).expect("write");

    assert_fails_with(&["generate", "/nonexistent/x.gguf", "hi"], "not found");
    assert_fails_with(&["generate", text.to_str().expect("p"), "hi"], "not a GGUF file");
    assert_fails_with(&["generate", truncated.to_str().expect("p"), "hi"], "truncated");
    assert_fails_with(&["bench", truncated.to_str().expect("p"), "-i", "1"], "truncated");
}

#[test]
fn bad_options_fail_with_one_clear_line() {
    let m = model();
    let m = m.to_str().expect("path");
    assert_fails_with(&["generate", m, "hi", "--temperature", "-1"], "temperature");
    assert_fails_with(&["generate", m, "hi", "--top-p", "2"], "top_p");
    assert_fails_with(&["generate", m, "hi", "--max-tokens", "0"], "max_tokens");
    assert_fails_with(&["generate", m, "hi", "--ctx-size", "0"], "ctx-size");
    let long = "word ".repeat(600);
    assert_fails_with(&["generate", m, &long, "--raw", "--ctx-size", "256"], "raise the context");
}

#[test]
fn bench_json_reports_speeds() {
    let m = model();
    let v: serde_json::Value = serde_json::from_str(&ok_stdout(&[
        "bench",
        m.to_str().expect("path"),
        "-i",
        "2",
        "--warmup",
        "1",
        "-n",
        "8",
        "--prompt-tokens",
        "32",
        "--json",
    ]))
    .expect("JSON");
    assert_eq!(v["prompt_tokens"], 32);
    assert_eq!(v["iterations"], 2);
    assert_eq!(v["samples"].as_array().expect("samples").len(), 2);
    for s in v["samples"].as_array().expect("samples") {
        assert_eq!(s["generated_tokens"], 8);
    }
    for key in ["ttft_ms", "prompt_tps", "decode_tps", "latency_ms"] {
        let p50 = v[key]["p50"].as_f64().expect(key);
        assert!(p50 > 0.0 && p50 <= v[key]["max"].as_f64().expect("max"), "{key}");
    }
    assert!(v["load_ms"].as_f64().expect("load") > 0.0);
}

#[test]
fn help_is_useful_everywhere() {
    for cmd in [vec!["--help"], vec!["info", "--help"], vec!["generate", "--help"], vec!["bench", "--help"]] {
        let text = ok_stdout(&cmd);
        assert!(text.contains("Usage:"), "{cmd:?}");
    }
    assert!(ok_stdout(&["generate", "--help"]).contains("--max-tokens"));
    assert!(ok_stdout(&["bench", "--help"]).contains("--iterations"));
}
