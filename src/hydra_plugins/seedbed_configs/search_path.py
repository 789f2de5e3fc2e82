"""Makes a seedbed project's configs composable by any Hydra entry, the compose API included.

A project's `configs/train.yaml` starts from seedbed's `seedbed` config and its
schemas (ConfigStore `schema/...`), uses seedbed's resolvers, and puts seedbed's
own configs on the search path (`hydra.searchpath: [pkg://seedbed.configs]`).
The command line registers the schemas and resolvers itself; a notebook or a
test that calls `initialize_config_dir(<project>/configs)` + `compose("train")`
did not, and failed with "Could not find 'schema/...'". Hydra imports every
plugin under `hydra_plugins/` when it builds a config search path, before
anything is composed: this one registers them then, when a seedbed project's
configs (or seedbed's own) are on the path, and only then (other Hydra apps in
the same environment are left alone and do not import torch). It also puts
seedbed's configs on the path from the start, so `--help` lists its groups.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

# What a project's train.yaml holds: seedbed's configs on its search path.
LIBRARY_SEARCH_PATH = "pkg://seedbed.configs"


def seedbed_config_dir() -> Path | None:
    """The packaged configs' directory, found without importing seedbed (and torch)."""
    spec = importlib.util.find_spec("seedbed")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "configs"


def is_seedbed_configs(path: str, config_dir: Path) -> bool:
    """`path` (a search path entry) names seedbed's configs: as a package or a directory."""
    if path.startswith("pkg://"):
        return path.removeprefix("pkg://").strip("/").replace("/", ".") == "seedbed.configs"
    directory = Path(path.removeprefix("file://"))
    try:
        return directory.resolve() == config_dir
    except OSError:
        return False


def is_project_configs(path: str) -> bool:
    """`path` (a search path entry) is a seedbed project's configs: its train.yaml puts
    seedbed's configs on the search path. One small file read, no YAML parsed."""
    if path.startswith("pkg://"):
        return False
    train = Path(path.removeprefix("file://")) / "train.yaml"
    try:
        return train.is_file() and LIBRARY_SEARCH_PATH in train.read_text(errors="replace")
    except OSError:
        return False


class SeedbedSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        config_dir = seedbed_config_dir()
        if config_dir is None:
            return
        paths = [e.path for e in search_path.get_path() if e.path]
        library = any(is_seedbed_configs(p, config_dir) for p in paths)
        if not library and any(is_project_configs(p) for p in paths):
            # From the start, not only once train.yaml is read: --help lists seedbed's
            # groups too, and a project's option still comes first.
            search_path.append(provider="seedbed", path=LIBRARY_SEARCH_PATH)
            library = True
        if library:
            from seedbed.runs.hydra import register_configs

            register_configs()
