"""The `transforms` benchmark: an image-folder pipeline with torchvision v2 transforms.

seedbed's loader (samples keyed by (augment seed, epoch, index), every global RNG
seeded per sample) against a plain DataLoader with PyTorch's `seed_worker` recipe
and the same transforms, both with 2 workers; plus what the per-sample RNG keying
and the data fingerprint cost on their own.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from seedbed.data.datasets import keyed_rngs, sample_seed
from seedbed.data.fingerprint import folder_fingerprint
from seedbed.data.loader import EpochBatches, EpochBatchSampler

IMAGES, SIZE, BATCH, WORKERS = 2000, 32, 64, 2


def make_images(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def seed_worker(_worker_id: int) -> None:
    """PyTorch's reproducibility recipe: NumPy and random seeded from torch's worker seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def per_call_us(work: Callable[[], None], n: int = 20000) -> float:
    started = time.perf_counter()
    for _ in range(n):
        work()
    return (time.perf_counter() - started) / n * 1e6


def keying_costs() -> dict[str, float]:
    """µs per sample: the seed, and seeding the three RNGs (worker) or seeding plus saving
    and restoring them (main process)."""

    def in_worker() -> None:
        with keyed_rngs(sample_seed(7, 1, 123), restore=False):
            pass

    def in_main() -> None:
        with keyed_rngs(sample_seed(7, 1, 123), restore=True):
            pass

    return {
        "sample_seed": per_call_us(lambda: sample_seed(7, 1, 123)),
        "keying in a worker": per_call_us(in_worker),
        "keying in the main process": per_call_us(in_main, 5000),
    }


def bench_transforms(repeats: int, result_type: type) -> object:
    from seedbed.data.vision import image_folder, torchvision

    with tempfile.TemporaryDirectory() as tmp:
        root = make_images(Path(tmp) / "images")
        started = time.perf_counter()
        found = folder_fingerprint(root)
        fingerprint_s = time.perf_counter() - started
        data = image_folder(str(root), SIZE, val_fraction=0.1, seed=0)
        train = data.train.with_augment_seed(1)
        sampler = EpochBatchSampler(len(train), BATCH, seed=0)
        seedbed = EpochBatches(train, sampler, num_workers=WORKERS)
        # The plain pipeline: the same files and transforms, ImageFolder applying them.
        plain_set = torchvision().datasets.ImageFolder(str(root), transform=train.transform)
        plain_set = torch.utils.data.Subset(plain_set, train.dataset.indices)
        plain = DataLoader(
            plain_set,
            batch_size=BATCH,
            shuffle=True,
            num_workers=WORKERS,
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(0),
        )
        epoch = iter(range(10**6))

        def seedbed_epoch() -> float:
            seedbed.set_epoch(next(epoch))
            started = time.perf_counter()
            for _ in seedbed:
                pass
            return time.perf_counter() - started

        def plain_epoch() -> float:
            started = time.perf_counter()
            for _ in plain:
                pass
            return time.perf_counter() - started

        from run import interleaved  # the harness of benchmarks/run.py

        samples = interleaved(
            {"DataLoader + seed_worker": plain_epoch, "seedbed loader": seedbed_epoch}, repeats
        )
    costs = keying_costs()
    per_file_ms = fingerprint_s / found["files"] * 1e3
    note = (
        f"{len(train)} PNGs {SIZE}x{SIZE}, RandomResizedCrop+flip+normalise (v2), batch {BATCH}, "
        f"{WORKERS} workers, per epoch. RNG keying per sample: "
        + ", ".join(f"{k} {v:.1f} µs" for k, v in costs.items())
        + f". Fingerprint: {per_file_ms:.3f} ms/file ({found['bytes'] / 1e6:.1f} MB in "
        f"{fingerprint_s:.2f} s), so ~{per_file_ms * 50:.0f} s for 50k such files"
    )
    return result_type(
        name="transforms",
        unit="s/epoch",
        reference="DataLoader + seed_worker",
        samples=samples,
        note=note,
    )
