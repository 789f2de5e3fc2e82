"""TensorBoard and MLflow get the same records as metrics.jsonl, readable with their own tools."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from helpers import SMALL, compose_config, read_run, run_train

from seedbed.core.errors import SeedbedError
from seedbed.core.loggers import check_logger_packages
from seedbed.core.record import read_metrics


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """One run with both loggers; the MLflow store lands in outputs/ beside the run."""
    run_dir = tmp_path_factory.mktemp("loggers") / "run"
    run_train(run_dir, *SMALL, "logger=[tensorboard,mlflow]")
    return run_dir


def train_records(run_dir):
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]


@pytest.mark.slow
def test_tensorboard_holds_the_logged_losses(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logged_run / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "val/loss", "val/acc"} <= set(events.Tags()["scalars"])
    logged = train_records(logged_run)
    scalars = events.Scalars("train/loss")
    assert [s.step for s in scalars] == [r["step"] for r in logged]
    # TensorBoard stores float32: the same number, rounded once.
    assert [s.value for s in scalars] == [float(np.float32(r["loss"])) for r in logged]


@pytest.mark.slow
def test_mlflow_run_holds_config_seeds_metrics_and_run_files(logged_run):
    from mlflow.tracking import MlflowClient

    config = yaml.safe_load((logged_run / "config.yaml").read_text())
    store = logged_run.parent / config["logger"]["mlflow"]["tracking_uri"].removeprefix(
        "sqlite:///"
    )
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name(config["logger"]["mlflow"]["experiment"])
    (run,) = client.search_runs(
        [experiment.experiment_id], f"attributes.run_name = '{logged_run.name}'"
    )
    record = read_run(logged_run)

    assert run.info.status == "FINISHED"
    assert run.data.params["seed"] == str(config["seed"])
    assert run.data.params["optim.lr"] == str(config["optim"]["lr"])
    assert run.data.params["model._target_"] == config["model"]["_target_"]
    assert run.data.tags["seed"] == str(record["seeds"]["seed"])
    assert run.data.tags["seeds.init"] == str(record["seeds"]["streams"]["init"])
    environment = yaml.safe_load((logged_run / "environment.json").read_text())
    assert run.data.tags["git.commit"] == str(environment["git"].get("commit"))

    history = client.get_metric_history(run.info.run_id, "train/loss")
    logged = train_records(logged_run)
    assert [(m.step, m.value) for m in history] == [(r["step"], r["loss"]) for r in logged]

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "run.json", "environment.json", "metrics.jsonl"} <= artifacts
    assert "checkpoints" not in artifacts


def test_a_logger_without_its_package_fails_early_naming_the_extra(monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    for name in ("tensorboard", "mlflow", "wandb"):
        (selected,) = compose_config(f"logger={name}").logger.values()
        with pytest.raises(SeedbedError, match=rf"pip install 'seedbed\[{name}\]'"):
            check_logger_packages(OmegaConf.create({name: selected}))
    check_logger_packages(OmegaConf.create({"tensorboard": None, "mlflow": None}))
    check_logger_packages(compose_config("logger=csv").logger)  # the standard library's csv


@pytest.mark.parametrize("telemetry", [False, True])
def test_mlflow_telemetry_is_off_unless_asked(tmp_path, monkeypatch, telemetry):
    pytest.importorskip("mlflow")
    import mlflow.tracking

    from seedbed.core.loggers import LoggerContext
    from seedbed.core.trackers import MlflowLogger

    seen = {}

    class Client:  # records what mlflow would read when it starts, and does nothing else
        def __init__(self, tracking_uri):
            seen["disabled"] = os.environ.get("MLFLOW_DISABLE_TELEMETRY")

        def get_experiment_by_name(self, name):
            return SimpleNamespace(experiment_id="1")

        def create_run(self, experiment_id, run_name, tags):
            return SimpleNamespace(info=SimpleNamespace(run_id="r"))

    monkeypatch.setattr(mlflow.tracking, "MlflowClient", Client)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "unset below; restored after the test")
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY")
    settings = {"tracking_uri": "", "artifact_location": "", "experiment": "e"}
    context = LoggerContext(tmp_path, "mlflow", {})
    MlflowLogger(context, **settings, log_artifacts=False, telemetry=telemetry)
    assert seen["disabled"] == (None if telemetry else "true")
