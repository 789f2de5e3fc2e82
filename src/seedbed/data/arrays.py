"""Datasets: in-memory tensors, a train/val split that depends on the data's own seed only,
and per-sample augmentation drawn from a generator keyed by (augment seed, epoch, index).

A dataset item is addressed by `(epoch, index)`, not by index alone: the
augmentation of a sample is then a pure function of those counters, identical
in the main process and in any DataLoader worker, and different every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import Dataset

from seedbed.core.errors import ConfigError, require, require_at_least
from seedbed.core.seeding import child_seed
from seedbed.data.normalize import check_mode


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

    def unaugmented(self) -> ArrayDataset:
        """The same samples without augmentation: how eval reads the training split."""
        return ArrayDataset(self.x, self.y)

    def batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """A whole batch by tensor indexing: only for data without a per-sample transform."""
        return self.x[indices], self.y[indices]


@dataclass
class DataSplits:
    """What the rest of the code needs from the data: the splits and the input shape.

    A split is an `ArrayDataset` (in memory) or any dataset addressed by (epoch, index)
    with labels in `.y` (`seedbed.data.datasets.KeyedDataset`). `num_classes` is what the
    source knows (e.g. `n_classes` of a synthetic set, whose rarest class may be absent);
    `num_outputs` is set by the task from the targets. `record` says what data was read
    (files, fingerprint, normalisation) for run.json; `normalization` (of the inputs) and
    `target_normalization` (of regression targets, set by the task) are saved in every
    checkpoint, so evaluation applies the statistics training used.
    """

    train: Any
    val: Any
    input_shape: tuple[int, ...]
    test: Any | None = None
    num_classes: int | None = None
    num_outputs: int | None = None
    record: dict[str, Any] = field(default_factory=dict)
    normalization: Any | None = None
    target_normalization: Any | None = None

    def splits(self) -> dict[str, Any]:
        """The splits that exist, by name: train, val and (when there is one) test."""
        found = {"train": self.train, "val": self.val}
        if self.test is not None:
            found["test"] = self.test
        return found


def split_indices(
    n: int, val_fraction: float, seed: int, test_fraction: float = 0.0
) -> tuple[Tensor, Tensor, Tensor]:
    """(train, val, test) indices: one permutation drawn from the data's own seed, not the
    run's. Val is taken first, so adding a test split leaves the validation samples as they
    were (the test samples come out of training)."""
    generator = torch.Generator().manual_seed(child_seed(seed, 0))
    order = torch.randperm(n, generator=generator)
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise ConfigError(
            "data.test_fraction",
            test_fraction,
            f"a fraction that leaves training samples: {n} samples, {n_val} for val, "
            f"{n_test} for test",
        )
    val, test, train = order[:n_val], order[n_val : n_val + n_test], order[n_val + n_test :]
    return train.sort().values, val.sort().values, test.sort().values


def make_splits(
    x: Tensor,
    y: Tensor,
    val_fraction: float,
    seed: int,
    augment: Augment | None,
    num_classes: int | None = None,
    test_fraction: float = 0.0,
) -> DataSplits:
    train_idx, val_idx, test_idx = split_indices(len(y), val_fraction, seed, test_fraction)
    return DataSplits(
        train=ArrayDataset(x[train_idx], y[train_idx], augment),
        val=ArrayDataset(x[val_idx], y[val_idx]),
        test=ArrayDataset(x[test_idx], y[test_idx]) if len(test_idx) else None,
        input_shape=tuple(x.shape[1:]),
        num_classes=num_classes,
    )


def as_tensors(x: np.ndarray, y: np.ndarray) -> tuple[Tensor, Tensor]:
    """float32 inputs; targets as they are stored (the task converts and checks them)."""
    return (
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(y)),
    )


def build_augment(cfg: Any) -> Augment | None:
    """The augmentation `cfg` asks for; None (no per-sample transform: the fast path) when it
    is null or all zero."""
    if cfg is None or (float(cfg.noise_std) == 0 and float(cfg.drop_prob) == 0):
        return None
    return Augment(noise_std=float(cfg.noise_std), drop_prob=float(cfg.drop_prob))


def synthetic_classification(
    n_samples: int,
    n_features: int,
    n_classes: int,
    class_sep: float,
    val_fraction: float,
    seed: int,
    test_fraction: float = 0.0,
    augment: object | None = None,
) -> DataSplits:
    """Gaussian clusters around random class centres, generated from `seed`."""
    rng = np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(1,)))
    centres = rng.standard_normal((n_classes, n_features)) * class_sep
    y = rng.integers(0, n_classes, size=n_samples)
    x = centres[y] + rng.standard_normal((n_samples, n_features))
    return make_splits(
        *as_tensors(x, y), val_fraction, seed, build_augment(augment), n_classes, test_fraction
    )


def synthetic_regression(
    n_samples: int,
    n_features: int,
    n_targets: int,
    noise: float,
    val_fraction: float,
    seed: int,
    test_fraction: float = 0.0,
    augment: object | None = None,
) -> DataSplits:
    """y = tanh(x W1) W2 / 4 + noise: a smooth non-linear map from `n_features` to
    `n_targets`, with values of order 1."""
    rng = np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(3,)))
    w1 = rng.standard_normal((n_features, 16)) / np.sqrt(n_features)
    w2 = rng.standard_normal((16, n_targets))
    x = rng.standard_normal((n_samples, n_features))
    y = np.tanh(x @ w1) @ w2 / 4 + noise * rng.standard_normal((n_samples, n_targets))
    y = y[:, 0] if n_targets == 1 else y
    return make_splits(
        *as_tensors(x, y.astype(np.float32)),
        val_fraction,
        seed,
        build_augment(augment),
        test_fraction=test_fraction,
    )


def synthetic_images(
    n_samples: int,
    channels: int,
    size: int,
    n_classes: int,
    noise: float,
    val_fraction: float,
    seed: int,
    test_fraction: float = 0.0,
    augment: object | None = None,
) -> DataSplits:
    """A random template image per class plus per-sample noise, generated from `seed`."""
    rng = np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(2,)))
    templates = rng.standard_normal((n_classes, channels, size, size))
    y = rng.integers(0, n_classes, size=n_samples)
    x = templates[y] + noise * rng.standard_normal((n_samples, channels, size, size))
    return make_splits(
        *as_tensors(x, y), val_fraction, seed, build_augment(augment), n_classes, test_fraction
    )


@dataclass
class AugmentConfig:
    """Per-sample augmentation of the synthetic datasets (noise and feature dropout)."""

    noise_std: float = 0.1
    """Standard deviation of the Gaussian noise added to each input value."""
    drop_prob: float = 0.05
    """Probability that an input value is set to zero."""


@dataclass
class SyntheticDataConfig:
    """Gaussian class clusters in `n_features` dimensions, generated from `seed`."""

    _target_: str = "seedbed.data.arrays.synthetic_classification"
    n_samples: int = 8192
    """Samples in total, before the train/val split."""
    n_features: int = 32
    """Input dimension."""
    n_classes: int = 10
    """Number of classes."""
    class_sep: float = 0.5
    """Distance scale between class centres; smaller is harder."""
    val_fraction: float = 0.2
    """Fraction of samples held out for validation (the split depends on `seed` only)."""
    test_fraction: float = 0.1
    """Fraction held out for testing (`python eval.py ... split=test`); training and model
    selection never read it. 0 means no test split."""
    seed: int = 0
    """The dataset's own seed: the data does not change with the training seed."""
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    """Per-sample augmentation of the training split; null turns it off."""


