#!/usr/bin/env bash
# The README's second command: set up, then run every test: Rust unit and end-to-end tests
# with the real model, then the official `ollama` and `openai` Python clients against a real
# `hyperllama serve`. Everything builds in the release profile, so llama.cpp is compiled once.
set -euo pipefail
cd "$(dirname "$0")/.."
HYPERLLAMA_TEST_MODEL=$(scripts/setup.sh)
export HYPERLLAMA_TEST_MODEL
python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
cargo test --release --locked --workspace "$@"
scripts/build-release.sh >/dev/null
python3 -m pytest -q tests/python
