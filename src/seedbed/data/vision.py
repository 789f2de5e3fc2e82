"""torchvision datasets (`data=mnist`, `data=cifar10`, `data=image_folder`) with their transforms.

Needs the `vision` extra (`pip install 'seedbed[vision]'`). The datasets are read by
torchvision's own loaders; transforms are `torchvision.transforms.v2` objects,
given in the config as lists of `_target_` entries, and run under the sample's
keyed RNGs (`seedbed.data.datasets`), so they keep the promise for any
`loader.num_workers` and across a resume. The defaults normalise with the
dataset's mean and std (ImageNet's for an image folder) and, for the training
split, crop and flip. Validation is drawn from the training files by
`val_fraction` (the data's own seed); MNIST's and CIFAR-10's test split is their
official test set. run.json records a fingerprint of the files read.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import MISSING
from torch.utils.data import Dataset, Subset

from seedbed.core.errors import ConfigError, SeedbedError
from seedbed.data.arrays import DataSplits, split_indices
from seedbed.data.datasets import KeyedDataset, check_transforms
from seedbed.data.fingerprint import check_data_files, folder_fingerprint

MNIST_STATS = ([0.1307], [0.3081])
CIFAR10_STATS = ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])
IMAGENET_STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
# An image file larger than this is refused before it is decoded (a photograph is a few MB).
MAX_IMAGE_BYTES = 256 * 2**20


def torchvision() -> Any:
    """The torchvision module, or one line saying how to install the one that fits torch."""
    try:
        importlib.import_module("torchvision.transforms.v2")  # not imported by the package
        return importlib.import_module("torchvision")
    except ImportError as error:
        raise SeedbedError(
            "torchvision is not installed: pip install 'seedbed[vision]' (the release built for "
            f"torch {torch.__version__.split('+')[0]})"
        ) from error
    except RuntimeError as error:  # its compiled ops were built for another torch
        raise SeedbedError(
            f"torchvision does not load with torch {torch.__version__} ({error}): install the "
            "torchvision release and build (CPU or CUDA) made for this torch"
        ) from error


def to_float() -> Any:
    """`ToDtype(float32, scale=True)`: a YAML cannot spell a torch dtype."""
    return torchvision().transforms.v2.ToDtype(torch.float32, scale=True)


def build_transforms(items: Sequence[Any], key: str) -> list[Any]:
    """Each `_target_` entry of `items` built, or one line naming the one that cannot be."""
    built = []
    for position, item in enumerate(items):
        target = item.get("_target_") if hasattr(item, "get") else item
        try:
            built.append(instantiate(item))
        except Exception as error:
            lines = str(error).strip().splitlines()
            raise ConfigError(
                f"{key}[{position}]",
                target,
                "a transform that can be built, e.g. torchvision.transforms.v2."
                f"RandomHorizontalFlip ({lines[0] if lines else type(error).__name__})",
            ) from error
    return built


def _defaults(
    stats: tuple[list[float], list[float]], augment: list[Any], resize: Sequence[Any] = ()
) -> tuple[list, list]:
    """(train, eval) transforms: to a tensor image, `augment` (train) or `resize` (eval), to
    float in [0, 1], normalised with `stats`."""
    v2 = torchvision().transforms.v2
    tail = [to_float(), v2.Normalize(*stats)]
    return [v2.ToImage(), *augment, *tail], [v2.ToImage(), *resize, *tail]


def _splits(
    train_set: Dataset,
    test_set: Dataset | None,
    train_items: list[Any],
    eval_items: list[Any],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    num_classes: int,
) -> DataSplits:
    """Val (and, without a test set of its own, test) drawn from `train_set` by the
    fractions; the transforms checked on the first sample, one at a time."""
    v2 = torchvision().transforms.v2
    targets = torch.as_tensor(train_set.targets)  # type: ignore[attr-defined]  # torchvision sets
    train_idx, val_idx, test_idx = split_indices(
        len(targets), val_fraction, seed, 0.0 if test_set is not None else test_fraction
    )
    train_tf, eval_tf = v2.Compose(train_items), v2.Compose(eval_items)

    def part(indices: torch.Tensor, transform: Any) -> KeyedDataset:
        subset = Subset(train_set, indices.tolist())
        return KeyedDataset(subset, transform, targets[indices], plain_transform=eval_tf)

    train = part(train_idx, train_tf)
    val = part(val_idx, eval_tf)
    if test_set is not None:
        test = KeyedDataset(test_set, eval_tf, plain_transform=eval_tf)
    else:
        test = part(test_idx, eval_tf) if len(test_idx) else None
    for dataset, items, key in (
        (train, train_items, "data.train_transform"),
        (val, eval_items, "data.eval_transform"),
    ):
        x = check_transforms(dataset, items, key)
        if not x.is_floating_point():  # the model's first layer takes floats
            raise ConfigError(
                key,
                [type(item).__name__ for item in items],
                f"transforms ending in a float image (they give {x.dtype}): add "
                "{_target_: seedbed.data.vision.to_float} (ToDtype float32, scaled to [0, 1])",
            )
    shape = x.shape
    return DataSplits(train, val, tuple(shape), test=test, num_classes=num_classes)


def _check_root(root: str) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise ConfigError("data.root", root, "an existing folder (it does not exist)")
    return path


def _official(name: str, root: str, download: bool, folder: str, how: str) -> tuple[Any, Any]:
    """torchvision's `name` (MNIST, CIFAR10) train and test sets under `root`."""
    if not download:
        _check_root(root)
    if (Path(root) / folder).is_dir():
        check_data_files(Path(root) / folder)  # before torchvision reads a byte of it
    cls = getattr(torchvision().datasets, name)
    try:
        return cls(root, train=True, download=download), cls(root, train=False, download=False)
    except (RuntimeError, OSError) as error:  # not found, or no network to download from
        where = Path(root).resolve() / folder
        cause = "cannot be downloaded (no network?)" if download else "are not there"
        raise ConfigError(
            "data.root",
            root,
            f"a folder holding {name}: its files are expected in {where} and {cause}; {how}",
        ) from error


