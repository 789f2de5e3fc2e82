"""Mixed precision (`trainer.precision`): the autocast around forward and loss, and for
float16 the gradient scaler.

`32` is plain float32. `bf16-mixed` runs the forward and the loss under
`torch.autocast(dtype=bfloat16)`, on the CPU and on CUDA; bfloat16 has float32's
range, so no scaler is needed. `16-mixed` is float16 autocast with a
`torch.amp.GradScaler`, CUDA only: float16's small range makes the scaler
necessary, and its state (the current scale) is checkpointed like everything
else. Autocast is a function of its inputs: two runs with the same precision
give the same bits, as in float32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from seedbed.core.errors import ConfigError

DTYPES = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
PRECISIONS = tuple(DTYPES)


@dataclass
class Precision:
    """What the loop needs: an autocast context (a no-op for 32) and the scaler (16-mixed)."""

    name: str
    device_type: str
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None = None

    def autocast(self) -> Any:
        """A context for the forward and the loss; reusable, entered once per batch."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def build_precision(name: str, device: torch.device) -> Precision:
    """The precision `trainer.precision=name` on `device`; ConfigError where it cannot run."""
    if name not in DTYPES:
        raise ConfigError("trainer.precision", name, f"one of {', '.join(PRECISIONS)}")
    if name == "16-mixed" and device.type != "cuda":
        raise ConfigError(
            "trainer.precision",
            name,
            f"32 or bf16-mixed on {device.type}: float16 autocast with a gradient scaler "
            "needs CUDA (use trainer.precision=bf16-mixed)",
        )
    if name == "bf16-mixed" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            "trainer.precision",
            name,
            f"32 or 16-mixed: {torch.cuda.get_device_name(device)} has no bfloat16 support",
        )
    scaler = torch.amp.GradScaler(device.type) if name == "16-mixed" else None
    return Precision(name, device.type, DTYPES[name], scaler)
