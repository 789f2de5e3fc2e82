"""Schedulers that need a metric or the run's length: plateau on `task.monitor`, onecycle and
warmup_cosine sized from the run's optimizer steps; each resumes exactly."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import SMALL, compose_config, read_run, train_in_process
from test_resume import assert_same_run
from trainer_support import stopped_by_sigterm_at_step

from seedbed.core.errors import ConfigError, SeedbedError
from seedbed.core.record import read_metrics
from seedbed.optim import build_scheduler
from seedbed.runs.resume import is_safe_on_resume

LR = 0.05  # SGD's default: these tests schedule SGD's learning rate
SGD = [*SMALL, "optim=sgd"]
# Every validation counts as a stall unless the loss halves: the plateau comes early.
STALLING = ["sched=plateau", "sched.threshold=0.5", "sched.patience=1", "trainer.val_every_steps=2"]


def lrs(run_dir):
    """(step, learning rate that step used) of every train record; log_every=1."""
    return [
        (r["step"], r["lr"])
        for r in read_metrics(run_dir / "metrics.jsonl")
        if r["kind"] == "train"
    ]


def test_plateau_lowers_the_lr_when_the_monitored_metric_stalls(tmp_path):
    train_in_process(tmp_path / "run", *SGD, *STALLING, "trainer.log_every=1")
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    vals = [r["val/loss"] for r in records if r["kind"] == "val"]
    series = [lr for _, lr in lrs(tmp_path / "run")]
    assert series[0] == LR
    # Each drop is one factor of 0.1, after patience+1 validations without a halving.
    levels = sorted(set(series), reverse=True)
    assert len(levels) >= 2 and all(math.isclose(b, a * 0.1) for a, b in zip(levels, levels[1:]))
    assert series == sorted(series, reverse=True)
    assert all(later > vals[0] * 0.5 for later in vals[1:3])  # the stall it reacted to


def test_plateau_on_a_task_without_a_monitored_metric_is_refused():
    cfg = compose_config("sched=plateau")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    with pytest.raises(
        ConfigError, match=r"sched='plateau' is not allowed: a task with a monitored"
    ):
        build_scheduler(optimizer, cfg.sched, 10, 5, monitor=None)


def test_onecycle_ends_on_its_final_lr_at_the_runs_last_step(tmp_path):
    record = train_in_process(tmp_path / "run", *SGD, "sched=onecycle", "trainer.log_every=1")
    series = lrs(tmp_path / "run")
    steps = record["final_metrics"]["steps"]
    assert series[-1][0] == steps == 26
    peak = max(lr for _, lr in series)
    assert math.isclose(peak, LR, rel_tol=1e-3)  # max_lr: null is optim.lr
    assert math.isclose(series[0][1], LR / 25)  # div_factor
    assert math.isclose(series[-1][1], LR / 25 / 1e4)  # final_div_factor, at the last step


def test_warmup_cosine_rises_then_ends_on_eta_min_at_the_last_step(tmp_path):
    overrides = ["sched=warmup_cosine", "sched.warmup_steps=5", "sched.eta_min=0.001"]
    train_in_process(tmp_path / "run", *SGD, *overrides, "trainer.log_every=1")
    series = [lr for _, lr in lrs(tmp_path / "run")]
    assert len(series) == 26
    assert series[:6] == sorted(series[:6]) and math.isclose(series[5], LR)
    assert series[5:] == sorted(series[5:], reverse=True)
    assert math.isclose(series[-1], 0.001)


@pytest.mark.parametrize(
    "sched",
    [STALLING, ["sched=onecycle"], ["sched=warmup_cosine"]],
    ids=["plateau", "onecycle", "warmup_cosine"],
)
def test_a_schedule_resumes_exactly(tmp_path, monkeypatch, sched):
    overrides = [*SGD, *sched, "checkpoint.every_steps=3"]
    train_in_process(tmp_path / "whole", *overrides)
    stopped_by_sigterm_at_step(tmp_path / "run", monkeypatch, 17, *overrides)
    train_in_process(tmp_path / "run", f"resume={tmp_path / 'run'}")
    assert_same_run(tmp_path / "whole", tmp_path / "run")


@pytest.mark.parametrize("sched", ["cosine", "onecycle", "warmup_cosine"])
def test_longer_run_is_refused_on_resume_for_schedules_over_the_whole_run(sched):
    assert not is_safe_on_resume("trainer.epochs", compose_config(f"sched={sched}"))
    sized = "sched.T_max=100" if sched == "cosine" else "sched.total_steps=100"
    assert is_safe_on_resume("trainer.epochs", compose_config(f"sched={sched}", sized))
    assert is_safe_on_resume("trainer.epochs", compose_config("sched=plateau"))


def test_extending_a_onecycle_run_is_refused_with_the_reason(tmp_path):
    run_dir = tmp_path / "run"
    record = train_in_process(run_dir, *SGD, "sched=onecycle")
    with pytest.raises(SeedbedError, match="trainer.epochs: 2 -> 3.*sized from the run's length"):
        train_in_process(run_dir, f"resume={run_dir}", "trainer.epochs=3")
    assert read_run(run_dir)["weights_sha256"] == record["weights_sha256"]  # nothing lost
