"""Errors a user can fix, and how any error is told in one line.

A `SeedbedError` carries a one-line message that names the key, the value and
what is allowed; `error_line` renders any error (ours, OmegaConf's, Hydra's
multi-line ones) as one such line for the console and `run.json`.
"""

from __future__ import annotations

from typing import Any

from hydra.errors import HydraException, InstantiationException
from omegaconf.errors import OmegaConfBaseException

# The exit status of every command here (train, eval, verify, compare, summarize) on bad input.
EXIT_USER_ERROR = 2


class SeedbedError(Exception):
    """An expected failure: shown as one line, with the traceback kept for the log file."""


class ConfigError(SeedbedError):
    """A config value that is not allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")

    def __reduce__(self) -> tuple[Any, ...]:
        # A parallel sweep's job returns its error pickled: rebuild it from what it was made of.
        return type(self), (self.key, self.value, self.allowed)


def _one_line(text: str) -> str:
    """Hydra's multi-line messages as one line: `...; Available options in 'init': a, b, c`."""
    parts: list[str] = []
    for line in text.split("Config search path:")[0].splitlines():
        if not line.strip():
            continue
        if line.startswith("\t") and parts:
            parts[-1] += ("" if parts[-1].endswith(":") else ",") + " " + line.strip()
        else:
            parts.append(line.strip())
    return "; ".join(parts)


def user_error(error: BaseException | None) -> SeedbedError | None:
    """The SeedbedError behind `error` (e.g. raised inside hydra.utils.instantiate), if any."""
    while error is not None:
        if isinstance(error, SeedbedError):
            return error
        error = error.__cause__ or error.__context__
    return None


def refused_arguments(cause: BaseException | None) -> bool:
    """Whether `instantiate` failed because the component refused its arguments (a config
    value), not because of a bug in it."""
    return isinstance(cause, (ValueError, TypeError)) and not isinstance(
        cause, OmegaConfBaseException
    )


# Hydra's own refusals of a `_target_` (it cannot find it, will not call it, or it is not
# callable): a config value, not a bug in the component.
TARGET_REFUSALS = ("Error locating target", "is blocklisted", "Expected a callable target")


def refused_target(error: BaseException) -> bool:
    """Whether `instantiate` refused the `_target_` itself."""
    return isinstance(error, InstantiationException) and any(
        text in str(error) for text in TARGET_REFUSALS
    )


def error_line(error: BaseException) -> str:
    """One line for the user: our own messages as they are, config errors with their key."""
    if isinstance(error, KeyboardInterrupt):
        return f"interrupted ({error})" if str(error) else "interrupted"
    if (mine := user_error(error)) is not None:
        return str(mine)
    if refused_target(error):  # Hydra wraps its sentence over lines, the key last
        text, _, key = str(error).partition("full_key:")
        sentence = " ".join(text.split())
        return f"{key.strip()}._target_: {sentence}" if key.strip() else sentence
    cause = error.__cause__ if isinstance(error, HydraException) else None
    if isinstance(error, InstantiationException) and refused_arguments(cause):
        text = str(error)
        key = text.rsplit("full_key: ", 1)[1].strip() if "full_key: " in text else "config"
        target = text.split("'")[1] if text.count("'") >= 2 else "its target"
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        return f"{key}: {target} refuses its arguments: {first}"
    if isinstance(cause, OmegaConfBaseException):
        error = cause
    if isinstance(error, OmegaConfBaseException):
        message = str(error.msg if getattr(error, "msg", None) else error).splitlines()[0]
        key = getattr(error, "full_key", None)
        return f"{key}: {message}" if key else message
    if isinstance(error, HydraException):
        return _one_line(str(error))
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ConfigError(key, value, allowed) unless `ok`: a component's own value check."""
    if not ok:
        raise ConfigError(key, value, allowed)


def require_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    require(value in choices, key, value, f"one of {', '.join(choices)}")


def require_at_least(node: Any, where: str, key: str, low: float, strict: bool = False) -> None:
    """`node[key]`, where the node declares it and it is a number, is >= `low` (> if strict)."""
    value = node.get(key)
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return
    if value < low or (strict and value == low):
        raise ConfigError(f"{where}.{key}", value, f"a number {'>' if strict else '>='} {low:g}")
