"""Which device a run (or an evaluation) uses: `trainer.device` made concrete."""

from __future__ import annotations

import torch

from seedbed.core.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str, key: str = "trainer.device") -> torch.device:
    """`auto` is CUDA where available, else the CPU; `cuda` without CUDA is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ConfigError(key, name, "one of auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(key, name, "auto or cpu: CUDA is not available here")
    return torch.device(name)
