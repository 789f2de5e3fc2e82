"""Same bits wherever a seed runs: threads are part of the config, the compose API is an entry,
verify reruns any kind of run, loggers continue a resumed run, the image has what it needs."""

from __future__ import annotations

import glob
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import (
    IN_PROJECT,
    PROJECT,
    PROJECT_CONFIGS,
    ROOT,
    SMALL,
    read_run,
    run_cli,
    run_python,
    run_train,
    train_in_process,
)

from seedbed.core.launchers import available_cores
from seedbed.core.paths import LIBRARY_CONFIGS as CONFIG_DIR
from seedbed.core.record import read_metrics

# A checkpoint every 5 steps, all kept (SMALL: 15 steps an epoch, 30 in all).
CKPT = ["checkpoint.every_steps=5", "checkpoint.keep_last=null"]


def test_the_thread_count_is_in_the_resolved_config(tmp_path):
    record = train_in_process(tmp_path / "default", *SMALL, "trainer.epochs=1")
    config = yaml.safe_load((tmp_path / "default" / "config.yaml").read_text())
    assert config["trainer"]["threads"] == 1 == record["torch_threads"]

    # null: this machine's fair share, written down as the number used.
    record = train_in_process(tmp_path / "fair", *SMALL, "trainer.epochs=1", "trainer.threads=null")
    config = yaml.safe_load((tmp_path / "fair" / "config.yaml").read_text())
    assert config["trainer"]["threads"] == available_cores() == record["torch_threads"]


def test_a_sweep_that_would_oversubscribe_the_cores_says_so(monkeypatch):
    from seedbed.core import launchers

    monkeypatch.setattr(launchers, "available_cores", lambda: 2)
    monkeypatch.setattr(launchers, "parallel_jobs", lambda: 2)
    assert launchers.oversubscription(1) is None  # the default: one thread a job
    assert "2 parallel jobs x trainer.threads=2 on 2 cores" in launchers.oversubscription(2)
    assert launchers.job_threads(None) == 1  # null: the fair share


def test_compose_api_works_as_lightning_hydra_templates_tests_do(tmp_path):
    # A fresh interpreter that has not imported seedbed: the schemas must come from the search
    # path. Then the notebook entry trains, writes train.log and prints the weights hash.
    script = textwrap.dedent(
        f"""
        import sys
        from hydra import compose, initialize_config_dir
        from hydra.core.hydra_config import HydraConfig

        assert not any(name.startswith("seedbed") for name in sys.modules)
        with initialize_config_dir(config_dir={str(PROJECT_CONFIGS)!r}, version_base="1.3"):
            cfg = compose("train", overrides={[*SMALL, "trainer.epochs=1"]!r},
                          return_hydra_config=True)
        HydraConfig().set_config(cfg)

        from seedbed.runs.session import run_training

        run_training(cfg, "run")
        """
    )
    result = run_python("-c", script, cwd=tmp_path)
    record = read_run(tmp_path / "run")
    assert record["status"] == "completed"
    assert f"weights sha256: {record['weights_sha256']}" in result.stdout
    assert f"weights sha256: {record['weights_sha256']}" in (tmp_path / "run/train.log").read_text()


def test_multirun_under_torchrun_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    code, _, err = run_cli(tmp_path / "run", "-m", "seed=0,1")
    assert code == 2
    assert err.count("\n") == 1 and "hydra.launcher.tasks_per_node" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_verify_against_a_run_resumed_twice_with_relative_paths_from_elsewhere(tmp_path):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "data").mkdir(parents=True)
    elsewhere.mkdir()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(480, 8)).astype(np.float32)
    np.savez(project / "data" / "mine.npz", x=x, y=(x[:, 0] > 0).astype(np.int64))
    run_dir = project / "run"
    # Relative to where the run starts (project/), as a user writes them.
    small = [o for o in SMALL if not o.startswith("data.n_samples")]  # a file's samples
    overrides = [*small, "data=npz", "data.path=data/mine.npz", *CKPT]
    run_train(run_dir, *overrides)
    for checkpoint in ("step_000005.pt", "step_000020.pt"):
        run_train(run_dir, f"resume={run_dir / 'checkpoints' / checkpoint}")
    assert len(read_run(run_dir)["resumes"]) == 2

    result = run_python(
        "-m",
        "seedbed.tools.verify",
        "--against",
        str(run_dir),
        *IN_PROJECT,
        cwd=elsewhere,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "identical" in result.stdout


@pytest.mark.slow
def test_loggers_continue_a_resumed_run(tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    loggers = [
        "logger=[tensorboard,mlflow]",
        f"logger.mlflow.tracking_uri={store}",
        f"logger.mlflow.artifact_location={tmp_path / 'artifacts'}",
        "logger.mlflow.log_artifacts=false",
    ]
    run_dir = tmp_path / "run"
    train_in_process(run_dir, *SMALL, *CKPT, *loggers)
    first = read_run(run_dir)["loggers"]["mlflow"]["run_id"]
    # From an earlier checkpoint: the steps after it are logged a second time. Where a resume
    # logs is its own command's choice (never the run directory's): the same loggers again.
    resume = f"resume={run_dir / 'checkpoints' / 'step_000010.pt'}"
    record = train_in_process(run_dir, resume, *loggers)

    client = MlflowClient(tracking_uri=store)
    [experiment] = [e for e in client.search_experiments() if e.name != "Default"]
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == first == record["loggers"]["mlflow"]["run_id"]
    assert run.info.status == "FINISHED"

    logged = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [s.step for s in events.Scalars("train/loss")] == [r["step"] for r in logged]
    val_steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "val"]
    assert [s.step for s in events.Scalars("val/loss")] == val_steps


def test_dockerfile_copies_what_the_image_needs():
    """The project's Dockerfile (what `seedbed new` renders): every COPY source exists and is
    not ignored; the image holds the project's entry points, package and configs."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    instructions = [
        line.strip()
        for line in (PROJECT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    copied = [
        source
        for line in instructions
        if line.startswith("COPY ") and "--from" not in line
        for source in line.split()[1:-1]
    ]
    ignored = {
        line.strip()
        for line in (PROJECT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for source in copied:
        assert (PROJECT / source).exists(), source
        assert source not in ignored and not (PROJECT / source).is_symlink(), source
    assert {"train.py", "eval.py", "src", "configs", "pyproject.toml", "requirements.lock"} <= set(
        copied
    )
    install = next(line for line in instructions if "pip install" in line and " . " in line + " ")
    assert " -e " not in install  # a real install: the library's configs come as package data

    # Every config file is package data, so the installed image (and any install) has them.
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["seedbed"]
    packaged = {
        Path(match)
        for pattern in patterns
        for match in glob.glob(pattern, root_dir=CONFIG_DIR.parent, recursive=True)
    }
    configs = {p.relative_to(CONFIG_DIR.parent) for p in CONFIG_DIR.rglob("*.yaml")}
    assert configs and configs <= packaged
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"seedbed", "seedbed-verify", "seedbed-compare", "seedbed-summarize"} <= set(scripts)
