"""Regression targets: standardised from the training split for training, reported in their
own units everywhere a person reads them, saved in the checkpoint, off with one key."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import read_run, run_cli, train_in_process

from seedbed.core.checkpoint import load_checkpoint
from seedbed.core.record import read_metrics
from seedbed.data.arrays import ArrayDataset, DataSplits
from seedbed.evaluate import evaluate_checkpoint
from seedbed.task import Regression, constant_baseline

MSE = {"_target_": "torch.nn.MSELoss"}


def splits(y_train: torch.Tensor, y_val: torch.Tensor) -> DataSplits:
    x_train, x_val = torch.zeros(len(y_train), 3), torch.zeros(len(y_val), 3)
    return DataSplits(ArrayDataset(x_train, y_train), ArrayDataset(x_val, y_val), (3,))


def test_standardised_targets_train_on_mean_0_std_1_and_every_metric_is_in_target_units():
    generator = torch.Generator().manual_seed(0)
    y_train = 1000 + 50 * torch.randn(200, 2, generator=generator)
    y_val = 1000 + 50 * torch.randn(50, 2, generator=generator)
    task = Regression(MSE, normalize_targets="standard")
    data = task.prepare(splits(y_train, y_val))
    assert torch.allclose(data.target_normalization.mean, y_train.double().mean(0).float())
    assert data.record["targets"]["computed_on"] == "train"

    standardised = (y_val - task.targets.mean) / task.targets.std  # a perfect model's output
    perfect = task.reduce(task.metric_sums(standardised, y_val), len(y_val))
    assert perfect["rmse"] < 1e-3 and perfect["mae"] < 1e-3
    # The loss's value is in target units; its gradient that of the standardised loss.
    output = torch.zeros(50, 2, requires_grad=True)
    loss = task.loss(output, y_val)
    assert loss.item() == pytest.approx(float(((task.targets.mean - y_val) ** 2).mean()), rel=1e-5)
    loss.backward()
    expected = 2 * (output.detach() - standardised) / standardised.numel()
    assert torch.allclose(output.grad, expected, atol=1e-6)
    # A constant prediction (the training mean) scores about the targets' std: units, not 1.
    baseline = constant_baseline(task, data)
    assert 35 < baseline["val/rmse"] < 65


def test_targets_as_stored_with_normalize_targets_none():
    y = torch.arange(10.0) * 7
    task = Regression(MSE, normalize_targets="none")
    data = task.prepare(splits(y, y[:4]))
    assert data.target_normalization is None and "targets" not in data.record
    assert torch.equal(task.loss(y[:4, None], y[:4, None]), torch.zeros(()))


@pytest.mark.parametrize(
    "y, message",
    [
        (np.full(60, 3.5), "target column 0 is 3.5 in all"),
        (np.zeros((60, 0)), "targets of shape (samples,) or (samples, d) with d >= 1"),
        (np.zeros((60, 2, 2)), "targets of shape (samples,) or (samples, d)"),
        (np.ones(60, dtype=bool), "real-valued targets"),
        (np.ones(60, dtype=np.complex64), "real-valued targets"),
    ],
    ids=["no variance", "no target", "3-d", "bool", "complex"],
)
def test_a_target_that_cannot_be_learned_is_refused_in_one_line(tmp_path: Path, y, message):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.random.default_rng(0).standard_normal((60, 4)), y=y)
    code, out, err = run_cli(tmp_path / "run", "task=regression", "data=npz", f"data.path={path}")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]


def test_the_statistics_are_in_the_checkpoint_and_eval_reports_the_runs_units(tmp_path: Path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 5)).astype(np.float32)
    y = (500 + 80 * x[:, 0] - 30 * x[:, 1] + rng.standard_normal(300)).astype(np.float32)
    np.savez(tmp_path / "prices.npz", x=x, y=y)
    run = tmp_path / "run"
    record = train_in_process(
        run, "task=regression", "data=npz", f"data.path={tmp_path / 'prices.npz'}"
    )
    assert record["status"] == "completed"
    assert record["data"]["targets"]["mean_range"][0] == pytest.approx(500, abs=15)
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    assert checkpoint["target_normalization"]["std"].shape == (1,)

    final = record["final_metrics"]
    assert final["val/rmse"] > 1  # in the target's units (std ~85), not standardised ones
    assert final["val/loss"] == pytest.approx(final["val/rmse"] ** 2, rel=1e-6)
    train = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    assert train[0]["loss"] > 100  # the logged training loss too
    result = evaluate_checkpoint(run / "checkpoints" / "last.pt")
    assert result["metrics"]["val/rmse"] == pytest.approx(final["val/rmse"], rel=1e-9)
    assert math.isfinite(read_run(run)["final_metrics"]["train/loss"])
