"""Apply the determinism flags once, early, and report what was applied.

Call `set_determinism` before anything touches CUDA: cuBLAS reads
CUBLAS_WORKSPACE_CONFIG when it starts, so setting it later has no effect.
The returned dict is what the run record stores: what applied, not what the
config asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils.deterministic
from omegaconf import DictConfig

from seedbed.core.errors import require_choice

# The setting PyTorch documents for deterministic cuBLAS (CUDA >= 10.2).
CUBLAS_WORKSPACE = ":4096:8"


MODES = ("strict", "warn", "off")


def set_determinism(mode: str) -> dict[str, Any]:
    """Set every flag for `mode` (strict, warn or off) and return what now applies."""
    if mode not in MODES:
        raise ValueError(f"determinism mode {mode!r}: expected strict, warn or off")
    deterministic = mode != "off"
    notes: list[str] = []

    if deterministic and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(deterministic, warn_only=mode == "warn")
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        # TF32 rounds matmul inputs to 10 mantissa bits: fast, but not the float32 result.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.utils.deterministic.fill_uninitialized_memory = True  # type: ignore[attr-defined]
        if "PYTHONHASHSEED" not in os.environ:
            notes.append(
                "PYTHONHASHSEED is not set: str/bytes hashing (set order) differs between "
                "processes; set PYTHONHASHSEED=0 if your code depends on it"
            )

    return {
        "mode": mode,
        "use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "fill_uninitialized_memory": torch.utils.deterministic.fill_uninitialized_memory,  # type: ignore[attr-defined]
        "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED"),
        "notes": notes,
    }


@dataclass
class DeterminismConfig:
    """How strictly PyTorch is made deterministic."""

    mode: str = "strict"
    """strict: deterministic algorithms or an error; warn: the same, warnings instead of errors;
    off: fastest (cuDNN benchmark), not reproducible."""


def check_determinism(determinism: DictConfig) -> None:
    require_choice("determinism.mode", determinism.mode, MODES)
