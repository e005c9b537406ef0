"""The prompt cache and speculative decoding through a real `hyperllama serve`: a restarted
server reuses its disk cache (cached tokens reported in both dialects, the same greedy answer),
a corrupt cache file is skipped and the request still answers, and /metrics shows the cache,
speculation and micro-batch counters."""

import os
import pathlib
import re
import tempfile

import httpx
import ollama
import openai

from conftest import model_path, start_server, stop

SYSTEM = "You are a careful assistant. " + "Always keep these house rules in mind when you answer. " * 30
QUESTION = "What is the capital of France? Answer in one sentence."


def import_model(base):
    client = ollama.Client(host=base)
    digest = client.create_blob(str(model_path()))
    client.create(model="smol", files={"SmolLM2-135M-Instruct.Q4_1.gguf": digest})
    return client


def ask(base):
    """One chat turn through Ollama's API (raw: the official client drops HyperLlama's
    `prompt_cache_count`)."""
    r = httpx.post(f"{base}/api/chat", timeout=300, json={
        "model": "smol", "stream": False, "options": {"temperature": 0, "num_predict": 16},
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]})
    assert r.status_code == 200, r.text
    return r.json()


def metric(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_restarted_server_reuses_its_disk_cache_and_skips_a_corrupt_entry():
    home = tempfile.mkdtemp(prefix="hyperllama-cache-")
    cache_dir = os.path.join(home, "kvcache")
    args = ("--ctx-size", "2048", "--parallel", "1", "--cache-dir", cache_dir, "--cache-ram", "64")
    proc, base = start_server(home, *args)
    try:
        import_model(base)
        first = ask(base)
        assert first["prompt_eval_count"] > 300
        metrics = httpx.get(f"{base}/metrics").text
        assert metric(metrics, "hyperllama_cache_miss_tokens_total") >= first["prompt_eval_count"] - 1
        assert "hyperllama_engine_ubatches_per_step" in metrics and "hyperllama_cache_ram_bytes" in metrics
    finally:
        stop(proc)
    entries = list(pathlib.Path(cache_dir).rglob("*.kv"))
    assert entries, "the conversation was written to the disk cache at shutdown"

    proc, base = start_server(home, *args)
    try:
        warm = ask(base)
        assert warm["message"]["content"] == first["message"]["content"]
        assert warm["prompt_cache_count"] >= first["prompt_eval_count"] - 1, warm
        ai = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        r = ai.chat.completions.create(model="smol", temperature=0, max_tokens=16, messages=[
            {"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}])
        assert r.usage.prompt_tokens_details.cached_tokens >= first["prompt_eval_count"] - 1, r.usage
        assert r.choices[0].message.content == first["message"]["content"]
        metrics = httpx.get(f"{base}/metrics").text
        assert metric(metrics, "hyperllama_cache_hit_tokens_total") > 300
        assert metric(metrics, "hyperllama_cache_disk_bytes") > 0
    finally:
        stop(proc)

    # Corrupt every entry: the next server skips them (a warning in its log) and answers right.
    for e in pathlib.Path(cache_dir).rglob("*.kv"):
        data = bytearray(e.read_bytes())
        data[-64] ^= 0xFF
        e.write_bytes(bytes(data))
    proc, base = start_server(home, *args)
    try:
        again = ask(base)
        assert again["message"]["content"] == first["message"]["content"]
        assert again["prompt_cache_count"] == 0
    finally:
        stop(proc)
    log = pathlib.Path(home, "server.log").read_text()
    assert re.search(r"prompt cache.*corrupt", log), log[-2000:]


def test_speculation_shows_in_metrics_and_changes_nothing():
    home = tempfile.mkdtemp(prefix="hyperllama-spec-")
    quote = ("The quick brown fox jumps over the lazy dog near the river bank, while the old farmer "
             "watches from his porch and the sun sets slowly behind the distant purple hills.")
    prompt = f"Repeat this text exactly, word for word:\n\n{quote}"
    answers = {}
    for mode in ("ngram", "off"):
        os.makedirs(os.path.join(home, mode))
        proc, base = start_server(os.path.join(home, mode), "--ctx-size", "2048", "--parallel", "1", "--speculative", mode,
                                  "--cache-ram", "0")
        try:
            client = import_model(base)
            r = client.generate(model="smol", prompt=prompt, options={"temperature": 0, "num_predict": 48})
            answers[mode] = r.response
            drafted = metric(httpx.get(f"{base}/metrics").text, "hyperllama_spec_draft_tokens_total")
            assert (drafted > 0) == (mode == "ngram"), (mode, drafted)
        finally:
            stop(proc)
    assert answers["ngram"] == answers["off"]
