"""Configs read from files are data, never code: every `_target_` must name what builds.

A checkpoint's stored config or a run directory's config.yaml may come from
someone else, and Hydra's `instantiate` calls whatever a `_target_` names
(`weights_only=True` guards only the pickle layer). `check_targets` walks the
whole config — nested mappings, lists, `_args_` — before a single object is
built and refuses, in one line naming the key and the target, any target that
is not one of:

- a component class (`COMPONENT_CLASSES`): a `torch.nn` module or loss, a
  `torch.optim` optimizer or scheduler, a torchvision transform or model class,
  a seedbed module. A class is named by where it is defined and what it is a
  subclass of, so a new torch or torchvision release adds only new classes of
  those kinds, never a function;
- a builder your own configs name: the `_target_` of an option in
  `configs/<group>/` or of a schema's default (`seedbed.data.vision.mnist`,
  `seedbed.optim.warmup_cosine`, ...): the file you wrote says what it builds;
- a name under a prefix you trust in *your own* config (`allow_targets` in
  configs/train.yaml or on the command line; the stored config's own list is
  never read, or a file could trust itself).

Functions of those packages are none of these: `torchvision.datasets.utils.
download_url` or `extract_archive`, `torch.save`, `torch.nn.functional.np.save`
(numpy, reached through torch) are refused however they are spelled, and so
are torchvision's dataset classes and model builders, whose arguments download
(`download=True`, `weights=`). seedbed's machinery (`seedbed.runs`,
`seedbed.tools`, ...) writes files wherever it is told: never a target from a file.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from seedbed.core.errors import SeedbedError
from seedbed.core.paths import LIBRARY_CONFIGS, PROJECT_CONFIG, project_configs

# (where a class is defined, what it must be a subclass of): the kinds of component a config
# read from a file may build. torchvision.transforms.transforms defines only transforms; its
# oldest ones (Compose, ToTensor, Lambda, ...) are plain classes.
COMPONENT_CLASSES = (
    ("torch.nn", "torch.nn.Module"),
    ("torch.optim", "torch.optim.Optimizer"),
    ("torch.optim", "torch.optim.lr_scheduler.LRScheduler"),
    ("torch.optim", "torch.optim.lr_scheduler.ReduceLROnPlateau"),
    ("torchvision.transforms", "torch.nn.Module"),
    ("torchvision.transforms.transforms", "builtins.object"),
    ("torchvision.models", "torch.nn.Module"),
    ("seedbed", "torch.nn.Module"),
)
# The packages those classes are reached through (torchvision.transforms.ToTensor is defined
# in torchvision.transforms.transforms).
COMPONENT_PACKAGES = (
    "torch.nn",
    "torch.optim",
    "torchvision.transforms",
    "torchvision.models",
    "seedbed",
)
# Builders the docs show in configs that no packaged option names.
DOCUMENTED_BUILDERS = ("seedbed.data.vision.to_float",)
# seedbed's machinery writes files wherever it is told: never a target from a file.
DENIED_PREFIXES = ("seedbed.runs.", "seedbed.tools.", "seedbed.project.", "seedbed.evaluate.")
TARGET_KEYS = ("_target_",)
# What a target must look like: dotted Python names, nothing else.
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")


class UntrustedTarget(SeedbedError):
    """A `_target_` in a config read from a file that is not on the allow-list."""


def project_trust(config_dir: Path) -> tuple[str, ...]:
    """What a project's own configs/train.yaml trusts: the package of its `recipe` (the
    project's own code) and its `allow_targets`."""
    try:
        own = OmegaConf.load(config_dir / PROJECT_CONFIG)
        listed = [str(prefix) for prefix in own.get("allow_targets") or []]
        recipe = own.get("recipe")
    except Exception:  # noqa: BLE001 - a broken train.yaml is reported when a run composes it
        return ()
    package = [recipe.split(".")[0]] if isinstance(recipe, str) and "." in recipe else []
    return tuple(package + listed)


def user_prefixes() -> tuple[str, ...]:
    """The prefixes the project this command runs in trusts (see `project_trust`)."""
    return project_trust(project_configs())


def configured_builders() -> frozenset[str]:
    """Every `_target_` the library's and the project's configs name: their YAML options
    and the schemas' defaults, plus the builders the docs show."""
    yaml_found = builders_in(LIBRARY_CONFIGS, project_configs())
    return yaml_found | schema_targets() | frozenset(DOCUMENTED_BUILDERS)


@functools.cache
def builders_in(*config_dirs: Path) -> frozenset[str]:
    """Every `_target_` the YAML options of `config_dirs` (`<dir>/<group>/*.yaml`) name.
    Hydra's own settings (`hydra:` keys, `configs/hydra/`: launchers, callbacks) are not
    components and are left out."""
    found: set[str] = set()
    for config_dir in config_dirs:
        for path in sorted(config_dir.rglob("*.yaml")):
            if path.relative_to(config_dir).parts[0] == "hydra":
                continue
            try:
                config = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError):
                continue  # a broken option is reported when a run composes it
            found.update(str(target) for _, target in _walk(config, "", skip=("hydra",)) if target)
    return frozenset(found)


