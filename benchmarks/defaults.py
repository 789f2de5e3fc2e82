"""The evidence the default optimizer is chosen from: candidates trained on real data.

    python benchmarks/defaults.py                        # every candidate on every case
    python benchmarks/defaults.py --seeds 0 1 2 --case digits --candidate adamw

Each case is a packaged model on one of scikit-learn's bundled datasets
(`seedbed.data.sklearn_data.CASES`, written to a temporary folder), trained in this
process at the defaults but for the candidate's overrides. A cell is the median final
validation metric over the seeds, then how many seeds beat the constant prediction by
the case's margin (`5/5`). Nothing is asserted: `tests/test_real_data.py` checks the
chosen defaults; `python benchmarks/run.py --only defaults` times them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from seedbed.core.paths import use_project
from seedbed.data.sklearn_data import CASES, Case, write_all
from seedbed.runs.hydra import register_configs
from seedbed.runs.session import run_training
from seedbed.task import build_task, constant_baseline

# The clone's example project (what `seedbed new example` renders) and its configs.
CONFIG_DIR = use_project(Path(__file__).resolve().parents[1] / "example" / "configs")

# What the defaults were chosen among (the first is the default before this table existed).
CANDIDATES: dict[str, list[str]] = {
    "sgd lr=0.05 momentum=0.9": ["optim=sgd"],
    "sgd lr=0.01 momentum=0.9": ["optim=sgd", "optim.lr=0.01"],
    "adamw lr=3e-4": ["optim=adamw", "optim.lr=3e-4"],
    "adamw lr=1e-3": ["optim=adamw"],
    "adamw lr=3e-3": ["optim=adamw", "optim.lr=3e-3"],
    "adamw lr=1e-3, warmup_cosine": ["optim=adamw", "sched=warmup_cosine"],
    "adamw lr=1e-3, grad_clip=1": ["optim=adamw", "trainer.grad_clip=1.0"],
}


def compose_train(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def constant_prediction(case: Case, root: Path) -> float:
    """The case's metric of a constant prediction (the most frequent class, the mean)."""
    cfg = compose_train(case.arguments(root))
    task = build_task(cfg.task)
    return constant_baseline(task, task.prepare(instantiate(cfg.data)))[case.metric]


@dataclass
class Trained:
    """One run: its metric after each epoch, the training loop's seconds, its status."""

    values: list[float]
    fit_seconds: float
    status: str


def train(case: Case, root: Path, overrides: list[str], run_dir: Path) -> Trained:
    """`python train.py <case> <overrides>` in this process; the validation records are read
    from metrics.jsonl whatever the end (a run that fails after training still has them)."""
    started = time.perf_counter()
    status = "completed"
    try:
        run_training(compose_train([*case.arguments(root), *overrides]), run_dir)
    except Exception as error:  # reported in the table, not raised: the others still run
        status = f"failed: {str(error).splitlines()[0][:60]}"
    seconds = time.perf_counter() - started
    record = json.loads((run_dir / "run.json").read_text())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    values = [r[case.metric] for r in map(json.loads, lines) if r["kind"] == "val"]
    return Trained(values, record.get("fit_seconds", seconds), status)


@contextlib.contextmanager
def real_data() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "real"
        write_all(root)
        yield root


def quiet() -> None:
    """In-process runs log to the console: keep their warnings, drop their progress lines."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger().handlers[0].setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--case", action="append", help="cases whose name contains this")
    parser.add_argument("--candidate", action="append", help="candidates containing this")
    args = parser.parse_args(argv)
    quiet()
    cases = [c for c in CASES if not args.case or any(s in c.name for s in args.case)]
    candidates = {
        name: overrides
        for name, overrides in CANDIDATES.items()
        if not args.candidate or any(s in name for s in args.candidate)
    }
    with real_data() as root, tempfile.TemporaryDirectory() as runs:
        constants = {case.name: constant_prediction(case, root) for case in cases}
        print("| candidate | " + " | ".join(c.name for c in cases) + " |")
        print("|---" * (len(cases) + 1) + "|")
        print(
            "| constant prediction (to beat by) | "
            + " | ".join(f"{constants[c.name]:.3f} ({c.margin:g})" for c in cases)
            + " |"
        )
        for number, (name, overrides) in enumerate(candidates.items()):
            cells = []
            for case in cases:
                finals, reached = [], 0
                for seed in args.seeds:
                    run_dir = Path(runs) / f"{number}-{case.name}-{seed}".replace(" ", "_")
                    trained = train(case, root, [*overrides, f"seed={seed}"], run_dir)
                    print(f"{name} / {case.name} / seed {seed}: {trained}", file=sys.stderr)
                    final = trained.values[-1] if trained.values else float("nan")
                    finals.append(final)
                    reached += case.reached(final, constants[case.name])
                cells.append(f"{statistics.median(finals):.3f} {reached}/{len(args.seeds)}")
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
