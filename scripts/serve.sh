#!/usr/bin/env bash
# The README's first command: install into .venv, then start the REST service with the shipped default model.
# Options are passed to `lichang serve` (e.g. --host 0.0.0.0 --port 8080); LICHANG_* variables work too.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.13.0   # the CPU build; other specs may pull CUDA packages
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/lichang serve "$@"
