"""Same bits wherever a seed runs: alone, in a joblib or submitit_local sweep, on fewer cores,
rerun by `verify --against`. Every side runs at default settings (the thread count included):
nothing is pinned on one side only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import IN_PROJECT, TRAIN, read_run, run_multirun, run_python, run_train

from seedbed.core.launchers import available_cores

# The CNN: its convolutions give other bits with another thread count (the MLP's kernels, at
# these sizes, happen not to), so this is where a per-launcher thread count would show.
CASE = ["experiment=cnn_images", "data.n_samples=256", "trainer.epochs=1"]
SEEDS = (0, 1)

pytestmark = pytest.mark.slow


def multirun(sweep_dir: Path, *overrides: str) -> list[dict]:
    """`python train.py -m hydra.sweep.dir=<sweep_dir> seed=0,1 <CASE> <overrides>`: the jobs'
    run.json, in seed order."""
    run_multirun(sweep_dir, "seed=" + ",".join(map(str, SEEDS)), *CASE, *overrides, timeout=600)
    jobs = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    records = [read_run(job) for job in jobs]
    assert [r["seeds"]["seed"] for r in records] == list(SEEDS)
    assert all(r["status"] == "completed" for r in records)
    return records


@pytest.fixture(scope="module")
def alone(tmp_path_factory) -> dict[int, dict]:
    """`python train.py seed=S` for each seed, each in its own process: run.json by seed."""
    root = tmp_path_factory.mktemp("alone")
    records = {}
    for seed in SEEDS:
        run_train(root / f"seed{seed}", f"seed={seed}", *CASE)
        records[seed] = read_run(root / f"seed{seed}")
    return records


def test_a_joblib_job_gives_the_weights_of_the_seed_alone(alone, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "joblib"
    jobs = multirun(sweep, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    for seed, job in zip(SEEDS, jobs, strict=True):
        assert job["parallel_jobs"] == 2
        assert job["torch_threads"] == alone[seed]["torch_threads"]
        assert job["weights_sha256"] == alone[seed]["weights_sha256"], seed
        assert job["loss_series_sha256"] == alone[seed]["loss_series_sha256"], seed

    # ... and `verify --against` the job, from another directory, reproduces it.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_python(
        "-m",
        "seedbed.tools.verify",
        "--against",
        str(sweep / "1"),
        *IN_PROJECT,
        cwd=elsewhere,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "identical" in result.stdout


def test_a_submitit_local_job_gives_the_weights_of_the_seed_alone(alone, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    jobs = multirun(tmp_path / "submitit", "hydra/launcher=submitit_local")
    for seed, job in zip(SEEDS, jobs, strict=True):
        assert job["torch_threads"] == alone[seed]["torch_threads"]
        assert job["weights_sha256"] == alone[seed]["weights_sha256"], seed


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or available_cores() < 2, reason="needs 2+ cores"
)
def test_a_machine_with_fewer_cores_gives_the_same_weights(alone, tmp_path):
    # One core of this machine stands for a smaller machine of the same CPU family and build.
    one_core = sorted(os.sched_getaffinity(0))[:1]
    run_dir = tmp_path / "one_core"
    result = subprocess.run(
        [sys.executable, TRAIN, f"hydra.run.dir={run_dir}", "seed=0", *CASE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=lambda: os.sched_setaffinity(0, one_core),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_run(run_dir)["weights_sha256"] == alone[0]["weights_sha256"]
