"""Callbacks: what acts during training is a component with a state, checkpointed by its name.
A callback that does nothing leaves the run as it was; the EMA's average resumes exactly
after a SIGKILL; the packaged ones do what they say; fit's interface stays small."""

from __future__ import annotations

import ast
import inspect
import signal
from pathlib import Path

import pytest
import torch
from helpers import ROOT, SMALL, read_run, run_train, train_in_process

from seedbed.callbacks import EMA, best_weights
from seedbed.core.checkpoint import load_checkpoint
from seedbed.core.interrupts import TEST_SIGNAL_ENV
from seedbed.core.record import read_metrics, weights_sha256
from seedbed.evaluate import evaluate_checkpoint
from seedbed.loop import LoopState, fit

# The example project's BatchNorm model (running statistics are buffers the EMA copies), a
# checkpoint every 5 steps, a test split for test_after_fit.
EMA_RUN = [
    *SMALL,
    "model=residual_mlp",
    "data.test_fraction=0.1",
    "checkpoint.every_steps=5",
    "callbacks=[ema,grad_norm,weight_norm]",
    "callbacks.ema.decay=0.9",
    "trainer.test_after_fit=true",
    "logger=csv",
]
KILL_AT = 7  # mid-epoch, inside a log window, two steps after a checkpoint


class DoesNothing:
    """Every event, and a state: none of it may change the run."""

    def __init__(self, model, metrics, run_dir) -> None:
        self.events = 0

    def on_step_end(self, state) -> None:
        self.events += 1

    def on_validation(self, state, val) -> None:
        self.events += 1

    def on_epoch_end(self, state) -> None:
        self.events += 1

    def state_dict(self):
        return {"events": self.events}

    def load_state_dict(self, state) -> None:
        self.events = state["events"]


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("plain") / "run"
    train_in_process(run_dir, *SMALL, "tags=[ablation,lr]")
    return run_dir


@pytest.fixture(scope="module")
def ema_reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ema") / "run"
    train_in_process(run_dir, *EMA_RUN)
    return run_dir


def test_a_callback_that_does_nothing_gives_the_same_run(plain, tmp_path):
    run_dir = tmp_path / "run"
    record = train_in_process(
        run_dir, *SMALL, "tags=[ablation,lr]", f"+callbacks.nothing._target_={__name__}.DoesNothing"
    )
    assert record["weights_sha256"] == read_run(plain)["weights_sha256"]
    assert record["loss_series_sha256"] == read_run(plain)["loss_series_sha256"]
    assert read_metrics(run_dir / "metrics.jsonl") == read_metrics(plain / "metrics.jsonl")
    saved = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert saved["callback.nothing"]["events"] > 0  # it ran, and was checkpointed by its name


def test_an_ema_run_killed_mid_epoch_resumes_bit_identical_with_its_average(
    ema_reference, tmp_path
):
    run_dir = tmp_path / "run"
    log = tmp_path / "killed.log"
    env = {TEST_SIGNAL_ENV: f"SIGKILL:{KILL_AT}"}
    killed = run_train(run_dir, *EMA_RUN, check=False, env=env, log=log)
    assert killed.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    train_in_process(run_dir, f"resume={run_dir}", "logger=csv")  # loggers: this command's

    a, b = read_run(ema_reference), read_run(run_dir)
    assert b["weights_sha256"] == a["weights_sha256"]
    assert b["loss_series_sha256"] == a["loss_series_sha256"]
    assert b["test"]["metrics"] == a["test"]["metrics"]
    last_a = load_checkpoint(ema_reference / "checkpoints" / "last.pt")
    last_b = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    for name in ("callback.ema", "callback.weight_norm"):
        assert weights_sha256(_tensors(last_b[name])) == weights_sha256(_tensors(last_a[name]))
    assert last_b["callback.ema"]["updates"] == last_a["callback.ema"]["updates"]
    # Every record once, the per-step ones included; the CSV says what metrics.jsonl says.
    records = read_metrics(run_dir / "metrics.jsonl")
    assert records == read_metrics(ema_reference / "metrics.jsonl")
    steps = [r["step"] for r in records if r["kind"] == "grad"]
    assert steps == list(range(1, b["final_metrics"]["steps"] + 1))
    assert _csv_rows(run_dir) == _csv_rows(ema_reference)
    assert len(_csv_rows(run_dir)) == len([r for r in records if r["kind"] != "samples"])


