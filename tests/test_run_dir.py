"""A run directory tells the whole story: every file, a resolved config, a final status."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from helpers import SMALL, TRAIN, read_run, run_train

from seedbed.core.checkpoint import load_checkpoint
from seedbed.core.record import loss_series_sha256, read_metrics, weights_sha256


@pytest.mark.slow
def test_run_directory_holds_every_file_and_a_completed_record(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(run_dir, *SMALL, "seed=0")
    for name in ("config.yaml", "run.json", "metrics.jsonl", "train.log", "checkpoints/last.pt"):
        assert (run_dir / name).is_file(), name
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        assert (run_dir / ".hydra" / name).is_file(), name

    config_text = (run_dir / "config.yaml").read_text()
    assert "${" not in config_text
    assert yaml.safe_load(config_text)["seed"] == 0

    record = read_run(run_dir)
    assert record["status"] == "completed" and record["error"] is None
    assert record["seeds"]["seed"] == 0 and set(record["seeds"]["streams"]) >= {"init", "data"}
    assert record["determinism"]["mode"] == "strict"
    assert record["determinism"]["use_deterministic_algorithms"] is True
    for key in ("python", "torch", "numpy", "hydra-core", "omegaconf"):
        assert record["versions"][key]
    assert record["device"] == "cpu" and record["torch_threads"] >= 1
    assert record["started_at"] <= record["ended_at"]
    assert record["final_metrics"]["steps"] > 0

    metrics = read_metrics(run_dir / "metrics.jsonl")
    assert record["loss_series_sha256"] == loss_series_sha256(metrics)
    assert {m["kind"] for m in metrics} == {"train", "val", "samples"}
    samples = [m["step"] for m in metrics if m["kind"] == "samples"]  # one per optimizer step
    assert samples == list(range(1, record["final_metrics"]["steps"] + 1))
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert record["weights_sha256"] == weights_sha256(checkpoint["model"])
    assert checkpoint["loop"]["step"] == record["final_metrics"]["steps"]

    lines = result.stdout.strip().splitlines()
    assert lines[-2] == f"run dir: {run_dir}"
    assert lines[-1] == f"weights sha256: {record['weights_sha256']}"


def test_fingerprint_changes_with_any_weight_bit():
    state = {"w": torch.zeros(3), "b": torch.ones(2)}
    before = weights_sha256(state)
    state["w"][1] = torch.finfo(torch.float32).tiny
    assert weights_sha256(state) != before


@pytest.mark.slow
def test_runs_started_in_the_same_second_never_share_a_directory(tmp_path):
    command = [sys.executable, TRAIN, "trainer.epochs=0", "data.n_samples=64"]
    procs = [
        subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    run_dirs = sorted((tmp_path / "outputs" / "train").iterdir())
    assert len(run_dirs) == 3
    for run_dir in run_dirs:
        assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
