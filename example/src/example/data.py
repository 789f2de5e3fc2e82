"""Your own Dataset: `python train.py data=my_dataset` (configs/data/my_dataset.yaml).

Replace `JitteredPoints` with your Dataset class and `my_dataset` with the function
that builds your splits (any map-style Dataset; labels in a `targets` attribute).
`__getitem__` here draws from Python's `random`, NumPy's `np.random` and torch on
purpose: seedbed seeds all three per (epoch, sample), so the results still do not
depend on `loader.num_workers`, and a resumed run continues bit for bit.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from seedbed.data.arrays import DataSplits, split_indices
from seedbed.data.datasets import dataset_splits
from torch import Tensor
from torch.utils.data import Dataset


class JitteredPoints(Dataset):
    """Points around class centres, jittered anew every time a sample is read."""

    def __init__(self, points: Tensor, labels: Tensor, jitter: float) -> None:
        self.points, self.targets, self.jitter = points, labels, jitter

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x = self.points[index].clone()
        if self.jitter > 0:
            x += self.jitter * torch.randn(x.shape)  # torch's global RNG
            x += self.jitter * torch.from_numpy(np.random.normal(size=x.shape).astype("float32"))
            x[random.randrange(len(x))] = 0.0  # Python's random
        return x, int(self.targets[index])


def my_dataset(
    n_samples: int,
    n_features: int,
    n_classes: int,
    jitter: float,
    val_fraction: float,
    seed: int,
    test_fraction: float = 0.0,
) -> DataSplits:
    """Train/val/test splits of `JitteredPoints`; only the training split is jittered."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, n_features, generator=generator) * 2
    labels = torch.randint(n_classes, (n_samples,), generator=generator)
    points = centres[labels] + torch.randn(n_samples, n_features, generator=generator)
    train, val, test = split_indices(n_samples, val_fraction, seed, test_fraction)
    return dataset_splits(
        JitteredPoints(points[train], labels[train], jitter),
        JitteredPoints(points[val], labels[val], 0.0),
        JitteredPoints(points[test], labels[test], 0.0) if len(test) else None,
        num_classes=n_classes,
    )
