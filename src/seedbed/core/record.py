"""The run directory: a record that tells the whole story, written from before step 0.

- `config.yaml`: the fully resolved config (no `${...}` left);
- `run.json`: status (running -> completed | failed | interrupted, with the
  error), seeds used, determinism applied, versions, device, threads, times,
  final metrics and fingerprints of the final weights and of the loss series;
- `metrics.jsonl`: one JSON object per line, appended as training goes;
- `environment.json`, `requirements.txt`, `code.patch`: written by
  `seedbed.core.environment`, named in run.json's `environment` field.

`run.json` is rewritten atomically on every change, so a reader never sees
half of it, and a crash leaves the last complete state.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from seedbed.core.errors import SeedbedError
from seedbed.core.files import atomic_write, open_nofollow, read_bounded

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"


def finite(value: Any) -> Any:
    """`value` with every NaN or infinite float made None: bare NaN is not JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def to_json(value: Any, **options: Any) -> str:
    """JSON text of `value`, valid whatever it holds (NaN and infinity become null)."""
    return json.dumps(finite(value), allow_nan=False, **options)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def versions() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        **package_versions(["seedbed", "torch", "numpy", "hydra-core", "omegaconf"]),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }


def tensor_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's memory as a flat uint8 tensor, whatever its dtype and shape: flattened
    first, because a 0-dim tensor (BatchNorm's `num_batches_tracked`) cannot be viewed as
    bytes of another size."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    if flat.is_quantized:
        flat = flat.int_repr()
    return flat.view(torch.uint8)


def weights_sha256(state_dict: Mapping[str, Any]) -> str:
    """SHA-256 over every entry's name, dtype, shape and bytes, in name order: parameters
    and buffers of any dtype and shape (0-dim included); an entry that is not a tensor (a
    module's extra state) by its repr."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        if not isinstance(value, torch.Tensor):
            digest.update(f"{name}|{type(value).__name__}|{value!r}|".encode())
            continue
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(tensor_bytes(value).numpy().tobytes())
    return digest.hexdigest()


class RunRecord:
    """`run.json` of one run directory, rewritten atomically on every update."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RUN_FILE
        self.data: dict[str, Any] = {}
        if self.path.exists():
            self.data = read_json(self.path)

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        text = to_json(self.data, indent=2, sort_keys=False, default=str) + "\n"
        atomic_write(self.path, lambda file: file.write(text.encode()))

    def start(self, config_yaml: str, command: list[str]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.run_dir / CONFIG_FILE, lambda file: file.write(config_yaml.encode()))
        self.update(
            status="running",
            error=None,
            run_dir=str(self.run_dir),
            command=command,
            started_at=now_iso(),
            ended_at=None,
            versions=versions(),
            platform=platform.platform(),
            torch_threads=torch.get_num_threads(),
        )

    def resume(self, config_yaml: str, command: list[str], entry: dict[str, Any]) -> None:
        """Mark the run running again; `entry` joins the `resumes` history with its time."""
        atomic_write(self.run_dir / CONFIG_FILE, lambda file: file.write(config_yaml.encode()))
        history = [*self.data.get("resumes", []), {"at": now_iso(), "command": command, **entry}]
        self.update(status="running", error=None, ended_at=None, resumes=history)

    def finish(self, status: str, error: str | None = None, **fields: Any) -> None:
        self.update(status=status, error=error, ended_at=now_iso(), **fields)


class MetricsLog:
    """Appends one JSON object per line to metrics.jsonl; flushed on every write."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:  # never through a link: a received run directory could point it anywhere
            fd = open_nofollow(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        except OSError as error:
            raise SeedbedError(f"{self.path} cannot be written: {error.strerror}") from None
        self.file = os.fdopen(fd, "a", encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        try:
            self.file.write(to_json(record) + "\n")
            self.file.flush()
        except OSError as error:  # a full disk: name the file
            raise SeedbedError(f"{self.path} cannot be written: {error.strerror}") from error

    def tell(self) -> int:
        """Bytes in the file so far: a checkpoint stores it, a resume truncates back to it."""
        return self.file.tell()

    def close(self) -> None:
        self.file.close()


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; a damaged file is a SeedbedError naming it."""
    try:
        data = json.loads(read_bounded(path, "JSON record"))  # a SeedbedError if unreadable
    except (ValueError, RecursionError) as error:  # not JSON, not UTF-8, nested past belief
        raise SeedbedError(f"{path} is damaged or unreadable: {_reason(error)}") from None
    if not isinstance(data, dict):
        raise SeedbedError(f"{path} is damaged: it holds {type(data).__name__}, not an object")
    return data


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: `*name` repeats a node wherever it is named, so a few lines
    can stand for billions of values once walked. seedbed never writes one."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            line = event.start_mark.line + 1 if event.start_mark else "?"
            raise yaml.YAMLError(f"an alias (*{event.anchor}) on line {line} is refused")
        return super().compose_node(parent, index)


def read_yaml(path: Path) -> Any:
    """The plain data of a YAML file (never resolved: `${...}` stays text); a damaged,
    unreadable or oversized file is a SeedbedError naming it."""
    try:
        return yaml.load(read_bounded(path, "YAML config"), Loader=_NoAliasLoader)  # noqa: S506
    except (ValueError, RecursionError, yaml.YAMLError) as error:
        raise SeedbedError(f"{path} is damaged or unreadable: {_reason(error)}") from None


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error).splitlines()[0]


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every record of metrics.jsonl; a damaged line is a SeedbedError naming file and line."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    try:
        lines = read_bounded(path, "metrics log").decode().splitlines()
    except UnicodeDecodeError as error:
        raise SeedbedError(f"{path} is unreadable: {_reason(error)}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise SeedbedError(f"{path} line {number} is damaged: {_reason(error)}") from None
        if not isinstance(record, dict):
            raise SeedbedError(f"{path} line {number} is damaged: not a JSON object")
        records.append(record)
    return records


def loss_series(records: Iterable[Mapping[str, Any]]) -> list[list[float]]:
    """[step, loss, window mean] of every logged training step, in step order."""
    return [[r["step"], r["loss"], r["loss_mean"]] for r in records if r.get("kind") == "train"]


def loss_series_sha256(records: Iterable[Mapping[str, Any]]) -> str:
    """SHA-256 of the logged loss series; floats hashed by their exact float64 bytes."""
    series = np.asarray(loss_series(records), dtype=np.float64).reshape(-1, 3)
    return hashlib.sha256(series.tobytes()).hexdigest()


def command_line() -> list[str]:
    return [Path(sys.argv[0]).name, *sys.argv[1:]]


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"optim": {"lr": 0.1}}` -> `{"optim.lr": 0.1}`; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
