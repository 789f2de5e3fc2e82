"""The task is a component: regression learns and reproduces, the monitored metric picks
best.pt and drives early stopping (exactly, across a kill and resume), the test split is held
out, and a task that does not fit the data is one line."""

from __future__ import annotations

import math
import signal

import numpy as np
import pytest
import torch
from helpers import SMALL, compose_config, read_run, run_cli, run_train, train_in_process

from seedbed.core.checkpoint import Checkpointer, load_checkpoint
from seedbed.core.interrupts import TEST_SIGNAL_ENV
from seedbed.core.record import MetricsLog, read_metrics, weights_sha256
from seedbed.core.seeding import seed_everything
from seedbed.data.arrays import ArrayDataset, DataSplits, split_indices
from seedbed.data.loader import build_batches
from seedbed.data.npz import npz_dataset
from seedbed.evaluate import evaluate_checkpoint
from seedbed.loop import EarlyStopping, LoopSettings, LoopState, fit
from seedbed.runs.session import run_training
from seedbed.task import Classification, Monitor, Regression

# Early stopping that triggers within a few epochs: an improvement must beat 0.05.
STOPPING = ["trainer.epochs=12", "trainer.early_stopping.patience=2"]
STOPPING += ["trainer.early_stopping.min_delta=0.05", "checkpoint.every_steps=5"]