def schema_targets() -> set[str]:
    """The `_target_` defaults of the schemas in Hydra's ConfigStore (`schema/<group>/...`,
    registered by the command line before anything is composed)."""
    found: set[str] = set()
    pending = [ConfigStore.instance().repo.get("schema", {})]
    while pending:
        for entry in pending.pop().values():
            if isinstance(entry, dict):
                pending.append(entry)
            else:
                node = OmegaConf.to_container(entry.node, resolve=False)
                found.update(str(target) for _, target in _walk(node, "") if target)
    return found


def _under(name: str, prefixes: Iterable[str]) -> bool:
    name = name + "."
    return any(name.startswith(p if p.endswith(".") else p + ".") for p in prefixes)


def _locate(target: str) -> Any:
    from hydra._internal.utils import _locate as locate

    return locate(target)


def is_component_class(target: str) -> bool:
    """Whether `target` is a class of one of the `COMPONENT_CLASSES` kinds, defined there."""
    if not _under(target, COMPONENT_PACKAGES):
        return False  # nothing is imported for a name outside those packages
    try:
        found = _locate(target)
    except Exception:  # noqa: BLE001 - not found is not allowed
        return False
    if not inspect.isclass(found):
        return False
    module = getattr(found, "__module__", None) or ""
    return any(
        _under(module, [where]) and issubclass(found, _locate(base))
        for where, base in COMPONENT_CLASSES
    )


def is_allowed(target: str, prefixes: Iterable[str] = ()) -> bool:
    """Whether a config read from a file may build `target`: a component class, a builder
    your configs name, or a callable defined under one of `prefixes` (yours).

    The name alone is not enough for a prefix: `mypkg.models.os.remove` starts with
    `mypkg.models` and is `os.remove`; the object found must be defined there too.
    """
    if not target or not set(target) <= _NAME_CHARS or ".." in target:
        return False
    if any(part.startswith("_") for part in target.split(".")):
        return False  # private names and dunders (`__globals__`, `__builtins__`) lead anywhere
    if _under(target, DENIED_PREFIXES):
        return False
    if target in configured_builders() or is_component_class(target):
        return True
    prefixes = tuple(prefixes)
    if not _under(target, prefixes):
        return False
    try:
        found = _locate(target)  # imports only modules under the user's own prefixes
    except Exception:  # noqa: BLE001 - not found is not allowed
        return False
    if target in prefixes:
        return callable(found)  # named itself: `mypkg.data.load_prices`
    module = getattr(found, "__module__", None) or ""
    return callable(found) and _under(module, prefixes) and not _under(module, DENIED_PREFIXES)


def _walk(node: Any, key: str, skip: tuple[str, ...] = ()) -> Iterable[tuple[str, Any]]:
    """(dotted key, target value) of every target in `node`, however deep (keys in `skip`
    left out)."""
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, Mapping):
        for name, value in node.items():
            where = f"{key}.{name}" if key else str(name)
            if name in TARGET_KEYS:
                yield where, value
            elif name not in skip:
                yield from _walk(value, where, skip)
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _walk(value, f"{key}[{index}]", skip)


ALLOWED = (
    "component classes (torch.nn modules and losses, torch.optim optimizers and schedulers, "
    "torchvision transforms and model classes, seedbed's modules), the builders your own "
    "configs/ name, or names under a prefix you add to allow_targets in configs/train.yaml"
)


def check_targets(config: Any, source: str, extra: Iterable[str] = ()) -> None:
    """Refuse `config` (read from `source`) if any `_target_` is not on the allow-list.

    `extra`: prefixes from this command's own config (never from `config` itself).
    """
    prefixes = (*user_prefixes(), *extra)
    # The recipe is code that runs too: a file may name only a trusted one (a project's own).
    if isinstance(config, Mapping | DictConfig) and config.get("recipe") is not None:
        recipe = config.get("recipe")
        if (
            not isinstance(recipe, str)
            or not _under(recipe, prefixes)
            or not is_allowed(recipe, prefixes)
        ):
            raise UntrustedTarget(
                f"{source}: recipe={recipe!r} is refused: a config read from a file may only "
                "name the recipe of your own project (or a package you add to allow_targets)"
            )
    for key, target in _walk(config, ""):
        if target is None:
            continue  # "no such part" (sched=none): nothing is built
        if not isinstance(target, str) or not is_allowed(target, prefixes):
            raise UntrustedTarget(
                f"{source}: {key}={target!r} is refused: a config read from a file may only "
                f"build {ALLOWED}"
            )
