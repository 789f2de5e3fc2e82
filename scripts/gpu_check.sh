#!/usr/bin/env bash
# On a CUDA machine: CUDA determinism of the CNN config and the cost of strict vs off.
# Usage: bash scripts/gpu_check.sh [--out DIR] [--repeats N] [train.py overrides ...]
# Uses $PYTHON (default: python) with seedbed installed; finishes well within 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout 540 "${PYTHON:-python}" scripts/gpu_check.py "$@"
