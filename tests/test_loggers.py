"""TensorBoard and MLflow get the same records as metrics.jsonl, readable with their own tools."""

from __future__ import annotations

import os
import re
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from helpers import SMALL, compose_config, read_run, run_train, train_in_process

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


# -- W&B (offline) and CSV: one record per step, nothing twice after a resume ----------------

# Made here, so that the source (in code.patch while uncommitted) does not hold it.
SECRET = f"sk-{os.urandom(16).hex()}"


def wandb_records(path):
    """The records of a W&B offline run file (`run-<id>.wandb`): W&B's own log format, 32 KiB
    blocks of [crc32, length, type] chunks, each record a protobuf `Record`."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block, position, chunks = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + 7])
        position += 7
        if length == 0 and kind == 0:
            position += left - 7
            continue
        chunks += data[position : position + length]
        position += length
        if kind in (1, 4):  # a whole record, or a record's last chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def wandb_offline_runs(run_dir):
    """The run's offline W&B folders in the order they were made: `offline-run-<time>-<id>`,
    and `-<n>` after it when a resume starts within the same second as the segment before."""
    found = []
    for path in run_dir.glob("wandb/offline-run-*"):
        match = re.fullmatch(r"offline-run-(\d{8}_\d{6})-([a-z0-9]+)(?:-(\d+))?", path.name)
        assert match, f"unexpected W&B folder {path.name}"
        found.append(((match[1], int(match[3] or 0)), match[2], path))
    return [(run_id, path) for _, run_id, path in sorted(found)]


def wandb_history(run_dir):
    """(file, {name: value}) of every history row in the run's offline W&B files, in order."""
    import json

    rows = []
    for _, folder in wandb_offline_runs(run_dir):
        path = next(folder.glob("run-*.wandb"))
        for record in wandb_records(path):
            if record.WhichOneof("record_type") == "history":
                items = {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in record.history.item
                }
                rows.append((path.parent.name, items))
    return rows


def wandb_config(run_dir):
    import json

    for _, folder in wandb_offline_runs(run_dir):
        for record in wandb_records(next(folder.glob("run-*.wandb"))):
            if record.WhichOneof("record_type") == "run":
                return {u.key: json.loads(u.value_json) for u in record.run.config.update}
    return {}


@pytest.fixture(scope="module")
def wandb_csv_run(tmp_path_factory):
    """One epoch with W&B (offline) and the CSV, then a resume to the second epoch, with a
    secret in the environment."""
    pytest.importorskip("wandb")
    run_dir = tmp_path_factory.mktemp("wandb") / "run"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SEEDBED_TEST_SECRET", SECRET)
        env.setenv("WANDB_API_KEY", SECRET[:40].ljust(40, "0"))
        env.delenv("WANDB_MODE", raising=False)  # offline by the config's default
        loggers = "logger=[csv,wandb]"
        train_in_process(run_dir, *SMALL, "trainer.epochs=1", loggers, "tags=[ablation,lr]")
        train_in_process(run_dir, f"resume={run_dir}", "trainer.epochs=2", loggers)
    return run_dir


def test_wandb_offline_holds_each_record_once_across_a_resume_and_the_config(wandb_csv_run):
    record = read_run(wandb_csv_run)
    runs = wandb_offline_runs(wandb_csv_run)
    assert [run_id for run_id, _ in runs] == [record["loggers"]["wandb"]["run_id"]] * 2
    history = wandb_history(wandb_csv_run)
    logged = train_records(wandb_csv_run)
    losses = [(row["_step"], row["train/loss"]) for _, row in history if "train/loss" in row]
    assert losses == [(r["step"], r["loss"]) for r in logged]  # each step once, in order
    val = [row["_step"] for _, row in history if "val/acc" in row]
    assert val == [
        r["step"] for r in read_metrics(wandb_csv_run / "metrics.jsonl") if r["kind"] == "val"
    ]
    config = wandb_config(wandb_csv_run)
    saved = yaml.safe_load((wandb_csv_run / "config.yaml").read_text())
    assert config["optim"] == saved["optim"] and config["seed"] == saved["seed"]
    assert config["seedbed"]["seed"] == str(record["seeds"]["seed"])


def test_csv_holds_each_record_once_across_a_resume(wandb_csv_run):
    import csv

    with (wandb_csv_run / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    # Every record but the samples bookkeeping, which stays in metrics.jsonl alone.
    records = [r for r in read_metrics(wandb_csv_run / "metrics.jsonl") if r["kind"] != "samples"]
    assert [(r["kind"], int(r["step"])) for r in rows] == [(r["kind"], r["step"]) for r in records]
    train = [float(r["train/loss"]) for r in rows if r["kind"] == "train"]
    assert train == [r["loss"] for r in records if r["kind"] == "train"]


def test_no_secret_from_the_environment_in_any_file_the_loggers_wrote(wandb_csv_run):
    written = [p for p in wandb_csv_run.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any("wandb" in p.parts for p in written)
    for path in written:
        data = path.read_bytes()
        assert SECRET.encode() not in data and SECRET[:40].encode() not in data, path


@pytest.mark.parametrize(
    "overrides,named",
    [
        (["logger=wandb", "logger.wandb.mode=bogus"], "logger.wandb.mode='bogus' is not allowed"),
        (["logger=csv", "+logger.csv.colour=red"], "logger.csv.colour='red' is not allowed"),
        (["+logger.mine=3"], "logger.mine=3 is not allowed: a mapping with a _target_"),
    ],
)
def test_a_bad_logger_setting_is_named_before_anything_runs(overrides, named):
    from seedbed.core.errors import ConfigError
    from seedbed.runs.hydra import validate

    with pytest.raises(ConfigError) as refused:
        validate(compose_config(*overrides))
    assert named in str(refused.value)


def test_a_logger_writes_inside_the_run_directory_unless_this_command_says_otherwise(tmp_path):
    from seedbed.core.errors import ConfigError
    from seedbed.core.loggers import check_log_dir

    cfg = compose_config("logger=[csv,wandb]", "logger.csv.file=../elsewhere.csv").logger
    with pytest.raises(ConfigError, match="logger.csv.file"):
        check_log_dir(cfg, tmp_path / "run", set())  # read from a file: refused
    check_log_dir(cfg, tmp_path / "run", {"logger.csv.file"})  # this command's: taken
