#!/usr/bin/env bash
# The README's second command: set up, then run every test (unit and end-to-end with the real
# model). Tests build in the release profile so llama.cpp is compiled once for both commands.
set -euo pipefail
cd "$(dirname "$0")/.."
HYPERLLAMA_TEST_MODEL=$(scripts/setup.sh)
export HYPERLLAMA_TEST_MODEL
cargo test --release --locked --workspace "$@"
