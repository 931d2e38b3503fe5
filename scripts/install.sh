#!/usr/bin/env bash
# Create .venv (once) and install cnnlab with its test tools into it.
# torch is pinned to the CPU build this project is tested with; set CNNLAB_TORCH to choose
# another (any torch>=2.4 works, e.g. CNNLAB_TORCH="torch==2.5.1").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "${CNNLAB_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[test]"
