//! `hyperllama serve` as a real process, driven by the CLI's own verbs.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

fn model() -> PathBuf {
    if let Ok(p) = std::env::var("HYPERLLAMA_TEST_MODEL") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/hyperllama/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "test model missing: run scripts/fetch-model.sh or set HYPERLLAMA_TEST_MODEL");
    p
}

struct Server {
    child: Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hyperllama"))
        .args(["serve", "--host", "127.0.0.1:0"])
        .env("HYPERLLAMA_MODELS", dir.path().join("models"))
        .env_remove("HYPERLLAMA_HOST")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
    let host = line.split("http://").nth(1).and_then(|s| s.split_whitespace().next()).expect("address").to_string();
    Server { child, host, _dir: dir }
}

fn cli(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hyperllama"))
        .args(args)
        .env("HYPERLLAMA_HOST", &server.host)
        .output()
        .expect("runs")
}

fn ok(server: &Server, args: &[&str]) -> String {
    let out = cli(server, args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

fn fails(server: &Server, args: &[&str], needle: &str) {
    let out = cli(server, args);
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
}

#[test]
fn cli_verbs_through_a_real_server() {
    let s = start();
    let m = model();
    let m = m.to_str().expect("path");
    ok(&s, &["create", "smol", "--from", m]);
    let list = ok(&s, &["list"]);
    assert!(list.contains("smol:latest") && list.contains("b179c9523d0e"), "{list}");
    let show = ok(&s, &["show", "smol"]);
    assert!(show.contains("llama") && show.contains("Q4_1"), "{show}");
    assert!(ok(&s, &["show", "smol", "--modelfile"]).contains("FROM "));
    assert!(ok(&s, &["show", "smol", "--template"]).contains("<|im_start|>"));

    // The same greedy request gives the same text in-process and through the server.
    let prompt = "Write a long essay about the history of the Roman Empire.";
    let local = ok(&s, &["generate", m, prompt, "--temperature", "0", "-n", "12"]);
    let remote = ok(&s, &["generate", "smol", prompt, "--temperature", "0", "-n", "12", "--host", &s.host]);
    assert_eq!(local, remote);
    let v: serde_json::Value = serde_json::from_str(&ok(
        &s,
        &["generate", "smol", prompt, "--temperature", "0", "-n", "5", "--json", "--host", &s.host],
    ))
    .expect("json");
    assert_eq!(v["eval_count"], 5);

    // A model whose stored parameters make it greedy answers `run` deterministically.
    let mfdir = tempfile::tempdir().expect("tempdir");
    let greedy = mfdir.path().join("Modelfile");
    std::fs::write(&greedy, format!("FROM {m}\nPARAMETER temperature 0\n")).expect("write");
    ok(&s, &["create", "smol0", "-f", greedy.to_str().expect("p")]);
    let answer = ok(&s, &["run", "smol0", "What is the capital of France? Answer in one sentence."]);
    assert!(answer.contains("Paris"), "{answer}");
    // run with a GGUF path creates the model on the server under its file name.
    assert!(!ok(&s, &["run", m, "Say hi."]).trim().is_empty());
    assert!(ok(&s, &["list"]).contains("smollm2-135m-instruct.q4_1:latest"));

    assert!(ok(&s, &["ps"]).contains("smol:latest"));
    ok(&s, &["stop", "smol"]);
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert!(!ok(&s, &["ps"]).contains("smol:latest"));

    ok(&s, &["cp", "smol", "smol2"]);
    assert!(ok(&s, &["list"]).contains("smol2:latest"));
    ok(&s, &["rm", "smol2"]);
    assert!(!ok(&s, &["list"]).contains("smol2:latest"));
    let pulled = cli(&s, &["pull", "smol"]);
    assert!(pulled.status.success());
    assert!(String::from_utf8_lossy(&pulled.stderr).contains("success"));

    fails(&s, &["rm", "smol2"], "not found");
    fails(&s, &["show", "nope"], "not found");
    fails(&s, &["run", "nope", "hi"], "not found");
    fails(&s, &["cp", "smol", "../escape"], "invalid model name");
    let dir = tempfile::tempdir().expect("tempdir");
    let mf = dir.path().join("Modelfile");
    std::fs::write(&mf, format!("FROM {m}\nPARAMETER temperature warm\n")).expect("write");
    fails(&s, &["create", "bad", "-f", mf.to_str().expect("p")], "line 2");
    std::fs::write(
        &mf,
        format!("FROM {m}\nPARAMETER temperature 0\nPARAMETER num_predict 6\nSYSTEM \"\"\"You are a pirate.\"\"\"\n"),
    )
    .expect("write");
    ok(&s, &["create", "pirate", "-f", mf.to_str().expect("p")]);
    let params = ok(&s, &["show", "pirate", "--parameters"]);
    assert!(params.contains("num_predict") && params.contains("temperature"), "{params}");
    assert_eq!(ok(&s, &["show", "pirate", "--system"]).trim(), "You are a pirate.");
}

#[test]
fn client_verbs_without_a_server_fail_clearly() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_hyperllama")).args(["list", "--host", "127.0.0.1:9"]).output().expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not reach the HyperLlama server"));
}
