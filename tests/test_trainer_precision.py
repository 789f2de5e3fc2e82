"""Mixed precision (`trainer.precision`): the same bits every run, exact on resume, and a clear
refusal where a precision cannot run."""

from __future__ import annotations

import pytest
import torch
from helpers import SMALL, read_run, run_cli, run_train, train_in_process
from test_resume import CKPT, assert_same_run, run_killed

from seedbed.core.checkpoint import load_checkpoint, save_checkpoint

BF16 = [*SMALL, "trainer.precision=bf16-mixed", *CKPT]
NEW_KEYS = ("precision", "accumulate_grad_batches", "compile", "compile_mode", "val_every_steps")


@pytest.fixture(scope="module")
def bf16_reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("bf16") / "run"
    train_in_process(run_dir, *BF16)
    return run_dir


def test_bf16_mixed_twice_is_identical_and_differs_from_32(tmp_path, bf16_reference):
    again = train_in_process(tmp_path / "again", *BF16)
    full = train_in_process(tmp_path / "fp32", *SMALL, *CKPT)
    reference = read_run(bf16_reference)
    assert reference["trainer"]["precision"] == "bf16-mixed"
    assert again["weights_sha256"] == reference["weights_sha256"]
    assert again["loss_series_sha256"] == reference["loss_series_sha256"]
    assert full["trainer"]["precision"] == "32"
    assert full["weights_sha256"] != reference["weights_sha256"]  # autocast did act
    assert full["loss_series_sha256"] != reference["loss_series_sha256"]


@pytest.mark.slow
def test_bf16_mixed_killed_and_resumed_is_bit_identical(tmp_path, bf16_reference):
    run_dir = tmp_path / "run"
    run_killed(run_dir, *BF16, step=7)
    run_train(run_dir, f"resume={run_dir}")
    assert_same_run(bf16_reference, run_dir)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on CUDA, 16-mixed runs")
def test_16_mixed_without_cuda_is_refused_naming_bf16(tmp_path):
    code, _, err = run_cli(tmp_path / "run", "trainer.precision=16-mixed", "trainer.epochs=1")
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert "trainer.precision='16-mixed' is not allowed" in line
    assert "needs CUDA (use trainer.precision=bf16-mixed)" in line
    assert "Traceback" not in err
    assert read_run(tmp_path / "run")["status"] == "failed"


def test_unknown_precision_is_refused_listing_the_allowed(tmp_path):
    code, _, err = run_cli(tmp_path / "run", "trainer.precision=fp8")
    assert code == 2
    assert (
        err.strip()
        .splitlines()[-1]
        .endswith("trainer.precision='fp8' is not allowed: one of 32, bf16-mixed, 16-mixed")
    ), err


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_on_cuda_is_bit_identical_and_resumes(tmp_path, monkeypatch, precision):
    from trainer_support import stopped_by_sigterm_at_step

    config = [*SMALL, *CKPT, "trainer.device=cuda", f"trainer.precision={precision}"]
    first = train_in_process(tmp_path / "a", *config)
    second = train_in_process(tmp_path / "b", *config)
    assert first["weights_sha256"] == second["weights_sha256"]
    assert first["loss_series_sha256"] == second["loss_series_sha256"]
    saved = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    assert (saved["scaler"] is not None) == (precision == "16-mixed")  # the scale is saved
    stopped_by_sigterm_at_step(tmp_path / "c", monkeypatch, 7, *config)
    train_in_process(tmp_path / "c", f"resume={tmp_path / 'c'}")
    assert_same_run(tmp_path / "a", tmp_path / "c")


def test_a_run_from_before_these_keys_resumes_with_their_defaults(tmp_path):
    # A checkpoint written before trainer.precision and its siblings existed: its config
    # lacks them. Their defaults are what such a run did, so it resumes with no change.
    one_epoch = [*SMALL, "trainer.epochs=1"]
    train_in_process(tmp_path / "old", *one_epoch)
    last = (tmp_path / "old" / "checkpoints" / "last.pt").resolve()
    checkpoint = load_checkpoint(last)
    for key in NEW_KEYS:
        del checkpoint["config"]["trainer"][key]
    save_checkpoint(last, checkpoint)
    record = train_in_process(tmp_path / "old", f"resume={tmp_path / 'old'}", "trainer.epochs=2")
    assert record["resumes"][0]["changes"] == {"trainer.epochs": [1, 2]}
    train_in_process(tmp_path / "new", *SMALL)
    assert_same_run(tmp_path / "new", tmp_path / "old")
