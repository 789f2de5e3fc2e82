"""`seedbed update`: bring the template's changes into a project, keeping the user's edits.

A three-way merge with git: the base is the last pristine rendering of the
template (the commit whose trailer says `Seedbed-Template: <version>`, made by
`seedbed new` or by the last update), "theirs" is the template of the
installed seedbed rendered with the project's recorded answers, "ours" is the
project as committed. copier renders both; the merge is git's, so conflicts
look and resolve like any other merge.

copier's own `copier update` would do the same merge, but it re-renders the
old template from a git repository of the template at the recorded commit; an
installed seedbed carries only its own version of the template, so the old
rendering is taken from the project's history instead, where it already is.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from seedbed import __version__
from seedbed.core.errors import SeedbedError
from seedbed.project.new import TRAILER, git, identity, read_answers, render

BRANCH = "seedbed-template"


class MergeConflict(SeedbedError):
    """The template's changes met the user's in the same lines: the merge waits for them."""


def project_root(directory: str | Path) -> Path:
    """The git top level of `directory`, refusing what is not a git repository."""
    result = git(Path(directory), "rev-parse", "--show-toplevel", check=False)
    if result.returncode != 0:
        raise SeedbedError(
            f"{directory} is not in a git repository: seedbed update merges with git "
            "(a project made by seedbed new is one)"
        )
    return Path(result.stdout.strip())


def last_rendering(root: Path) -> str:
    """The newest commit in HEAD's history holding a pristine rendering of the template."""
    found = git(
        root, "log", "-1", "--format=%H", f"--grep=^{TRAILER}: ", "HEAD", check=False
    ).stdout.strip()
    if not found:
        raise SeedbedError(
            f"no commit with a '{TRAILER}:' trailer in {root}'s history: seedbed update needs "
            "the template's rendering that seedbed new committed"
        )
    return found


def rendering_commit(root: Path, answers: dict, parent: str) -> str | None:
    """A commit (child of `parent`) holding the installed template rendered with `answers`;
    None when that is what `parent` holds already."""
    with tempfile.TemporaryDirectory(prefix="seedbed-update-") as scratch:
        rendering = Path(scratch) / "project"
        render(answers, rendering)
        index = Path(scratch) / "index"
        env = {**os.environ, "GIT_INDEX_FILE": str(index), "GIT_WORK_TREE": str(rendering)}

        def plumbing(*args: str) -> str:
            return subprocess.run(
                ["git", "-C", str(root), *args], env=env, capture_output=True, text=True, check=True
            ).stdout.strip()

        plumbing("add", "-A", ".")
        tree = plumbing("write-tree")
    if tree == git(root, "rev-parse", f"{parent}^{{tree}}").stdout.strip():
        return None
    message = f"seedbed template {__version__}\n\n{TRAILER}: {__version__}"
    return git(
        root, *identity(root), "commit-tree", tree, "-p", parent, "-m", message
    ).stdout.strip()


def update_project(directory: str | Path = ".") -> str:
    """Merge the installed template's changes into the project at `directory`; returns what
    happened, in one line. Conflicts are left for the user, as any git merge leaves them."""
    root = project_root(directory)
    answers = read_answers(root)
    if git(root, "status", "--porcelain").stdout.strip():
        raise SeedbedError(
            f"{root} has uncommitted changes: commit or stash them first (git status), then "
            "run seedbed update"
        )
    base = last_rendering(root)
    commit = rendering_commit(root, answers, base)
    if commit is None:
        return f"the template has not changed since {answers.get('_commit', 'your rendering')}"
    git(root, "branch", "-f", BRANCH, commit)
    merged = git(
        root,
        *identity(root),
        "merge",
        "--no-ff",
        "-m",
        f"seedbed update: template {answers.get('_commit', '?')} -> {__version__}",
        commit,
        check=False,
    )
    if merged.returncode != 0:
        conflicted = git(root, "diff", "--name-only", "--diff-filter=U").stdout.split()
        if not conflicted:
            raise SeedbedError(f"git merge failed: {merged.stderr.strip() or merged.stdout}")
        raise MergeConflict(
            f"template {__version__} merged with conflicts in {', '.join(conflicted)}: "
            "resolve them, then git commit (or git merge --abort to undo)"
        )
    return f"template {answers.get('_commit', '?')} -> {__version__} merged; your edits kept"
