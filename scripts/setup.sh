#!/usr/bin/env bash
# One-time machine set-up, safe to re-run: the system packages llama.cpp's build needs
# (cmake, clang, libclang for bindgen) and the test model. Prints the model's path last.
set -euo pipefail
"$(dirname "$0")/system-deps.sh"
"$(dirname "$0")/fetch-model.sh"