def make_regression_npz(path, n=600, features=8, seed=0):
    """A smooth non-linear target of 8 features, plus a little noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    y = np.tanh(x[:, :3].sum(axis=1)) * 2 + 0.5 * x[:, 3] + 0.05 * rng.standard_normal(n)
    np.savez(path, x=x, y=y.astype(np.float64))
    return path


@pytest.fixture(scope="module")
def regression_runs(tmp_path_factory):
    """The same regression config three times: a fresh process, in-process, and with two
    DataLoader workers."""
    root = tmp_path_factory.mktemp("regression")
    npz = make_regression_npz(root / "prices.npz")
    config = ["task=regression", "data=npz", f"data.path={npz}", "data.test_fraction=0.1"]
    config += ["optim=adamw", "optim.lr=0.003", "trainer.epochs=4", "loader.batch_size=32"]
    run_train(root / "a", *config)
    train_in_process(root / "b", *config)
    train_in_process(root / "c", *config, "loader.num_workers=2")
    return npz, root


@pytest.mark.slow
def test_regression_learns_and_is_bit_reproducible_across_runs_and_workers(regression_runs):
    npz, root = regression_runs
    a, b, c = (read_run(root / name) for name in "abc")
    for record in (a, b, c):
        assert record["status"] == "completed"
        assert set(record["final_metrics"]) >= {"val/loss", "val/rmse", "val/mae", "train/loss"}
    assert a["weights_sha256"] == b["weights_sha256"] == c["weights_sha256"]
    assert a["loss_series_sha256"] == b["loss_series_sha256"] == c["loss_series_sha256"]
    assert read_metrics(root / "a" / "metrics.jsonl") == read_metrics(root / "c" / "metrics.jsonl")

    # Learned: clearly better than predicting the training mean for every validation sample.
    data = Regression({"_target_": "torch.nn.MSELoss"}).prepare(
        npz_dataset(str(npz), val_fraction=0.2, seed=0, test_fraction=0.1)
    )
    baseline = float((data.val.y - data.train.y.mean()).square().mean().sqrt())
    assert a["final_metrics"]["val/rmse"] < 0.5 * baseline
    assert a["monitor"] == {"metric": "val/loss", "mode": "min"}


@pytest.mark.slow
def test_eval_on_train_val_and_test_gives_three_results_on_disjoint_splits(regression_runs):
    npz, root = regression_runs
    best = root / "a" / "checkpoints" / "best.pt"
    results = {split: evaluate_checkpoint(best, split)["metrics"] for split in ("train", "val")}
    results["test"] = evaluate_checkpoint(best, "test")["metrics"]
    rmse = {split: metrics[f"{split}/rmse"] for split, metrics in results.items()}
    assert len(set(rmse.values())) == 3, rmse

    train, val, test = split_indices(600, 0.2, seed=0, test_fraction=0.1)
    assert (len(train), len(val), len(test)) == (420, 120, 60)
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert set(train.tolist()).isdisjoint(test.tolist())
    assert set(val.tolist()).isdisjoint(test.tolist())
    assert len(set(train.tolist()) | set(val.tolist()) | set(test.tolist())) == 600


def test_adding_a_test_split_keeps_the_validation_samples():
    _, val_without, _ = split_indices(500, 0.2, seed=3)
    train, val_with, test = split_indices(500, 0.2, seed=3, test_fraction=0.1)
    assert torch.equal(val_without, val_with) and len(test) == 50 and len(train) == 350


def test_npz_brings_its_own_validation_and_test_splits(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {
        name: rng.standard_normal((n, 4)).astype(np.float32)
        for name, n in (("x", 50), ("x_val", 7), ("x_test", 9))
    }
    labels = {f"y{s}": rng.integers(0, 3, n) for s, n in (("", 50), ("_val", 7), ("_test", 9))}
    np.savez(tmp_path / "d.npz", **arrays, **labels)
    data = npz_dataset(
        str(tmp_path / "d.npz"), val_fraction=0.2, seed=0, test_fraction=0.5, normalize="none"
    )
    assert len(data.train) == 50  # the fractions apply only to splits the file lacks
    assert torch.equal(data.val.x, torch.from_numpy(arrays["x_val"]))
    assert torch.equal(data.test.y, torch.from_numpy(labels["y_test"]))


@pytest.mark.slow
def test_monitoring_accuracy_picks_best_pt_by_accuracy(tmp_path):
    record = train_in_process(tmp_path / "run", *SMALL, "trainer.epochs=4", "task.monitor=val/acc")
    assert record["monitor"] == {"metric": "val/acc", "mode": "max"}
    vals = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "val"]
    best_acc = max(r["val/acc"] for r in vals)
    first_best = next(r for r in vals if r["val/acc"] == best_acc)
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best["best"] == {
        "metric": "val/acc",
        "value": best_acc,
        "step": first_best["step"],
        "file": f"step_{first_best['step']:06d}.pt",
    }
    assert best["loop"]["step"] == first_best["step"]


def expected_stop(values: list[float], patience: int, min_delta: float) -> tuple[int, float]:
    """The rule, written out again: the epoch (from 1) after which `patience` validations in a
    row have not beaten the best loss so far by more than `min_delta`, and that best (the
    last value that beat it by more: a smaller gain is no new best)."""
    best, stale = math.inf, 0
    for epoch, value in enumerate(values, start=1):
        if value < best - min_delta:
            best, stale = value, 0
        else:
            stale += 1
        if stale >= patience:
            return epoch, best
    return None, best


@pytest.fixture(scope="module")
def stopped_early(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("stopping") / "run"
    run_train(run_dir, *SMALL, *STOPPING)
    return run_dir


@pytest.mark.slow
def test_early_stopping_stops_where_the_rule_says_and_records_it(stopped_early):
    record = read_run(stopped_early)
    vals = [
        r["val/loss"] for r in read_metrics(stopped_early / "metrics.jsonl") if r["kind"] == "val"
    ]
    expected, best = expected_stop(vals, patience=2, min_delta=0.05)
    assert expected is not None and expected < 12  # it did stop early, at the last validation
    assert len(vals) == expected == record["final_metrics"]["epochs"]
    summary = record["early_stopping"]
    assert summary["stopped_early"] is True and summary["epoch"] == expected
    assert summary["metric"] == "val/loss" and summary["best"] == best


@pytest.mark.slow
def test_killed_before_early_stopping_then_resumed_stops_at_the_same_epoch(stopped_early, tmp_path):
    reference = read_run(stopped_early)
    stop_step = reference["final_metrics"]["steps"]
    run_dir = tmp_path / "run"
    killed = run_train(
        run_dir, *SMALL, *STOPPING, check=False, env={TEST_SIGNAL_ENV: f"SIGKILL:{stop_step - 6}"}
    )
    assert killed.returncode == -signal.SIGKILL
    record = train_in_process(run_dir, f"resume={run_dir}")
    assert record["final_metrics"] == reference["final_metrics"]
    assert record["early_stopping"] == reference["early_stopping"]
    assert record["weights_sha256"] == reference["weights_sha256"]
    assert record["loss_series_sha256"] == reference["loss_series_sha256"]


def tiny_parts():
    """A tiny classification problem, its model and optimizer, built as the recipe builds them."""
    cfg = compose_config("data.n_samples=200", "loader.batch_size=16")
    seeds = seed_everything(0)
    task = Classification({"_target_": "torch.nn.CrossEntropyLoss"})
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(200, 6, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    data = task.prepare(
        DataSplits(ArrayDataset(x[:150], y[:150]), ArrayDataset(x[150:], y[150:]), (6,))
    )
    torch.manual_seed(seeds.streams["init"])
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_batches, val_batches = build_batches(data, cfg.loader, seeds)
    return task, model, optimizer, train_batches, val_batches


def run_fit(parts, state, metrics, epochs, callbacks=()):
    task, model, optimizer, train_batches, val_batches = parts
    settings = LoopSettings(epochs, torch.device("cpu"), metrics, log_every=3)
    return fit(model, optimizer, None, train_batches, val_batches, task, state, settings, callbacks)


def test_fit_trains_counts_steps_and_reports_the_tasks_metrics(tmp_path):
    parts = tiny_parts()
    metrics = MetricsLog(tmp_path / "metrics.jsonl")
    state = LoopState()
    final = run_fit(parts, state, metrics, epochs=3)
    metrics.close()
    assert set(final) == {"train/loss", "epochs", "steps", "val/loss", "val/acc"}
    assert final["epochs"] == 3 and final["steps"] == state.step == 3 * 10  # 150 / 16 -> 10
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "val"] == [10, 20, 30]
    val_labels = parts[4].dataset.y
    majority = float(val_labels.bincount().max()) / len(val_labels)
    assert final["val/acc"] > majority + 0.1  # it learned more than the most frequent class


class CheckpointAfterValidation:
    """The session's part of the loop's validation event, alone."""

    def __init__(self, checkpoints: Checkpointer) -> None:
        self.checkpoints = checkpoints

    def on_validation(self, state, val):
        self.checkpoints.after_validation(state, val)


def epoch_checkpointer(directory, parts, state) -> Checkpointer:
    """A Checkpointer of the tiny problem's parts, writing after each validation."""
    task, model, optimizer, train_batches, _ = parts
    return Checkpointer(
        directory,
        {"model": model, "optimizer": optimizer, "loop": state, "loader": train_batches},
        lambda: {"rng": torch.get_rng_state()},
        monitor=task.monitor,
        every_steps=None,
        at_epoch_end=True,
        keep_last=None,
        save_best=True,
        batches_per_epoch=10,
    )


