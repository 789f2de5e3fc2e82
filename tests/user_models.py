"""A model of a user's own, outside seedbed: BatchNorm, and integer buffers of its own
(a 0-dim counter and a vector), to check that every buffer is checkpointed and hashed."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class BatchNormNet(nn.Module):
    """Flatten, Linear -> BatchNorm -> ReLU per hidden layer, then a Linear classifier; it
    counts the training batches it has seen (int64, 0-dim) and the samples per class of the
    last prediction (int32 vector)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        hidden: Sequence[int] = (32,),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.BatchNorm1d(size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, num_outputs))
        self.net = nn.Sequential(*layers)
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.int64))
        self.register_buffer("last_counts", torch.zeros(num_outputs, dtype=torch.int32))

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        if self.training:
            self.batches_seen += 1
            counts = torch.bincount(out.argmax(dim=1), minlength=out.shape[1])
            self.last_counts.copy_(counts.to(torch.int32))
        return out
