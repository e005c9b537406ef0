"""MAX behind the sidecar: one supervised ``max serve`` child per loaded model.

Why a child per model rather than MAX's pipeline API in this process: ``max serve`` is MAX's
stable, documented surface. It brings MAX's own continuous batching, chunked prefill, prefix
caching and streaming, while the in-process pipeline API (``max.entrypoints.llm.LLM``) returns
whole strings and its lower-level classes change between releases. A child is also a fault
boundary: a model that crashes MAX takes down its own process, not the sidecar nor the other
models, and unloading a model gives all its memory back to the system.

Each child listens on a loopback port of its own; this module talks to it with its OpenAI API
and turns the server-sent events into the sidecar's token events.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import httpx

from .convert import ConversionError, prepared_dir


class LoadError(Exception):
    """A model could not be loaded (the message says why)."""


class NotLoaded(Exception):
    pass


class Busy(Exception):
    """MAX refused the request for lack of room (the caller may retry)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def max_version() -> str:
    try:
        from importlib.metadata import version

        return version("max")
    except Exception:  # noqa: BLE001 - MAX missing is reported, not raised
        return "not installed"


@dataclass
class Model:
    id: str
    gguf: str
    directory: str = ""
    state: str = "loading"  # loading | ready | failed
    detail: str = ""
    port: int = 0
    process: asyncio.subprocess.Process | None = None
    log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))
    started: float = field(default_factory=time.monotonic)
    load_seconds: float = 0.0

    def public(self) -> dict[str, Any]:
        return {
            "model": self.id,
            "gguf": self.gguf,
            "directory": self.directory,
            "state": self.state,
            "detail": self.detail,
            "pid": self.process.pid if self.process else None,
            "load_seconds": round(self.load_seconds, 3),
        }