def test_checkpointer_restores_exactly_what_it_saved_and_training_goes_on_identically(tmp_path):
    # Uninterrupted: 3 epochs.
    parts = tiny_parts()
    metrics = MetricsLog(tmp_path / "a.jsonl")
    run_fit(parts, LoopState(), metrics, epochs=3)
    metrics.close()
    expected = weights_sha256(parts[1].state_dict())

    # Saved after epoch 1 by a Checkpointer, then restored into fresh objects, then continued.
    parts = tiny_parts()
    state = LoopState()
    checkpoints = epoch_checkpointer(tmp_path / "ckpt", parts, state)
    metrics = MetricsLog(tmp_path / "b.jsonl")
    run_fit(parts, state, metrics, epochs=1, callbacks=[CheckpointAfterValidation(checkpoints)])
    metrics.close()
    saved = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert set(saved) == {"model", "optimizer", "loop", "loader", "best", "rng"}

    fresh = tiny_parts()
    model = fresh[1]
    with torch.no_grad():  # other weights and RNG state: everything must come from the file
        for parameter in model.parameters():
            parameter.zero_()
    torch.rand(100)
    state = LoopState()
    restorer = epoch_checkpointer(tmp_path / "ckpt", fresh, state)
    restorer.restore(saved)
    torch.set_rng_state(saved["rng"])
    assert state.epoch == 1 and state.step == 10 and restorer.best["metric"] == "val/loss"
    metrics = MetricsLog(tmp_path / "c.jsonl")
    run_fit(fresh, state, metrics, epochs=3)
    metrics.close()
    assert weights_sha256(model.state_dict()) == expected


