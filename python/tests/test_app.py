"""The sidecar's HTTP layer, in process (ASGI), with the real conversion code and a scripted
backend standing in for MAX where a test is about the protocol, not about MAX."""

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from hyperllama_max.app import create_app
from hyperllama_max.backend import Busy, MaxServeBackend, Model, NotLoaded
from hyperllama_max.convert import ConversionError, convert

SECRET = "s3cret-s3cret-s3cret"


class ScriptedBackend:
    """Plays back token events; `fail_after` raises mid-stream."""

    def __init__(self, tokens, fail_after=None, busy=False):
        self.tokens, self.fail_after, self.busy = tokens, fail_after, busy
        self.models = {"m": Model(id="m", gguf="/x.gguf", state="ready")}
        self.closed = False

    def state(self):
        return "ok"

    def ready_model(self, model_id):
        if model_id not in self.models:
            raise NotLoaded(f"model {model_id!r} is not loaded")
        return self.models[model_id]

    async def generate(self, model_id, body):
        if self.busy:
            raise Busy("queue full")
        for i, t in enumerate(self.tokens):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("MAX worker died")
            yield {"token": t}
        yield {"done": True, "finish_reason": "stop", "usage": {"prompt_tokens": 3, "completion_tokens": len(self.tokens), "cached_tokens": 0}}

    async def close(self):
        self.closed = True


def client(backend, secret=SECRET):
    app = create_app(backend, SECRET)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sidecar", headers={"authorization": f"Bearer {secret}"}
    )


def run(coro):
    return asyncio.run(coro)


def test_every_endpoint_needs_the_secret():
    async def go():
        async with client(ScriptedBackend(["a"]), secret="wrong-wrong-wrong") as c:
            for method, path in [("GET", "/health"), ("GET", "/models"), ("POST", "/generate"), ("POST", "/load")]:
                r = await c.request(method, path, json={})
                assert r.status_code == 401, path
                assert "secret" in r.json()["error"]

    run(go())


def test_generate_streams_token_events_then_done():
    async def go():
        async with client(ScriptedBackend(["Hel", "lo", "!"])) as c:
            r = await c.post("/generate", json={"model": "m", "prompt": "hi", "max_tokens": 3})
            assert r.status_code == 200
            events = [json.loads(l) for l in r.text.splitlines()]
            assert [e.get("token") for e in events[:-1]] == ["Hel", "lo", "!"]
            assert events[-1]["done"] is True and events[-1]["usage"]["completion_tokens"] == 3
            r = await c.post("/generate", json={"model": "m", "prompt": "hi", "stream": False})
            assert r.json()["text"] == "Hello!" and r.json()["finish_reason"] == "stop"

    run(go())


def test_errors_have_clear_statuses_and_messages():
    async def go():
        async with client(ScriptedBackend(["a", "b"], fail_after=1)) as c:
            r = await c.post("/generate", json={"model": "nope", "prompt": "hi"})
            assert r.status_code == 404 and "not loaded" in r.json()["error"]
            r = await c.post("/generate", json={"model": "m", "prompt": "hi", "messages": []})
            assert r.status_code == 400 and "exactly one" in r.json()["error"]
            r = await c.post("/generate", json={"prompt": "hi"})
            assert r.status_code == 400 and "model" in r.json()["error"]
            r = await c.post("/load", json={"model": "m"})
            assert r.status_code == 400 and "gguf" in r.json()["error"]
            # A failure mid-stream ends the stream with an error event.
            r = await c.post("/generate", json={"model": "m", "prompt": "hi"})
            events = [json.loads(l) for l in r.text.splitlines()]
            assert events[0] == {"token": "a"} and "MAX worker died" in events[-1]["error"]
        async with client(ScriptedBackend(["a"], busy=True)) as c:
            r = await c.post("/generate", json={"model": "m", "prompt": "hi"})
            assert r.status_code == 503 and "busy" in r.json()["error"]

    run(go())


def test_a_failed_load_is_an_answer_and_the_sidecar_serves_on(tmp_path):
    backend = MaxServeBackend(tmp_path, max_command=["/bin/false"])

    async def go():
        async with client(backend) as c:
            r = await c.post("/load", json={"model": "x", "gguf": str(tmp_path / "missing.gguf"), "stream": False})
            assert r.status_code == 400 and "no such GGUF" in r.json()["error"]
            junk = tmp_path / "junk.gguf"
            junk.write_text("not a gguf at all")
            r = await c.post("/load", json={"model": "x", "gguf": str(junk)})
            lines = [json.loads(l) for l in r.text.splitlines()]
            assert "not a readable GGUF" in lines[-1]["error"], lines
            r = await c.get("/health")
            assert r.status_code == 200 and r.json()["status"] == "ok"
            assert r.json()["models"][0]["state"] == "failed"

    run(go())


def test_conversion_matches_llama_cpp_tokenizer_and_config(gguf, tmp_path):
    from tokenizers import Tokenizer

    out = convert(gguf, tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_key_value_heads"]) == (576, 30, 3)
    assert config["tie_word_embeddings"] is True
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    # Token ids from llama.cpp's own tokenizer (llama-server /tokenize) for the same GGUF.
    assert tok.encode("Hello world! 12345 apples").ids == [19556, 905, 17, 216, 33, 34, 35, 36, 37, 13855]
    assert tok.encode("<|im_start|>user\nHi there<|im_end|>").ids == [1, 4093, 198, 26843, 665, 2]
    tcfg = json.loads((out / "tokenizer_config.json").read_text())
    # Chat turns end with <|im_end|>, which must stop generation.
    assert tcfg["eos_token"] == "<|im_end|>" and tok.token_to_id("<|im_end|>") in config["eos_token_id"]
    assert "<|im_start|>" in tcfg["chat_template"]
    assert not list(tmp_path.glob(".m.tmp-*")), "no temporary directory left behind"


def test_conversion_refuses_what_it_cannot_convert(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 10)
    with pytest.raises(ConversionError):
        convert(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
