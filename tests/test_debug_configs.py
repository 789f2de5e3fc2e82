"""`debug=fdr|limit|overfit|profiler|anomaly` do what lightning-hydra-template's configs of the
same names do, and run.json says which settings a run used."""

from __future__ import annotations

import pytest
import torch
from helpers import MACHINERY, train_in_process

from seedbed.core.record import read_metrics

# The machinery's experiment on a small set; each debug config sets its own epochs and limits.
BASE = [*MACHINERY, "data.n_samples=576", "loader.batch_size=32"]
COUNTER = f"+callbacks.count._target_={__name__}.CountBatches"


class CountBatches:
    """Counts the model's training and evaluation batches (a forward hook), and whether
    autograd's anomaly detection was on during the steps."""

    seen: dict[str, int | bool] = {}

    def __init__(self, model) -> None:
        CountBatches.seen = {"train": 0, "eval": 0, "anomaly": False}
        model.register_forward_hook(self._count)

    def _count(self, module, args, output) -> None:
        CountBatches.seen["train" if module.training else "eval"] += 1

    def on_step_end(self, state) -> None:
        CountBatches.seen["anomaly"] = torch.is_anomaly_enabled()


def test_fdr_runs_one_training_and_one_validation_batch_without_checkpoints_between(tmp_path):
    record = train_in_process(tmp_path / "run", *BASE, "debug=fdr", COUNTER)
    assert record["final_metrics"]["steps"] == 1 and record["final_metrics"]["epochs"] == 1
    assert CountBatches.seen["train"] == 1 and CountBatches.seen["eval"] == 1
    assert record["debug"] == {"limit_train_batches": 1, "limit_val_batches": 1}
    # Only the step-0 checkpoint a resume needs and the final one: no best.pt, no epoch-end.
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["last.pt", "step_000000.pt", "step_000001.pt"]


def test_limit_runs_a_few_batches_per_epoch_for_two_epochs(tmp_path):
    record = train_in_process(tmp_path / "run", *BASE, "debug=limit", COUNTER)
    assert record["final_metrics"]["epochs"] == 2 and record["final_metrics"]["steps"] == 10
    assert CountBatches.seen["train"] == 10 and CountBatches.seen["eval"] == 2 * 2
    assert record["debug"] == {"limit_train_batches": 5, "limit_val_batches": 2}


def test_overfit_drives_the_training_loss_on_a_fixed_handful_of_batches_near_zero(tmp_path):
    record = train_in_process(tmp_path / "run", *BASE, "debug=overfit")
    assert record["debug"] == {"overfit_batches": 3}
    train = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    assert train[0]["loss_mean"] > 1.0  # ten classes: it starts near log(10)
    assert record["final_metrics"]["train/loss"] < 0.05
    assert record["final_metrics"]["steps"] == 3 * record["final_metrics"]["epochs"]


def test_profiler_writes_a_trace_into_the_run_directory(tmp_path):
    record = train_in_process(tmp_path / "run", *BASE, "debug=profiler")
    assert record["debug"] == {"limit_train_batches": 8, "profiler": "profiler"}
    traces = list((tmp_path / "run" / "profiler").glob("*.pt.trace.json"))
    assert len(traces) == 1 and traces[0].stat().st_size > 1000
    assert '"traceEvents"' in traces[0].read_text()[:4096]


def test_anomaly_turns_on_autograd_anomaly_detection_for_the_run_only(tmp_path):
    record = train_in_process(tmp_path / "run", *BASE, "trainer.epochs=1", "debug=anomaly", COUNTER)
    assert record["debug"] == {"detect_anomaly": True}
    assert CountBatches.seen["anomaly"] is True
    assert not torch.is_anomaly_enabled()  # restored after the run


@pytest.mark.parametrize("key", ["limit_val_batches", "overfit_batches"])
def test_a_debug_limit_must_be_positive(tmp_path, key):
    from seedbed.core.errors import ConfigError

    with pytest.raises(ConfigError, match=f"trainer.{key}=0 is not allowed"):
        train_in_process(tmp_path / "run", *BASE, f"trainer.{key}=0")