@dataclass
class SyntheticRegressionConfig:
    """y = tanh(x W1) W2 / 4 + noise, `n_features` in, `n_targets` out, generated from
    `seed`: for `task=regression`."""

    _target_: str = "seedbed.data.arrays.synthetic_regression"
    n_samples: int = 8192
    """Samples in total, before the train/val/test split."""
    n_features: int = 16
    """Input dimension."""
    n_targets: int = 1
    """Target dimension (1: one value per sample)."""
    noise: float = 0.1
    """Standard deviation of the noise added to the targets."""
    val_fraction: float = 0.2
    """Fraction of samples held out for validation (the split depends on `seed` only)."""
    test_fraction: float = 0.1
    """Fraction held out for testing; 0 means no test split."""
    seed: int = 0
    """The dataset's own seed: the data does not change with the training seed."""
    augment: AugmentConfig | None = field(default_factory=lambda: AugmentConfig(0.0, 0.0))
    """Per-sample augmentation of the training split; off (all zero) by default: switch it on
    with `data.augment.noise_std=0.1`."""


@dataclass
class SyntheticImagesConfig:
    """Class templates plus noise, as (channels, size, size) images, generated from `seed`."""

    _target_: str = "seedbed.data.arrays.synthetic_images"
    n_samples: int = 4096
    """Samples in total, before the train/val split."""
    channels: int = 3
    """Image channels."""
    size: int = 16
    """Image height and width."""
    n_classes: int = 10
    """Number of classes."""
    noise: float = 1.0
    """Standard deviation of the per-sample noise around the class template."""
    val_fraction: float = 0.2
    """Fraction of samples held out for validation (the split depends on `seed` only)."""
    test_fraction: float = 0.1
    """Fraction held out for testing (`python eval.py ... split=test`); training and model
    selection never read it. 0 means no test split."""
    seed: int = 0
    """The dataset's own seed: the data does not change with the training seed."""
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    """Per-sample augmentation of the training split; null turns it off."""


