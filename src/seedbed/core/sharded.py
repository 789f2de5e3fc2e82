"""Sharded training (`trainer.distributed=fsdp`): FSDP2 wrapping and sharded checkpoints.

Wrapping policy (`shard_model`): each child holding parameters of the first module, from
the root down, with more than one such child (a model that wraps one network,
`self.net = nn.Sequential(...)`, is looked through to its layers) becomes its own FSDP2
unit (`torch.distributed.fsdp.fully_shard`), then the model itself (the parameters left
over). A unit's parameters are gathered for its forward and backward and freed after, so
the memory at a time is one unit's full parameters plus every unit's shard. Parameters stay
in their dtype (no FSDP mixed precision: `trainer.precision` autocasts the forward as in
any run).

A sharded checkpoint is a directory `step_<step>.dcp/` written through
`torch.distributed.checkpoint` (DCP): every rank writes its shards of the model's and the
optimizer's tensors (`__<rank>_0.distcp`, DCP's `.metadata`), and rank 0 writes
`state.pt`, the run's own state (loop, RNG states of every rank, callbacks, position in
global samples, the optimizer's hyper-parameters) as a checksummed seedbed checkpoint.
All of it is written into a hidden sibling (`.step_<step>.dcp.tmp`) and renamed into
place: a kill at any instant leaves the old checkpoint or the new one.

DCP reads tensors with `torch.load(weights_only=True)` but unpickles `.metadata` (and
values that are not tensors) with plain pickle: a received checkpoint could run code.
`SafeReader` reads `.metadata` with an unpickler that builds only DCP's own metadata
records, torch dtypes and sizes, refuses any entry that is not a tensor, any storage
outside the directory's own regular files, and any size past the checkpoint bound; we
never write anything but tensors through DCP.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.checkpoint.state_dict_loader import _load_state_dict
from torch.distributed.fsdp import fully_shard

from seedbed.core.checkpoint_file import (
    MAX_CHECKPOINT_BYTES,
    CheckpointError,
    load_checkpoint_file,
    save_checkpoint,
)
from seedbed.core.errors import ConfigError
from seedbed.core.files import fsync_dir, open_regular

STATE_FILE = "state.pt"  # the run's own state, beside DCP's files
METADATA_FILE = ".metadata"
# What a sharded checkpoint holds besides `state.pt`: DCP's metadata and shard files.
SHARD_FILE_CHARS = set("_0123456789.distcp")


def shard_model(model: nn.Module) -> nn.Module:
    """Apply FSDP2 to `model` in place (policy: `shard_units`, then the root); return it."""
    if next(model.parameters(), None) is None:
        raise ConfigError(
            "trainer.distributed",
            "fsdp",
            f"a model with parameters: {type(model).__name__} has none to shard (use ddp)",
        )
    for unit in shard_units(model):
        fully_shard(unit)
    fully_shard(model)
    return model


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules sharded one by one: the children with parameters of the first module,
    from the root down, that has more than one such child (a wrapper holding one network,
    `self.net = nn.Sequential(...)`, is looked through). The root takes what is left."""
    parent = model
    while True:
        units = [child for child in parent.children() if _has_parameters(child)]
        own = next(parent.parameters(recurse=False), None) is not None
        if len(units) != 1 or own:
            return units
        parent = units[0]


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def full_model_state(model: nn.Module) -> dict[str, Any]:
    """The unsharded state dict of a sharded `model` on rank 0, on the CPU (a collective:
    every rank calls it; the others get {})."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


class ShardedParts:
    """The model and optimizer of an FSDP2 run: saved and restored through DCP by every rank.

    The optimizer's tensors go through DCP only once it has state: asking DCP for the state
    of an optimizer that has none would initialise it with a step of lr 0 (Adam's step
    count would then be one ahead of a run in one process). Its hyper-parameters (what a
    scheduler changes) are plain values in state.pt."""

    def __init__(self, model: nn.Module, optimizer: Any, writes: bool) -> None:
        self.model, self.optimizer, self.writes = model, optimizer, writes

    def save(self, path: Path, state: dict[str, Any]) -> None:
        """Write sharded checkpoint `path` (a directory) with the run's `state` (a collective)."""
        # Buffers (BatchNorm's statistics) are not sharded and each rank updates its own:
        # rank 0's are the run's, as DDP's are (it broadcasts them before every forward).
        for buffer in self.model.buffers():
            dist.broadcast(buffer, src=0)
        tensors: dict[str, Any] = {"model": get_model_state_dict(self.model)}
        optimizer = self._optimizer_state()
        if optimizer is not None:
            tensors["optimizer"] = {"state": optimizer["state"]}
        tmp = path.with_name(f".{path.name}.tmp")
        if self.writes:
            _remove(tmp)
        dist.barrier()
        dcp.save(tensors, checkpoint_id=tmp)
        if self.writes:
            saved = {**state, "optimizer": self._optimizer_plain(optimizer is not None)}
            save_checkpoint(tmp / STATE_FILE, saved)
            fsync_dir(tmp)
            if path.exists():  # the same step written again: the newer replaces it
                old = path.with_name(f".{path.name}.old.tmp")
                os.replace(path, old)
                _remove(old)
            os.replace(tmp, path)
            fsync_dir(path.parent)
        dist.barrier()  # every rank sees the checkpoint in place before it goes on

    def _optimizer_plain(self, tensors: bool) -> dict[str, Any] | None:
        """What state.pt keeps of the optimizer: its groups' hyper-parameters, and the names
        of their parameters (what one process needs to read the saved tensors back)."""
        if self.optimizer is None:
            return None
        names = {id(p): name for name, p in self.model.named_parameters()}
        return {
            "param_groups": self.optimizer.state_dict()["param_groups"],
            "param_names": [
                [names[id(p)] for p in g["params"]] for g in self.optimizer.param_groups
            ],
            "tensors": tensors,
        }

    def _optimizer_state(self) -> dict[str, Any] | None:
        if self.optimizer is None or not self.optimizer.state:
            return None
        return get_optimizer_state_dict(self.model, self.optimizer)

    def restore(self, path: Path, saved: dict[str, Any]) -> None:
        """Load the sharded checkpoint `path` into this run's shards, whatever the world size
        that wrote it (DCP reshards), with `saved` its state.pt (a collective)."""
        tensors: dict[str, Any] = {"model": get_model_state_dict(self.model)}
        with_optimizer = self.optimizer is not None and bool(saved["optimizer"]["tensors"])
        if with_optimizer:  # initialised by DCP (a step of lr 0), then replaced by the saved
            optimizer = get_optimizer_state_dict(self.model, self.optimizer)
            tensors["optimizer"] = {"state": optimizer["state"]}
        dcp.load(tensors, storage_reader=checked_reader(path))
        set_model_state_dict(self.model, tensors["model"])
        if with_optimizer:
            optimizer["state"] = tensors["optimizer"]["state"]
            set_optimizer_state_dict(self.model, self.optimizer, optimizer)
        if self.optimizer is not None:
            set_hyperparameters(self.optimizer, saved["optimizer"]["param_groups"])


