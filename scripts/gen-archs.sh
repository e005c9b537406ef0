#!/usr/bin/env bash
# Regenerates crates/engine-llamacpp/src/archs.rs from the vendored llama.cpp's LLM_ARCH_NAMES.
set -euo pipefail
cd "$(dirname "$0")/.."
ver=$(grep -A1 'name = "llama-cpp-sys-2"' Cargo.lock | grep -o '[0-9][0-9.]*')
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-"$ver" | head -1)
{
  echo "//! Architectures the vendored llama.cpp (llama-cpp-sys-2 $ver) knows, from LLM_ARCH_NAMES in"
  echo "//! \`llama.cpp/src/llama-arch.cpp\`. Regenerate with \`scripts/gen-archs.sh\` when the crate is bumped."
  echo
  echo "pub(crate) const SUPPORTED_ARCHITECTURES: &[&str] = &["
  sed -n '/LLM_ARCH_NAMES = {/,/^};/p' "$src/llama.cpp/src/llama-arch.cpp" | grep -o '"[^"]*"' | grep -v '"(unknown)"' | sed 's/^/    /; s/$/,/'
  echo "];"
} > crates/engine-llamacpp/src/archs.rs
