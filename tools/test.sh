#!/usr/bin/env bash
# The test command (README, `.ci/run`): lint, format and layering checks, then pytest with any arguments given
# (`tools/test.sh -m "not slow"` is the fast inner loop). The browser tests drive Debian's chromium: it is
# installed here when absent (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi
"$PY" -m ruff check .
"$PY" -m ruff format --check .
"$(dirname "$PY")/lint-imports"
exec "$PY" -m pytest "$@"