def set_hyperparameters(optimizer: Any, groups: list[dict[str, Any]]) -> None:
    """Put the saved hyper-parameters (lr, betas, ...) of each parameter group back."""
    for group, saved in zip(optimizer.param_groups, groups, strict=True):
        group.update({key: value for key, value in saved.items() if key != "params"})


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def sharded_sha256(path: Path) -> str:
    """One SHA-256 of a sharded checkpoint: over each of its files' names and SHA-256s."""
    check_sharded_dir(path, MAX_CHECKPOINT_BYTES)  # regular files only, bounded
    digest = hashlib.sha256()
    for name in sorted(entry.name for entry in os.scandir(path)):
        with os.fdopen(open_regular(path / name), "rb") as file:
            content = hashlib.file_digest(file, "sha256").hexdigest()
        digest.update(f"{name}|{content}|".encode())
    return digest.hexdigest()


def is_sharded(path: Path) -> bool:
    """Whether `path` (followed if a link: last.pt, best.pt) is a sharded checkpoint."""
    return path.is_dir() and (path / STATE_FILE).exists()


# -- reading a received sharded checkpoint ------------------------------------------------

# What `.metadata` may build: DCP's records, torch's sizes, dtypes and layouts, a path.
_METADATA_CLASSES = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in (
        "Metadata",
        "TensorStorageMetadata",
        "TensorProperties",
        "ChunkStorageMetadata",
        "MetadataIndex",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
}


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source: Path) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _METADATA_CLASSES:
            if module == "pathlib":  # the checkpoint's own path, as it was written
                return pathlib.PurePosixPath  # never a path that touches the disk
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise CheckpointError(
            f"checkpoint {self.source} is refused: its {METADATA_FILE} needs {module}.{name}, "
            "not a record DCP writes; loading it could run code"
        )


