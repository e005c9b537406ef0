//! `hyperllama serve` as a real process, driven by the CLI's own verbs.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

fn model() -> PathBuf {
    hyperllama_testutil::model_path()
}

struct Server {
    child: Child,
    host: String,
    dir: tempfile::TempDir,
}

impl Server {
    /// The server's model store.
    fn models(&self) -> PathBuf {
        self.dir.path().join("models")
    }
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
    // One line: where it listens, its store, and where its web UI is.
    assert!(line.trim_end().ends_with(&format!("web chat and dashboard at http://{host}/ui/)")), "{line}");
    Server { child, host, dir }
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
    hyperllama_testutil::eventually_blocking(std::time::Duration::from_secs(10), "smol to be unloaded", || {
        !ok(&s, &["ps"]).contains("smol:latest")
    });

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

    // In process, a store name resolves as the server resolves it, with its Modelfile
    // (SYSTEM, PARAMETERs): the same answer as through the server.
    let via_server = ok(&s, &["generate", "pirate", "Who are you?", "--host", &s.host]);
    let out = Command::new(env!("CARGO_BIN_EXE_hyperllama"))
        .args(["generate", "pirate", "Who are you?"])
        .env("HYPERLLAMA_MODELS", s.models())
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), via_server);
}

#[test]
fn print_config_into_a_closed_pipe_exits_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hyperllama"))
        .args(["serve", "--print-config"])
        .env("OLLAMA_NUM_PARALLEL", "7")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    // Close the pipe before the table is written (what `| head -1` does to the rest of it):
    // every write then fails with EPIPE.
    drop(child.stdout.take().expect("stdout"));
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
    // And in full, the Ollama variable is used and named as the source.
    let full = Command::new(env!("CARGO_BIN_EXE_hyperllama"))
        .args(["serve", "--print-config"])
        .env("OLLAMA_NUM_PARALLEL", "7")
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&full.stdout);
    let line = text.lines().find(|l| l.starts_with("parallel ")).expect("a parallel line");
    assert!(line.contains(" 7 ") && line.contains("env OLLAMA_NUM_PARALLEL"), "{line}");
}

#[test]
fn client_verbs_without_a_server_fail_clearly() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_hyperllama")).args(["list", "--host", "127.0.0.1:9"]).output().expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not reach the HyperLlama server"));
}
