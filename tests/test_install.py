"""Installed as a package (not editable), seedbed trains, evaluates and verifies from any
directory with its packaged configs, and a user's --config-dir adds groups on top."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow

TINY = ["data.n_samples=256", "trainer.epochs=1"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip install .` into a scratch target: the package as a wheel would hold it."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")  # pip builds here, not in the checkout
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
        + ["--target", str(target), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TMPDIR": str(build)},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return target


def run(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`python <args>` in `cwd`, importing seedbed from the install only."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(installed)},
    )


def test_the_install_trains_evaluates_and_verifies_from_another_directory(installed, tmp_path):
    found = run(installed, tmp_path, "-c", "import seedbed; print(seedbed.__file__)")
    assert Path(found.stdout.strip()).is_relative_to(installed), found.stdout + found.stderr

    # The user's own config group, beside the packaged ones.
    (tmp_path / "mine" / "model").mkdir(parents=True)
    (tmp_path / "mine" / "model" / "narrow.yaml").write_text(
        "defaults:\n  - /schema/model@_here_: mlp\nhidden: [16]\n"
    )
    trained = run(
        installed,
        tmp_path,
        "-m",
        "seedbed",
        "--config-dir",
        "mine",
        "model=narrow",
        "hydra.run.dir=run",
        *TINY,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "completed"
    assert "hidden:\n  - 16\n" in (tmp_path / "run" / "config.yaml").read_text()

    evaluated = run(installed, tmp_path, "-m", "seedbed.evaluate", "ckpt=run/checkpoints/last.pt")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "eval_val.json").read_text())["metrics"]

    verified = run(installed, tmp_path, "-m", "seedbed.tools.verify", "--against", "run")
    assert verified.returncode == 0, verified.stdout[-2000:] + verified.stderr[-2000:]
    assert "identical" in verified.stdout


def test_the_install_has_its_console_scripts(installed, tmp_path):
    scripts = {p.name for p in (installed / "bin").iterdir()}
    assert {"seedbed-train", "seedbed-eval", "seedbed-verify", "seedbed-compare"} <= scripts
    result = run(installed, tmp_path, str(installed / "bin" / "seedbed-eval"), "nonsense")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
