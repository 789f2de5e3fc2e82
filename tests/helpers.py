"""Test helpers: real training runs, in a subprocess (as a user runs them) or in-process."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from seedbed.core.paths import use_project
from seedbed.runs.cli import cli
from seedbed.runs.hydra import register_configs
from seedbed.runs.session import run_training

ROOT = Path(__file__).resolve().parents[1]
# The library's tests run in the clone's example project (what `seedbed new example` renders):
# its train.py and eval.py, its configs first on the search path, seedbed's after them.
PROJECT = ROOT / "example"
PROJECT_CONFIGS = PROJECT / "configs"
TRAIN = str(PROJECT / "train.py")
EVAL = str(PROJECT / "eval.py")
# verify runs a project's train.py: the tools' flag naming it, when not run in its root.
IN_PROJECT = ["--project", str(PROJECT)]
use_project(PROJECT_CONFIGS)  # what the tests' in-process runs trust: the example's configs
# The experiment the machinery tests run, named in full: they test the machinery, not the
# default experiment, so a project that makes another one its default (configs/train.yaml)
# keeps them green. A later override on the same command line still wins.
MACHINERY = [
    "task=classification",
    "data=synthetic",
    "model=mlp",
    "init=kaiming_uniform",
    "optim=adamw",
    "sched=none",
]
# Small enough for a test, large enough to have several epochs, batches and log records.
SMALL = [
    *MACHINERY,
    "data.n_samples=576",
    "trainer.epochs=2",
    "trainer.log_every=4",
    "loader.batch_size=32",
]
# Smaller, where a test runs several trainings (sweeps, DDP): 2 epochs of 9 batches; split
# over 2 ranks, the 270 training samples give each rank 135 with no padding.
TINY = [
    *MACHINERY,
    "data.n_samples=385",
    "trainer.epochs=2",
    "trainer.log_every=4",
    "loader.batch_size=32",
]


def run_python(
    *args: str,
    cwd: Path,
    check: bool = True,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """`python <args>` in a fresh process, as a user runs it: the one subprocess runner.

    `log`: write stdout and stderr to this file instead of pipes (a run killed mid-way
    leaves orphaned DataLoader workers that would hold a pipe open)."""
    with log.open("w") if log is not None else contextlib.nullcontext() as out:
        result = subprocess.run(
            [sys.executable, *args],
            cwd=cwd,
            stdout=out if out is not None else subprocess.PIPE,
            stderr=subprocess.STDOUT if out is not None else subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=timeout,
        )
    if check and result.returncode != 0:
        output = log.read_text() if log is not None else result.stderr
        raise AssertionError(
            f"{' '.join(args[:2])} failed ({result.returncode}):\n{output[-3000:]}"
        )
    return result


def run_git(repo: Path, *args: str) -> None:
    """`git -C <repo> <args>`, failing the test if git does."""
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def run_train(run_dir: Path, *overrides: str, **options: Any) -> subprocess.CompletedProcess:
    """`python train.py hydra.run.dir=<run_dir> <overrides>` in a fresh process."""
    return run_python(TRAIN, f"hydra.run.dir={run_dir}", *overrides, cwd=run_dir.parent, **options)


def run_multirun(sweep_dir: Path, *overrides: str, **options: Any) -> subprocess.CompletedProcess:
    """`python train.py -m hydra.sweep.dir=<sweep_dir> <overrides>` in a fresh process."""
    return run_python(
        TRAIN, "-m", f"hydra.sweep.dir={sweep_dir}", *overrides, cwd=sweep_dir.parent, **options
    )


def torchrun(
    workdir: Path,
    *overrides: str,
    nproc: int = 2,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=<nproc> --standalone train.py <overrides>` in `workdir`."""
    workdir.mkdir(exist_ok=True)
    launcher = ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone"]
    return run_python(
        *launcher,
        TRAIN,
        *overrides,
        cwd=workdir,
        env={"OMP_NUM_THREADS": "1", **(env or {})},
        check=check,
        timeout=120,
    )


def run_cli(run_dir: Path | None, *overrides: str) -> tuple[int, str, str]:
    """`train.py` in this process (fast, for many small cases): (exit code, stdout, stderr).
    `run_dir` None: no hydra.run.dir, as a user resumes (`python train.py resume=<run>`)."""
    argv, stdout, stderr = sys.argv, sys.stdout, sys.stderr
    where = [f"hydra.run.dir={run_dir}"] if run_dir is not None else []
    sys.argv = ["train.py", *where, *overrides]
    sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
    code = 0
    try:
        cli(PROJECT_CONFIGS)
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    finally:
        out, err = sys.stdout.getvalue(), sys.stderr.getvalue()
        sys.argv, sys.stdout, sys.stderr = argv, stdout, stderr
        GlobalHydra.instance().clear()
    return code, out, err


def read_run(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def compose_config(*overrides: str) -> DictConfig:
    """The config `python train.py <overrides>` would get, without starting a run."""
    register_configs()
    with initialize_config_dir(config_dir=str(PROJECT_CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def train_in_process(run_dir: Path, *overrides: str) -> dict:
    """`python train.py <overrides>` without a new process; resume overrides work as on the CLI.
    Returns run.json."""
    overrides = tuple(o.replace("resume=", "resume.path=", 1) for o in overrides)
    run_training(compose_config(*overrides), run_dir, overrides=list(overrides))
    return read_run(run_dir)
