"""Datasets: in-memory tensors, a train/val split that depends on the data's own seed only,
and per-sample augmentation drawn from a generator keyed by (augment seed, epoch, index).

A dataset item is addressed by `(epoch, index)`, not by index alone: the
augmentation of a sample is then a pure function of those counters, identical
in the main process and in any DataLoader worker, and different every epoch.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from seedbed.errors import ConfigError
from seedbed.seeding import child_seed


@dataclass(frozen=True)
class Augment:
    """Gaussian noise plus feature dropout, drawn from a per-sample NumPy generator."""

    noise_std: float = 0.1
    drop_prob: float = 0.05

    def __call__(self, x: Tensor, rng: np.random.Generator) -> Tensor:
        noise = rng.standard_normal(x.shape, dtype=np.float32) * self.noise_std
        keep = rng.random(x.shape, dtype=np.float32) >= self.drop_prob
        return (x + torch.from_numpy(noise)) * torch.from_numpy(keep)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of sample `index` in `epoch`: the same in every process and every run."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(epoch, index)))


class ArrayDataset(Dataset):
    """Inputs and labels held as tensors; items are addressed by (epoch, index)."""

    def __init__(self, x: Tensor, y: Tensor, augment: Augment | None = None) -> None:
        self.x, self.y, self.augment = x, y, augment
        self.augment_seed: int | None = None

    def with_augment_seed(self, seed: int) -> ArrayDataset:
        """Attach the augment stream's seed (a runtime value, not config)."""
        self.augment_seed = seed
        return self

    def __len__(self) -> int:
        return len(self.y)

    @property
    def has_transform(self) -> bool:
        return self.augment is not None

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor]:
        epoch, index = key
        x = self.x[index]
        if self.augment is not None:
            if self.augment_seed is None:
                raise RuntimeError("augmentation needs with_augment_seed(seed) first")
            x = self.augment(x, sample_rng(self.augment_seed, epoch, index))
        return x, self.y[index]

    def batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """A whole batch by tensor indexing: only for data without a per-sample transform."""
        return self.x[indices], self.y[indices]


@dataclass
class DataSplits:
    """What the rest of the code needs from the data."""

    train: ArrayDataset
    val: ArrayDataset
    input_shape: tuple[int, ...]
    num_classes: int


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(train, val) indices: a permutation drawn from the data's own seed, not the run's."""
    generator = torch.Generator().manual_seed(child_seed(seed, 0))
    order = torch.randperm(n, generator=generator)
    n_val = max(1, round(n * val_fraction))
    return order[n_val:].sort().values, order[:n_val].sort().values


def _make_splits(
    x: Tensor, y: Tensor, val_fraction: float, seed: int, augment: Augment | None, num_classes: int
) -> DataSplits:
    train_idx, val_idx = split_indices(len(y), val_fraction, seed)
    return DataSplits(
        train=ArrayDataset(x[train_idx], y[train_idx], augment),
        val=ArrayDataset(x[val_idx], y[val_idx]),
        input_shape=tuple(x.shape[1:]),
        num_classes=num_classes,
    )


def _tensors(x: np.ndarray, y: np.ndarray) -> tuple[Tensor, Tensor]:
    """float32 inputs and int64 labels, as the model and the loss expect them."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(
        y.astype(np.int64)
    )


def _augment(cfg: object | None) -> Augment | None:
    if cfg is None:
        return None
    return Augment(noise_std=float(cfg.noise_std), drop_prob=float(cfg.drop_prob))


def synthetic_classification(
    n_samples: int,
    n_features: int,
    n_classes: int,
    class_sep: float,
    val_fraction: float,
    seed: int,
    augment: object | None = None,
) -> DataSplits:
    """Gaussian clusters around random class centres, generated from `seed`."""
    rng = np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(1,)))
    centres = rng.standard_normal((n_classes, n_features)) * class_sep
    y = rng.integers(0, n_classes, size=n_samples)
    x = centres[y] + rng.standard_normal((n_samples, n_features))
    return _make_splits(*_tensors(x, y), val_fraction, seed, _augment(augment), n_classes)


def synthetic_images(
    n_samples: int,
    channels: int,
    size: int,
    n_classes: int,
    noise: float,
    val_fraction: float,
    seed: int,
    augment: object | None = None,
) -> DataSplits:
    """A random template image per class plus per-sample noise, generated from `seed`."""
    rng = np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(2,)))
    templates = rng.standard_normal((n_classes, channels, size, size))
    y = rng.integers(0, n_classes, size=n_samples)
    x = templates[y] + noise * rng.standard_normal((n_samples, channels, size, size))
    return _make_splits(*_tensors(x, y), val_fraction, seed, _augment(augment), n_classes)


def npz_dataset(
    path: str, val_fraction: float, seed: int, augment: object | None = None
) -> DataSplits:
    """A user's .npz file with `x` (inputs, any shape) and `y` (integer class labels)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError("data.path", path, "an existing .npz file with arrays x and y")
    try:
        with np.load(file, allow_pickle=False) as arrays:
            missing = [name for name in ("x", "y") if name not in arrays.files]
            if missing:
                raise ConfigError(
                    "data.path", path, f"an .npz with arrays x and y (missing {', '.join(missing)})"
                )
            x, y = arrays["x"], arrays["y"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise ConfigError(
            "data.path", path, f"a readable .npz file ({type(error).__name__}: {error})"
        ) from error
    if len(x) != len(y):
        raise ConfigError(
            "data.path", path, f"x and y of the same length (x has {len(x)}, y has {len(y)})"
        )
    if len(y) < 2 or y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ConfigError(
            "data.path", path, "y as a 1-d array of integer labels >= 0, at least 2 samples"
        )
    return _make_splits(*_tensors(x, y), val_fraction, seed, _augment(augment), int(y.max()) + 1)
