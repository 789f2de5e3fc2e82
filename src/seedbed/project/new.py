"""`seedbed new NAME`: a new project from the template this version of seedbed ships.

The template (`template/`, rendered with copier) holds only what a user edits:
configs, the recipe, models, task, data, tests and the tooling around them
(Makefile, CI, Dockerfile, pre-commit). The rendering is committed on its own
with a `Seedbed-Template: <version>` trailer: `seedbed update` merges later
templates against that commit, so your edits stay yours.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from seedbed import __version__
from seedbed.core.errors import SeedbedError

TEMPLATE_DIR = Path(__file__).resolve().parent / "template"
ANSWERS_FILE = ".copier-answers.yml"
# The trailer of every commit that holds a pristine rendering of the template.
TRAILER = "Seedbed-Template"
NAME_RULE = (
    "a Python package name: lowercase letters, digits and underscores, starting with a letter "
    "(e.g. mypaper)"
)
# Names a project package may not take: they would shadow the library or the test tools.
RESERVED = {"seedbed", "test", "tests", "src", "configs", "hydra_plugins"}


# What a project holds that a rendering does not: installs, caches, run records, git.
NOT_RENDERED = frozenset(
    {
        ".venv",
        "outputs",
        "multirun",
        "data",
        "__pycache__",
        ".pytest_cache",
        ".ruff_cache",
        ".mypy_cache",
        ".git",
    }
)


def rendered_files(root: Path) -> set[Path]:
    """The files of the project at `root` that a rendering of the template makes (paths
    relative to `root`): everything but NOT_RENDERED and build metadata."""
    found = set()
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        built = any(part.endswith(".egg-info") for part in parts)
        if path.is_file() and not NOT_RENDERED & set(parts) and not built:
            found.add(path.relative_to(root))
    return found


def check_name(name: str) -> None:
    """Refuse, in one line, a project name that is not a usable package name."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise SeedbedError(f"project name {name!r} is not allowed: {NAME_RULE}")
    if name in RESERVED or name in sys.stdlib_module_names:
        raise SeedbedError(f"project name {name!r} is not allowed: it is taken ({NAME_RULE})")
    if importlib.util.find_spec(name) is not None:
        raise SeedbedError(
            f"project name {name!r} is not allowed: an installed package is named so, and "
            "your package would shadow it"
        )


def render(answers: dict[str, Any], destination: Path) -> None:
    """Render the template with `answers` into `destination` (created; may exist empty)."""
    try:
        import copier
    except ImportError as error:
        raise SeedbedError(
            "seedbed new and seedbed update need copier: pip install 'seedbed[new]'"
        ) from error
    data = {key: value for key, value in answers.items() if not key.startswith("_")}
    copier.run_copy(
        str(TEMPLATE_DIR),
        destination,
        data={**data, "seedbed_version": __version__},
        defaults=True,
        overwrite=True,
        quiet=True,
        unsafe=False,  # the template runs no tasks
    )


def read_answers(root: Path) -> dict[str, Any]:
    """The answers a project was rendered with (its `.copier-answers.yml`)."""
    path = root / ANSWERS_FILE
    if not path.is_file():
        raise SeedbedError(
            f"{path} not found: {root} is not a project made by seedbed new (run seedbed in "
            "the project's root)"
        )
    answers = yaml.safe_load(path.read_text()) or {}
    if not isinstance(answers, dict) or not isinstance(answers.get("name"), str):
        raise SeedbedError(f"{path}: no project name in it (key `name`)")
    return answers


def git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`git -C root args`; a failure is one line with git's own message."""
    result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise SeedbedError(f"git {args[0]} failed: {message[-1] if message else result.returncode}")
    return result


def identity(root: Path) -> list[str]:
    """`-c user.name=... -c user.email=...` when git knows no author here: the template's own
    commits need one, and a new machine may not have one yet."""
    named = git(root, "config", "user.name", check=False).stdout.strip()
    mailed = git(root, "config", "user.email", check=False).stdout.strip()
    if named and mailed:
        return []
    return ["-c", "user.name=seedbed", "-c", "user.email=seedbed@localhost"]


def commit_rendering(root: Path, version: str, message: str) -> None:
    """Commit everything in `root` as a pristine rendering of the template at `version`."""
    git(root, "add", "-A")
    git(root, *identity(root), "commit", "-q", "-m", f"{message}\n\n{TRAILER}: {version}")


def new_project(name: str, directory: str | None = None, git_commit: bool = True) -> Path:
    """Render a project named `name` into `directory` (default ./name) and, unless
    `git_commit` is false (a project inside a repository of yours), commit it to a new git
    repository: `seedbed update` merges against that commit."""
    check_name(name)
    target = Path(directory or name)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise SeedbedError(
            f"{target} is not allowed: seedbed new writes into a new or empty directory"
        )
    # Rendered aside and moved in whole: a failure leaves no half project behind.
    with tempfile.TemporaryDirectory(prefix="seedbed-new-") as scratch:
        rendering = Path(scratch) / "project"
        render({"name": name}, rendering)
        target.mkdir(parents=True, exist_ok=True)
        for entry in rendering.iterdir():
            shutil.move(entry, target / entry.name)
    if git_commit:
        git(target, "init", "-q")
        commit_rendering(target, __version__, f"seedbed new {name} (template {__version__})")
        git(target, "branch", "seedbed-template")
    return target
