#!/usr/bin/env bash
# The browser the web UI's tests drive: Debian's Chromium, installed with apt when missing.
# Playwright (tests/python/requirements.txt) starts this system browser; it downloads none.
set -euo pipefail
if ! command -v chromium >/dev/null; then
  echo "installing chromium" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >&2
fi
command -v chromium
