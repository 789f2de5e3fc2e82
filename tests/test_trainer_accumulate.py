"""Gradient accumulation: one optimizer step per `trainer.accumulate_grad_batches` batches,
the step of the large-batch mean, exact on resume wherever the run is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch
from helpers import MACHINERY, SMALL, TRAIN, read_run, run_cli, run_train, train_in_process
from test_resume import assert_same_run
from trainer_support import (
    SIGNAL_AT_BATCH_ENV,
    SIGNALLING_LOSS,
    TESTS_DIR,
    weights,
)

from seedbed.core.checkpoint import load_checkpoint
from seedbed.core.record import read_metrics

# SMALL's training split in global batches of 4 x 32: 4 an epoch, the last one
# filled up with the epoch's first samples; 16 micro-batches an epoch, 8 optimizer steps.
ACCUMULATE = [*SMALL, "trainer.accumulate_grad_batches=4", SIGNALLING_LOSS]
CKPT = ["checkpoint.every_steps=1", "checkpoint.keep_last=null"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("accumulate") / "run"
    train_in_process(run_dir, *ACCUMULATE, *CKPT)
    return run_dir


def test_steps_logging_and_checkpoints_count_optimizer_steps(reference):
    record = read_run(reference)
    assert record["final_metrics"]["steps"] == 2 * 4
    assert record["trainer"]["accumulate_grad_batches"] == 4
    train = [r for r in read_metrics(reference / "metrics.jsonl") if r["kind"] == "train"]
    # log_every=4 optimizer steps, and the rest of each epoch at its end.
    assert [r["step"] for r in train] == [4, 8]
    saved = sorted(p.name for p in (reference / "checkpoints").glob("step_*.pt"))
    assert saved == [f"step_{s:06d}.pt" for s in range(9)]
    for path in (reference / "checkpoints").glob("step_*.pt"):
        loop = load_checkpoint(path)["loop"]
        assert loop["batch"] in (0, 4, 8, 12)  # window boundaries only


def test_limit_train_batches_counts_optimizer_steps(tmp_path):
    record = train_in_process(
        tmp_path / "run",
        *SMALL,
        "trainer.accumulate_grad_batches=3",
        "trainer.limit_train_batches=2",
    )
    assert record["final_metrics"]["steps"] == 2 * 2  # 6 of 13 batches an epoch


def train_losses(run_dir):
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]


def test_four_batches_of_16_make_the_step_of_one_batch_of_64(tmp_path):
    # A linear model and plain SGD: the accumulated gradient must equal the large batch's.
    common = [
        *MACHINERY,
        "optim=sgd",
        "data.n_samples=640",  # 448 training samples: 7 batches of 64, 28 of 16
        "data.augment=null",
        "model.hidden=[]",
        "model.dropout=0",
        "optim.momentum=0",
        "trainer.epochs=2",
    ]
    small = train_in_process(
        tmp_path / "small", *common, "loader.batch_size=16", "trainer.accumulate_grad_batches=4"
    )
    large = train_in_process(tmp_path / "large", *common, "loader.batch_size=64")
    assert small["final_metrics"]["steps"] == large["final_metrics"]["steps"] == 14
    a, b = weights(tmp_path / "small"), weights(tmp_path / "large")
    for name in b:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(train_losses(tmp_path / "small"), train_losses(tmp_path / "large"))


def test_sigterm_in_a_window_finishes_it_then_resumes_exactly(tmp_path, reference, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setenv(SIGNAL_AT_BATCH_ENV, "SIGTERM:10")  # the 2nd batch of the 3rd window
    with pytest.raises(Exception, match="interrupted by SIGTERM after step 3 "):
        train_in_process(run_dir, *ACCUMULATE, *CKPT)
    monkeypatch.delenv(SIGNAL_AT_BATCH_ENV)
    loop = load_checkpoint(run_dir / "checkpoints" / "last.pt")["loop"]
    assert (loop["step"], loop["batch"]) == (3, 12)  # the window was finished first
    train_in_process(run_dir, f"resume={run_dir}", TRUST_TEST_LOSS)
    assert_same_run(reference, run_dir)


# The signalling loss is a test module's: a resume trusts it as a user trusts their own package.
TRUST_TEST_LOSS = "allow_targets=[trainer_support]"


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_window_resumes_bit_identical(tmp_path, reference):
    run_dir = tmp_path / "run"
    with (tmp_path / "killed.log").open("w") as out:
        returncode = subprocess.run(
            [
                sys.executable,
                TRAIN,
                f"hydra.run.dir={run_dir}",
                *ACCUMULATE,
                *CKPT,
            ],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                SIGNAL_AT_BATCH_ENV: "SIGKILL:22",  # epoch 1: the 2nd batch of step 6's window
                "PYTHONPATH": os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")]),
            },
            timeout=300,
        ).returncode
    assert returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["loop"]["step"] == 5
    run_train(run_dir, f"resume={run_dir}", TRUST_TEST_LOSS, env={"PYTHONPATH": TESTS_DIR})
    assert_same_run(reference, run_dir)


@pytest.mark.parametrize("value", ["0", "-2"])
def test_accumulate_below_one_is_refused_in_one_line(tmp_path, value):
    code, _, err = run_cli(tmp_path / "run", f"trainer.accumulate_grad_batches={value}")
    assert code == 2
    assert (
        err.strip()
        .splitlines()[-1]
        .endswith(f"trainer.accumulate_grad_batches={value} is not allowed: an int >= 1")
    ), err
    assert "Traceback" not in err
