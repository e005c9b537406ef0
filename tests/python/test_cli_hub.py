"""The CLI against `hyperllama serve` and the loopback hub: pull with progress, list with the
digest, show with the memory estimate, run by name, rm; and the in-process `generate` with a
hub id, pulled through the same loopback hub."""

import hashlib
import os
import subprocess
import tempfile

import hubserver
from conftest import BINARY, model_path


def cli(server, *args):
    env = dict(os.environ, HYPERLLAMA_HOST=server)
    return subprocess.run([str(BINARY), *args], capture_output=True, text=True, env=env, timeout=300)


def test_pull_list_show_run_rm(server):
    r = cli(server, "pull", "hf.co/smol/SmolLM2-GGUF:Q4_1")
    assert r.returncode == 0, r.stderr
    assert "pulling manifest" in r.stderr and "success" in r.stderr
    sha = hashlib.sha256(model_path().read_bytes()).hexdigest()
    listing = cli(server, "list").stdout
    # Listed as typed, with Ollama's relative time.
    line = next(l for l in listing.splitlines() if l.startswith("hf.co/smol/SmolLM2-GGUF:Q4_1 "))
    assert sha[:12] in line and " ago" in line, line
    # One name grammar: every spelling of it names the model, for every verb.
    show = cli(server, "show", "smol/SmolLM2-GGUF:q4_1").stdout
    assert "llama" in show and "Q4_1" in show and "KV cache" in show and "total" in show
    out = cli(server, "run", "hf.co/smol/SmolLM2-GGUF:Q4_1", "Say hi.")
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    r = cli(server, "rm", "hf.co/smol/SmolLM2-GGUF:Q4_1")
    assert r.returncode == 0, r.stderr
    assert "SmolLM2-GGUF" not in cli(server, "list").stdout
    # The shared blob survives: smol still runs.
    assert cli(server, "run", "smol", "Say hi.").returncode == 0


def test_bad_names_and_missing_repos(server):
    for bad in ["../../etc/passwd", "a b", "/abs/path"]:
        r = cli(server, "show", bad)
        assert r.returncode != 0 and "invalid model name" in r.stderr, (bad, r.stderr)
    r = cli(server, "pull", "hf.co/nobody/nothing")
    assert r.returncode != 0 and "not found" in r.stderr


def test_run_pulls_a_missing_hub_model(server):
    r = cli(server, "run", "hf.co/smol/SmolLM2-GGUF:Q4_1", "Say hi.")
    assert r.returncode == 0, r.stderr
    assert "success" in r.stderr and r.stdout.strip()
    assert cli(server, "rm", "smol/SmolLM2-GGUF:q4_1").returncode == 0


def test_generate_takes_a_hub_id_and_pulls_it_first():
    """The seed's own command shape: `hyperllama generate owner/repo[:QUANT] PROMPT`, in
    process, with no server: the repo is pulled into the store (progress, checksum), then the
    answer streams; the second time it is in the store already."""
    hub_url, hub = hubserver.start(str(model_path()))
    home = tempfile.mkdtemp(prefix="hyperllama-gen-")
    env = dict(os.environ, HF_ENDPOINT=hub_url, HYPERLLAMA_HOME=home, HYPERLLAMA_MODELS=os.path.join(home, "models"))
    env.pop("HF_HUB_OFFLINE", None)
    try:
        def generate(name):
            return subprocess.run(
                [str(BINARY), "generate", name, "What is the capital of France? Answer in one sentence.",
                 "--temperature", "0", "-n", "16", "--ctx-size", "1024"],
                capture_output=True, text=True, env=env, timeout=300,
            )
        first = generate("smol/SmolLM2-GGUF:Q4_1")
        assert first.returncode == 0, first.stderr
        assert "pulling" in first.stderr and "success" in first.stderr, first.stderr
        assert "Paris" in first.stdout, first.stdout
        again = generate("hf.co/smol/SmolLM2-GGUF:Q4_1")
        assert again.returncode == 0, again.stderr
        assert "pulling" not in again.stderr, "found in the store under its other spelling"
        assert again.stdout == first.stdout, "the same greedy answer"
        missing = generate("nobody/nothing:Q4_1")
        last = missing.stderr.strip().splitlines()[-1]
        assert missing.returncode != 0 and last.startswith("Error:"), missing.stderr
        assert "nobody/nothing" in last and "not found" in last, missing.stderr
        neither = generate("no-such-model")
        assert neither.returncode != 0 and "not a .gguf file, a model in the store" in neither.stderr, neither.stderr
    finally:
        hub.shutdown()
