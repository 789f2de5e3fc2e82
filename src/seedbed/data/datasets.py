"""Any map-style `torch.utils.data.Dataset`, with any transform, under the same promise.

`KeyedDataset` addresses a sample by (epoch, index). Before the sample is
fetched and transformed, every global RNG a transform may draw from (torch's
CPU generator, NumPy's legacy `np.random`, Python's `random`) is seeded from a
key of (augment seed, epoch, index); `sample_generator()` hands code that takes
a generator one seeded from the same key. So torchvision transforms, NumPy-based
augmentation and plain `random` calls give the same sample in the main process
and in any DataLoader worker, after a mid-epoch resume, and a new one each epoch.

Outside the promise: a transform with a hidden RNG of its own (a C library's,
`os.urandom`, a generator created once at import and never reseeded).

In the main process (`loader.num_workers=0`) the same global RNGs also drive
dropout: their states are saved before each sample and put back after it, so
the model sees the same random numbers whether samples load there or in workers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset, get_worker_info

from seedbed.core.errors import SeedbedError
from seedbed.data.arrays import DataSplits

_MASK = (1 << 64) - 1
_current_seed: int | None = None


def _mix(x: int) -> int:
    """splitmix64's finaliser: a cheap bijection whose outputs look independent."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The 64-bit seed of sample `index` in `epoch`. A few µs, where a `SeedSequence` takes
    ~13 µs: it runs once per sample, beside transforms of ~10 µs."""
    return _mix(_mix(_mix(seed) ^ epoch) ^ index)


def sample_generator() -> torch.Generator:
    """A torch.Generator keyed by the sample being loaded now, for code that takes one
    (e.g. `torch.rand(..., generator=sample_generator())` in your `__getitem__`)."""
    if _current_seed is None:
        raise RuntimeError("sample_generator() is only defined while a KeyedDataset loads")
    return torch.Generator().manual_seed(_current_seed)


@contextmanager
def keyed_rngs(seed: int, restore: bool = True) -> Iterator[None]:
    """Seed torch's CPU generator, NumPy's legacy RNG and `random` from `seed` (and offer
    `sample_generator()`); with `restore`, put their states back afterwards."""
    global _current_seed
    if restore:
        saved = (torch.default_generator.get_state(), np.random.get_state(), random.getstate())
    _current_seed = seed
    # Not torch.manual_seed: that also walks the accelerator back-ends (~99 µs against ~1 µs).
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    random.seed(seed)
    try:
        yield
    finally:
        _current_seed = None
        if restore:
            torch.default_generator.set_state(saved[0])
            np.random.set_state(saved[1])
            random.setstate(saved[2])


class DataError(SeedbedError):
    """A sample that cannot be loaded or transformed: one line naming it and the cause.

    A DataLoader worker's error comes back to the main process as this class built from a
    multi-line "Caught DataError in DataLoader worker ... Original Traceback ..." text: the
    last line of that text is the original message, and is all the user needs.
    """

    def __init__(self, message: str) -> None:
        if message.startswith("Caught DataError"):
            last = message.strip().splitlines()[-1]
            message = last.split("DataError: ", 1)[-1]
        super().__init__(message)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _describe(dataset: Any, index: int) -> str:
    """The file of sample `index` where the dataset knows it, else its index."""
    if isinstance(dataset, Subset):
        return _describe(dataset.dataset, dataset.indices[index])
    samples = getattr(dataset, "samples", None)  # torchvision's ImageFolder: (path, label)
    if isinstance(samples, Sequence) and index < len(samples):
        return f"{samples[index][0]}"
    return f"sample {index} of {type(dataset).__name__}"


class KeyedDataset(Dataset):
    """A map-style dataset whose items are `(x, y)`, addressed by (epoch, index).

    `transform` is applied to `x` under the sample's keyed RNGs; `plain_transform` is
    what `unaugmented()` uses instead (e.g. the eval transform for the training split).
    `targets` are the labels (a sequence or tensor, one per sample) without decoding a
    single input; when not given they are read from the dataset's own `targets`, or
    (slow: it loads every sample once) from its items.
    """

    has_transform = True  # never tensor-indexed: it goes through a DataLoader

    def __init__(
        self,
        dataset: Dataset,
        transform: Callable[[Any], Any] | None = None,
        targets: Sequence[Any] | Tensor | None = None,
        plain_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.dataset, self.transform, self.plain_transform = dataset, transform, plain_transform
        if targets is None:
            targets = getattr(dataset, "targets", None)
        if targets is None:
            targets = [dataset[i][1] for i in range(len(dataset))]
        self.y = torch.as_tensor(targets)
        self.augment_seed = 0

    def with_augment_seed(self, seed: int) -> KeyedDataset:
        """Attach the augment stream's seed (a runtime value, not config)."""
        self.augment_seed = seed
        return self

    def unaugmented(self) -> KeyedDataset:
        """The same samples through `plain_transform`: how eval reads the training split."""
        return KeyedDataset(self.dataset, self.plain_transform, self.y, self.plain_transform)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, Tensor]:
        epoch, index = key
        # In the main process the same RNGs drive dropout: they are put back afterwards.
        with keyed_rngs(sample_seed(self.augment_seed, epoch, index), get_worker_info() is None):
            x = self.load(index)
        return x, self.y[index]

    def load(self, index: int) -> Any:
        """Sample `index` fetched and transformed (call with the sample's RNGs seeded)."""
        try:
            x = self.dataset[index][0]
        except SeedbedError:
            raise
        except Exception as error:
            raise DataError(
                f"cannot load {_describe(self.dataset, index)}: {_first_line(error)}"
            ) from error
        if self.transform is None:
            return x
        try:
            return self.transform(x)
        except Exception as error:
            raise DataError(
                f"cannot transform {_describe(self.dataset, index)}: {_first_line(error)}"
            ) from error


