"""The MAX engine end to end: `hyperllama generate --engine max`, `hyperllama serve` choosing
MAX per model (Modelfile parameter) and per request (options.engine) with the official clients,
and the sidecar killed mid-request: the request gets a clean error, the supervisor brings the
sidecar back, the next request is served, and shutdown leaves no MAX process behind."""

import json
import os
import pathlib
import signal
import subprocess
import tempfile
import time

import httpx
import ollama
import openai
import pytest

from conftest import BINARY, alive, descendants, model_path, start_server, stop

QUESTION = "What is the capital of France? Answer in one sentence."


def sidecar_pid(server_pid):
    pids = [p for p, cmd in descendants(server_pid).items() if "hyperllama_max" in cmd]
    return pids[0] if pids else None


def test_generate_with_the_max_engine_from_the_cli():
    r = subprocess.run(
        [str(BINARY), "generate", "--engine", "max", str(model_path()), QUESTION, "--temperature", "0",
         "--max-tokens", "24", "--json"],
        capture_output=True, text=True, timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    out = json.loads(r.stdout)
    assert "Paris" in out["response"], out
    assert out["done_reason"] == "stop" and out["eval_count"] > 0
    # An unknown engine is a clear CLI error.
    r = subprocess.run([str(BINARY), "generate", "--engine", "nope", str(model_path()), "hi"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "unknown engine" in r.stderr and "llamacpp" in r.stderr


def test_serve_picks_max_per_model_and_per_request_and_survives_a_sidecar_kill():
    home = tempfile.mkdtemp(prefix="hyperllama-max-")
    proc, base = start_server(home, "--keep-alive=-1")
    sidecars = []
    try:
        oc = ollama.Client(host=base, timeout=900)
        digest = oc.create_blob(str(model_path()))
        files = {"SmolLM2-135M-Instruct.Q4_1.gguf": digest}
        oc.create(model="smol-max", files=files, parameters={"engine": "max"})
        oc.create(model="smol", files=files)

        # The Modelfile parameter picks MAX.
        r = oc.generate(model="smol-max", prompt=QUESTION, options={"temperature": 0, "num_predict": 24})
        assert "Paris" in r.response, r.response
        ps = {m["name"]: m for m in httpx.get(f"{base}/api/ps", timeout=30).json()["models"]}
        assert ps["smol-max:latest"]["engine"] == "max"
        sidecars.append(sidecar_pid(proc.pid))
        assert sidecars[0], descendants(proc.pid)

        # The OpenAI dialect on the same model, streaming.
        ai = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)
        chunks = ai.chat.completions.create(
            model="smol-max", messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=24,
            stream=True,
        )
        assert "Paris" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

        # The request's options.engine wins over the default; an unknown engine is a 400.
        r = oc.generate(model="smol", prompt=QUESTION, options={"temperature": 0, "num_predict": 24, "engine": "max"})
        assert "Paris" in r.response
        with pytest.raises(ollama.ResponseError) as e:
            oc.generate(model="smol", prompt="hi", options={"engine": "tensorrt"})
        assert e.value.status_code == 400 and "llamacpp" in str(e.value)
        # Without a wish, GGUF goes to llama.cpp.
        r = oc.generate(model="smol", prompt=QUESTION, options={"temperature": 0, "num_predict": 24})
        ps = {m["name"]: m for m in httpx.get(f"{base}/api/ps", timeout=30).json()["models"]}
        assert ps["smol:latest"]["engine"] == "llamacpp"

        # Measured speeds: `bench --record` writes this engine's numbers for the model's weights
        # into the server's store ...
        env = dict(os.environ, HYPERLLAMA_MODELS=os.path.join(home, "models"))
        r = subprocess.run([str(BINARY), "bench", str(model_path()), "--engine", "llamacpp", "--record", "-n", "8",
                            "-i", "1", "--warmup", "0", "--prompt-tokens", "16"],
                           capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stderr
        measurements_file = pathlib.Path(home, "models", "measurements.json")
        measured = json.loads(measurements_file.read_text())
        assert measured[digest.removeprefix("sha256:")]["llamacpp"]["decode_tps"] > 0, measured
        # ... and with MAX on record as faster for these weights (this CPU never measures it so:
        # the numbers are written here), a request that names no engine goes to MAX.
        measured[digest.removeprefix("sha256:")]["max"] = {
            "decode_tps": 1e6, "ttft_ms": 1.0, "measured_at": "2026-01-01T00:00:00Z"}
        measurements_file.write_text(json.dumps(measured))
        r = oc.generate(model="smol", prompt=QUESTION, options={"temperature": 0, "num_predict": 24})
        assert "Paris" in r.response
        ps = {m["name"]: m for m in httpx.get(f"{base}/api/ps", timeout=30).json()["models"]}
        assert ps["smol:latest"]["engine"] == "max"

        # Kill the sidecar in the middle of a streaming request.
        stream = oc.generate(model="smol-max", prompt="Count from 1 to 300, one number per line.", stream=True,
                             options={"temperature": 0, "num_predict": 400})
        got, error = [], None
        t0 = time.monotonic()
        try:
            for part in stream:
                got.append(part.response)
                if len(got) == 3:
                    os.kill(sidecars[0], signal.SIGKILL)
        except ollama.ResponseError as e:
            error = str(e)
        assert len(got) >= 3
        assert error and "MAX" in error, f"the stream should end with an error, got {got[-3:]} / {error}"
        assert time.monotonic() - t0 < 120, "the in-flight request must not hang"

        # The supervisor brings the sidecar back; the model is loaded again on the next request.
        r = oc.generate(model="smol-max", prompt=QUESTION, options={"temperature": 0, "num_predict": 24})
        assert "Paris" in r.response
        new = sidecar_pid(proc.pid)
        assert new and new != sidecars[0], "a new sidecar process serves"
        sidecars.append(new)
        max_procs = [p for p, cmd in descendants(proc.pid).items() if " serve " in cmd or cmd.endswith(" serve")]
        assert max_procs, "max serve runs under the sidecar"
    finally:
        everything = list(descendants(proc.pid))
        stop(proc)
    # Shutdown stops the sidecar and every MAX process under it.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(alive(p) for p in everything):
        time.sleep(0.5)
    left = [p for p in everything if alive(p)]
    assert not left, f"processes left after shutdown: {left}"