def _tensors(state: dict) -> dict:
    """A callback's state as tensors, for a bit-exact hash."""
    flat = {}
    for key, value in state.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = torch.tensor(value)
    return flat


def _csv_rows(run_dir: Path) -> list[dict]:
    import csv

    with (run_dir / "metrics.csv").open() as file:
        return list(csv.DictReader(file))


def test_ema_validates_and_tests_its_average_and_leaves_training_alone(ema_reference, tmp_path):
    record = read_run(ema_reference)
    # Training itself is the same as without the callbacks: the average is a copy.
    plain = train_in_process(
        tmp_path / "plain", *[o for o in EMA_RUN if not o.startswith(("callbacks", "trainer.test"))]
    )
    assert record["weights_sha256"] == plain["weights_sha256"]
    assert record["final_metrics"]["val/loss"] != plain["final_metrics"]["val/loss"]
    # best.pt is judged, and tested, on the average.
    best = load_checkpoint(ema_reference / "checkpoints" / "best.pt")
    average = best["callback.ema"]["weights"]
    assert weights_sha256(best_weights(best)) == weights_sha256(average)
    assert record["test"]["weights_sha256"] == weights_sha256(average)
    assert record["test"]["checkpoint_file"] == best.get("best", {})["file"]
    evaluated = evaluate_checkpoint(ema_reference / "checkpoints" / "best.pt", "test")
    assert evaluated["metrics"] == record["test"]["metrics"]
    assert set(record["test"]["metrics"]) == {"test/loss", "test/acc"}
    test_records = [r for r in read_metrics(ema_reference / "metrics.jsonl") if r["kind"] == "test"]
    assert len(test_records) == 1


def test_ema_is_the_documented_average_and_copies_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.5)
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(3.0)
    ema.on_step_end(LoopState(step=1))
    decay = min(0.5, 1 / 10)  # the first update follows the weights closely
    for average, before, now in zip(ema.average.parameters(), start, model.parameters()):
        expected = before + (now.detach() - before) * (1 - decay)
        assert torch.allclose(average, expected, rtol=0, atol=1e-6)
        assert not torch.equal(average, now)
    assert torch.equal(ema.average[1].running_mean, model[1].running_mean)
    assert ema.validation_model is ema.average
    assert EMA(model, use_for_validation=False).validation_model is None


def test_tags_model_summary_and_config_are_in_the_record_and_the_log(plain):
    record = read_run(plain)
    assert record["tags"] == ["ablation", "lr"]
    summary = record["model"]
    assert summary["parameters"] == summary["trainable"] > 0
    assert sum(m["parameters"] for m in summary["modules"].values()) == summary["parameters"]
    log = (plain / "train.log").read_text()
    assert "trainable" in log and "config:" in log and "tags:" in log


def test_test_after_fit_without_a_test_split_is_refused_before_training(tmp_path):
    from seedbed.core.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.test_after_fit"):
        train_in_process(
            tmp_path / "run", *SMALL, "data.test_fraction=0", "trainer.test_after_fit=true"
        )
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_fit_takes_the_parts_one_settings_object_and_callbacks():
    assert list(inspect.signature(fit).parameters) == [
        "model",
        "optimizer",
        "scheduler",
        "train_batches",
        "val_batches",
        "task",
        "state",
        "settings",
        "callbacks",
    ]
    # The old keyword call (epochs=, log_every=, on_step_end=, ...) is nowhere, benchmarks and
    # tests included.
    folders = ("src/**/*.py", "tests/*.py", "benchmarks/*.py", "example/**/*.py")
    for path in [p for folder in folders for p in ROOT.glob(folder)]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "fit":
                assert not node.keywords, f"{path}: fit(...) with keywords"
