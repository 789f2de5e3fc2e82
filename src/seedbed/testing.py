"""seedbed.testing: a pytest plugin that proves the promise for your own recipe and config.

    # tests/conftest.py
    pytest_plugins = ["seedbed.testing"]

    # tests/test_reproducibility.py
    def test_same_seed_gives_identical_weights(seedbed):
        seedbed.assert_same_weights_twice()

    def test_a_run_killed_and_resumed_ends_as_if_never_stopped(seedbed):
        seedbed.assert_resume_is_exact("model=residual_mlp")

Every check trains with your project's `train.py` in fresh processes, as you
run it, into pytest's temporary directory, and compares what the runs record
bit for bit: the SHA-256 of the final weights (every parameter and buffer) and
the loss series. The runs are small: `seedbed.small` (the `seedbed_small` ini
option, or the defaults below: two short epochs) comes first, your overrides
after it. A check that fails says which run differed, and from where.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from seedbed.core.interrupts import TEST_SIGNAL_ENV
from seedbed.core.record import CONFIG_FILE, METRICS_FILE, RUN_FILE, read_metrics

# Two epochs of four optimizer steps, every loss logged, a checkpoint every two steps: enough
# for a resume from the middle of an epoch, small enough for any dataset.
SMALL = [
    "trainer.epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.log_every=1",
    "checkpoint.every_steps=2",
    "checkpoint.keep_last=null",
]
# Where the default kill lands: the middle of the second epoch (after a step checkpoint).
KILL_AT_STEP = 7


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "seedbed_project", "the project's root, where train.py is (default: pytest's rootdir)"
    )
    parser.addini(
        "seedbed_small",
        "overrides that make a run small, before each check's own (default: seedbed.testing.SMALL)",
        type="args",
    )


@dataclass
class Run:
    """What one run recorded."""

    dir: Path
    returncode: int
    output: str

    @property
    def record(self) -> dict[str, Any]:
        return json.loads((self.dir / RUN_FILE).read_text())

    @property
    def weights_sha256(self) -> str:
        return self.record["weights_sha256"]

    @property
    def losses(self) -> list[dict[str, Any]]:
        """metrics.jsonl's records of the training loss: step, epoch, loss, lr."""
        return [r for r in read_metrics(self.dir / METRICS_FILE) if r.get("kind") == "train"]

    @property
    def config(self) -> str:
        return (self.dir / CONFIG_FILE).read_text()


