"""Support for the trainer tests: runs stopped by a signal at an exact step or batch."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from helpers import train_in_process

from seedbed.core.interrupts import TEST_SIGNAL_ENV, TrainingInterrupted

# tests/ on the path of a train.py subprocess, so that its config can name SignallingLoss.
TESTS_DIR = str(Path(__file__).resolve().parent)
SIGNAL_AT_BATCH_ENV = "SEEDBED_TEST_SIGNAL_AT_BATCH"
# The cross-entropy below, as a task.loss override: same numbers as torch.nn.CrossEntropyLoss.
SIGNALLING_LOSS = "task.loss._target_=trainer_support.SignallingLoss"


class SignallingLoss(torch.nn.CrossEntropyLoss):
    """torch.nn.CrossEntropyLoss that, with SEEDBED_TEST_SIGNAL_AT_BATCH=SIGKILL:10 set, sends
    that signal to its own process at the 10th training batch of this process: a crash at an
    exact batch, in the middle of an accumulation window if need be."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batches = 0
        name, _, at = os.environ.get(SIGNAL_AT_BATCH_ENV, ":").partition(":")
        self.signum, self.at = (getattr(signal, name), int(at)) if name else (None, None)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # training, not validation
            self.batches += 1
            if self.batches == self.at:
                os.kill(os.getpid(), self.signum)
        return super().forward(output, target)


def stopped_by_sigterm_at_step(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, step: int, *overrides: str
) -> None:
    """Train in this process until SIGTERM after optimizer step `step` stops it (with a
    checkpoint), as `kill -TERM` would."""
    monkeypatch.setenv(TEST_SIGNAL_ENV, f"SIGTERM:{step}")
    with pytest.raises(TrainingInterrupted, match=f"after step {step} "):
        train_in_process(run_dir, *overrides)
    monkeypatch.delenv(TEST_SIGNAL_ENV)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The final model weights of a finished run (its last checkpoint)."""
    from seedbed.core.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
