"""A checkpoint file: `torch.save` bytes followed by a one-line trailer holding their SHA-256.

`torch.load` ignores the trailer, so the file stays a plain PyTorch checkpoint. It is
written to a temporary file in the same directory, flushed, fsynced and renamed over the
target: a crash at any instant leaves the old file or the new one, never half of one.
Loading checks the trailer first, so a truncated, empty or altered file is refused with a
message naming it, then uses `torch.load(weights_only=True)`, which refuses anything but
tensors and plain containers: a checkpoint cannot run code. (`seedbed.core.checkpoint`
decides when to write them; `seedbed.core.sharded` writes an FSDP2 run's as directories.)
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from seedbed.core.errors import SeedbedError
from seedbed.core.files import atomic_write, open_regular

CHECKSUM_TAG = b"\nseedbed-sha256:"
TRAILER_SIZE = len(CHECKSUM_TAG) + 64 + 1


class CheckpointError(SeedbedError):
    """A checkpoint that cannot be used; the message names the file."""


# A bound on what is read into memory, far above any model this template trains on a CPU.
MAX_CHECKPOINT_BYTES = int(os.environ.get("SEEDBED_MAX_CHECKPOINT_BYTES", 8 * 2**30))


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` (CPU tensors and plain values) atomically, with its checksum."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getbuffer()
    trailer = CHECKSUM_TAG + hashlib.sha256(payload).hexdigest().encode() + b"\n"

    def write(file: Any) -> None:
        file.write(payload)
        file.write(trailer)

    atomic_write(path, write)


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint file onto the CPU after checking its checksum; tensors and
    containers only."""
    path = Path(path)
    try:
        # Read only a regular file, up to a bound: a received `last.pt` may be a link to
        # /dev/zero (read forever) or a FIFO (hangs on open).
        with os.fdopen(open_regular(path, CheckpointError, "checkpoint "), "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > MAX_CHECKPOINT_BYTES:
                raise CheckpointError(
                    f"checkpoint {path} is refused: {size} bytes, more than the "
                    f"{MAX_CHECKPOINT_BYTES} a checkpoint may have (SEEDBED_MAX_CHECKPOINT_BYTES)"
                )
            data = memoryview(file.read(MAX_CHECKPOINT_BYTES + 1))
    except OSError as error:
        raise CheckpointError(f"checkpoint {path} cannot be read: {error.strerror}") from error
    if len(data) == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    payload, trailer = data[:-TRAILER_SIZE], bytes(data[-TRAILER_SIZE:])
    if not trailer.startswith(CHECKSUM_TAG):
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a seedbed checkpoint (no checksum at its end)"
        )
    if hashlib.sha256(payload).hexdigest().encode() != trailer[len(CHECKSUM_TAG) : -1]:
        raise CheckpointError(f"checkpoint {path} fails its SHA-256 checksum: the file is corrupt")
    _check_stored(path, payload)
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint {path} is refused: loading it needs arbitrary unpickling, "
            f"which could run code ({first})"
        ) from error
    except Exception as error:
        raise CheckpointError(f"checkpoint {path} cannot be loaded: {error}") from error


def _check_stored(path: Path, payload: memoryview) -> None:
    """torch.save stores its records uncompressed; torch.load also inflates compressed ones,
    so a few MB of a received file could unpack to terabytes. Refused, before loading."""
    try:
        members = zipfile.ZipFile(io.BytesIO(payload)).infolist()
    except zipfile.BadZipFile:
        return  # not torch's zip format: torch.load says what it is
    packed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED]
    if packed or sum(m.file_size for m in members) > MAX_CHECKPOINT_BYTES:
        what = f"a compressed record ({packed[0]})" if packed else "records past the bound"
        raise CheckpointError(
            f"checkpoint {path} is refused: it holds {what}; torch.save writes records as "
            "they are, so this file was not written by it"
        )
