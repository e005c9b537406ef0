"""The sidecar's HTTP API, which HyperLlama's ``MaxEngine`` speaks.

Every request carries ``Authorization: Bearer <secret>``; HyperLlama makes the secret at
launch and hands it over in the environment (never on the command line). Errors are
``{"error": message}`` with a 4xx status when the caller is to blame, 503 when MAX cannot
serve now, 500 otherwise.

- ``GET /health``: ``{"status": "ok" | "loading", "max_version", "models": [...]}``
- ``GET /models``: the loaded models and their state.
- ``POST /load`` ``{"model", "gguf", "max_length"?, "max_batch_size"?, "stream"?}``: NDJSON
  progress (``{"status": ...}``) ending with ``{"status": "ready", ...}`` or ``{"error": ...}``;
  with ``"stream": false`` one JSON answer.
- ``POST /unload`` ``{"model"}``.
- ``POST /generate`` ``{"model", "prompt" | "messages", sampling fields as OpenAI's, "stream"?}``:
  NDJSON token events ``{"token": text}``, then ``{"done": true, "finish_reason", "usage"}``, or
  ``{"error": message}`` if it fails mid-way; with ``"stream": false`` one JSON answer with the
  whole ``text``. Dropping the connection cancels the generation in MAX.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from .backend import Busy, LoadError, NotLoaded, max_version

OPEN_PATHS: frozenset[str] = frozenset()


class LoadBody(BaseModel):
    model: str = Field(min_length=1, max_length=200)
    gguf: str = Field(min_length=1)
    max_length: int | None = Field(default=None, gt=0)
    max_batch_size: int | None = Field(default=None, gt=0)
    devices: str | None = None
    stream: bool = True


class UnloadBody(BaseModel):
    model: str


class GenerateBody(BaseModel):
    # Sampling fields pass through to MAX's OpenAI API unchanged.
    model_config = ConfigDict(extra="allow")
    model: str
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    stream: bool = True


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(backend: Any, secret: str, watchers: tuple[Callable[[], Awaitable[None]], ...] = ()) -> FastAPI:
    """The app over ``backend``; ``watchers`` run in the background while it serves."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        tasks = [asyncio.create_task(w()) for w in watchers]
        yield
        for t in tasks:
            t.cancel()
        await backend.close()

    app = FastAPI(title="HyperLlama MAX sidecar", lifespan=lifespan)
    expected = f"Bearer {secret}".encode()

    @app.middleware("http")
    async def auth(request: Request, call_next):
        given = request.headers.get("authorization", "").encode()
        if request.url.path not in OPEN_PATHS and not hmac.compare_digest(given, expected):
            return error(401, "missing or wrong sidecar secret")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request: Request, exc: RequestValidationError):
        fields = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'body'}: {e['msg']}" for e in exc.errors())
        return error(400, f"invalid request: {fields}")

    @app.get("/health")
    async def health():
        return {
            "status": backend.state(),
            "max_version": max_version(),
            "models": [m.public() for m in backend.models.values()],
        }

    @app.get("/models")
    async def models():
        return {"models": [m.public() for m in backend.models.values()]}

    @app.post("/load")
    async def load(body: LoadBody):
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        options = body.model_dump(exclude={"model", "gguf", "stream"})

        async def run() -> dict[str, Any]:
            try:
                model = await backend.load(body.model, body.gguf, options, lambda s: queue.put_nowait({"status": s}))
                return {"status": "ready", **model.public()}
            except LoadError as e:
                return {"error": str(e), "status_code": 400}
            except Exception as e:  # noqa: BLE001 - a failed load is an answer, not a dead sidecar
                return {"error": f"loading failed: {e}", "status_code": 500}
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(run())
        if not body.stream:
            result = await task
            if "error" in result:
                return error(result["status_code"], result["error"])
            return result

        async def events() -> AsyncIterator[bytes]:
            while (item := await queue.get()) is not None:
                yield (json.dumps(item) + "\n").encode()
            result = await task
            result.pop("status_code", None)
            yield (json.dumps(result) + "\n").encode()

        # The load goes on even if the caller goes away: a later load of the same model waits for it.
        return StreamingResponse(events(), media_type="application/x-ndjson")

    @app.post("/unload")
    async def unload(body: UnloadBody):
        if not await backend.unload(body.model):
            return error(404, f"model {body.model!r} is not loaded")
        return {"status": "unloaded", "model": body.model}

    @app.post("/generate")
    async def generate(body: GenerateBody):
        if (body.prompt is None) == (body.messages is None):
            return error(400, "give exactly one of prompt and messages")
        try:
            backend.ready_model(body.model)
        except NotLoaded as e:
            return error(404, str(e))
        payload = body.model_dump(exclude_none=True)
        stream = backend.generate(body.model, payload)
        # Fail before the first byte when MAX refuses the request outright.
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            return error(500, "MAX ended the stream without a result")
        except Busy as e:
            return error(503, f"MAX is busy: {e}")
        except ValueError as e:
            return error(400, str(e))
        except Exception as e:  # noqa: BLE001
            return error(503 if isinstance(e, (NotLoaded, OSError)) else 500, f"generation failed: {e}")

        if not body.stream:
            text, last = [], first
            try:
                if "token" in first:
                    text.append(first["token"])
                async for event in stream:
                    if "token" in event:
                        text.append(event["token"])
                    last = event
            except Exception as e:  # noqa: BLE001
                return error(500, f"generation failed: {e}")
            return {"text": "".join(text), **{k: v for k, v in last.items() if k != "token"}}

        async def events() -> AsyncIterator[bytes]:
            yield (json.dumps(first) + "\n").encode()
            try:
                async for event in stream:
                    yield (json.dumps(event) + "\n").encode()
            except Exception as e:  # noqa: BLE001 - mid-stream failures end the stream with an error event
                yield (json.dumps({"error": f"generation failed: {e}"}) + "\n").encode()
            finally:
                await stream.aclose()

        return StreamingResponse(events(), media_type="application/x-ndjson")

    return app
