#!/usr/bin/env bash
# Metrics ingestion: ratio to a bare Django POST view, then 5,000 SDKs flushing every 10 s (bench/ingest/run.py --help).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-.venv/bin/python}"
exec "$PYTHON" bench/ingest/run.py "$@"
