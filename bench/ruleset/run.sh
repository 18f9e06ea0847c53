#!/usr/bin/env bash
# Ruleset scale (see bench/ruleset/run.py --help and bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-.venv/bin/python}"
exec "$PYTHON" bench/ruleset/run.py "$@"
