#!/usr/bin/env bash
# One command: set up, then run the gateway with a local Redis and Triton (the embedded default).
# Extra arguments go to `samserve serve`, e.g. --checkpoint sam_vit_b_01ec64.pth --model-type vit_b
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/samserve serve "$@"
