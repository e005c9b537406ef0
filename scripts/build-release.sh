#!/usr/bin/env bash
# The release build of the `hyperllama` binary, exactly as the Dockerfile's build stage runs it
# (and as CI runs it through scripts/test.sh): system packages, then cargo. RUSTFLAGS sets the
# CPU baseline: .cargo/config.toml's target-cpu=native by default, x86-64-v3 in the Dockerfile
# for images that run on any AVX2 machine. FEATURES=cuda (or metal, vulkan) for GPU builds.
# Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
cargo build --release --locked -p hyperllama ${FEATURES:+--features "$FEATURES"} >&2
echo "$PWD/target/release/hyperllama"
