"""Production proof on a real server: a load of 64 concurrent clients over both APIs with
random disconnects, and a `kill -9` in the middle of a hub pull. Each test starts its own
`hyperllama serve` (own store, ephemeral loopback port)."""

import asyncio
import hashlib
import os
import pathlib
import random
import signal
import subprocess
import tempfile
import time

import httpx
import ollama
import pytest

from conftest import BINARY, model_path, start_server, stop

import hubserver


def rss_kib(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def scheduler(base):
    ps = httpx.get(f"{base}/api/ps", timeout=10).json()
    return ps["models"][0]["scheduler"] if ps["models"] else None


async def one_request(client, base, rng, stats):
    """One request of a random kind; some hang up early."""
    kind = rng.choice(["generate", "generate-stream", "chat", "chat-stream", "oai-chat", "oai-chat-stream",
                       "oai-completion-stream"])
    disconnect = kind.endswith("stream") and rng.random() < 0.2
    prompt = f"Say something about the number {rng.randint(1, 1000)}."
    n = rng.randint(4, 12)
    if kind.startswith("generate"):
        url, body = "/api/generate", {"model": "smol", "prompt": prompt, "stream": kind.endswith("stream"),
                                      "options": {"num_predict": n}}
    elif kind.startswith("chat"):
        url, body = "/api/chat", {"model": "smol", "messages": [{"role": "user", "content": prompt}],
                                  "stream": kind.endswith("stream"), "options": {"num_predict": n}}
    elif kind.startswith("oai-chat"):
        url, body = "/v1/chat/completions", {"model": "smol", "messages": [{"role": "user", "content": prompt}],
                                             "max_tokens": n, "stream": kind.endswith("stream")}
    else:
        url, body = "/v1/completions", {"model": "smol", "prompt": prompt, "max_tokens": n, "stream": True}
    async with client.stream("POST", base + url, json=body) as r:
        stats.setdefault(r.status_code, 0)
        stats[r.status_code] += 1
        if disconnect:
            async for _ in r.aiter_bytes():
                break
            stats["disconnected"] = stats.get("disconnected", 0) + 1
            return
        data = b""
        async for chunk in r.aiter_bytes():
            data += chunk
        if r.status_code == 200:
            assert data, f"{url}: empty body"


async def load(base, total, concurrency, seed):
    rng = random.Random(seed)
    stats = {}
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        async def guarded():
            async with sem:
                await one_request(client, base, rng, stats)
        await asyncio.gather(*(guarded() for _ in range(total)))
    return stats


def wait_idle(base, deadline_s=60):
    end = time.time() + deadline_s
    while time.time() < end:
        s = scheduler(base)
        if s and s["active"] == 0 and s["waiting"] == 0:
            return s
        time.sleep(0.1)
    raise AssertionError(f"sequences still held: {scheduler(base)}")


def test_load_of_64_clients_with_disconnects_leaves_no_5xx_and_frees_everything():
    home = tempfile.mkdtemp(prefix="hyperllama-load-")
    # The prompt cache keeps finished conversations up to its budget: 32 MiB here, so that
    # growth past it would be a leak.
    proc, base = start_server(home, "--ctx-size", "512", "--parallel", "8", "--keep-alive=-1", "--cache-ram", "32",
                              "--cache-dir", "off")
    try:
        ollama.Client(host=base).create(model="smol", files={
            "m.gguf": ollama.Client(host=base).create_blob(str(model_path()))})
        # Warm-up: every sequence used once, so the baseline includes the KV pages they touch.
        asyncio.run(load(base, 64, 64, seed=1))
        wait_idle(base)
        before = rss_kib(proc.pid)
        stats = asyncio.run(load(base, 500, 64, seed=2))
        s = wait_idle(base)
        after = rss_kib(proc.pid)
        fives = {k: v for k, v in stats.items() if isinstance(k, int) and k >= 500}
        assert not fives, f"5xx under load: {stats}"
        assert stats.get(200, 0) == 500, stats
        assert stats.get("disconnected", 0) > 10, stats
        assert s["requests_cancelled"] >= 1, s
        assert after <= before * 1.10 + 32 * 1024, f"RSS grew from {before} KiB to {after} KiB"
        metrics = httpx.get(f"{base}/metrics").text
        held = sum(float(l.split()[-1]) for l in metrics.splitlines() if l.startswith("hyperllama_cache_ram_bytes{"))
        assert 0 < held <= 32 << 20, held
        # Still serving normally.
        r = httpx.post(f"{base}/api/generate", json={"model": "smol", "prompt": "Hi", "stream": False,
                                                     "options": {"num_predict": 3}}, timeout=60)
        assert r.status_code == 200 and r.json()["done"]
    finally:
        stop(proc)


def test_kill_9_during_a_pull_leaves_a_usable_store_and_the_pull_resumes():
    hub_url, hub = hubserver.start(str(model_path()), delay=0.05)
    home = tempfile.mkdtemp(prefix="hyperllama-kill-")
    env = {"HF_ENDPOINT": hub_url}
    proc, base = start_server(home, "--ctx-size", "512", env_extra=env)
    try:
        # A model already in the store, with a digest of its own (the same weights, 64 bytes
        # of padding after them), so that the pull below really downloads.
        padded = pathlib.Path(home, "padded.gguf")
        padded.write_bytes(model_path().read_bytes() + bytes(64))
        ollama.Client(host=base).create(model="smol", files={
            "m.gguf": ollama.Client(host=base).create_blob(str(padded))})
        cli_env = dict(os.environ, HYPERLLAMA_HOST=base)
        pull = subprocess.Popen([str(BINARY), "pull", "hf.co/smol/SmolLM2-GGUF:Q4_1"], env=cli_env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        blobs = pathlib.Path(home, "models", "blobs")
        end = time.time() + 60
        while time.time() < end and not any(p.name.startswith(".partial") or "partial" in p.name
                                            for p in blobs.iterdir()):
            time.sleep(0.05)
        time.sleep(0.5)
        partial = [p for p in blobs.iterdir() if "partial" in p.name]
        assert partial, f"no partial download seen in {list(blobs.iterdir())}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        pull.wait(timeout=30)
        assert pull.returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    # Restart on the same store: what was there is intact, the half-pulled model is not listed.
    proc, base = start_server(home, "--ctx-size", "512", env_extra=env)
    try:
        cli_env = dict(os.environ, HYPERLLAMA_HOST=base)
        listing = subprocess.run([str(BINARY), "list"], env=cli_env, capture_output=True, text=True, timeout=60)
        assert listing.returncode == 0, listing.stderr
        assert "smol:latest" in listing.stdout and "SmolLM2-GGUF" not in listing.stdout, listing.stdout
        r = httpx.post(f"{base}/api/generate", json={"model": "smol", "prompt": "Hi", "stream": False,
                                                     "options": {"num_predict": 3}}, timeout=60)
        assert r.status_code == 200
        again = subprocess.run([str(BINARY), "pull", "hf.co/smol/SmolLM2-GGUF:Q4_1"], env=cli_env,
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        sha = hashlib.sha256(model_path().read_bytes()).hexdigest()
        assert (pathlib.Path(home, "models", "blobs") / f"sha256-{sha}").exists()
        assert not [p for p in pathlib.Path(home, "models", "blobs").iterdir() if "partial" in p.name]
        r = httpx.post(f"{base}/api/generate", json={"model": "smol/SmolLM2-GGUF:q4_1", "prompt": "Hi",
                                                     "stream": False, "options": {"num_predict": 3}}, timeout=60)
        assert r.status_code == 200, r.text
    finally:
        stop(proc)
        hub.shutdown()
