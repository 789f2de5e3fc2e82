"""Input normalisation of in-memory arrays, with statistics from the training split only.

Integer inputs are first scaled to [0, 1] by their type's range (uint8 images: /255),
so a uint8 file trains like a float one. `standard` then subtracts each feature's mean
and divides by its standard deviation, both computed on the training split alone: the
validation and test samples never inform the statistics they are scaled with. The
statistics are a checkpoint part, so evaluation applies what training used.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from seedbed.core.errors import ConfigError, require_choice

MODES = ("standard", "none")
# Features that are constant on the training split keep their scale instead of dividing by 0.
MIN_STD = 1e-6


def scale_integers(x: np.ndarray) -> np.ndarray:
    """Unsigned integer inputs (images) scaled to [0, 1] by their type's maximum, as float32;
    anything else as it is."""
    if np.issubdtype(x.dtype, np.unsignedinteger):
        return x.astype(np.float32) / np.float32(np.iinfo(x.dtype).max)
    return x


class Normalization:
    """Per-feature mean and standard deviation; `apply` standardises, `state_dict` saves."""

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        self.mean, self.std = mean, std

    @classmethod
    def fit(cls, x: Tensor) -> Normalization:
        """Statistics of `x` (the training inputs), computed in float64."""
        x64 = x.double()
        std = x64.std(dim=0, unbiased=False)
        std = torch.where(std < MIN_STD, torch.ones_like(std), std)
        return cls(x64.mean(dim=0).float(), std.float())

    def apply(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != tuple(self.mean.shape):
            raise ConfigError(
                "data",
                "normalization",
                f"inputs shaped {tuple(self.mean.shape)} as in training (got {tuple(x.shape[1:])})",
            )
        return (x - self.mean) / self.std

    def invert(self, x: Tensor) -> Tensor:
        """Back to the original units: what `apply` undoes."""
        return x * self.std + self.mean

    def state_dict(self) -> dict[str, Tensor]:
        return {"mean": self.mean, "std": self.std}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.mean, self.std = state["mean"], state["std"]

    def record(self) -> dict[str, Any]:
        """What run.json says of the statistics (their range: a file holds them all)."""
        return {
            "mode": "standard",
            "computed_on": "train",
            "features": int(self.mean.numel()),
            "mean_range": [float(self.mean.min()), float(self.mean.max())],
            "std_range": [float(self.std.min()), float(self.std.max())],
        }


def check_mode(mode: str) -> None:
    """`data.normalize`: one of MODES (checked when the config is validated, and by the
    builders that take it)."""
    require_choice("data.normalize", mode, MODES)
