"""One writer per run directory: an advisory lock held while a run or a resume writes it.

Two resumes of one run at once would interleave metrics.jsonl and both end
"completed" with a wrong record. `RunLock` takes an exclusive `flock` on
`<run>/.lock` (opened without following a symlink) and writes its process id
and host into it; a second writer is refused in one line naming that process.
The kernel drops a flock when its process dies, so the lock of a killed run is
simply taken over: there is no stale lock to clean up by hand. A forked child
(a DataLoader worker) closes its inherited copy at once, or it would hold the
lock of a killed run until it noticed and exited itself.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
from pathlib import Path

from seedbed.core.errors import SeedbedError
from seedbed.core.files import file_kind

LOCK_FILE = ".lock"
_held: set[int] = set()  # this process's lock descriptors


def _close_in_child() -> None:
    for fd in _held:
        os.close(fd)  # closing (not unlocking) leaves the parent's lock as it is
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


class RunLocked(SeedbedError):
    """Another process is writing this run directory."""


class RunLock:
    """`with RunLock(run_dir):` holds the run directory's lock, or raises RunLocked."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as error:
            raise SeedbedError(f"{self.path} cannot be opened: {error.strerror}") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            os.close(fd)  # its pid is written into it: never into a FIFO or another file's name
            what = file_kind(info.st_mode) if info.st_nlink == 1 else "hard-linked"
            raise SeedbedError(f"{self.path} is refused: it is {what}; remove it to continue")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy = self._busy(fd)
            os.close(fd)
            raise busy from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        _held.add(fd)

    def check_free(self) -> None:
        """Raise RunLocked if another process holds the lock; write nothing (no `.lock` is
        made where there is none: a check before a resume that may be refused)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return  # never locked; the writer makes it
        except OSError as error:
            raise SeedbedError(f"{self.path} cannot be opened: {error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # dropped on close
        except BlockingIOError:
            raise self._busy(fd) from None
        finally:
            os.close(fd)

    def _busy(self, fd: int) -> RunLocked:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        return RunLocked(
            f"{self.path.parent} is being written by {holder}: one run or resume at a "
            "time (wait for it to end, or stop it)"
        )

    def release(self) -> None:
        if self._fd is not None:
            _held.discard(self._fd)
            os.close(self._fd)  # closing drops the flock; the file stays for the next writer
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
