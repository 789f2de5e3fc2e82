"""Your models: `python train.py model=residual_mlp` (configs/model/residual_mlp.yaml).

A model takes `input_shape` (from the data) and `num_outputs` (from the task:
classes, or the width of a regression target) and only constructs its layers;
seedbed initialises the weights afterwards from its own seed stream
(`init=...`). Declare layers in the order they run, so the initialiser finds
each layer's nonlinearity in the module that follows it. seedbed's own models
(`model=mlp`, `cnn`, `resnet18`) stay available beside yours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn


class ResidualBlock(nn.Module):
    """x + Linear(ReLU(BatchNorm(x))): BatchNorm's running statistics are part of the
    checkpoint and of the weights' fingerprint like any other buffer."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(width)
        self.act = nn.ReLU()
        self.linear = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.linear(self.act(self.norm(x)))


class ResidualMLP(nn.Module):
    """Flatten, a linear stem, `blocks` residual blocks, then a linear head."""

    def __init__(
        self, input_shape: Sequence[int], num_outputs: int, width: int = 128, blocks: int = 2
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width))
        self.blocks = nn.Sequential(*(ResidualBlock(width) for _ in range(blocks)))
        self.head = nn.Linear(width, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))
