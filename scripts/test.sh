#!/usr/bin/env bash
# The README's second command: install (with test extras) into .venv, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.13.0   # the CPU build; other specs may pull CUDA packages
.venv/bin/python -m pip install --quiet -e '.[dev]'
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