def _transforms(
    train_transform: Sequence[Any] | None,
    eval_transform: Sequence[Any] | None,
    defaults: tuple[list, list],
) -> tuple[list, list]:
    train = build_transforms(train_transform, "data.train_transform") if train_transform else None
    evals = build_transforms(eval_transform, "data.eval_transform") if eval_transform else None
    return train or defaults[0], evals or defaults[1]


def mnist(
    root: str,
    download: bool,
    val_fraction: float,
    seed: int,
    train_transform: Sequence[Any] | None = None,
    eval_transform: Sequence[Any] | None = None,
    test_fraction: float = 0.0,
) -> DataSplits:
    """MNIST: 28x28 grey digits; the official test set is the test split."""
    train_set, test_set = _official(
        "MNIST",
        root,
        download,
        "MNIST/raw",
        "set data.download=true, or copy train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte there",
    )
    items = _transforms(train_transform, eval_transform, _defaults(MNIST_STATS, []))
    data = _splits(train_set, test_set, *items, val_fraction, 0.0, seed, 10)
    data.record = _record("mnist", root, Path(root) / "MNIST" / "raw")
    return data


def cifar10(
    root: str,
    download: bool,
    val_fraction: float,
    seed: int,
    train_transform: Sequence[Any] | None = None,
    eval_transform: Sequence[Any] | None = None,
    test_fraction: float = 0.0,
) -> DataSplits:
    """CIFAR-10: 32x32 colour images; random crop (padding 4) and flip by default."""
    train_set, test_set = _official(
        "CIFAR10",
        root,
        download,
        "cifar-10-batches-py",
        "set data.download=true, or extract cifar-10-python.tar.gz there",
    )
    v2 = torchvision().transforms.v2
    augment = [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()]
    items = _transforms(train_transform, eval_transform, _defaults(CIFAR10_STATS, augment))
    data = _splits(train_set, test_set, *items, val_fraction, 0.0, seed, 10)
    data.record = _record("cifar10", root, Path(root) / "cifar-10-batches-py")
    return data


# The side an image folder's images are brought to when they are larger: ImageNet's.
MAX_DEFAULT_IMAGE_SIZE = 224


def native_image_size(path: str) -> int:
    """The shorter side of the image at `path`, at most MAX_DEFAULT_IMAGE_SIZE: small images
    are trained at their own size (upscaling 8x8 digits to 224 adds nothing but 800x the
    work), large ones at ImageNet's."""
    from PIL import Image

    with Image.open(path) as image:
        return min(min(image.size), MAX_DEFAULT_IMAGE_SIZE)


