"""Threads: what the fixed default (`trainer.threads=1`) costs on an idle machine and what it
saves on a busy one, against `trainer.threads=null` (every core: PyTorch's own default, and
seedbed's before threads were part of the config).

`contention`: the whole `python train.py trainer.epochs=2` process, idle and with one core
kept busy by another process (a bounded busy loop, started before the run and stopped after
it), interleaved. `threads`: the training loop alone (`fit_seconds`) of the default MLP and
the CNN (`experiment=cnn_images`), idle, 1 thread vs every core.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A busy loop that ends by itself (HOG_SECONDS) even if the benchmark is killed.
HOG_SECONDS = 600
HOG = f"import time\nend = time.monotonic() + {HOG_SECONDS}\nwhile time.monotonic() < end: pass"


def train_wall_seconds(run_dir: Path, overrides: list[str], busy: bool) -> float:
    """Wall time of `python train.py trainer.epochs=2 <overrides>`, beside a busy loop or not."""
    hog = subprocess.Popen([sys.executable, "-c", HOG]) if busy else None
    try:
        if hog is not None:
            time.sleep(0.5)  # let it take its core first
        command = [sys.executable, str(ROOT / "example" / "train.py"), f"hydra.run.dir={run_dir}"]
        started = time.perf_counter()
        subprocess.run(
            [*command, "trainer.epochs=2", *overrides],
            cwd=run_dir.parent,
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - started
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()


def contention_variants(tmp: Path) -> dict[str, Callable[[], float]]:
    runs = iter(range(10**6))

    def variant(overrides: list[str], busy: bool) -> Callable[[], float]:
        return lambda: train_wall_seconds(tmp / f"run{next(runs)}", overrides, busy)

    every_core = ["trainer.threads=null"]
    return {
        "threads=1 (default), idle": variant([], busy=False),
        "threads=1 (default), one core busy": variant([], busy=True),
        "threads=null (every core), idle": variant(every_core, busy=False),
        "threads=null (every core), one core busy": variant(every_core, busy=True),
    }


def threads_variants(
    tmp: Path, fit_seconds: Callable[[Path, list[str]], float]
) -> dict[str, Callable[[], float]]:
    runs = iter(range(10**6))

    def variant(overrides: list[str]) -> Callable[[], float]:
        return lambda: fit_seconds(tmp / f"run{next(runs)}", ["trainer.epochs=2", *overrides])

    cnn = ["experiment=cnn_images", "data.n_samples=2048"]
    return {
        "MLP threads=1 (default)": variant([]),
        "MLP threads=null (every core)": variant(["trainer.threads=null"]),
        "CNN threads=1 (default)": variant(cnn),
        "CNN threads=null (every core)": variant([*cnn, "trainer.threads=null"]),
    }


def scratch() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="seedbed-bench-")
