#!/usr/bin/env bash
# Soak with faults (see bench/soak/run.py --help and bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-.venv/bin/python}"
exec "$PYTHON" bench/soak/run.py "$@"