def test_early_stopping_counts_stale_validations_and_resumes_its_counters():
    stopping = EarlyStopping(Monitor("val/acc", "max"), patience=2, min_delta=0.01)
    state = LoopState(epoch=1, step=10)
    assert not stopping.update({"val/acc": 0.5}, state)
    assert not stopping.update({"val/acc": 0.505}, state)  # within min_delta: stale
    again = EarlyStopping(Monitor("val/acc", "max"), patience=2, min_delta=0.01)
    again.load_state_dict(stopping.state_dict())
    assert again.update({"val/acc": 0.509}, state)  # the second stale one, after a "resume"
    assert again.stopped_at == {"epoch": 1, "step": 10} and again.best == 0.5


def npz_with(tmp_path, name, x, y):
    path = tmp_path / name
    np.savez(path, x=x, y=y)
    return path


BAD_TASK_DATA = [
    ("classification", "float_labels", np.linspace(0, 2, 30), "integer class labels"),
    ("classification", "negative_labels", np.arange(30) - 3, "labels >= 0"),
    ("classification", "huge_labels", np.arange(30) * 10**7, "labels < 1000000"),
    ("regression", "cube_targets", np.zeros((30, 2, 2)), "targets of shape (samples,)"),
]


@pytest.mark.parametrize("task,name,y,message", BAD_TASK_DATA, ids=[c[1] for c in BAD_TASK_DATA])
def test_a_task_that_does_not_fit_the_data_is_one_line(tmp_path, task, name, y, message):
    path = npz_with(tmp_path, f"{name}.npz", np.zeros((30, 3), np.float32), y)
    code, _, err = run_cli(tmp_path / "run", f"task={task}", "data=npz", f"data.path={path}")
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(f"error: task='{task}' is not allowed:")
    assert message in err
    assert "Traceback" not in err
    assert read_run(tmp_path / "run")["status"] == "failed"


@pytest.mark.slow
def test_eval_on_test_without_a_test_split_is_one_line(tmp_path, capsys, monkeypatch):
    from seedbed.evaluate import cli

    rng = np.random.default_rng(0)
    path = npz_with(tmp_path, "d.npz", rng.standard_normal((40, 3)), rng.integers(0, 2, 40))
    train_in_process(tmp_path / "run", "data=npz", f"data.path={path}", "trainer.epochs=1")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    monkeypatch.setattr("sys.argv", ["eval.py", f"ckpt={checkpoint}", "split=test"])
    with pytest.raises(SystemExit) as exit:
        cli()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit.value.code == 2 and len(err) == 1
    assert err[0].startswith("error: split='test' is not allowed: one of train, val")


def test_the_example_projects_multilabel_task_trains(tmp_path):
    """The example project's own task (src/example/task.py, configs/task/multilabel.yaml),
    which docs/your-project.md shows as the way to write one."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 6)).astype(np.float32)
    y = np.stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0, x[:, 3] < -0.5], axis=1).astype(np.int64)
    np.savez(tmp_path / "tags.npz", x=x, y=y)
    cfg = compose_config(
        "task=multilabel", "data=npz", f"data.path={tmp_path / 'tags.npz'}", "trainer.epochs=3"
    )
    assert cfg.task._target_ == "example.task.MultiLabel"
    run_training(cfg, tmp_path / "run")
    record = read_run(tmp_path / "run")
    assert record["status"] == "completed"
    assert set(record["final_metrics"]) >= {"val/loss", "val/acc"}
    # Better than always answering each label's most frequent value.
    baseline = float(np.maximum(y.mean(axis=0), 1 - y.mean(axis=0)).mean())
    assert record["final_metrics"]["val/acc"] > baseline + 0.05
