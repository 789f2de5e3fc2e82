"""The generic checks `seedbed.runs.hydra.validate` runs on a whole config.

- Keys added with `+`/`++` (`++trainer.epoch=2`) pass Hydra's struct check and
  would be stored and ignored: every key must be a field of its group's schema
  (the schema of a group option is found by its `_target_`), and the nearest
  field is suggested.
- No number in a config may be NaN or infinite (`optim.lr=inf`).
- A group's `_target_` names something that can build a component.

The ranges of each group's values are checked beside the component that uses them
(`seedbed.optim.check_sched`, `seedbed.data.loader.check_loader`, ...).

Each check takes the config as plain containers (`OmegaConf.to_container`): walking
OmegaConf nodes costs ten times as much.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
from typing import Any, get_type_hints

from seedbed.core.errors import ConfigError


@functools.cache
def _schema_fields(schema: type) -> dict[str, Any]:
    """{field name: its dataclass type, or None} of the dataclass `schema`."""
    hints = get_type_hints(schema)
    result = {}
    for f in dataclasses.fields(schema):
        nested = [t for t in getattr(hints[f.name], "__args__", (hints[f.name],))]
        result[f.name] = next((t for t in nested if dataclasses.is_dataclass(t)), None)
    return result


def check_keys(node: dict, schema: type, where: str) -> None:
    """Refuse a key of `node` that `schema` does not declare, suggesting the nearest one."""
    known = _schema_fields(schema)
    for key in node:
        key = str(key)
        name = f"{where}.{key}"
        if key not in known:
            near = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
            hint = f"did you mean {where}.{near[0]}? " if near else ""
            allowed = ", ".join(k for k in known if not k.startswith("_"))
            raise ConfigError(name, node[key], f"a key of {where}: {hint}({allowed})")
        value = node[key]
        if known[key] is not None and isinstance(value, dict):
            check_keys(value, known[key], name)


def check_group_keys(cfg: dict, schema: type, options: dict[str, dict]) -> None:
    """Every group's keys against its schema: the groups `schema` types by their own
    dataclass, the others (`options`: group -> {option: schema}) by the one with their
    `_target_`."""
    for group, typed in _schema_fields(schema).items():
        if typed is not None and isinstance(cfg.get(group), dict):
            check_keys(cfg[group], typed, group)
    for group, schemas in options.items():
        node = cfg.get(group)
        if not isinstance(node, dict):
            continue
        target = node.get("_target_")
        by_target = [s for s in schemas.values() if _default_target(s) == target]
        if len(by_target) == 1:  # a user's own component: its schema is its own business
            check_keys(node, by_target[0], group)


def check_component_targets(cfg: dict, options: dict[str, dict], names: dict[str, list]) -> None:
    """Every group's `_target_` (`model._target_=...` on the command line) names a packaged
    option's or something that can build a component: a class or a function that imports.
    `options`: group -> {option: schema}; `names`: group -> the options a user can choose."""
    for group, schemas in options.items():
        node = cfg.get(group)
        target = node.get("_target_") if isinstance(node, dict) else None
        if target is None or target in {_default_target(s) for s in schemas.values()}:
            continue
        problem = _unbuildable(target)
        if problem is not None:
            raise ConfigError(
                f"{group}._target_",
                target,
                f"a known component ({group}={'|'.join(names[group])}) or the dotted path of "
                f"a class or function of your own ({problem})",
            )


def _unbuildable(target: Any) -> str | None:
    """Why `target` cannot build a component, or None."""
    if not isinstance(target, str):
        return f"a dotted path, not {type(target).__name__}"
    from hydra._internal.utils import _locate

    try:
        found = _locate(target)
    except Exception as error:  # noqa: BLE001 - not importable, whatever the reason
        lines = str(error).strip().splitlines()  # Hydra's: "Error loading ...", why, a hint
        return f"it cannot be imported: {lines[-1] if lines else type(error).__name__}"
    if not (inspect.isclass(found) or inspect.isfunction(found)):
        return f"it is a {type(found).__name__}, not a class or function"
    return None


def _default_target(schema: type) -> Any:
    for f in dataclasses.fields(schema):
        if f.name == "_target_":
            return f.default
    return None


def check_finite(node: Any, where: str = "") -> None:
    """No NaN or infinity anywhere: they pass every `> 0` test the wrong way or silently."""
    if isinstance(node, dict):
        for key in node:
            check_finite(node[key], f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            check_finite(value, f"{where}[{index}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(where, node, "a finite number")
