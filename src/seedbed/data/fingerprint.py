"""What data a run read: a SHA-256 of a file, or of a folder's files.

A folder's fingerprint hashes, in sorted order, every file's relative name, size and
content, so a renamed, added, removed or edited file changes it. Content hashing
reads every byte once (about the speed of the disk; `benchmarks/run.py --only
transforms` reports it); a folder whose hashing passes `budget_s` seconds is
fingerprinted by names and sizes only from there on, and the record says so.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
# Seconds of content hashing per run before a large folder falls back to names and sizes.
BUDGET_S = 60.0


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_fingerprint(root: str | Path, budget_s: float = BUDGET_S) -> dict[str, Any]:
    """{"sha256", "files", "bytes", "content_hashed"} of every file under `root`."""
    root = Path(root)
    digest = hashlib.sha256()
    files = total = hashed = 0
    started = time.perf_counter()
    for directory, subdirs, names in os.walk(root):
        subdirs.sort()
        for name in sorted(names):
            path = Path(directory) / name
            size = path.stat().st_size
            digest.update(f"{path.relative_to(root).as_posix()}|{size}|".encode())
            if time.perf_counter() - started < budget_s:
                digest.update(bytes.fromhex(file_sha256(path)))
                hashed += 1
            files, total = files + 1, total + size
    return {
        "sha256": digest.hexdigest(),
        "files": files,
        "bytes": total,
        "content_hashed": hashed,
        "seconds": round(time.perf_counter() - started, 3),
    }
