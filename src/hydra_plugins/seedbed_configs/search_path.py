"""Makes seedbed's configs composable by any Hydra entry, the compose API included.

train.yaml and every option start from a schema in Hydra's ConfigStore
(`schema/...`) and use seedbed's resolvers. The command line registers them
itself; a notebook or a test that calls `initialize_config_dir(<seedbed's
configs>)` + `compose("train")` did not, and failed with "Could not find
'schema/sched/none'". Hydra imports every plugin under `hydra_plugins/` when
it builds a config search path, before anything is composed: this one
registers the schemas and resolvers then, when seedbed's config directory is
on the path, and only then (other Hydra apps in the same environment are
left alone and do not import torch).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


def seedbed_config_dir() -> Path | None:
    """The packaged configs' directory, found without importing seedbed (and torch)."""
    spec = importlib.util.find_spec("seedbed")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "configs"


def is_seedbed_configs(path: str, config_dir: Path) -> bool:
    """`path` (a search path entry) names seedbed's configs: as a package or as a directory,
    e.g. the `configs` link at the top of a checkout."""
    if path.startswith("pkg://"):
        return path.removeprefix("pkg://").strip("/").replace("/", ".") == "seedbed.configs"
    directory = Path(path.removeprefix("file://"))
    try:
        return directory.resolve() == config_dir
    except OSError:
        return False


class SeedbedSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        config_dir = seedbed_config_dir()
        if config_dir is None:
            return
        if any(is_seedbed_configs(e.path, config_dir) for e in search_path.get_path() if e.path):
            from seedbed.config import register_configs

            register_configs()