def image_folder(
    root: str,
    image_size: int | None,
    val_fraction: float,
    seed: int,
    test_fraction: float = 0.0,
    train_transform: Sequence[Any] | None = None,
    eval_transform: Sequence[Any] | None = None,
) -> DataSplits:
    """One sub-folder per class (torchvision's ImageFolder); val and test drawn by the
    fractions. Default transforms: random resized crop and flip for training, resize and
    centre crop for evaluation, both to `image_size` (None: the first image's shorter side,
    at most 224), normalised with ImageNet's statistics."""
    path = _check_root(root)
    datasets = torchvision().datasets
    check_data_files(path, MAX_IMAGE_BYTES, datasets.folder.IMG_EXTENSIONS)
    try:
        base = datasets.ImageFolder(str(path))
    except (FileNotFoundError, RuntimeError) as error:
        raise ConfigError(
            "data.root",
            root,
            f"a folder with one sub-folder of images per class ({str(error).splitlines()[0]})",
        ) from error
    if image_size is None and base.samples:
        image_size = native_image_size(base.samples[0][0])
    v2 = torchvision().transforms.v2
    augment = [v2.RandomResizedCrop(image_size), v2.RandomHorizontalFlip()]
    resize = [v2.Resize(image_size), v2.CenterCrop(image_size)]
    defaults = _defaults(IMAGENET_STATS, augment, resize)
    items = _transforms(train_transform, eval_transform, defaults)
    data = _splits(base, None, *items, val_fraction, test_fraction, seed, len(base.classes))
    data.record = _record("image_folder", root, path)
    data.record["classes"] = list(base.classes)
    data.record["image_size"] = image_size
    return data


def _record(source: str, root: str, files: Path) -> dict[str, Any]:
    """run.json's `data`: the root as given and absolute, and the files' fingerprint."""
    found = folder_fingerprint(files)
    return {
        "source": source,
        "root": root,
        "paths": {"root": str(Path(root).resolve())},
        "files": str(files.resolve()),
        "fingerprint": found.pop("sha256"),
        "fingerprint_of": found,
    }


@dataclass
class MnistDataConfig:
    """MNIST through torchvision (`pip install 'seedbed[vision]'`): 28x28 grey digits, 10 classes;
    the official test set is the test split."""

    _target_: str = "seedbed.data.vision.mnist"
    _recursive_: bool = False
    root: str = "data"
    """Folder that holds (or will hold) MNIST/raw/."""
    download: bool = False
    """Download the files into `root` when they are not there."""
    val_fraction: float = 0.1
    """Fraction of the training files held out for validation (by `seed`)."""
    seed: int = 0
    """Seed of the train/val split only."""
    train_transform: list[Any] | None = None
    """torchvision.transforms.v2 transforms of the training split, each a `_target_` entry;
    null: to a float image normalised with MNIST's mean and std."""
    eval_transform: list[Any] | None = None
    """Transforms of the val and test splits; null: the same normalisation, nothing random."""


@dataclass
class Cifar10DataConfig:
    """CIFAR-10 through torchvision (`pip install 'seedbed[vision]'`): 32x32 colour images, 10
    classes; the official test set is the test split."""

    _target_: str = "seedbed.data.vision.cifar10"
    _recursive_: bool = False
    root: str = "data"
    """Folder that holds (or will hold) cifar-10-batches-py/."""
    download: bool = False
    """Download and extract the archive into `root` when the files are not there."""
    val_fraction: float = 0.1
    """Fraction of the training files held out for validation (by `seed`)."""
    seed: int = 0
    """Seed of the train/val split only."""
    train_transform: list[Any] | None = None
    """Transforms of the training split, each a `_target_` entry; null: random crop (padding
    4) and horizontal flip, normalised with CIFAR-10's mean and std."""
    eval_transform: list[Any] | None = None
    """Transforms of the val and test splits; null: the same normalisation, nothing random."""


@dataclass
class ImageFolderDataConfig:
    """Your images, one sub-folder per class (torchvision's ImageFolder; `.[vision]` extra)."""

    _target_: str = "seedbed.data.vision.image_folder"
    _recursive_: bool = False
    root: str = MISSING
    """The folder whose sub-folders are the classes."""
    image_size: int | None = None
    """Height and width of the images the default transforms produce; null: the first
    image's shorter side, at most 224 (small images are not upscaled; run.json's
    `data.image_size` says which size was used)."""
    val_fraction: float = 0.2
    """Fraction of the images held out for validation (by `seed`)."""
    test_fraction: float = 0.0
    """Fraction held out for testing; 0: no test split."""
    seed: int = 0
    """Seed of the train/val/test split only."""
    train_transform: list[Any] | None = None
    """Transforms of the training split, each a `_target_` entry; null: RandomResizedCrop to
    `image_size` and horizontal flip, normalised with ImageNet's mean and std."""
    eval_transform: list[Any] | None = None
    """Transforms of the val and test splits; null: resize and centre crop to `image_size`,
    normalised likewise."""