SYNTHETIC = {
    schema._target_
    for schema in (SyntheticDataConfig, SyntheticRegressionConfig, SyntheticImagesConfig)
}


def check_data(data: DictConfig) -> None:
    """The split, normalisation and augmentation keys a dataset declares (a dataset of your
    own without `val_fraction` is asked nothing about it), and the synthetic data's sizes."""
    val, test = data.get("val_fraction"), data.get("test_fraction")
    if val is not None:
        require(0.0 < val < 1.0, "data.val_fraction", val, "a number in (0, 1)")
    if test is not None:
        require(0.0 <= test < 1.0, "data.test_fraction", test, "a number in [0, 1)")
        require(
            (val or 0.0) + test < 1.0,
            "data.test_fraction",
            test,
            f"a number below 1 - data.val_fraction ({1 - (val or 0.0):g}): training needs samples",
        )
    normalize = data.get("normalize")
    if normalize is not None:
        check_mode(normalize)
    size = data.get("image_size")
    require(size is None or size > 0, "data.image_size", size, "an int > 0")
    augment = data.get("augment")
    if isinstance(augment, DictConfig):
        for key, high in (("noise_std", None), ("drop_prob", 1.0)):
            value = augment.get(key)
            if value is not None:
                ok = value >= 0 and (high is None or value < high)
                allowed = "a number >= 0" if high is None else "in [0, 1)"
                require(ok, f"data.augment.{key}", value, allowed)
    if data.get("_target_") in SYNTHETIC:
        require_at_least(data, "data", "n_classes", 2)
        for key in ("n_samples", "n_features", "n_targets", "channels", "size"):
            require_at_least(data, "data", key, 1)
        for key in ("class_sep", "noise"):
            require_at_least(data, "data", key, 0.0)
        _check_samples(data)


def _check_samples(data: DictConfig) -> None:
    """Enough samples for a validation split, a test split and at least one to train on."""
    n, val, test = data.get("n_samples"), data.get("val_fraction"), data.get("test_fraction")
    if not isinstance(n, int) or not isinstance(val, float | int) or val <= 0:
        return
    held_out = max(1, round(n * val)) + (max(1, round(n * test)) if test else 0)
    require(
        n - held_out >= 1,
        "data.n_samples",
        n,
        f"an int above the {held_out} held out for validation and test (val_fraction "
        f"{val:g}, test_fraction {test or 0:g}): training needs samples",
    )
