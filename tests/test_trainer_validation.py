"""Validation cadence (`trainer.val_every_steps`): records carry the step, and best.pt and
early stopping consider every validation, exactly on resume."""

from __future__ import annotations

from helpers import SMALL, read_run, run_cli, train_in_process
from test_resume import assert_same_run
from trainer_support import stopped_by_sigterm_at_step

from seedbed.core.checkpoint import load_checkpoint
from seedbed.core.record import read_metrics

EVERY_5 = [*SMALL, "trainer.val_every_steps=5"]


def validations(run_dir):
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "val"]


def test_validates_every_n_steps_and_at_each_epoch_end_and_best_pt_sees_all(tmp_path):
    run_dir = tmp_path / "run"
    train_in_process(run_dir, *EVERY_5, "checkpoint.every_steps=null")
    vals = validations(run_dir)
    # 13 steps an epoch: every 5 steps, plus each epoch's end.
    assert [(r["epoch"], r["step"]) for r in vals] == [
        (0, 5), (0, 10), (0, 13), (1, 15), (1, 20), (1, 25), (1, 26)
    ]  # fmt: skip
    best = min(vals, key=lambda r: r["val/loss"])
    saved = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert saved["best"]["step"] == saved["loop"]["step"] == best["step"]
    assert saved["best"]["value"] == best["val/loss"]


def test_early_stopping_counts_validations_within_an_epoch(tmp_path):
    # Nothing beats the first validation by 10: two stale validations later, at step 3, stop.
    overrides = ["trainer.val_every_steps=1", "trainer.early_stopping.patience=2"]
    record = train_in_process(
        tmp_path / "run", *SMALL, *overrides, "trainer.early_stopping.min_delta=10"
    )
    assert [r["step"] for r in validations(tmp_path / "run")] == [1, 2, 3]
    assert record["final_metrics"]["steps"] == 3
    assert record["early_stopping"]["stopped_early"] is True


def test_stopped_after_a_mid_epoch_validation_resumes_exactly(tmp_path, monkeypatch):
    overrides = [*EVERY_5, "trainer.early_stopping.patience=3", "checkpoint.every_steps=4"]
    train_in_process(tmp_path / "whole", *overrides)
    stopped_by_sigterm_at_step(tmp_path / "run", monkeypatch, 10, *overrides)
    assert validations(tmp_path / "run")[-1]["step"] == 10  # checkpointed after it
    train_in_process(tmp_path / "run", f"resume={tmp_path / 'run'}")
    assert_same_run(tmp_path / "whole", tmp_path / "run")
    assert read_run(tmp_path / "run")["resumes"][0]["step"] == 10


def test_val_every_steps_below_one_is_refused(tmp_path):
    code, _, err = run_cli(tmp_path / "run", "trainer.val_every_steps=0")
    assert code == 2
    assert (
        err.strip()
        .splitlines()[-1]
        .endswith("trainer.val_every_steps=0 is not allowed: an int > 0 or null")
    ), err
