"""Your own task: `python train.py task=multilabel data=npz data.path=tags.npz`.

A task owns the loss, the metrics and their names, how targets are stored and
how wide the model's output must be; the loop, best.pt, early stopping, Optuna
and the sweep summary read metric names from it. seedbed's `task=classification`
and `task=regression` stay available beside this one.
"""

from __future__ import annotations

from typing import Any

import torch
from seedbed.core.errors import ConfigError
from seedbed.task import Monitor, build_loss


class MultiLabel:
    """Several independent yes/no labels per sample: `acc` is the fraction of labels right."""

    metrics = ("loss", "acc")
    higher_is_better = {"acc"}

    def __init__(self, loss: Any, monitor: str = "val/loss", mode: str | None = None) -> None:
        self.loss_fn = build_loss(loss)  # any `_target_`; a bad one is one clear line
        self.monitor = Monitor.of(self, monitor, mode)

    def prepare(self, data: Any) -> Any:
        """Check and convert the targets; say how wide the model's output must be."""
        if data.train.y.ndim != 2:
            shape = tuple(data.train.y.shape)
            raise ConfigError("task", "multilabel", f"targets of shape (n, labels), not {shape}")
        for dataset in data.splits().values():
            dataset.y = dataset.y.float()
        data.num_outputs = data.train.y.shape[1]
        return data

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(output, target)

    def metric_sums(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sums over one batch, left on the device: evaluation synchronises once, at the end."""
        return {
            "loss": self.loss_fn(output, target).double() * len(target),
            "right": ((output > 0) == (target > 0.5)).sum(),
            "labels": torch.tensor(target.numel()),
        }

    def reduce(self, sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
        return {"loss": sums["loss"].item() / count, "acc": (sums["right"] / sums["labels"]).item()}
