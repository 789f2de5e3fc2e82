"""The tools' command lines: argparse, with a refused argument told in one line."""

from __future__ import annotations

import argparse
from typing import NoReturn

from seedbed.core.errors import EXIT_USER_ERROR


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, what is wrong then the usage, exit 2
    (argparse prints the usage and the error on two)."""

    def error(self, message: str) -> NoReturn:
        usage = " ".join(self.format_usage().split())  # "usage: prog [-h] ..."
        self.exit(EXIT_USER_ERROR, f"error: {message} ({usage})\n")