class MaxServeBackend:
    """Loads GGUF models into ``max serve`` children and generates with them."""

    def __init__(self, cache_dir: Path, max_command: list[str] | None = None, ready_timeout: float = 900.0):
        self.cache_dir = Path(cache_dir)
        # `max` next to this interpreter (the sidecar's own virtual environment).
        self.max_command = max_command or [str(Path(sys.executable).with_name("max"))]
        self.ready_timeout = ready_timeout
        self.models: dict[str, Model] = {}
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0))
        self._lock = asyncio.Lock()

    def state(self) -> str:
        if any(m.state == "loading" for m in self.models.values()):
            return "loading"
        return "ok"

    async def load(self, model_id: str, gguf: str, options: dict[str, Any], progress: Callable[[str], None]) -> Model:
        async with self._lock:
            existing = self.models.get(model_id)
            if existing and existing.state == "ready" and existing.gguf == gguf and _alive(existing):
                return existing
            if existing:
                await self._stop(existing)
            model = Model(id=model_id, gguf=gguf)
            self.models[model_id] = model
        try:
            await self._start(model, options, progress)
        except Exception as e:
            model.state, model.detail = "failed", str(e)
            await self._stop(model, forget=False)
            raise
        return model

    async def _start(self, model: Model, options: dict[str, Any], progress: Callable[[str], None]) -> None:
        path = Path(model.gguf)
        if not path.is_file():
            raise LoadError(f"no such GGUF file: {path}")
        progress("preparing a float32 Hugging Face directory from the GGUF (once per digest)")
        try:
            directory = await asyncio.to_thread(prepared_dir, path, self.cache_dir / "prepared", progress)
        except ConversionError as e:
            raise LoadError(str(e)) from e
        model.directory = str(directory)
        model.port = _free_port()
        args = [
            *self.max_command, "serve",
            "--model", str(directory),
            "--served-model-name", model.id,
            "--devices", str(options.get("devices") or "cpu"),
            "--host", "127.0.0.1",
            "--port", str(model.port),
        ]  # fmt: skip
        if options.get("max_length"):
            args += ["--max-length", str(int(options["max_length"]))]
        if options.get("max_batch_size"):
            args += ["--max-batch-size", str(int(options["max_batch_size"]))]
        env = {**os.environ, "MAX_SERVE_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        # max serve's metrics endpoint defaults to a fixed port (8001): give each child its own.
        env["MAX_SERVE_METRICS_ENDPOINT_PORT"] = str(_free_port())
        progress("starting max serve (the first start on a machine compiles the model: minutes)")
        model.process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its workers form one group, stopped together
            preexec_fn=_die_with_parent,
        )
        reader = asyncio.create_task(self._read_log(model, progress))
        deadline = time.monotonic() + self.ready_timeout
        url = f"http://127.0.0.1:{model.port}/v1/models"
        while True:
            if model.process.returncode is not None:
                await asyncio.wait_for(reader, 5)
                tail = "\n".join(list(model.log)[-15:])
                raise LoadError(f"max serve exited with status {model.process.returncode} while loading:\n{tail}")
            try:
                r = await self.http.get(url, timeout=2.0)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise LoadError(f"max serve was not ready after {self.ready_timeout:.0f} s")
            await asyncio.sleep(0.5)
        model.state = "ready"
        model.load_seconds = time.monotonic() - model.started
        progress("ready")

    async def _read_log(self, model: Model, progress: Callable[[str], None]) -> None:
        assert model.process and model.process.stdout
        async for raw in model.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            model.log.append(line)
            print(f"[max {model.id}] {line}", file=sys.stderr, flush=True)
            if model.state == "loading" and any(
                k in line for k in ("Initializing", "Building", "Compiling", "compil", "Loading", "Starting", "ready")
            ):
                progress(line.split("INFO:", 1)[-1].strip())
        if model.state == "ready":
            model.state, model.detail = "failed", f"max serve exited (status {model.process.returncode})"

    async def unload(self, model_id: str) -> bool:
        async with self._lock:
            model = self.models.pop(model_id, None)
        if model is None:
            return False
        await self._stop(model)
        return True

    async def _stop(self, model: Model, forget: bool = True) -> None:
        p = model.process
        if p is not None and p.returncode is None:
            for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    await asyncio.wait_for(p.wait(), wait)
                    break
                except asyncio.TimeoutError:
                    continue
        # Workers left in the group (the main process gone first) go too.
        if p is not None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if forget:
            model.state = "unloaded"

    async def close(self) -> None:
        for model_id in list(self.models):
            await self.unload(model_id)
        await self.http.aclose()

    def ready_model(self, model_id: str) -> Model:
        model = self.models.get(model_id)
        if model is None:
            raise NotLoaded(f"model {model_id!r} is not loaded")
        if model.state != "ready" or not _alive(model):
            raise NotLoaded(f"model {model_id!r} is {model.state}: {model.detail or 'not ready'}")
        return model

    async def generate(self, model_id: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Token events for one request: ``{"token": text}``..., then ``{"done": true, ...}``."""
        model = self.ready_model(model_id)
        chat = "messages" in body
        upstream = {k: v for k, v in body.items() if k not in ("model", "stream")}
        upstream.update(model=model.id, stream=True, stream_options={"include_usage": True})
        path = "/v1/chat/completions" if chat else "/v1/completions"
        url = f"http://127.0.0.1:{model.port}{path}"
        finish, usage = None, None
        async with self.http.stream("POST", url, json=upstream) as r:
            if r.status_code != 200:
                text = (await r.aread()).decode(errors="replace")
                try:
                    message = json.loads(text).get("detail") or json.loads(text).get("error", {}).get("message")
                except Exception:  # noqa: BLE001
                    message = text[:300]
                if r.status_code in (429, 503):
                    raise Busy(str(message))
                raise ValueError(f"MAX refused the request ({r.status_code}): {message}")
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    raise RuntimeError(f"MAX failed mid-stream: {event['error']}")
                for choice in event.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                    if text:
                        yield {"token": text}
                    finish = choice.get("finish_reason") or finish
                if event.get("usage"):
                    usage = event["usage"]
        if model.process and model.process.returncode is not None:
            raise RuntimeError(f"max serve exited (status {model.process.returncode}) during the request")
        usage = usage or {}
        yield {
            "done": True,
            "finish_reason": "length" if finish == "length" else "stop",
            "usage": {
                "prompt_tokens": int(usage.get("prompt_tokens") or 0),
                "completion_tokens": int(usage.get("completion_tokens") or 0),
                "cached_tokens": int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
            },
        }


def _die_with_parent() -> None:
    """In the child: SIGTERM when the sidecar dies, however it dies (Linux's PR_SET_PDEATHSIG).
    ``max serve`` stops its own workers on SIGTERM."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
        except OSError:
            pass


def _alive(model: Model) -> bool:
    return model.process is not None and model.process.returncode is None
