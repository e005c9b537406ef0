"""``python -m hyperllama_max --port N``: the sidecar, on loopback only.

The shared secret comes from ``HYPERLLAMA_MAX_SECRET`` (HyperLlama sets it at launch). The
sidecar exits when the process that started it goes away, so a killed HyperLlama never leaves
MAX running.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import uvicorn

from .app import create_app
from .backend import MaxServeBackend


def main() -> None:
    parser = argparse.ArgumentParser(prog="hyperllama_max", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("HYPERLLAMA_MAX_CACHE", Path.home() / ".cache" / "hyperllama" / "max")),
        help="where prepared (float32) model directories are kept",
    )
    args = parser.parse_args()
    secret = os.environ.get("HYPERLLAMA_MAX_SECRET", "")
    if len(secret) < 16:
        sys.exit("hyperllama_max: set HYPERLLAMA_MAX_SECRET (16 characters or more)")
    os.environ.setdefault("MAX_SERVE_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    backend = MaxServeBackend(args.cache_dir)
    parent = os.getppid()

    async def watch_parent() -> None:
        while os.getppid() == parent:
            await asyncio.sleep(1.0)
        print("hyperllama_max: the parent process went away; stopping", file=sys.stderr, flush=True)
        await backend.close()
        os._exit(0)

    app = create_app(backend, secret, watchers=(watch_parent,))

    # Loopback only: the secret is a second line of defence, not the first.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
