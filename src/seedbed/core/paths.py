"""Where things are: the library's configs, the project a command runs in, run directories.

A project (what `seedbed new` makes) has its own `configs/` with `train.yaml`;
seedbed's configs come after it on Hydra's search path. The command that runs
(`train.py`, `eval.py`, the tools) says which project it is, once, with
`use_project`; what is trusted in files read back (`allow_targets`, the
project's own package, the builders its configs name) is read from there,
never from the file.
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime
from pathlib import Path

# The library's own config groups (task, data, model, optim, trainer, ...) and `seedbed.yaml`.
LIBRARY_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# On Hydra's search path, as a project's train.yaml names it.
LIBRARY_SEARCH_PATH = "pkg://seedbed.configs"
# The project's primary config, in its configs folder.
PROJECT_CONFIG = "train.yaml"
CHECKPOINT_DIR = "checkpoints"

_project: list[Path] = []


def use_project(config_dir: str | os.PathLike) -> Path:
    """Make `config_dir` (a project's `configs/`) the project this process runs in."""
    _project[:] = [Path(config_dir).resolve()]
    return _project[0]


def project_configs() -> Path:
    """The configs folder of the project this process runs in: the one `use_project` named,
    else `./configs` (a command started in the project's root)."""
    return _project[0] if _project else Path("configs").resolve()


def run_name() -> str:
    """`<YYYY-MM-DD_HH-MM-SS>_<6 hex>`: sortable by time, unique even within one second."""
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{secrets.token_hex(3)}"


def run_dir_of(path: str | os.PathLike) -> Path:
    """The run directory of `path`: itself, or `<run>` for `<run>/checkpoints/<file>.pt` (or
    a sharded checkpoint's `<run>/checkpoints/step_<step>.dcp`)."""
    path = Path(path)
    if path.suffix in (".pt", ".dcp") or path.is_file():
        return path.parent.parent
    return path
