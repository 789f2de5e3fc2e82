"""What data a run read: a SHA-256 of a file, or of a folder's files.

A folder's fingerprint hashes, in sorted order, every file's relative name, size and
content, so a renamed, added, removed or edited file changes it. Content hashing
reads every byte once (about the speed of the disk; `benchmarks/run.py --only
transforms` reports it); once hashing has taken `budget_s` seconds — checked at every
read, so one huge file cannot hold it up — the folder is fingerprinted by names and
sizes only from there on, and the record says so.

A data folder may come from someone else: a FIFO (reading waits forever), a link to
/dev/zero (reading never ends) or a socket in it is refused in one line naming it,
before anything reads it (`check_data_files`).
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path
from typing import Any

from seedbed.core.errors import SeedbedError
from seedbed.core.files import file_kind, open_regular

CHUNK = 1 << 20
# Seconds of content hashing per run before a large folder falls back to names and sizes.
BUDGET_S = 60.0


def file_sha256(path: str | Path, deadline: float | None = None) -> str | None:
    """The SHA-256 of the regular file `path`; None if `deadline` (a `time.perf_counter()`
    value) passes before the last byte is read."""
    digest = hashlib.sha256()
    with os.fdopen(open_regular(path), "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            if deadline is not None and time.perf_counter() > deadline:
                return None
    return digest.hexdigest()


def _regular_size(path: Path) -> int:
    """The size of the file at `path` (a link followed), or one line naming it."""
    try:
        info = path.stat()
    except OSError as error:
        if path.is_symlink():  # found by name, leads nowhere
            raise SeedbedError(
                f"data file {path} is a link to nothing ({os.readlink(path)}): remove it or "
                "restore what it points to"
            ) from None
        raise SeedbedError(f"data file {path} cannot be read: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        link = f" (a link to {os.readlink(path)})" if path.is_symlink() else ""
        raise SeedbedError(
            f"data file {path} is refused: it is {file_kind(info.st_mode)}{link}, not a "
            "regular file (a data folder holds regular files only)"
        )
    return info.st_size


def check_data_files(
    root: str | Path, max_bytes: int | None = None, suffixes: tuple[str, ...] = ()
) -> None:
    """Refuse, naming the file, a folder (links to folders followed, as torchvision's loaders
    follow them) holding anything but regular files, or a file ending in one of `suffixes`
    larger than `max_bytes`. Reads no file: only what each is."""
    for directory, _, names in os.walk(root, followlinks=True):
        for name in names:
            size = _regular_size(Path(directory) / name)
            if max_bytes is not None and size > max_bytes and name.lower().endswith(suffixes):
                raise SeedbedError(
                    f"data file {Path(directory) / name} is refused: {size} bytes, more than "
                    f"the {max_bytes} an image may have"
                )


def folder_fingerprint(root: str | Path, budget_s: float = BUDGET_S) -> dict[str, Any]:
    """{"sha256", "files", "bytes", "content_hashed"} of every file under `root`."""
    root = Path(root)
    digest = hashlib.sha256()
    files = total = hashed = 0
    started = time.perf_counter()
    deadline = started + budget_s
    for directory, subdirs, names in os.walk(root):
        subdirs.sort()
        for name in sorted(names):
            path = Path(directory) / name
            size = _regular_size(path)
            digest.update(f"{path.relative_to(root).as_posix()}|{size}|".encode())
            if time.perf_counter() < deadline:
                content = file_sha256(path, deadline)
                if content is not None:  # cut short by the budget: names and sizes from here
                    digest.update(bytes.fromhex(content))
                    hashed += 1
            files, total = files + 1, total + size
    return {
        "sha256": digest.hexdigest(),
        "files": files,
        "bytes": total,
        "content_hashed": hashed,
        "seconds": round(time.perf_counter() - started, 3),
    }
