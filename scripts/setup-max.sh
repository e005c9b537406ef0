#!/usr/bin/env bash
# Sets up the MAX sidecar's own virtual environment (idempotent): a current pip (the old one
# cannot resolve MAX's dependencies), then the sidecar package from python/ with its pinned
# MAX release. Prints the environment's python on stdout.
#   HYPERLLAMA_MAX_VENV   where the environment goes (default ~/.cache/hyperllama/max-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${HYPERLLAMA_MAX_VENV:-$HOME/.cache/hyperllama/max-venv}"
stamp="$venv/.hyperllama-sidecar-$( (cat python/pyproject.toml; pwd) | sha256sum | cut -c1-16)"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "== creating the MAX sidecar environment in $venv" >&2
  python3 -m venv "$venv"
fi
# The stamp covers the pinned dependencies; the import check covers an editable install that
# another checkout sharing this environment re-pointed (or removed).
here="$(pwd)/python/"
installed="$("$venv/bin/python" -c 'import hyperllama_max; print(hyperllama_max.__file__)' 2>/dev/null || true)"
if [[ ! -e "$stamp" || "$installed" != "$here"* ]]; then
  echo "== installing max[serve] (pinned in python/pyproject.toml) and the sidecar" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -U pip >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "python[test]" >&2
  touch "$stamp"
fi
echo "$venv/bin/python"
