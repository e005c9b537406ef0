#!/usr/bin/env bash
# The README's first command: set up, build, and generate from the default model with the
# embedded llama.cpp engine. Extra arguments go to `hyperllama generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$(scripts/setup.sh)
cargo build --release --locked -p hyperllama
prompt="${PROMPT:-Explain in two sentences why the sky is blue.}"
exec ./target/release/hyperllama generate "$model" "$prompt" --max-tokens 128 --verbose "$@"
