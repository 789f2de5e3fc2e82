"""What one run on several processes costs: per-step time of 1 process, 2-rank DDP (and
FSDP2 when the trainer has it) on the same global batch, and the elastic bookkeeping (the
per-step sample record, the per-checkpoint position) in microseconds.

    python benchmarks/run.py --only distributed
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "example" / "train.py")
# The default MLP on synthetic data, one global batch of 64 whatever the world size.
CONFIG = [
    "data=synthetic",
    "model=mlp",
    "model.dropout=0",
    "data.n_samples=4000",
    "loader.global_batch_size=64",
    "trainer.epochs=2",
    "checkpoint.every_steps=null",
]


def ms_per_step(launcher: list[str], *overrides: str) -> Callable[[], float]:
    """A run of `train.py` under `launcher`; its loop's milliseconds per optimizer step."""

    def run() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [*launcher, TRAIN, f"hydra.run.dir={tmp}/run", *CONFIG, *overrides],
                cwd=tmp,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
                check=True,
                capture_output=True,
            )
            record = json.loads((Path(tmp) / "run" / "run.json").read_text())
        return 1e3 * record["fit_seconds"] / record["final_metrics"]["steps"]

    return run


def variants(fsdp: bool) -> dict[str, Callable[[], float]]:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    found = {
        "1 process": ms_per_step([sys.executable]),
        "2-rank DDP": ms_per_step([*torchrun, "--nproc_per_node=2"], "trainer.distributed=true"),
    }
    if fsdp:
        found["2-rank FSDP2"] = ms_per_step(
            [*torchrun, "--nproc_per_node=2"], "trainer.distributed=fsdp"
        )
    return found


def bookkeeping_us(repeats: int = 2000) -> dict[str, float]:
    """Microseconds of the elastic bookkeeping: the step's `samples` record (rank 0 of 2,
    global batch 64: the served check, the SHA-256, the line written and flushed to
    metrics.jsonl) and a checkpoint's `position`."""
    from seedbed.core.record import MetricsLog
    from seedbed.data.loader import EpochBatchSampler
    from seedbed.loop import LoopState
    from seedbed.runs.elastic import batch_position, step_samples_record

    sampler = EpochBatchSampler(100_000, 32, seed=0, rank=0, world_size=2)
    state = LoopState()
    with tempfile.TemporaryDirectory() as tmp:
        log = MetricsLog(Path(tmp) / "metrics.jsonl")
        started = time.perf_counter()
        for step in range(repeats):
            state.step, state.batch = step + 1, step + 1
            served = sampler.micro_batch_indices(0, step)
            log.write(step_samples_record(sampler, state, served))
        per_step = (time.perf_counter() - started) / repeats
        log.close()
    started = time.perf_counter()
    for _ in range(repeats):
        batch_position(sampler, state, 2)
    per_checkpoint = (time.perf_counter() - started) / repeats
    return {"per step": 1e6 * per_step, "per checkpoint": 1e6 * per_checkpoint}