def check_sharded_dir(path: Path, limit: int) -> None:
    """Refuse a sharded checkpoint directory holding anything but regular files of the
    names it should, or more than `limit` bytes."""
    total = 0
    for entry in os.scandir(path):
        if not entry.is_file(follow_symlinks=False):
            raise CheckpointError(
                f"checkpoint {path} is refused: {entry.name} is not a regular file"
            )
        if (
            entry.name not in (STATE_FILE, METADATA_FILE)
            and not set(entry.name) <= SHARD_FILE_CHARS
        ):
            raise CheckpointError(
                f"checkpoint {path} is refused: {entry.name} is not a file DCP or seedbed writes"
            )
        total += entry.stat(follow_symlinks=False).st_size
    if total > limit:
        raise CheckpointError(
            f"checkpoint {path} is refused: {total} bytes, more than the {limit} a checkpoint "
            "may have (SEEDBED_MAX_CHECKPOINT_BYTES)"
        )


class SafeReader(FileSystemReader):
    """DCP's file reader, reading `.metadata` as data (see the module docstring)."""

    def __init__(self, path: Path, limit: int | None = None) -> None:
        super().__init__(path)
        self.directory, self.limit = Path(path), limit or MAX_CHECKPOINT_BYTES

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        check_sharded_dir(self.directory, self.limit)
        source = self.directory / METADATA_FILE
        try:
            data = source.read_bytes()
        except OSError as error:
            raise CheckpointError(f"checkpoint {self.directory}: {error.strerror}") from error
        try:
            metadata = _MetadataUnpickler(io.BytesIO(data), self.directory).load()
        except CheckpointError:
            raise
        except Exception as error:
            raise CheckpointError(
                f"checkpoint {self.directory} is refused: its {METADATA_FILE} cannot be read "
                f"({type(error).__name__})"
            ) from error
        self._check(metadata)
        metadata.storage_meta = None
        return metadata

    def _check(self, metadata: Any) -> None:
        where = f"checkpoint {self.directory} is refused"
        if not isinstance(metadata, Metadata):
            raise CheckpointError(f"{where}: {METADATA_FILE} is not DCP metadata")
        claimed = 0
        for key, item in metadata.state_dict_metadata.items():
            if not isinstance(item, TensorStorageMetadata):
                raise CheckpointError(
                    f"{where}: {key} is not a tensor (seedbed saves only tensors)"
                )
            claimed += item.size.numel() * item.properties.dtype.itemsize
        if claimed > self.limit:
            raise CheckpointError(f"{where}: its tensors claim {claimed} bytes, past the bound")
        for info in (metadata.storage_data or {}).values():
            name = str(info.relative_path)
            file = self.directory / name
            if "/" in name or name.startswith(".") or not file.is_file():
                raise CheckpointError(f"{where}: it reads {name!r}, not a shard file of its own")
            if (
                info.offset < 0
                or info.length < 0
                or info.offset + info.length > file.stat().st_size
            ):
                raise CheckpointError(f"{where}: {name} is shorter than its metadata says")


def checked_reader(path: Path) -> SafeReader:
    """A reader of `path` whose metadata is checked already: a refusal is a CheckpointError
    of its own, not one of DCP's errors that wrap every rank's."""
    reader = SafeReader(path)
    reader.read_metadata()
    return reader


def load_sharded_tensors(path: Path) -> dict[str, Any]:
    """The full (unsharded) tensors of sharded checkpoint `path`, read in this process alone
    (eval.py, verify, compare, rank 0 of a run): {"model": ..., "optimizer": {"state": ...}}."""
    tensors: dict[str, Any] = {}
    # As DCP's own dcp_to_torch_save reads one: the public `load` fills a copy of the dict.
    _load_state_dict(
        tensors,
        storage_reader=checked_reader(path),
        planner=_EmptyStateDictLoadPlanner(),
        no_dist=True,
    )
    return tensors


def load_sharded(path: Path, tensors: bool = True) -> dict[str, Any]:
    """Sharded checkpoint `path` as one process reads it: state.pt, with the full model and
    optimizer tensors merged in (`tensors`), else with `sharded` naming the directory (a
    resume loads the tensors into its own shards)."""
    state = load_checkpoint_file(path / STATE_FILE)
    state["sharded"] = str(path)
    if tensors:
        loaded = load_sharded_tensors(path)
        state["model"] = loaded["model"]
        if state.get("optimizer") is not None:
            state["optimizer"] = plain_optimizer_state(state["optimizer"], loaded)
    return state


def plain_optimizer_state(saved: dict[str, Any], loaded: dict[str, Any]) -> dict[str, Any]:
    """The optimizer's state_dict as one process's optimizer has it (parameters numbered in
    the order of its groups), from state.pt's `saved` and the full tensors `loaded`."""
    by_name = loaded.get("optimizer", {}).get("state", {})
    names = [name for group in saved["param_names"] for name in group]
    state = {i: by_name[name] for i, name in enumerate(names) if name in by_name}
    return {"state": state, "param_groups": saved["param_groups"]}
