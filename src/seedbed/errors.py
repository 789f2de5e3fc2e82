"""Errors a user can fix: each carries a one-line message that names the key and what is allowed."""

from __future__ import annotations

from typing import Any


class SeedbedError(Exception):
    """An expected failure: shown as one line, with the traceback kept for the log file."""


class ConfigError(SeedbedError):
    """A config value that is not allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")
