"""The template's tests survive making it yours: another default experiment keeps them green.

A scratch copy of this checkout makes a regression experiment its default in
configs/train.yaml (three lines, as a user making the template theirs would), then runs a
representative part of the suite there: test_reproducibility.py (the promise: same bits
for a seed, num_workers, pinned streams) and test_run_dir.py (the run's record), the files
that lean hardest on the shared small-run settings (helpers.SMALL). Machinery tests name
their own experiment (helpers.MACHINERY), so they do not notice the change.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import ROOT, run_python

SUBSET = ["tests/test_reproducibility.py", "tests/test_run_dir.py"]
YOURS = {
    "  - task: classification": "  - task: regression",
    "  - data: synthetic\n": "  - data: synthetic_regression\n",
}


@pytest.mark.slow
def test_the_machinery_tests_pass_with_another_default_experiment(tmp_path: Path) -> None:
    clone = tmp_path / "yours"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".venv", ".git", "outputs")
    shutil.copytree(ROOT, clone, ignore=ignore, symlinks=True)
    train_yaml = clone / "src" / "seedbed" / "configs" / "train.yaml"
    text = train_yaml.read_text()
    for old, new in YOURS.items():
        assert old in text
        text = text.replace(old, new)
    train_yaml.write_text(text)

    env = {"PYTHONPATH": str(clone / "src")}  # the copy's seedbed, configs included
    check = run_python("train.py", "--cfg", "job", cwd=clone, env=env).stdout
    assert "seedbed.task.Regression" in check  # the copy's default is the new one
    result = run_python(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "not slow",
        *SUBSET,
        cwd=clone,
        env=env,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
