"""Writing files so that a crash never leaves half of one: temp file, fsync, rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from seedbed.core.errors import SeedbedError


def atomic_write(path: str | os.PathLike, write: Any) -> None:
    """Call `write(file)` on a temporary file beside `path`, then rename it over `path`."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as error:
        raise SeedbedError(f"{target} cannot be written: {error.strerror}") from error
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)  # the old file is untouched: the rename never came
        if isinstance(error, OSError):  # a full disk, a read-only directory: name the file
            raise SeedbedError(f"{target} cannot be written: {error.strerror}") from error
        raise
    fsync_dir(target.parent)


def fsync_dir(directory: Path) -> None:
    """Make the renames done in `directory` durable."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make a rename durable
    finally:
        os.close(dir_fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# What a run writes in its directory: none of these may be a symbolic link, or a received
# run directory could make a resume truncate or overwrite a file anywhere.
WRITTEN_IN_RUN_DIR = (
    "run.json",
    "config.yaml",
    "metrics.jsonl",
    "train.log",
    "environment.json",
    "requirements.txt",
    "code.patch",
    "eval.json",
    ".lock",
    ".hydra",
    "checkpoints",
    "checkpoints/discarded",
    "tensorboard",
)


def refuse_links(run_dir: str | os.PathLike) -> None:
    """Raise if anything a run writes in `run_dir` is a symbolic link (named in the error)."""
    for name in WRITTEN_IN_RUN_DIR:
        path = Path(run_dir) / name
        if path.is_symlink():
            raise SeedbedError(
                f"{path} is a symbolic link (to {os.readlink(path)}): a run directory's files "
                "are written in place, never through a link; remove it to continue"
            )


def open_nofollow(path: str | os.PathLike, flags: int) -> int:
    """`os.open` that refuses a symbolic link at `path` (ELOOP) instead of following it."""
    return os.open(path, flags | os.O_NOFOLLOW, 0o666)


def remove_temporary_files(directory: str | os.PathLike) -> list[str]:
    """Remove what a killed `atomic_write` left in `directory` (`.<name>.<random>.tmp`)."""
    directory = Path(directory)
    if not directory.is_dir() or directory.is_symlink():
        return []
    removed = []
    for path in directory.glob(".*.tmp"):
        if path.is_file() or path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
