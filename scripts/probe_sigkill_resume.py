"""Does a run killed at a random instant resume to the bits of the run never stopped?

    python scripts/probe_sigkill_resume.py                       # 20 kills, this checkout
    python scripts/probe_sigkill_resume.py --kills 58 --checkout <dir> --seed 1

One uninterrupted reference run, then `--kills` trials. Each trial starts the same run,
sends SIGKILL to its process group at a random instant of the reference's wall time (three
in four while it trains: mid-step, while a checkpoint, run.json or metrics.jsonl is
written; one in four anywhere, start-up included), then resumes
it (`resume=<run>`; a run killed before its first checkpoint is started again in place,
as the README says) until it completes. A trial counts as survived when run.json says
`completed` and the weights SHA-256, the loss-series SHA-256 and metrics.jsonl equal the
reference's. Half the trials use DataLoader workers (`loader.num_workers=2`): the order of
the data must not depend on them either. Prints each trial and the count.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Small enough for many trials, long enough to be killed anywhere: 3 epochs of 66 steps,
# a checkpoint every 5 steps, dropout and augmentation on (the defaults).
RUN = [
    "data.n_samples=6000",
    "trainer.epochs=3",
    "trainer.log_every=4",
    "checkpoint.every_steps=5",
]


def entry(checkout: Path, script: str) -> Path:
    """`train.py` or `eval.py` of a checkout: its example project's (seedbed 0.2 on), else
    the checkout's own (earlier layouts), so that a before/after pair runs the same probe."""
    project = checkout / "example" / script
    return project if project.is_file() else checkout / script


def train(checkout: Path, run_dir: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    return subprocess.Popen(
        [sys.executable, str(entry(checkout, "train.py")), f"hydra.run.dir={run_dir}", *overrides],
        cwd=run_dir.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # its own process group: DataLoader workers die with it
    )


def record(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def outcome(run_dir: Path) -> tuple:
    r = record(run_dir)
    metrics = (
        (run_dir / "metrics.jsonl").read_bytes() if (run_dir / "metrics.jsonl").exists() else b""
    )
    return r.get("status"), r.get("weights_sha256"), r.get("loss_series_sha256"), metrics


def trial(checkout: Path, run_dir: Path, delay: float, workers: int) -> tuple[tuple, str]:
    """Kill the run after `delay` seconds, then resume it to the end; (outcome, what the
    kill left: a checkpoint to resume from, nothing to resume, or a finished run)."""
    overrides = [*RUN, f"loader.num_workers={workers}"]
    first = train(checkout, run_dir, *overrides)
    time.sleep(delay)
    if first.poll() is None:
        os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    last = run_dir / "checkpoints" / "last.pt"
    if record(run_dir).get("status") == "completed":
        left = "finished before the kill"
    elif last.exists():
        step = read_step(last)
        left = f"resumed from step {step}"
    else:
        left = "killed before its first checkpoint, started again"
    for _ in range(5):
        status = record(run_dir).get("status")
        if status == "completed":
            break
        has_checkpoint = (run_dir / "checkpoints" / "last.pt").exists()
        again = [f"resume={run_dir}"] if has_checkpoint else overrides
        train(checkout, run_dir, *again).wait()
    return outcome(run_dir), left


def read_step(checkpoint: Path) -> int | None:
    """The loop step a checkpoint holds (read with the checkout's own loader's format)."""
    import torch

    try:
        return torch.load(checkpoint, weights_only=True)["loop"]["step"]
    except Exception:  # noqa: BLE001 - a checkpoint cut by the kill: the resume falls back
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the code measured")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="of the kill instants")
    options = parser.parse_args()
    checkout = options.checkout.resolve()
    rng = random.Random(options.seed)
    survived = resumed = 0
    with tempfile.TemporaryDirectory(prefix="probe-kill-") as scratch:
        where = Path(scratch)
        started = time.perf_counter()
        reference = where / "reference"
        process = train(checkout, reference, *RUN, "loader.num_workers=0")
        training = None  # when its step-0 checkpoint appeared: training had begun
        while process.poll() is None:
            if training is None and (reference / "checkpoints" / "last.pt").exists():
                training = time.perf_counter() - started
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        training = training or 0.0
        expected = outcome(reference)
        print(
            f"reference: {expected[0]} in {seconds:.1f} s (training from {training:.1f} s), "
            f"weights {expected[1]}"
        )
        for number in range(options.kills):
            # One kill in four anywhere (start-up included), the others while it trains.
            low = 0.0 if number % 4 == 3 else training
            delay, workers = rng.uniform(low, seconds), (0, 2)[number % 2]
            got, left = trial(checkout, where / f"trial{number}", delay, workers)
            same = got == expected
            survived += same
            resumed += "resumed" in left
            print(
                f"trial {number:2d}: SIGKILL at {delay:5.2f} s (num_workers={workers}), {left}: "
                f"{'bit-identical' if same else f'DIFFERS ({got[0]})'}",
                flush=True,
            )
    print(
        f"\n{checkout}: {survived}/{options.kills} killed runs ended bit-identical to the "
        f"reference ({resumed} of them resumed from a checkpoint, the others started again or "
        "finished before the kill)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
