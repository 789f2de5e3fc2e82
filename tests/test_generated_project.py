"""A project made by `seedbed new`, on seedbed installed from a wheel (not editable), as a user
has it: `make train` and `make test` work in it, and a library fix arrives by reinstalling
seedbed with no file of the project changed.

The scratch virtual environment holds only seedbed's wheel (and the project, which its
Makefile installs); the heavy dependencies (torch, hydra, pytest, ...) are reached through a
.pth file that names this environment's site-packages, so that nothing is downloaded. That
directory's own .pth files (this checkout's editable install) are not read: Python reads
.pth files in site directories only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow
pytest.importorskip("copier")
MAKE = shutil.which("make")


def build_wheel(source: Path, out: Path) -> Path:
    """`pip wheel` of the checkout at `source` (no dependencies, no build isolation)."""
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TMPDIR": str(out)},  # pip builds here, not in the checkout
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (wheel,) = out.glob("seedbed-*.whl")
    return wheel


def make_venv(path: Path) -> Path:
    """A virtual environment that sees this one's packages through a .pth file."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def pip_install(python: Path, *args: str) -> None:
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def run(cmd: list[str], cwd: Path, python: Path) -> subprocess.CompletedProcess:
    """`cmd` in `cwd` with the scratch environment's bin first on PATH, as if activated."""
    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=900)


def tree_digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file git tracks in the project."""
    tracked = subprocess.run(
        ["git", "-C", str(root), "ls-files"], capture_output=True, text=True, check=True
    ).stdout.split()
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in tracked}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, Path]:
    """`seedbed new mypaper` with seedbed installed from its wheel; (project, its python)."""
    if MAKE is None:
        pytest.skip("make is not installed")
    work = tmp_path_factory.mktemp("generated")
    wheel = build_wheel(ROOT, work / "wheel")
    python = make_venv(work / "venv")
    pip_install(python, str(wheel))
    where = subprocess.run(
        [str(python), "-c", "import seedbed; print(seedbed.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(work / "venv"), where  # the wheel's, not the checkout's
    made = run([str(python.parent / "seedbed"), "new", "mypaper"], work, python)
    assert made.returncode == 0, made.stderr
    root = work / "mypaper"
    # The project's Makefile makes its .venv with `python -m venv`; the scratch one stands in
    # for it (the same environment, already holding seedbed's wheel).
    (root / ".venv").symlink_to(work / "venv")
    return root, python


def test_make_train_make_test_and_make_lint_in_a_new_project(project):
    root, python = project
    trained = run(
        [MAKE, "train", "ARGS=trainer.epochs=2 hydra.run.dir=outputs/first"], root, python
    )
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    record = json.loads((root / "outputs" / "first" / "run.json").read_text())
    assert record["status"] == "completed"
    assert "mypaper.train.train" in (root / "outputs" / "first" / "config.yaml").read_text()
    tested = run([MAKE, "test"], root, python)
    assert tested.returncode == 0, tested.stdout[-4000:] + tested.stderr[-2000:]
    assert " passed" in tested.stdout and " failed" not in tested.stdout
    linted = run([MAKE, "lint"], root, python)  # the template's code passes its own linters
    assert linted.returncode == 0, linted.stdout[-3000:] + linted.stderr[-2000:]


def test_a_library_fix_arrives_by_reinstalling_and_no_project_file_changes(project, tmp_path):
    root, python = project
    before = tree_digest(root)
    # seedbed 0.2.99, a fix release: the same checkout with one library file changed.
    source = tmp_path / "seedbed-fix"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "example", "tests", "build", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    init = source / "src" / "seedbed" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "0.2.0"', '__version__ = "0.2.99"'))
    session = source / "src" / "seedbed" / "runs" / "session.py"
    text = session.read_text()
    assert 'log.info("final %s"' in text
    session.write_text(text.replace('log.info("final %s"', 'log.info("final (fixed) %s"'))
    pip_install(python, "--force-reinstall", str(build_wheel(source, tmp_path / "wheel")))

    trained = run(
        [str(python), "train.py", "trainer.epochs=1", "hydra.run.dir=outputs/fixed"], root, python
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "final (fixed)" in trained.stdout + trained.stderr
    record = json.loads((root / "outputs" / "fixed" / "run.json").read_text())
    assert record["versions"]["seedbed"] == "0.2.99"
    assert tree_digest(root) == before
    status = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert status == ""
