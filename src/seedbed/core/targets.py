"""Configs read from files are data, never code: every `_target_` must be on an allow-list.

A checkpoint's stored config or a run directory's config.yaml may come from
someone else, and Hydra's `instantiate` calls whatever a `_target_` names
(`weights_only=True` guards only the pickle layer). `check_targets` walks the
whole config — nested mappings, lists, `_args_` — before a single object is
built and refuses, in one line naming the key and the target, any target that
is not seedbed's own, one of the torch modules our configs use, torchvision's
datasets/transforms/models, or under a prefix the user trusts in *their own*
config (`allow_targets` in configs/train.yaml or on the command line; the
stored config's own list is never read, or a file could trust itself).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from seedbed.core.errors import SeedbedError

# Module prefixes whose callables only build objects from their arguments.
ALLOWED_PREFIXES = (
    "seedbed.",
    "torch.nn.",
    "torch.optim.",
    "torchvision.datasets.",
    "torchvision.transforms.",
    "torchvision.models.",
)
# seedbed's machinery writes files wherever it is told: never a target from a file.
DENIED_PREFIXES = ("seedbed.runs.", "seedbed.tools.", "seedbed.train.", "seedbed.evaluate.")
TARGET_KEYS = ("_target_",)
# What a target must look like: dotted Python names, nothing else.
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")


class UntrustedTarget(SeedbedError):
    """A `_target_` in a config read from a file that is not on the allow-list."""


def user_prefixes() -> tuple[str, ...]:
    """The prefixes the user trusts in their own configs/train.yaml (`allow_targets`)."""
    from seedbed.config import CONFIG_DIR

    path = CONFIG_DIR / "train.yaml"
    try:
        own = OmegaConf.load(path).get("allow_targets") or []
    except Exception:  # noqa: BLE001 - a broken train.yaml is reported when a run composes it
        return ()
    return tuple(str(prefix) for prefix in own)


def _under(name: str, prefixes: Iterable[str]) -> bool:
    name = name + "."
    return any(name.startswith(p if p.endswith(".") else p + ".") for p in prefixes)


def is_allowed(target: str, prefixes: Iterable[str]) -> bool:
    """Whether `target` names, and resolves to, a callable defined under `prefixes`.

    The name alone is not enough: `torch.nn.parallel.distributed.os.remove` starts with an
    allowed prefix and is `os.remove`; the object found must be defined there too.
    """
    if not target or not set(target) <= _NAME_CHARS or ".." in target:
        return False
    if any(part.startswith("_") for part in target.split(".")):
        return False  # private names and dunders (`__globals__`, `__builtins__`) lead anywhere
    if not _under(target, prefixes) or _under(target, DENIED_PREFIXES):
        return False
    from hydra._internal.utils import _locate  # imports only modules under allowed prefixes

    try:
        found = _locate(target)
    except Exception:  # noqa: BLE001 - not found is not allowed
        return False
    module = getattr(found, "__module__", None) or ""
    return callable(found) and _under(module, prefixes) and not _under(module, DENIED_PREFIXES)


def _walk(node: Any, key: str) -> Iterable[tuple[str, Any]]:
    """(dotted key, target value) of every target in `node`, however deep."""
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, Mapping):
        for name, value in node.items():
            where = f"{key}.{name}" if key else str(name)
            if name in TARGET_KEYS:
                yield where, value
            else:
                yield from _walk(value, where)
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _walk(value, f"{key}[{index}]")


def check_targets(config: Any, source: str, extra: Iterable[str] = ()) -> None:
    """Refuse `config` (read from `source`) if any `_target_` is not on the allow-list.

    `extra`: prefixes from this command's own config (never from `config` itself).
    """
    prefixes = (*ALLOWED_PREFIXES, *user_prefixes(), *extra)
    for key, target in _walk(config, ""):
        if target is None:
            continue  # "no such part" (sched=none): nothing is built
        if not isinstance(target, str) or not is_allowed(target, prefixes):
            raise UntrustedTarget(
                f"{source}: {key}={target!r} is refused: a config read from a file may only "
                f"build {', '.join(p + '*' for p in ALLOWED_PREFIXES)} or a prefix you add to "
                "allow_targets in configs/train.yaml"
            )
