"""The code that ran: the git commit, and code.patch holding every uncommitted change.

`code_state(code_dir)` returns environment.json's `git` record and the text of
code.patch: `git diff HEAD` (staged and unstaged changes to tracked files) plus
the untracked files that may be copied. `git checkout <commit> && git apply
code.patch` gives the code that ran, whatever the timing of the last edit.

An untracked file is copied only when all of these hold, and is otherwise listed
in `left_out` with the reason (run.json repeats the list):

- `.gitignore` does not exclude it (git does not list it at all then);
- its suffix is one of source's (`PATCH_SUFFIXES`): a data set, an archive or a
  key file is never copied;
- its name does not look like a secret's (`SECRET_NAMES`);
- it is a regular file, not a link, under `PATCH_MAX_BYTES`;
- its content holds nothing that looks like a secret (`seedbed.core.secret_scan`:
  detect-secrets when installed, and built-in patterns always): a name cannot
  tell that `setup_aws.sh` exports a key.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from seedbed.core.secret_scan import describe, find_secrets, scanners

PATCH_FILE = "code.patch"
# Untracked files go into code.patch only when they look like code and are small:
# an untracked `.env`, key file or data set must never be copied into a run directory.
PATCH_SUFFIXES = {".py", ".pyi", ".yaml", ".yml", ".toml", ".cfg", ".sh", ".md"}
# Names that look like secrets are never copied, whatever their suffix: only listed.
SECRET_NAMES = (
    "*secret*",
    "*.env",
    ".env*",
    "*env.sh",
    "*token*",
    "*credential*",
    "*passw*",
    "*.pem",
    "*.key",
    "id_*",
)
PATCH_MAX_BYTES = 1_000_000
GIT_TIMEOUT_S = 5.0


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", **(env or {})},  # read-only: no index.lock
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr else "failed")
    return result.stdout


def looks_secret(name: str) -> bool:
    """Whether a file's name (any part of its path) matches SECRET_NAMES."""
    parts = [part.lower() for part in Path(name).parts]
    return any(fnmatch.fnmatch(part, pattern) for part in parts for pattern in SECRET_NAMES)


def why_left_out(repo: Path, name: str) -> str | None:
    """Why the untracked file `name` may not go into code.patch; None when it may."""
    path = repo / name
    if Path(name).suffix not in PATCH_SUFFIXES:
        return f"not source: only {', '.join(sorted(PATCH_SUFFIXES))} files are copied"
    if looks_secret(name):
        return "its name looks like a secret's"
    if path.is_symlink() or not path.is_file():
        return "not a regular file"
    if path.stat().st_size > PATCH_MAX_BYTES:
        return f"over {PATCH_MAX_BYTES} bytes"
    found = find_secrets(path)
    return describe(found) if found else None


def _diff_with_untracked(repo: Path, included: list[str]) -> str:
    """`git diff HEAD`, with the `included` untracked files shown as new files."""
    if not included:
        return _git(repo, "diff", "HEAD", "--binary")
    with tempfile.TemporaryDirectory() as tmp:
        # Mark the untracked files "intent to add" in a copy of the index, so that
        # `git diff HEAD` shows them as new files; the real index is never touched.
        index = Path(tmp) / "index"
        real_index = Path(_git(repo, "rev-parse", "--git-path", "index").strip())
        if not real_index.is_absolute():
            real_index = repo / real_index
        if real_index.exists():
            # copy2 keeps the index's mtime. git takes an entry whose stat matches as unchanged
            # unless it is "racy" (modified in the same timestamp tick as the index was
            # written), which it then compares by content; a copy stamped now would make a
            # same-size rewrite in that tick look unchanged, and code.patch would miss it.
            shutil.copy2(real_index, index)
        env = {"GIT_INDEX_FILE": str(index)}
        _git(repo, "add", "--intent-to-add", "--", *included, env=env)
        return _git(repo, "diff", "HEAD", "--binary", env=env)


def code_state(code_dir: Path) -> tuple[dict[str, Any], str]:
    """Git commit, branch and dirty flag of the checkout holding `code_dir`, and its diff."""
    if shutil.which("git") is None:
        return {"available": False, "reason": "git is not installed"}, ""
    try:
        top, commit, branch = _git(
            code_dir, "rev-parse", "--show-toplevel", "HEAD", "--abbrev-ref", "HEAD"
        ).split()
    except (RuntimeError, ValueError, subprocess.TimeoutExpired, OSError):
        return {"available": False, "reason": f"{code_dir} is not in a git checkout"}, ""
    repo = Path(top)
    left_out: dict[str, str] = {}
    try:
        untracked = _git(repo, "ls-files", "--others", "--exclude-standard", "-z").split("\0")
        untracked = [name for name in untracked if name]
        for name in untracked:
            if (reason := why_left_out(repo, name)) is not None:
                left_out[name] = reason
        included = [name for name in untracked if name not in left_out]
        patch = _diff_with_untracked(repo, included)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as error:
        return {
            "available": True,
            "commit": commit,
            "branch": branch,
            "dirty": None,
            "reason": f"git diff failed: {error}",
        }, ""
    return {
        "available": True,
        "commit": commit,
        "branch": None if branch == "HEAD" else branch,  # "HEAD": a detached checkout
        "dirty": bool(patch) or bool(left_out),
        "patch": PATCH_FILE if patch else None,
        "patch_lines": patch.count("\n"),
        "untracked_in_patch": included,
        "untracked_not_in_patch": sorted(left_out),
        "left_out": dict(sorted(left_out.items())),
        "secret_scan": scanners(),
    }, patch


def patch_record(git: dict[str, Any]) -> dict[str, Any]:
    """What run.json says of code.patch: the file (None: no uncommitted change), and every
    untracked file left out of it, with the reason."""
    return {"file": git.get("patch"), "left_out": git.get("left_out", {})}
