"""Architectures beyond the SmolLM2 test model's `llama`, for real: tiny random-weight GGUFs
(tiny_gguf.py: qwen2, qwen3, gemma3, phi3, and llama with a tekken tokenizer; a few MB each,
made here, not committed) loaded by the real engine, through the CLI and through the server
(Ollama's official client): they generate a fixed number of tokens, embed, chat, and the
registry reports their family, parameter count, quantization and context. Then a base model
(no chat template): /api/generate passes the prompt through, /api/chat renders the documented
plain transcript, and `show` says which is in use."""

import json
import os
import pathlib
import subprocess

import ollama
import pytest

import tiny_gguf
from conftest import BINARY, model_path

ARCHS = ["qwen2", "qwen3", "gemma3", "phi3", "tekken"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-gguf")
    facts = {a: tiny_gguf.build(a, str(d / f"{a}.gguf"), str(model_path())) for a in ARCHS}
    facts["base"] = tiny_gguf.build("llama", str(d / "base.gguf"), str(model_path()), chat_template=False)
    return facts


def create(oc, name, path):
    digest = oc.create_blob(path)
    oc.create(model=name, files={pathlib.Path(path).name: digest})


@pytest.mark.parametrize("arch", ARCHS)
def test_the_cli_generates_from_each_architecture(tiny, arch):
    f = tiny[arch]
    r = subprocess.run([str(BINARY), "generate", f["path"], "Hello", "-n", "8", "--temperature", "0", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["eval_count"] == 8 or out.get("done_reason") == "stop", out
    # llama.cpp's own log stays out of the way by default.
    assert "llama_model_loader" not in r.stderr and "load_tensors" not in r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize("arch", ARCHS)
def test_the_server_loads_generates_embeds_and_reports_each_architecture(oc, tiny, arch):
    f = tiny[arch]
    name = f"tiny-{arch}"
    create(oc, name, f["path"])
    shown = oc.show(name)
    assert shown.details.family == f["architecture"], shown.details
    assert shown.details.quantization_level == "F16", shown.details
    info = shown.modelinfo
    assert info["general.architecture"] == f["architecture"]
    assert info["general.parameter_count"] == f["parameter_count"], (info["general.parameter_count"], f)
    assert info[f"{f['architecture']}.context_length"] == f["context_length"]
    assert "completion" in shown.capabilities
    r = oc.generate(model=name, prompt="Once upon a time", options={"num_predict": 8, "temperature": 0})
    assert r.done and r.eval_count == 8 or r.done_reason == "stop", r
    again = oc.generate(model=name, prompt="Once upon a time", options={"num_predict": 8, "temperature": 0})
    assert again.response == r.response  # greedy: the same tokens
    c = oc.chat(model=name, messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 4})
    assert c.done and c.prompt_eval_count > 1
    e = oc.embed(model=name, input=["one", "two words"])
    assert len(e.embeddings) == 2 and all(len(v) == f["embedding_length"] for v in e.embeddings)
    assert e.embeddings[0] != e.embeddings[1]
    oc.delete(name)


def test_a_base_model_passes_prompts_through(oc, tiny, server):
    import requests

    f = tiny["base"]
    create(oc, "tiny-base", f["path"])
    shown = oc.show("tiny-base")
    assert shown.template == "{{ .Prompt }}"
    raw = requests.post(f"{server}/api/show", json={"model": "tiny-base"}, timeout=30).json()
    assert "plain transcript" in raw["chat_format"], raw.get("chat_format")
    cli = subprocess.run([str(BINARY), "show", "tiny-base"], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, HYPERLLAMA_HOST=server))
    assert cli.returncode == 0 and "plain transcript" in cli.stdout, (cli.stdout, cli.stderr)
    # Not raw, no template: the prompt is passed through as it is, as Ollama's default
    # template does; the same tokens as a raw request.
    r = oc.generate(model="tiny-base", prompt="The capital of France is", options={"num_predict": 6, "temperature": 0})
    raw_r = oc.generate(model="tiny-base", prompt="The capital of France is", raw=True,
                        options={"num_predict": 6, "temperature": 0})
    assert r.done and r.response == raw_r.response and r.prompt_eval_count == raw_r.prompt_eval_count
    # A chat gets the plain transcript: "User: ...\nAssistant:".
    t = requests.post(f"{server}/apply-template", json={"model": "tiny-base", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}, timeout=30).json()
    assert t["prompt"] == "System: Be brief.\nUser: Hi\nAssistant:", t
    c = oc.chat(model="tiny-base", messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 4})
    assert c.done
    oc.delete("tiny-base")


def test_an_unknown_architecture_is_named(oc, tmp_path):
    bad = tmp_path / "unknown-arch.gguf"
    f = tiny_gguf.build("llama", str(bad), str(model_path()))
    data = bytearray(pathlib.Path(f["path"]).read_bytes())
    # Same length, so the file stays well-formed: "llama" -> "zlama" in general.architecture
    # and every llama.* key.
    data = data.replace(b"llama.", b"zlama.").replace(b"\x05\x00\x00\x00\x00\x00\x00\x00llama",
                                                      b"\x05\x00\x00\x00\x00\x00\x00\x00zlama")
    bad.write_bytes(bytes(data))
    digest = oc.create_blob(str(bad))
    with pytest.raises(ollama.ResponseError) as e:
        oc.create(model="tiny-unknown", files={"unknown-arch.gguf": digest})
        oc.generate(model="tiny-unknown", prompt="x", options={"num_predict": 1})
    assert "zlama" in str(e.value), e.value
