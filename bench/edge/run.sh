#!/usr/bin/env bash
# Turnout's SDK endpoints against a bare Django JSON view, side by side (see bench/edge/run.py --help).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-.venv/bin/python}"
exec "$PYTHON" bench/edge/run.py "$@"
