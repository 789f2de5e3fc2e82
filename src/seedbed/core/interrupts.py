"""Stop gracefully on SIGINT, SIGTERM or SIGUSR1: finish the step, write a checkpoint, exit.

The first signal only records itself; the training loop looks after every
step (`GracefulStop.signum`). A second one raises `ImmediateStop` (a
KeyboardInterrupt) at once: files are only ever replaced atomically, so
stopping anywhere leaves the previous checkpoint intact. The handlers are
installed by the main thread of the main process and restored on exit; a
forked DataLoader worker inherits them but ignores the signals, leaving the
decision to the main process.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from seedbed.core.errors import SeedbedError

log = logging.getLogger(__name__)

SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name)
)


def epoch_position(epoch: int, batch: int) -> str:
    """Where a run stands, in the log's words (epochs counted from 1): the loop's `epoch` is
    the number of epochs done, `batch` the batches done in the one in progress."""
    return f"end of epoch {epoch}" if batch == 0 and epoch > 0 else f"epoch {epoch + 1}"


def exit_status(signum: int) -> int:
    """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + signum


class TrainingInterrupted(SeedbedError):
    """Training stopped on a signal after writing a checkpoint."""

    def __init__(self, signum: int, message: str) -> None:
        self.signum = signum
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.signum, str(self))  # picklable: a sweep's job may raise it


class SweepInterrupted(KeyboardInterrupt):
    """A signal stopped a job of a sweep whose jobs run in this process, one after another:
    the sweep stops with it. (Hydra's launcher goes on to the next job after an Exception; a
    KeyboardInterrupt ends the loop, so the later jobs never start.)"""

    def __init__(self, signum: int, message: str) -> None:
        self.signum = signum
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.signum, str(self))


class ImmediateStop(KeyboardInterrupt):
    """A second signal: stop now, without a new checkpoint."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} again: stopped at once")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.signum,)


class GracefulStop:
    """Context manager: while inside, SIGINT/SIGTERM/SIGUSR1 request a stop after the step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        else:
            log.debug("not the main thread: signals keep their handlers")
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def error(
        self, checkpoint: Path, step: int, epoch: int, batch: int, run_dir: Path
    ) -> TrainingInterrupted:
        """The error that ends the stopped run: what was saved, and the command that goes on."""
        relative = os.path.relpath(run_dir)
        where = run_dir if relative.startswith("..") else relative
        return TrainingInterrupted(
            self.signum,
            f"interrupted by {self.name} after step {step} ({epoch_position(epoch, batch)}), "
            f"checkpoint {checkpoint}\n"
            f"resume with: python {shlex.quote(sys.argv[0])} resume={shlex.quote(str(where))}",
        )

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if os.getpid() != self._pid:
            return  # a forked DataLoader worker: the main process decides
        if self.signum is not None:
            raise ImmediateStop(signum)
        self.signum = signum
        log.warning(
            "%s: finishing the current step, then writing a checkpoint "
            "(send it again to stop at once)",
            signal.Signals(signum).name,
        )


# Tests only: SEEDBED_TEST_SIGNAL_AT_STEP=SIGKILL:7 makes a run send itself SIGKILL right
# after step 7 (and its checkpoint, if one is due), so a test can crash it at an exact step.
TEST_SIGNAL_ENV = "SEEDBED_TEST_SIGNAL_AT_STEP"


def signal_hook_for_tests() -> Callable[[int], None] | None:
    """`send(step)` for the run's after-step hook, or None when the variable is unset."""
    value = os.environ.get(TEST_SIGNAL_ENV)
    if not value:
        return None
    name, step = value.split(":")

    def send(current: int) -> None:
        if current == int(step):
            os.kill(os.getpid(), getattr(signal, name))

    return send
