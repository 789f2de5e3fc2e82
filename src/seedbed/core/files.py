"""Writing files so that a crash never leaves half of one (temp file, fsync, rename), and
reading files that may come from elsewhere without hanging or reading without bound.

A run directory or a data folder may be someone else's: any of its files may be a
FIFO (opening it waits forever), a link to /dev/zero (reading it never ends) or
far larger than such a file ever is. `read_bounded` opens without blocking, reads
only a regular file, and at most the limit of its kind (`READ_LIMITS`); a file
a run writes in place must be a regular file of its own (`refuse_unsafe_run_files`).
"""

from __future__ import annotations

import os
import shutil
import stat
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


# What a run writes in its directory: none of these may be a symbolic link, a FIFO, a device
# or hard-linked, or a received run directory could make a resume hang, or truncate or
# overwrite a file anywhere.
WRITTEN_IN_RUN_DIR = (
    "run.json",
    "config.yaml",
    "metrics.jsonl",
    "train.log",
    "environment.json",
    "requirements.txt",
    "code.patch",
    ".lock",
    ".hydra",
    "checkpoints",
    "checkpoints/discarded",
    "tensorboard",
)


# Of those, the directories; the others are files.
RUN_DIR_FOLDERS = (".hydra", "checkpoints", "checkpoints/discarded", "tensorboard")


def refuse_unsafe_run_files(run_dir: str | os.PathLike) -> None:
    """Raise, naming the file, if anything a run writes in `run_dir` is a symbolic link, not
    a regular file (a FIFO, a device) or a folder, or a file hard-linked elsewhere: a
    received run directory could otherwise make a resume hang, or write (append, truncate)
    a file outside it."""
    for name in WRITTEN_IN_RUN_DIR:
        path = Path(run_dir) / name
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        except OSError as error:
            raise SeedbedError(f"{path} cannot be read: {error.strerror}") from None
        if stat.S_ISLNK(info.st_mode):
            raise SeedbedError(
                f"{path} is a symbolic link (to {os.readlink(path)}): a run directory's files "
                "are written in place, never through a link; remove it to continue"
            )
        folder = name in RUN_DIR_FOLDERS
        if not (stat.S_ISDIR(info.st_mode) if folder else stat.S_ISREG(info.st_mode)):
            kind = "a folder" if folder else "a regular file"
            raise SeedbedError(
                f"{path} is refused: it is {file_kind(info.st_mode)}, not {kind}; remove it to "
                "continue"
            )
        if not folder and info.st_nlink > 1:
            raise SeedbedError(
                f"{path} is refused: it is hard-linked ({info.st_nlink} names): writing it "
                "would change the other names too; copy the run directory (cp -r) to continue"
            )


def is_inside(path: str | os.PathLike, directory: str | os.PathLike) -> bool:
    """Whether `path` lies in `directory` once `..` and every link are followed."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(directory))


# What is read into memory from a file that may come from elsewhere, at most, by kind: far
# above what a run writes (a run.json of ten thousand resumes, a metrics.jsonl of ten
# million records), far below what would exhaust a machine's memory.
READ_LIMITS = {
    "JSON record": 64 * 2**20,
    "YAML config": 16 * 2**20,
    "metrics log": 2**30,
    "text file": 256 * 2**20,
}


def file_kind(mode: int) -> str:
    """`a FIFO`, `a character device`, ...: what a path that is not a regular file is."""
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISREG, "a regular file"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def open_regular(
    path: str | os.PathLike, error: type[SeedbedError] = SeedbedError, what: str = ""
) -> int:
    """A read-only descriptor of `path`, or `error` naming it (after `what`, e.g.
    "checkpoint ") unless it is a regular file.

    Opened without blocking, so that a FIFO cannot hang the open; a link is followed, and
    what it leads to is checked (a link to /dev/zero is a character device).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as failure:
        raise error(f"{what}{path} cannot be read: {failure.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        link = f" (a link to {os.readlink(os.fspath(path))})" if os.path.islink(path) else ""
        raise error(f"{what}{path} is refused: it is {file_kind(mode)}{link}, not a regular file")
    os.set_blocking(fd, True)
    return fd


def read_bounded(path: str | os.PathLike, kind: str) -> bytes:
    """The bytes of `path`, a regular file of at most `READ_LIMITS[kind]` bytes; anything
    else is a SeedbedError naming the file."""
    limit = READ_LIMITS[kind]
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as file:
        size = os.fstat(fd).st_size
        try:
            data = file.read(limit + 1) if size <= limit else b""
        except OSError as failure:
            raise SeedbedError(f"{path} cannot be read: {failure.strerror}") from None
    if size > limit or len(data) > limit:
        raise SeedbedError(
            f"{path} is refused: {max(size, len(data))} bytes, more than the {limit} a "
            f"{kind} may have"
        )
    return data


def open_nofollow(path: str | os.PathLike, flags: int) -> int:
    """`os.open` that refuses a symbolic link at `path` (ELOOP) instead of following it."""
    return os.open(path, flags | os.O_NOFOLLOW, 0o666)


def remove_temporary_files(directory: str | os.PathLike) -> list[str]:
    """Remove what a killed `atomic_write` left in `directory` (`.<name>.<random>.tmp`), and
    the `.<name>.tmp` directory of a sharded checkpoint whose writing was killed."""
    directory = Path(directory)
    if not directory.is_dir() or directory.is_symlink():
        return []
    removed = []
    for path in directory.glob(".*.tmp"):
        if path.is_file() or path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path.name)
        elif path.is_dir():
            shutil.rmtree(path)
            removed.append(path.name)
    return removed
