"""Does a file hold a secret? Asked of every untracked file before it goes into code.patch.

A file's name cannot tell: `setup_aws.sh` may export an AWS key, `local_settings.toml`
hold a password. `find_secrets(path)` reads the file (it is small: code.patch takes
files under 1 MB) and returns what looks like a secret, by line, from two scanners:

- detect-secrets (`pip install 'seedbed[secrets]'`, in the dev extra), when installed:
  a well-kept scanner with a plugin per kind of key and file-type aware keyword rules;
- the built-in patterns below, always: the common key formats and `password = "..."`
  style assignments of a literal value, so that a run without the extra is covered too.

A finding is never printed or recorded with its value: only its kind and line.
"""

from __future__ import annotations

import functools
import re
from importlib import metadata
from pathlib import Path
from typing import Any

# Words that make an assignment a secret when they end the name assigned to
# (`password`, `DB_PASSWORD`, `aws_secret_access_key`; not `tokenizer`, `n_tokens`).
_SECRET_WORDS = (
    r"passw(?:or)?d|secret(?:_?key)?|secret_access_key|token|api_?key|access_?key"
    r"|private_?key|client_?secret|auth_?token|credentials?"
)
# A value that could be a secret: 6+ characters, no spaces, none of the brackets that mark
# a placeholder or markup (`<pad>`, `[UNK]`, `{name}`) or a reference (`${oc.env:X}`).
_VALUE = r"[^\s\"'<>\[\]{}()$,;#]{6,}"
# An assignment (`x = ...`, `x: ...`, `export X=...`) of a literal value: quoted, or (not
# in Python, where a bare word is code: `password = getpass()`) a bare word.
_ASSIGNED = re.compile(
    rf"""(?ix)
    (?:^|[^a-z0-9])(?:[a-z0-9]+_)*(?:{_SECRET_WORDS})   # the name ends with a secret word
    ["']?\s*[:=]\s*                                      # = or :, a quoted key allowed
    (?:"(?P<double>{_VALUE})"|'(?P<single>{_VALUE})'|(?P<bare>{_VALUE})(?:\s|$|[#,;]))
    """
)
# Key formats recognisable on their own, whatever they are assigned to.
_KEY_FORMATS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    "Stripe key": re.compile(r"\b[rs]k_live_[0-9A-Za-z]{16,}"),
    "Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
    "OpenAI-style key": re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_\-]{20,}"),
    "JSON web token": re.compile(r"\beyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\."),
}
_BARE_CODE = re.compile(r"^(?:None|null|true|false|True|False|\d+(?:\.\d*)?)$")


def pattern_findings(text: str, python: bool = False) -> list[tuple[str, int]]:
    """(kind, line number) of every built-in pattern that matches `text` (`python`: the
    text is Python source, where only a quoted value is a literal)."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for kind, pattern in _KEY_FORMATS.items():
            if pattern.search(line):
                found.append((kind, number))
        for match in _ASSIGNED.finditer(line):
            if match.group("bare") and (python or _BARE_CODE.match(match.group("bare"))):
                continue
            if match.group("double") or match.group("single") or match.group("bare"):
                found.append(("secret assigned to a name", number))
                break
    return found


@functools.cache
def detect_secrets_version() -> str | None:
    """The installed detect-secrets' version, None when it is not installed."""
    try:
        return metadata.version("detect-secrets")
    except metadata.PackageNotFoundError:
        return None


def detect_secrets_findings(path: Path) -> list[tuple[str, int]]:
    """(kind, line number) of what detect-secrets finds in `path`, with its default plugins."""
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    collection = SecretsCollection()
    with default_settings():
        collection.scan_file(str(path))
    return [
        (secret.type, secret.line_number)
        for name in collection.files
        for secret in collection[name]
    ]


def scanners() -> str:
    """What `find_secrets` uses here, for the record."""
    version = detect_secrets_version()
    built_in = "seedbed's built-in patterns"
    return f"detect-secrets {version} and {built_in}" if version else built_in


def find_secrets(path: Path) -> list[tuple[str, int]]:
    """What looks like a secret in the file at `path`: (kind, line number), sorted by line.
    A file that is not UTF-8 text is taken as it decodes, undecodable bytes replaced."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    python = path.suffix in (".py", ".pyi")
    found: set[tuple[str, int]] = set(pattern_findings(text, python))
    if detect_secrets_version() is not None:
        found.update(detect_secrets_findings(path))
    return sorted(found, key=lambda item: (item[1], item[0]))


def describe(findings: list[tuple[str, int]]) -> str:
    """`looks like a secret: AWS access key id (line 1), ...`: kinds and lines, no values."""
    by_line: dict[int, list[str]] = {}
    for kind, line in findings:
        by_line.setdefault(line, []).append(kind)
    parts: list[Any] = [f"{', '.join(kinds)} (line {line})" for line, kinds in by_line.items()]
    return "looks like a secret: " + "; ".join(parts)
