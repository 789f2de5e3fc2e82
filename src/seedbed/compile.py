"""torch.compile (`trainer.compile=true`), after checking that it can run here.

Compiling is lazy: without a check, a missing compiler would surface at the
first step as a long traceback. `compile_model` asks first (the Python
version, a C++ compiler for inductor on the CPU, triton on CUDA) and refuses
in one line naming what is missing.
"""

from __future__ import annotations

import torch
from torch import nn

from seedbed.core.errors import ConfigError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compiler_missing(device_type: str) -> str | None:
    """What torch.compile (inductor) lacks on `device_type` here; None when it can run."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python version"
    if device_type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "triton is not installed (pip install triton)"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception:
        return "no C++ compiler found for inductor (install g++ or point CXX at one)"
    return None


def compile_model(model: nn.Module, mode: str, device: torch.device) -> nn.Module:
    """`torch.compile(model, mode=mode)`, or ConfigError naming what is missing. The compiled
    module shares `model`'s parameters: checkpoint `model` itself (its keys stay plain)."""
    missing = compiler_missing(device.type)
    if missing is not None:
        raise ConfigError("trainer.compile", True, f"false here: {missing}")
    return torch.compile(model, mode=mode)  # type: ignore[return-value]  # an OptimizedModule
