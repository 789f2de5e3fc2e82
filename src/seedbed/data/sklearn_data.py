"""Small real datasets that ship inside scikit-learn, written the way seedbed reads data.

    python -m seedbed.data.sklearn_data data/real   # pip install 'seedbed[sklearn]'

writes, without downloading anything (the data is inside the scikit-learn package):

- `digits.npz`, classification: 1797 handwritten digits, 8x8 pixels as 64 values in 0..16,
  10 classes;
- `breast_cancer.npz`, classification: 569 tumours, 30 measurements, malignant or benign;
- `wine.npz`, classification: 178 wines, 13 chemical measurements, 3 cultivars;
- `diabetes.npz`, regression: 442 patients, 10 measurements as recorded, the disease's
  progression a year later (25..346);
- `digits_halves.npz`, regression with 26 outputs: the digits' top half (32 pixels)
  predicts the 26 pixels of the bottom half that are not nearly always blank;
- `digits_png/<digit>/<n>.png`, images: the digits as 8x8 grey PNGs, one folder per class
  (`data=image_folder`).

The files are the same bytes every time (PNG and .npz are written without timestamps).

`CASES` is what seedbed's defaults promise on them: each packaged model, at the defaults,
beats a constant prediction (the most frequent class, the mean target) by a stated margin.
`tests/test_real_data.py` checks it, `benchmarks/run.py --only defaults` times it.
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seedbed.core.errors import SeedbedError

VECTOR_SETS = ("digits", "breast_cancer", "wine", "diabetes", "digits_halves")
PNG_FOLDER = "digits_png"


@dataclass(frozen=True)
class Case:
    """One packaged model on one real dataset, at the defaults. `overrides` name the data
    (`{root}` is the folder `write_all` wrote). Beating the constant prediction means: for
    accuracy, at least `margin` more (absolute); for an error, at most `1 - margin` of the
    constant prediction's."""

    name: str
    overrides: tuple[str, ...]
    metric: str
    margin: float

    def arguments(self, root: Path | str) -> list[str]:
        return [override.format(root=root) for override in self.overrides]

    def target(self, constant: float) -> float:
        """The value the metric must reach."""
        if self.metric.endswith("/acc"):
            return constant + self.margin
        return constant * (1 - self.margin)

    def reached(self, value: float, constant: float) -> bool:
        if self.metric.endswith("/acc"):
            return value >= self.target(constant)
        return value <= self.target(constant)


def _npz(name: str) -> str:
    return f"data.path={{root}}/{name}.npz"


# Each case names its task, data and model, and nothing else: the rest is the defaults (a
# project that makes another experiment its default in configs/train.yaml keeps these cases).
CLASSES, REGRESSION = "task=classification", "task=regression"
MLP = "model=mlp"
IMAGES = ("data=image_folder", f"data.root={{root}}/{PNG_FOLDER}")
CASES = (
    Case("mlp, digits", (CLASSES, "data=npz", _npz("digits"), MLP), "val/acc", 0.5),
    Case("mlp, breast cancer", (CLASSES, "data=npz", _npz("breast_cancer"), MLP), "val/acc", 0.2),
    Case("mlp, wine", (CLASSES, "data=npz", _npz("wine"), MLP), "val/acc", 0.3),
    Case(
        "mlp, diabetes (regression)",
        (REGRESSION, "data=npz", _npz("diabetes"), MLP),
        "val/rmse",
        0.1,
    ),
    Case(
        "mlp, digits halves (26 outputs)",
        (REGRESSION, "data=npz", _npz("digits_halves"), MLP),
        "val/rmse",
        0.2,
    ),
    Case("cnn, digits PNG", (CLASSES, *IMAGES, "model=cnn"), "val/acc", 0.4),
    Case("resnet18, digits PNG", (CLASSES, *IMAGES, "model=resnet18"), "val/acc", 0.4),
)


def _datasets() -> Any:
    try:
        from sklearn import datasets
    except ImportError as error:
        raise SeedbedError(
            "scikit-learn is not installed: pip install 'seedbed[sklearn]' (its small datasets "
            "ship inside the package: nothing is downloaded)"
        ) from error
    return datasets


def _loader(name: str) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    datasets = _datasets()

    def classification() -> tuple[np.ndarray, np.ndarray]:
        bunch = getattr(datasets, f"load_{name}")()
        return bunch.data.astype(np.float32), bunch.target.astype(np.int64)

    def diabetes() -> tuple[np.ndarray, np.ndarray]:
        # scaled=False: the measurements as recorded (age in years, ...); data.normalize
        # scales them, as it would the user's own.
        bunch = datasets.load_diabetes(scaled=False)
        return bunch.data.astype(np.float32), bunch.target.astype(np.float32)

    def digits_halves() -> tuple[np.ndarray, np.ndarray]:
        pixels = datasets.load_digits().data.astype(np.float32)
        top, bottom = pixels[:, :32], pixels[:, 32:]
        # A pixel that is 0 in (nearly) every image is no target: a training split may hold
        # only zeros of it, and a constant cannot be standardised.
        return top, bottom[:, (bottom > 0).mean(axis=0) >= 0.05]

    if name == "diabetes":
        return diabetes
    if name == "digits_halves":
        return digits_halves
    return classification


def vector_set(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of one of VECTOR_SETS."""
    if name not in VECTOR_SETS:
        raise SeedbedError(f"{name!r} is not one of {', '.join(VECTOR_SETS)}")
    return _loader(name)()


def write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """An .npz holding `x` and `y`, byte for byte the same every time (fixed zip dates)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, array in (("x", x), ("y", y)):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            archive.writestr(
                zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue()
            )
    return path


def _pil_image(root: Path) -> Any:
    """PIL's Image module, or one line saying how to install it."""
    try:
        from PIL import Image
    except ImportError as error:
        raise SeedbedError(
            f"{root}: writing PNGs needs pillow: pip install 'seedbed[vision]' (the image "
            "models need it too)"
        ) from error
    return Image


def write_digits_png(root: Path, limit: int | None = None) -> Path:
    """The digits as 8x8 greyscale PNGs (0..16 scaled to 0..255), one folder per digit; the
    first `limit` digits only, when given."""
    Image = _pil_image(root)

    digits = _datasets().load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    labels = digits.target
    if limit is not None:
        pixels, labels = pixels[:limit], labels[:limit]
    for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:04d}.png")
    return root


def write_all(out: Path) -> list[Path]:
    """Every vector set as `<out>/<name>.npz`, and the digits as `<out>/digits_png/`: what
    they need checked first, so that a missing package writes nothing."""
    _datasets()
    _pil_image(out / PNG_FOLDER)
    written = [write_npz(out / f"{name}.npz", *vector_set(name)) for name in VECTOR_SETS]
    written.append(write_digits_png(out / PNG_FOLDER))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m seedbed.data.sklearn_data",
        description="Write scikit-learn's bundled datasets as .npz files and a PNG folder.",
    )
    parser.add_argument("out", nargs="?", default="data/real", help="folder to write into")
    out = Path(parser.parse_args(argv).out)
    try:
        written = write_all(out)
    except SeedbedError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
