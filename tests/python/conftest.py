"""Starts a real `hyperllama serve` on an ephemeral loopback port with an empty store, and
imports the SmolLM2 test model through the official ollama client (create_blob + create)."""

import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import ollama
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = pathlib.Path(os.environ.get("HYPERLLAMA_BIN", ROOT / "target" / "release" / "hyperllama"))


def model_path() -> pathlib.Path:
    p = os.environ.get("HYPERLLAMA_TEST_MODEL")
    if p:
        return pathlib.Path(p)
    p = pathlib.Path.home() / ".cache/hyperllama/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert p.exists(), "test model missing: run scripts/fetch-model.sh or set HYPERLLAMA_TEST_MODEL"
    return p


def start_server(home, *args, env_extra=None):
    """Starts `hyperllama serve` on an ephemeral loopback port with its store under `home`
    (its log in `home/server.log`); returns the process and its base URL."""
    env = dict(os.environ, HYPERLLAMA_MODELS=os.path.join(home, "models"), RUST_LOG="warn")
    env.pop("HYPERLLAMA_HOST", None)
    env.pop("HF_HUB_OFFLINE", None)
    env.update(env_extra or {})
    proc = subprocess.Popen(
        [str(BINARY), "serve", "--host", "127.0.0.1:0", *args],
        # stderr to a file: a pipe nobody reads would block the server once full.
        stdout=subprocess.PIPE, stderr=open(os.path.join(home, "server.log"), "w"), text=True, env=env,
    )
    line = proc.stdout.readline()
    m = re.search(r"listening on (https?://127\.0\.0\.1:\d+)", line)
    assert m, f"server did not start: {line!r}"
    return proc, m.group(1)


def stop(proc):
    """SIGTERM, which must stop the server within 20 s."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("the server did not shut down within 20 s of SIGTERM")


def descendants(pid):
    """Every process below `pid`, with its command line."""
    children = {}
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = {}, [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            try:
                out[c] = (pathlib.Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
            todo.append(c)
    return out


def alive(pid):
    try:
        os.kill(pid, 0)
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


@pytest.fixture(scope="session")
def server():
    assert BINARY.exists(), f"{BINARY} missing: build with cargo build --release -p hyperllama"
    import hubserver

    hub_url, hub = hubserver.start(str(model_path()))
    home = tempfile.mkdtemp(prefix="hyperllama-pytest-")
    proc, base = start_server(home, "--ctx-size", "2048", env_extra={"HF_ENDPOINT": hub_url})
    try:
        client = ollama.Client(host=base)
        digest = client.create_blob(str(model_path()))
        client.create(model="smol", files={"SmolLM2-135M-Instruct.Q4_1.gguf": digest})
        yield base
    finally:
        hub.shutdown()
        stop(proc)


@pytest.fixture()
def oc(server):
    return ollama.Client(host=server)


@pytest.fixture()
def ai(server):
    import openai

    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=120)


# A ChatML template that opens a reasoning block at the start of the answer (as DeepSeek-R1's
# and Qwen3's do), unless the request turns thinking off (Qwen3's `enable_thinking`).
THINK_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{% else %}{{ '<think>\\n' }}{% endif %}{% endif %}"
)


@pytest.fixture(scope="session")
def think_model(server):
    """The test model's weights with a reasoning chat template written into a copy of the GGUF
    (by the `gguf` package's own metadata rewriter), created in the server as "smol-think"."""
    out = pathlib.Path(tempfile.mkdtemp(prefix="hyperllama-think-")) / "smol-think.gguf"
    subprocess.run(
        [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--chat-template", THINK_TEMPLATE, "--force",
         str(model_path()), str(out)],
        check=True, capture_output=True)
    client = ollama.Client(host=server)
    digest = client.create_blob(str(out))
    client.create(model="smol-think", files={"smol-think.gguf": digest})
    return "smol-think"
