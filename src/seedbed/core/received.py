"""A config read from a file is plain data: checked before anything is resolved or built.

seedbed writes its configs resolved (config.yaml, a checkpoint's `config`), so a
received one holds mappings, lists, strings, numbers, booleans and nulls, and
nothing else. An interpolation or a resolver call (`${...}`) can only have been
planted: resolving it could read the environment (`${oc.env:AWS_SECRET_ACCESS_KEY}`
into config.yaml, run.json, the checkpoints) or build an object that no
`_target_` check has seen (`${oc.create:{_target_: ...}}`). `check_received`
refuses either in one line naming the key, bounds the size of what is walked,
then checks every `_target_` (`seedbed.core.targets`); `without_downloads`
makes sure a received config never reaches the network to fetch data.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from seedbed.core.errors import SeedbedError
from seedbed.core.targets import check_targets

# Far above any config seedbed writes (a few hundred values), far below what would hang a walk.
MAX_VALUES = 100_000
MAX_DEPTH = 64
PLAIN_SCALARS = (str, int, float, bool, type(None))


class NotPlainData(SeedbedError):
    """A config read from a file that holds something other than plain, resolved values."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_plain_data(config: Any, source: str) -> None:
    """Refuse, naming the key, a config (read from `source`) that is not plain data: an
    interpolation or resolver call (`${...}`) in any key or value, a value of another type
    (a tensor in a checkpoint's config), more than MAX_VALUES values or MAX_DEPTH levels."""
    allowed = (
        "a config read from a file is plain data: seedbed writes its configs resolved, so an "
        "interpolation or resolver call (${...}) is never resolved from one"
    )
    pending: list[tuple[str, Any, int]] = [("", config, 0)]
    seen = 0
    while pending:
        key, node, depth = pending.pop()
        seen += 1
        if seen > MAX_VALUES or depth > MAX_DEPTH:
            limit = f"more than {MAX_VALUES} values" if seen > MAX_VALUES else "nesting"
            raise NotPlainData(
                f"{source}: refused: {limit} past what a run config holds "
                f"({MAX_VALUES} values, {MAX_DEPTH} levels)"
            )
        if isinstance(node, Mapping):
            for name, value in node.items():
                where = f"{key}.{name}" if key else str(name)
                if not isinstance(name, (str, int)) or "${" in str(name):
                    raise NotPlainData(f"{source}: key {_shown(name)} is refused: {allowed}")
                pending.append((where, value, depth + 1))
        elif isinstance(node, (list, tuple)):
            pending.extend((f"{key}[{i}]", value, depth + 1) for i, value in enumerate(node))
        elif not isinstance(node, PLAIN_SCALARS):
            raise NotPlainData(
                f"{source}: {key}={type(node).__name__} is refused: {allowed}; a "
                f"{type(node).__name__} is not a config value"
            )
        elif isinstance(node, str) and "${" in node:
            raise NotPlainData(f"{source}: {key}={_shown(node)} is refused: {allowed}")


def check_received(config: Any, source: str, trusted: Iterable[str] = ()) -> None:
    """Everything a config read from a file must pass before anything is resolved or built:
    plain data, then every `_target_` on the allow-list (`trusted`: prefixes from this
    command's own config)."""
    check_plain_data(config, source)
    check_targets(config, source, trusted)


def without_downloads(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` in which every `download: true` (data.download of mnist and
    cifar10, and the like) is false: a config from a file never makes a run reach the
    network; the data it names must be on disk already (or this command asks for the
    download itself)."""
    config = copy.deepcopy(config)
    pending: list[Any] = [config]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            for name, value in node.items():
                if name == "download" and value is True:
                    node[name] = False
                else:
                    pending.append(value)
        elif isinstance(node, list):
            pending.extend(node)
    return config
