"""A user's .npz file as train/val/test splits, checked at load, normalised, fingerprinted.

`x` (inputs, any shape) and `y` (targets: int labels for classification, floats for
regression); `x_val`/`y_val` and `x_test`/`y_test` are used as those splits when
present. Strings, 0-d arrays and NaN/inf are refused at load, naming the array.
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import MISSING

from seedbed.core.errors import ConfigError
from seedbed.data.arrays import (
    ArrayDataset,
    AugmentConfig,
    DataSplits,
    as_tensors,
    build_augment,
    make_splits,
)
from seedbed.data.fingerprint import file_sha256
from seedbed.data.normalize import Normalization, check_mode, scale_integers

NPZ_ARRAYS = ("x", "y", "x_val", "y_val", "x_test", "y_test")


def _check_pair(path: str, x: np.ndarray, y: np.ndarray, x_name: str, y_name: str) -> None:
    allowed = f"an .npz whose {x_name} and {y_name}"
    if x.ndim < 1 or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ConfigError(
            "data.path",
            path,
            f"{allowed} are numeric arrays ({x_name}: {x.dtype}, shape {x.shape})",
        )
    if y.ndim < 1 or not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        raise ConfigError(
            "data.path",
            path,
            f"{allowed} are numeric arrays ({y_name}: {y.dtype}, shape {y.shape})",
        )
    if np.iscomplexobj(x):  # the model takes real inputs: the imaginary part would be dropped
        raise ConfigError(
            "data.path",
            path,
            f"{allowed} are real: {x_name} is {x.dtype} (give its real and imaginary parts "
            "as separate features)",
        )
    if len(x) != len(y):
        raise ConfigError(
            "data.path",
            path,
            f"{allowed} have the same length ({x_name}: {len(x)}, {y_name}: {len(y)})",
        )
    for name, array in ((x_name, x), (y_name, y)):
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise ConfigError("data.path", path, f"finite values in {name} (it holds NaN or inf)")


def _check_declared_sizes(path: str, npz: Any, names: list[str]) -> None:
    """Refuse arrays that declare more bytes than this machine's memory: a compressed member
    of a few KB may unpack to terabytes, allocated before a byte is read."""
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    declared = 0
    for name in names:
        with npz.zip.open(f"{name}.npy") as member:
            version = np.lib.format.read_magic(member)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(member)
        declared += math.prod(shape) * dtype.itemsize
    if declared > memory:
        raise ConfigError(
            "data.path",
            path,
            f"an .npz whose arrays fit in memory (they declare {declared} bytes; this "
            f"machine has {memory})",
        )


def npz_dataset(
    path: str,
    val_fraction: float,
    seed: int,
    test_fraction: float = 0.0,
    augment: object | None = None,
    normalize: str = "standard",
    normalization: dict[str, Any] | None = None,
) -> DataSplits:
    """The splits of the .npz at `path` (val and test drawn from `x`/`y` by the fractions
    unless the file has them). `normalize`: standard or none; `normalization`: statistics
    saved by a run (a runtime value: evaluation passes the checkpoint's), else computed on
    the training split."""
    check_mode(normalize)
    file = Path(path)
    if not file.is_file():
        raise ConfigError("data.path", path, "an existing .npz file with arrays x and y")
    try:
        loaded = np.load(file, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # an .npy renamed: no `with` for it
            raise ConfigError("data.path", path, "an .npz archive (this is a single .npy array)")
        with loaded as npz:
            missing = [name for name in ("x", "y") if name not in npz.files]
            if missing:
                raise ConfigError(
                    "data.path", path, f"an .npz with arrays x and y (missing {', '.join(missing)})"
                )
            present = [name for name in NPZ_ARRAYS if name in npz.files]
            _check_declared_sizes(path, npz, present)
            arrays = {name: npz[name] for name in present}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, AttributeError) as error:
        raise ConfigError(
            "data.path", path, f"a readable .npz file ({type(error).__name__}: {error})"
        ) from error
    for split in ("", "_val", "_test"):
        has_x, has_y = f"x{split}" in arrays, f"y{split}" in arrays
        if has_x != has_y:
            raise ConfigError("data.path", path, f"both x{split} and y{split}, or neither")
        if has_x:
            _check_pair(path, arrays[f"x{split}"], arrays[f"y{split}"], f"x{split}", f"y{split}")
    if len(arrays["y"]) < 2:
        raise ConfigError("data.path", path, "at least 2 samples in x and y")
    arrays = {
        name: scale_integers(array) if name.startswith("x") else array
        for name, array in arrays.items()
    }
    augment_fn = build_augment(augment)
    given_val, given_test = "x_val" in arrays, "x_test" in arrays
    data = make_splits(
        *as_tensors(arrays["x"], arrays["y"]),
        0.0 if given_val else val_fraction,
        seed,
        augment_fn,
        test_fraction=0.0 if given_test else test_fraction,
    )
    if given_val:
        data.val = ArrayDataset(*as_tensors(arrays["x_val"], arrays["y_val"]))
    if given_test:
        data.test = ArrayDataset(*as_tensors(arrays["x_test"], arrays["y_test"]))
    for name, dataset in data.splits().items():
        if tuple(dataset.x.shape[1:]) != data.input_shape:
            raise ConfigError(
                "data.path",
                path,
                f"inputs of one shape in every split (x: {data.input_shape}, "
                f"{name}: {tuple(dataset.x.shape[1:])})",
            )
    data.record = {
        "source": "npz",
        "path": path,
        "paths": {"path": str(file.resolve())},
        "fingerprint": file_sha256(file),
        "normalize": normalize,
    }
    if normalize == "standard":
        if normalization is not None:
            stats = Normalization(normalization["mean"], normalization["std"])
        else:
            stats = Normalization.fit(data.train.x)
        for dataset in data.splits().values():
            dataset.x = stats.apply(dataset.x)
        data.normalization = stats
        data.record["normalization"] = stats.record()
    return data


@dataclass
class NpzDataConfig:
    """A user's own data: an .npz file with arrays `x` (inputs) and `y` (targets: integer
    labels for task=classification, floats for task=regression); optional `x_val`/`y_val`
    and `x_test`/`y_test` are used as those splits."""

    _target_: str = "seedbed.data.npz.npz_dataset"
    path: str = MISSING
    """Path to the .npz file (relative to where you start the run)."""
    val_fraction: float = 0.2
    """Fraction of samples held out for validation (unless the file has x_val/y_val)."""
    test_fraction: float = 0.0
    """Fraction held out for testing (unless the file has x_test/y_test); 0: no test split."""
    seed: int = 0
    """Seed of the train/val/test split only."""
    augment: AugmentConfig | None = field(default_factory=lambda: AugmentConfig(0.0, 0.0))
    """Per-sample augmentation of the training split; off (all zero) by default for your own
    data: switch it on with `data.augment.noise_std=0.1 data.augment.drop_prob=0.05`."""
    normalize: str = "standard"
    """standard: each input feature scaled to mean 0 and std 1 with statistics of the training
    split only (saved in run.json and every checkpoint); none: as stored. Unsigned integer
    inputs (uint8 images) are scaled to [0, 1] first either way."""
