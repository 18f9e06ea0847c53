#!/usr/bin/env bash
# Load tests against the production process layout (see bench/load/run.py --help and bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-.venv/bin/python}"
ulimit -n 20000 2>/dev/null || true  # 1,000 streams plus the servers' own descriptors
exec "$PYTHON" bench/load/run.py "$@"