def check_transforms(
    dataset: KeyedDataset, transforms: Sequence[Callable[[Any], Any]], key: str
) -> Tensor:
    """Sample 0 through `transforms` one at a time (before any training), so that a
    transform that fails is named in one line; returns the transformed input."""
    with keyed_rngs(sample_seed(dataset.augment_seed, 0, 0)):
        x = KeyedDataset(dataset.dataset, None, dataset.y).load(0)
        for position, transform in enumerate(transforms):
            try:
                x = transform(x)
            except Exception as error:
                raise DataError(
                    f"{key}[{position}] ({type(transform).__name__}) fails on the first "
                    f"sample: {_first_line(error)}"
                ) from error
    if not isinstance(x, Tensor):
        raise DataError(
            f"{key} must end in a tensor (e.g. with ToImage and ToDtype); it gives "
            f"{type(x).__name__}"
        )
    return x


def dataset_splits(
    train: Dataset,
    val: Dataset,
    test: Dataset | None = None,
    transform: Callable[[Any], Any] | None = None,
    eval_transform: Callable[[Any], Any] | None = None,
    num_classes: int | None = None,
) -> DataSplits:
    """Your own map-style Datasets (items `(x, y)`) as seedbed's splits: `transform` for the
    training split (under the sample's keyed RNGs), `eval_transform` for the others. Give a
    dataset a `targets` attribute (one label per sample) to spare reading every item once."""
    splits = {
        "train": KeyedDataset(train, transform, plain_transform=eval_transform),
        "val": KeyedDataset(val, eval_transform, plain_transform=eval_transform),
    }
    if test is not None:
        splits["test"] = KeyedDataset(test, eval_transform, plain_transform=eval_transform)
    for name, dataset in splits.items():
        if len(dataset) == 0:
            raise DataError(f"the {name} split of {type(dataset.dataset).__name__} is empty")
    x, _ = splits["val"][(0, 0)]
    return DataSplits(
        train=splits["train"],
        val=splits["val"],
        test=splits.get("test"),
        input_shape=tuple(torch.as_tensor(x).shape),
        num_classes=num_classes,
    )
