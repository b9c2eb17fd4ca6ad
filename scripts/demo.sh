#!/usr/bin/env bash
# The demo, on SQLite with no setup: a checkout workflow is killed with SIGKILL mid-way and a
# fresh process finishes it without repeating the completed step.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/python examples/checkout_demo.py
