#!/usr/bin/env bash
# On a CUDA machine: bit-identical runs in 32, bf16-mixed and 16-mixed, the data pipeline's
# determinism (one process, and FSDP2 on every GPU), and the cost of strict vs off and of bf16-mixed vs 32 on a GPU-bound model.
# Usage: bash scripts/gpu_check.sh [--out DIR] [--repeats N] [train.py overrides ...]
# Uses $PYTHON (default: python) with seedbed installed; meant to finish within 4 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout 540 "${PYTHON:-python}" scripts/gpu_check.py "$@"
