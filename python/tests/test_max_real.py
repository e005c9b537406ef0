"""MAX for real: the SmolLM2 GGUF converted, loaded into a `max serve` child on this CPU,
generating through the sidecar's backend; cancellation and unload. The first run on a machine
compiles the model (minutes; cached in ~/.cache/modular)."""

import asyncio
import os

import pytest

from hyperllama_max.backend import MaxServeBackend, NotLoaded

PROMPT = "<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def cache_dir():
    return os.environ.get("HYPERLLAMA_MAX_CACHE", os.path.expanduser("~/.cache/hyperllama/max"))


def test_max_generates_cancels_and_unloads(gguf, cache_dir):
    async def go():
        backend = MaxServeBackend(cache_dir)
        progress = []
        try:
            model = await backend.load("smol", str(gguf), {"max_length": 4096, "max_batch_size": 4}, progress.append)
            assert model.state == "ready" and progress[-1] == "ready"
            assert any("preparing" in p for p in progress)

            events = [e async for e in backend.generate("smol", {"prompt": PROMPT, "max_tokens": 24, "temperature": 0})]
            text = "".join(e.get("token", "") for e in events)
            assert "Paris" in text, text
            done = events[-1]
            assert done["done"] and done["finish_reason"] == "stop", done  # stopped at <|im_end|>
            assert done["usage"]["prompt_tokens"] > 10 and 0 < done["usage"]["completion_tokens"] < 24

            # Dropping a stream mid-way cancels it; the model serves the next request.
            stream = backend.generate("smol", {"prompt": "Count from 1 to 200:", "max_tokens": 400, "temperature": 0})
            got = [await anext(stream) for _ in range(3)]
            assert all("token" in e for e in got)
            await stream.aclose()
            events = [e async for e in backend.generate("smol", {"prompt": PROMPT, "max_tokens": 24, "temperature": 0})]
            assert "Paris" in "".join(e.get("token", "") for e in events)

            pid = model.process.pid
            assert await backend.unload("smol")
            with pytest.raises(NotLoaded):
                backend.ready_model("smol")
            # The max serve group (its workers too) is gone within seconds.
            for _ in range(40):
                try:
                    os.killpg(pid, 0)
                except ProcessLookupError:
                    break
                await asyncio.sleep(0.25)
            else:
                raise AssertionError(f"max serve's process group {pid} is still there")
        finally:
            await backend.close()

    asyncio.run(go())
