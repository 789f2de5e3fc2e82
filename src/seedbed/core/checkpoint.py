"""Checkpoints: `{name: part.state_dict()}`, written atomically, and when to write them.

A checkpoint is a checksummed file (`seedbed.core.checkpoint_file`: atomic, read with
`torch.load(weights_only=True)`), or for an FSDP2 run a directory of shards
(`seedbed.core.sharded`); `load_checkpoint` reads either, whole, in one process.

`Checkpointer` is handed the run's stateful parts by name once, saves and
restores exactly those, and decides when to write (`checkpoint.*` in the
config): every `every_steps` steps, after each validation, on request
(interrupt, end of training); it keeps `keep_last` step files and points
`last.pt` and `best.pt` (by the task's monitored metric) at theirs.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from omegaconf import DictConfig

from seedbed.core.checkpoint_file import (
    CHECKSUM_TAG,
    MAX_CHECKPOINT_BYTES,
    TRAILER_SIZE,
    CheckpointError,
    load_checkpoint_file,
    save_checkpoint,
)
from seedbed.core.errors import require
from seedbed.core.files import fsync_dir
from seedbed.core.sharded import load_sharded

# Importable from here, as they always were.
__all__ = [
    "CHECKSUM_TAG",
    "MAX_CHECKPOINT_BYTES",
    "TRAILER_SIZE",
    "CheckpointError",
    "Checkpointer",
    "load_checkpoint",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

STEP_FILE = re.compile(r"step_(\d+)\.(?:pt|dcp)")  # a file, or a sharded checkpoint's directory


def load_checkpoint(path: str | os.PathLike, tensors: bool = True) -> dict[str, Any]:
    """Read a checkpoint onto the CPU after checking its checksum; tensors and containers only.

    A sharded checkpoint (a directory, `seedbed.core.sharded`) is read whole in this process:
    its full model and optimizer tensors unless `tensors` is false."""
    if Path(path).is_dir():
        return load_sharded(Path(path), tensors)
    return load_checkpoint_file(path)


def to_cpu(state: Any) -> Any:
    """A copy of `state` with every tensor on the CPU, synchronising CUDA at most once.

    Each CUDA tensor is copied without blocking (into pinned memory), then one
    synchronisation waits for all the copies together.
    """
    copied_from_cuda = False

    def copy(value: Any) -> Any:
        nonlocal copied_from_cuda
        if isinstance(value, torch.Tensor):
            if value.device.type == "cpu":
                return value.detach()
            copied_from_cuda = True
            return value.detach().to("cpu", non_blocking=True)
        if isinstance(value, Mapping):
            return {key: copy(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            if all(isinstance(item, (int, float)) for item in value):
                return value  # e.g. an RNG state's 625 ints: nothing to move, nothing to walk
            return type(value)(copy(item) for item in value)
        return value

    result = copy(state)
    if copied_from_cuda:
        torch.cuda.synchronize()
    return result


def step_file(step: int, sharded: bool = False) -> str:
    return f"step_{step:06d}.{'dcp' if sharded else 'pt'}"


def step_files(directory: Path) -> list[Path]:
    """The `step_*.pt` files (and `step_*.dcp` directories) of `directory`, newest first."""
    found = [
        (int(m.group(1)), p) for p in directory.glob("step_*") if (m := STEP_FILE.fullmatch(p.name))
    ]
    return [p for _, p in sorted(found, reverse=True)]


def point_link(link: Path, target_name: str) -> None:
    """Make `link` (last.pt, best.pt) a relative symlink to `target_name`, atomically."""
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)  # a copy of a sharded checkpoint (a copy that followed the link)
    os.symlink(target_name, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Checkpointer:
    """Writes checkpoints when the config says so; keeps `last.pt`, `best.pt`, `keep_last` files.

    It is handed the run's stateful parts by name once (`parts`: model, optimizer, loop
    counters, ...; None for a part a run does not have): a checkpoint is
    `{name: part.state_dict()}` plus `extras()` (RNG states, the metrics file's offset,
    the config), and `restore` loads the same names back, so saving and restoring can
    never drift apart. `best` ({metric, value, step, file}, by `monitor`) is saved too.
    """

    def __init__(
        self,
        directory: Path,
        parts: Mapping[str, Stateful | None],
        extras: Callable[[], dict[str, Any]],
        *,
        monitor: Any,
        every_steps: int | None,
        at_epoch_end: bool,
        keep_last: int | None,
        save_best: bool,
        batches_per_epoch: int,
        sharded: Any = None,
        writes: bool = True,
    ) -> None:
        """`sharded` (an FSDP2 run's `seedbed.core.sharded.ShardedParts`): the model and
        optimizer are saved through it, as a directory every rank writes its shards to;
        only the process that `writes` writes the rest and points the links."""
        self.directory, self.parts, self.extras = directory, dict(parts), extras
        self.sharded, self.writes = sharded, writes
        self.monitor = monitor if save_best else None
        self.every_steps, self.at_epoch_end, self.keep_last = every_steps, at_epoch_end, keep_last
        self.batches_per_epoch = batches_per_epoch
        self.best: dict[str, Any] | None = None
        self.saved_at: tuple[int, int, int] | None = None

    def capture(self) -> dict[str, Any]:
        """The whole state: every part's state_dict (tensors may be on any device)."""
        state = {
            name: part.state_dict() if part is not None else None
            for name, part in self.parts.items()
            if self.sharded is None or name not in ("model", "optimizer")
        }
        return {**state, "best": self.best, **self.extras()}

    def restore(self, checkpoint: Mapping[str, Any]) -> None:
        """Load every part from `checkpoint` (RNG states are the caller's, restored last)."""
        if self.sharded is None and "sharded" in checkpoint and "model" not in checkpoint:
            # An FSDP2 run's checkpoint resumed in one process (or by DDP): read it whole.
            checkpoint = load_checkpoint(checkpoint["sharded"])
        for name, part in self.parts.items():
            if self.sharded is not None and name in ("model", "optimizer"):
                continue
            if part is not None:
                part.load_state_dict(checkpoint[name])
        if self.sharded is not None:
            self.sharded.restore(Path(checkpoint["sharded"]), checkpoint)
        self.best = checkpoint.get("best")

    def _due(self, step: int) -> bool:
        return bool(self.every_steps) and step % self.every_steps == 0

    def after_step(self, loop: Any) -> None:
        # On an epoch's last batch the epoch-end checkpoint (after validation) takes its place.
        if self._due(loop.step) and loop.batch < self.batches_per_epoch:
            self.save(loop)

    def after_validation(self, loop: Any, val: Mapping[str, float]) -> None:
        metric = self.monitor.metric if self.monitor else None
        best = self.best["value"] if self.best else None
        improved = metric is not None and self.monitor.improves(val[metric], best)
        if improved:
            self.best = {"metric": metric, "value": val[metric], "step": loop.step}
            self.best["file"] = step_file(loop.step, self.sharded is not None)
        epoch_end = loop.batch == 0  # not a validation within the epoch (val_every_steps)
        if (self.at_epoch_end and epoch_end) or improved or self._due(loop.step):
            self.save(loop)
        if improved and self.writes:
            point_link(self.directory / "best.pt", self.best["file"])
            log.info("best.pt: %s %.6g at step %d", metric, self.best["value"], loop.step)

    def save(self, loop: Any) -> Path:
        """Write the current state as `step_<step>.pt`, point last.pt at it, drop old ones."""
        path = self.directory / step_file(loop.step, self.sharded is not None)
        where = (loop.epoch, loop.step, loop.batch)
        if self.saved_at == where and path.exists():
            return path  # this very state is on disk already
        if self.sharded is not None:
            self.sharded.save(path, to_cpu(self.capture()))
        else:
            save_checkpoint(path, to_cpu(self.capture()))
        self.saved_at = where
        if self.writes:
            point_link(self.directory / "last.pt", path.name)
            self._drop_old()
        return path

    def _drop_old(self) -> None:
        if self.keep_last is None:
            return
        keep = {self.best["file"]} if self.best else set()
        for path in step_files(self.directory)[self.keep_last :]:
            if path.name in keep:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)  # a sharded checkpoint
            else:
                path.unlink(missing_ok=True)


@dataclass
class CheckpointConfig:
    """When checkpoints are written to `<run dir>/checkpoints/`, and which are kept."""

    every_steps: int | None = 500
    """Write `step_<step>.pt` every this many optimizer steps; null: only at epoch ends, on an
    interrupt and at the end of training."""
    at_epoch_end: bool = True
    """Also write one after each epoch's validation."""
    keep_last: int | None = 3
    """Keep this many of the newest step files (best.pt's is kept as well); null keeps all."""
    save_best: bool = True
    """Keep best.pt: the checkpoint with the best `task.monitor` value so far."""


def check_checkpoint(checkpoint: DictConfig) -> None:
    every, keep = checkpoint.every_steps, checkpoint.keep_last
    require(every is None or every > 0, "checkpoint.every_steps", every, "an int > 0 or null")
    require(keep is None or keep > 0, "checkpoint.keep_last", keep, "an int > 0 or null")
