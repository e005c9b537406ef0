"""The CLI against `hyperllama serve` and the loopback hub: pull with progress, list with the
digest, show with the memory estimate, run by name, rm."""

import hashlib
import os
import subprocess

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
    line = next(l for l in listing.splitlines() if l.startswith("smol/SmolLM2-GGUF:q4_1"))
    assert sha[:12] in line
    show = cli(server, "show", "smol/SmolLM2-GGUF:q4_1").stdout
    assert "llama" in show and "Q4_1" in show and "KV cache" in show and "total" in show
    out = cli(server, "run", "hf.co/smol/SmolLM2-GGUF:Q4_1", "Say hi.")
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    assert cli(server, "rm", "smol/SmolLM2-GGUF:q4_1").returncode == 0
    assert "smol/SmolLM2-GGUF:q4_1" not in cli(server, "list").stdout
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
