"""The promise: a run interrupted anywhere and resumed ends bit-identical to one never stopped."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch
from helpers import SMALL, TRAIN, compose_config, read_run, run_python, run_train, train_in_process

from seedbed.core.checkpoint import TRAILER_SIZE, CheckpointError, load_checkpoint, to_cpu
from seedbed.core.errors import SeedbedError
from seedbed.core.interrupts import TEST_SIGNAL_ENV, GracefulStop, ImmediateStop
from seedbed.core.record import read_metrics
from seedbed.runs.resume import is_safe_on_resume

# A checkpoint every 5 steps, all kept: 13 batches an epoch, 26 steps, losses logged every 4.
CKPT = ["checkpoint.every_steps=5", "checkpoint.keep_last=null"]
# First step; mid-epoch inside a log window; the last batch of epoch 0, before validation;
# one step before the end.
KILL_STEPS = [1, 7, 13, 25]


def assert_same_run(a: Path, b: Path) -> None:
    ra, rb = read_run(a), read_run(b)
    assert rb["status"] == ra["status"] == "completed"
    assert rb["weights_sha256"] == ra["weights_sha256"]
    assert rb["loss_series_sha256"] == ra["loss_series_sha256"]
    assert read_metrics(b / "metrics.jsonl") == read_metrics(a / "metrics.jsonl")
    assert rb["final_metrics"] == ra["final_metrics"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every resumed one must equal."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    train_in_process(run_dir, *SMALL, *CKPT)
    return run_dir


@pytest.fixture
def finished(reference, tmp_path) -> Path:
    """A copy of the reference run directory, free to damage."""
    return Path(shutil.copytree(reference, tmp_path / "run", symlinks=True))


def run_killed(run_dir: Path, *overrides: str, step: int) -> None:
    """`train.py <overrides>` that sends itself SIGKILL right after `step`."""
    log = run_dir.parent / "killed.log"  # not a pipe: orphaned DataLoader workers hold it open
    env = {TEST_SIGNAL_ENV: f"SIGKILL:{step}"}
    returncode = run_train(run_dir, *overrides, check=False, env=env, log=log).returncode
    assert returncode == -signal.SIGKILL, log.read_text()[-2000:]
    assert read_run(run_dir)["status"] == "running"  # SIGKILL leaves no time to record


@pytest.mark.slow
@pytest.mark.parametrize(
    "workers,kill_steps", [(0, KILL_STEPS), (2, [7])], ids=["workers0", "workers2"]
)
def test_run_killed_at_any_step_resumes_bit_identical(tmp_path, reference, workers, kill_steps):
    run_dir = tmp_path / "run"
    run_killed(run_dir, *SMALL, *CKPT, f"loader.num_workers={workers}", step=kill_steps[0])
    for step in kill_steps[1:]:
        run_killed(run_dir, f"resume={run_dir}", step=step)
    run_train(run_dir, f"resume={run_dir}")
    assert_same_run(reference, run_dir)
    resumes = read_run(run_dir)["resumes"]
    # Each resume starts from the newest checkpoint before the kill (one every 5 steps).
    assert [r["step"] for r in resumes] == [step - step % 5 for step in kill_steps]
    assert all(r["forced"] is False and r["changes"] == {} for r in resumes)


@pytest.mark.slow
def test_sigterm_checkpoints_prints_the_resume_command_and_resumes_identically(tmp_path, reference):
    run_dir = tmp_path / "run"
    stopped = run_train(run_dir, *SMALL, *CKPT, check=False, env={TEST_SIGNAL_ENV: "SIGTERM:9"})
    assert stopped.returncode == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM after step 9 (epoch 1)" in stopped.stderr
    record = read_run(run_dir)
    assert record["status"] == "interrupted"
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["loop"]["step"] == 9
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # this process: untouched

    command = shlex.split(stopped.stderr.strip().splitlines()[-1].removeprefix("resume with: "))
    assert command[0] == "python"
    run_python(*command[1:], cwd=run_dir.parent)
    assert_same_run(reference, run_dir)
    assert not (run_dir.parent / "outputs").exists()  # no new run directory left behind


def test_extending_a_finished_run_equals_the_longer_run(tmp_path, finished, caplog):
    longer = tmp_path / "longer"
    train_in_process(longer, *SMALL, *CKPT, "trainer.epochs=3")
    caplog.set_level(logging.INFO, logger="seedbed")
    record = train_in_process(finished, f"resume={finished}", "trainer.epochs=3")
    assert_same_run(longer, finished)
    # Epochs counted from 1 in every message: two done, the third is the one that runs.
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.endswith("at step 26 (end of epoch 2)") for m in messages), messages
    assert any(m.startswith("epoch 3/3  step 39") for m in messages), messages
    assert record["resumes"][-1]["changes"] == {"trainer.epochs": [2, 3]}
    assert record["resumes"][-1]["forced"] is False


def test_changed_lr_is_refused_with_the_diff_and_force_is_recorded(finished):
    before = (finished / "run.json").read_bytes()
    lr = compose_config(*SMALL).optim.lr  # the machinery's optimizer, whatever it is
    with pytest.raises(SeedbedError, match=rf"resume refused.* optim\.lr: {lr} -> 0\.1;"):
        train_in_process(finished, f"resume={finished}", "optim.lr=0.1")
    assert (finished / "run.json").read_bytes() == before

    record = train_in_process(
        finished, f"resume={finished}", "optim.lr=0.1", "resume.force=true", "trainer.epochs=3"
    )
    assert record["status"] == "completed"
    assert record["resumes"][-1]["forced"] is True
    assert record["resumes"][-1]["changes"]["optim.lr"] == [lr, 0.1]
    assert "lr: 0.1" in (finished / "config.yaml").read_text()


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


DAMAGE = {
    "flipped": (flip_a_byte, "fails its SHA-256 checksum"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated"),
    "empty": (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_checkpoint_is_named_and_run_dir_resume_falls_back(
    finished, reference, damage, caplog
):
    break_file, reason = DAMAGE[damage]
    newest = (finished / "checkpoints" / "last.pt").resolve()
    break_file(newest)
    with pytest.raises(
        CheckpointError, match=rf"^checkpoint {re.escape(str(newest))} .*{re.escape(reason)}"
    ):
        load_checkpoint(newest)
    with pytest.raises(CheckpointError, match=re.escape(reason)):
        train_in_process(finished, f"resume={newest}")  # an explicit file: no fallback

    record = train_in_process(finished, f"resume={finished}")
    assert "the newest good checkpoint" in caplog.text
    assert record["resumes"][-1]["checkpoint"] == "checkpoints/step_000025.pt"
    assert reason in record["resumes"][-1]["skipped_checkpoints"][0]
    assert_same_run(reference, finished)


class WritesAMarker:
    """Unpickling this would create `marker`: what a malicious checkpoint does with os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_that_would_run_code_is_refused_and_the_code_does_not_run(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"model": WritesAMarker(marker)}, path)
    # An attacker can compute the checksum too: the trailer is not what stops the code.
    payload = path.read_bytes()
    path.write_bytes(payload + b"\nseedbed-sha256:" + hashlib.sha256(payload).hexdigest().encode())
    path.write_bytes(path.read_bytes() + b"\n")
    assert len(path.read_bytes()) == len(payload) + TRAILER_SIZE
    with pytest.raises(CheckpointError, match="refused: loading it needs arbitrary unpickling"):
        load_checkpoint(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the file is live: a plain load does run it
    assert marker.exists()


def test_best_last_and_keep_last(tmp_path):
    run_dir = tmp_path / "run"
    record = train_in_process(run_dir, *SMALL, "checkpoint.every_steps=5", "checkpoint.keep_last=2")
    directory = run_dir / "checkpoints"
    last, best = (directory / "last.pt").resolve(), (directory / "best.pt").resolve()
    assert load_checkpoint(last)["loop"]["step"] == record["final_metrics"]["steps"]
    vals = [m for m in read_metrics(run_dir / "metrics.jsonl") if m["kind"] == "val"]
    best_val = min(vals, key=lambda m: m["val/loss"])
    assert load_checkpoint(best)["best"]["value"] == best_val["val/loss"]
    assert best.name == f"step_{best_val['step']:06d}.pt"
    kept = sorted(p.name for p in directory.glob("step_*.pt"))
    assert kept == sorted({"step_000025.pt", "step_000026.pt", best.name})


def test_interrupt_message_counts_epochs_from_1(tmp_path):
    stop = GracefulStop()
    stop.signum = signal.SIGTERM
    # Mid-epoch: 1 epoch done, batch 4 of the second; after validation: 2 epochs done.
    assert "after step 17 (epoch 2)," in str(stop.error(Path("c.pt"), 17, 1, 4, tmp_path))
    assert "after step 26 (end of epoch 2)," in str(stop.error(Path("c.pt"), 26, 2, 0, tmp_path))


def test_second_signal_stops_at_once_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT)
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT  # the first one only asks
        with pytest.raises(ImmediateStop):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_eval_twice_gives_identical_eval_json(finished, monkeypatch):
    from seedbed.evaluate import cli

    checkpoint = f"{finished}/checkpoints/last.pt"
    monkeypatch.setattr(sys, "argv", ["eval.py", f"ckpt={checkpoint}"])
    cli()  # into the run directory
    monkeypatch.setattr(sys, "argv", ["eval.py", f"ckpt={checkpoint}", "--out", "again.json"])
    monkeypatch.chdir(finished.parent)  # out= is relative to the run dir, not to here
    cli()
    assert not (finished.parent / "again.json").exists()
    first = (finished / "eval_val.json").read_bytes()
    second = (finished / "again.json").read_bytes()
    assert first == second
    result = json.loads(first)
    record = read_run(finished)
    final = record["final_metrics"]
    assert result["metrics"] == {"val/loss": final["val/loss"], "val/acc": final["val/acc"]}
    assert result["weights_sha256"] == record["weights_sha256"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_state_capture_synchronises_cuda_once(monkeypatch):
    model = torch.nn.Linear(64, 64).cuda()
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(8, 64, device="cuda")).sum().backward()
    optimizer.step()
    calls = []
    synchronize = torch.cuda.synchronize
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: calls.append(a) or synchronize(*a))
    torch.cuda.set_sync_debug_mode("error")  # any hidden synchronisation raises
    try:
        state = to_cpu({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(calls) == 1
    assert torch.equal(state["model"]["weight"], model.weight.detach().cpu())


def test_resuming_an_earlier_checkpoint_moves_later_ones_aside_and_ends_identical(
    finished, reference
):
    earlier = finished / "checkpoints" / "step_000010.pt"
    record = train_in_process(finished, f"resume={earlier}")
    discarded = sorted(p.name for p in (finished / "checkpoints" / "discarded").iterdir())
    assert discarded == [
        "step_000013.pt",
        "step_000015.pt",
        "step_000020.pt",
        "step_000025.pt",
        "step_000026.pt",
    ]
    assert record["resumes"][-1]["discarded_checkpoints"] == discarded[::-1]
    assert_same_run(reference, finished)


def test_only_keys_that_cannot_change_the_numbers_are_safe_on_resume():
    plain, cosine = compose_config(), compose_config("sched=cosine")
    assert is_safe_on_resume("trainer.epochs", plain)
    assert not is_safe_on_resume("trainer.epochs", cosine)  # T_max spans the whole run
    assert is_safe_on_resume("checkpoint.every_steps", plain)
    assert is_safe_on_resume("loader.num_workers", plain)
    for key in ("optim.lr", "loader.batch_size", "seed", "model.dropout", "trainer.threads"):
        assert not is_safe_on_resume(key, plain), key


@pytest.mark.slow
def test_resume_of_a_missing_path_fails_in_one_line_and_creates_nothing(tmp_path):
    result = run_python(TRAIN, "resume=outputs/train/nope", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: resume.path='outputs/train/nope' is not allowed: "
        "a run directory or a checkpoint file (it does not exist)"
    )
    assert list(tmp_path.iterdir()) == []
