#!/usr/bin/env bash
# One command: set up, lint, and run the whole test suite against real tritonserver/redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --browser
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