class Project:
    """Your project, trained in fresh processes: what the `seedbed` fixture hands a test."""

    def __init__(
        self, root: Path, workdir: Path, small: list[str], env: dict[str, str] | None = None
    ) -> None:
        self.root, self.workdir, self.small = root, workdir, list(small)
        self.env = dict(env or {})  # set in every process this project runs
        self._runs = 0

    def python(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """`python <args>` in the project's root, as a user runs it."""
        return subprocess.run(
            [sys.executable, *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            env={**os.environ, **self.env, **(env or {})},
            timeout=600,
        )

    def train(self, *overrides: str, expect: str = "completed", **env: str) -> Run:
        """`python train.py <small> <overrides>` into a new run directory; checks the run
        ended as `expect` (completed, or killed: no status check)."""
        self._runs += 1
        run_dir = self.workdir / f"run{self._runs}"
        result = self.python(
            "train.py", *self.small, *overrides, f"hydra.run.dir={run_dir}", env=env or None
        )
        run = Run(run_dir, result.returncode, result.stdout + result.stderr)
        if expect == "completed":
            assert result.returncode == 0 and run.record["status"] == "completed", (
                f"python train.py {shlex.join(overrides)} failed ({result.returncode}):\n"
                f"{run.output[-3000:]}"
            )
        return run

    def resume(self, run: Run, *overrides: str) -> Run:
        """`python train.py resume=<run dir>`: continue a stopped run in its own directory."""
        result = self.python("train.py", f"resume={run.dir}", *overrides)
        resumed = Run(run.dir, result.returncode, result.stdout + result.stderr)
        assert result.returncode == 0, f"resume of {run.dir} failed:\n{resumed.output[-3000:]}"
        return resumed

    # -- the promise ----------------------------------------------------------------------------

    def assert_same_weights_twice(self, *overrides: str) -> Run:
        """Two runs of the same config and seed: the same weights and losses, bit for bit."""
        first, second = self.train(*overrides), self.train(*overrides)
        assert_identical(first, second, "the same config and seed, run twice")
        return first

    def assert_num_workers_does_not_change_results(
        self, *overrides: str, workers: tuple[int, ...] = (0, 2)
    ) -> None:
        """The same run with each `loader.num_workers` in `workers`: identical."""
        runs = [self.train(*overrides, f"loader.num_workers={n}") for n in workers]
        for n, run in zip(workers[1:], runs[1:]):
            assert_identical(runs[0], run, f"loader.num_workers={workers[0]} and {n}")

    def assert_resume_is_exact(self, *overrides: str, kill_at_step: int = KILL_AT_STEP) -> None:
        """A run SIGKILLed after step `kill_at_step`, then resumed, ends bit-identical to the
        same run left alone."""
        reference = self.train(*overrides)
        killed = self.train(
            *overrides, expect="killed", **{TEST_SIGNAL_ENV: f"SIGKILL:{kill_at_step}"}
        )
        assert killed.returncode == -signal.SIGKILL, (
            f"the run was not killed at step {kill_at_step} (exit {killed.returncode}): does it "
            f"have that many steps?\n{killed.output[-2000:]}"
        )
        resumed = self.resume(killed)
        assert_identical(reference, resumed, f"a run killed at step {kill_at_step} and resumed")

    def assert_eval_reproduces(self, *overrides: str) -> None:
        """eval.py on the run's best.pt gives, exactly, the validation metrics the run logged
        at the step best.pt was written."""
        run = self.train(*overrides)
        result = self.python("eval.py", f"ckpt={run.dir / 'checkpoints' / 'best.pt'}", "split=val")
        assert result.returncode == 0, f"eval.py failed:\n{result.stderr[-3000:]}"
        evaluated = json.loads((run.dir / "eval_val.json").read_text())
        step = evaluated["step"]
        logged = [r for r in read_metrics(run.dir / METRICS_FILE) if r.get("step") == step]
        val = {k: v for r in logged for k, v in r.items() if k.startswith("val/")}
        assert val, f"no validation metrics logged at best.pt's step {step}"
        metrics = {k: evaluated["metrics"].get(k) for k in val}
        assert metrics == val, f"eval.py on best.pt (step {step}): {metrics}, logged: {val}"


def assert_identical(a: Run, b: Run, what: str) -> None:
    """The two runs' weights and loss series are equal bit for bit; else, where they part."""
    la, lb = a.losses, b.losses
    assert la, f"{what}: {a.dir / METRICS_FILE} holds no training loss: nothing to compare"
    for ra, rb in zip(la, lb):
        assert ra == rb, f"{what}: the loss series part at step {ra.get('step')}: {ra} != {rb}"
    assert len(la) == len(lb), f"{what}: {len(la)} and {len(lb)} loss records"
    assert a.weights_sha256 == b.weights_sha256, (
        f"{what}: the same losses but other final weights ({a.dir} vs {b.dir}; "
        "python -m seedbed.tools.compare names the tensors)"
    )


@pytest.fixture
def seedbed(request: pytest.FixtureRequest, tmp_path: Path) -> Project:
    """Your project, ready to train in fresh processes (see `Project`)."""
    config = request.config
    root = Path(config.getini("seedbed_project") or config.rootpath)
    if not (root / "train.py").is_file():
        raise pytest.UsageError(
            f"seedbed.testing: no train.py in {root}: set the ini option seedbed_project"
        )
    small = config.getini("seedbed_small") or SMALL
    return Project(root.resolve(), tmp_path, small)
