"""A project's tests survive making it yours: in a project whose default experiment is
another one (the choices in configs/train.yaml changed, as a user changes them), the
project's own tests (seedbed.testing on the project's own config) pass unchanged.

The library's tests do not depend on the example's default either: they name the
experiment they test (helpers.MACHINERY)."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from helpers import PROJECT, run_python

pytestmark = pytest.mark.slow


def test_a_project_that_made_regression_its_default_keeps_its_tests_green(tmp_path):
    copy = tmp_path / "mypaper"
    shutil.copytree(
        PROJECT, copy, ignore=shutil.ignore_patterns(".venv", "outputs", "*.egg-info", ".*cache")
    )
    train_yaml = copy / "configs" / "train.yaml"
    text = train_yaml.read_text()
    for group, option in (("task", "regression"), ("data", "synthetic_regression")):
        text, found = re.subn(rf"^  - {group}: \S+$", f"  - {group}: {option}", text, flags=re.M)
        assert found == 1, f"no '  - {group}: ...' default in train.yaml"
    train_yaml.write_text(text)
    shown = run_python("train.py", "--cfg", "job", cwd=copy)
    assert "_target_: seedbed.task.Regression" in shown.stdout

    path = os.pathsep.join(p for p in (str(copy / "src"), os.environ.get("PYTHONPATH")) if p)
    result = run_python(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-n",
        "2",
        "tests",
        "-k",
        "same_seed and default or eval_reproduces",
        cwd=copy,
        check=False,
        env={"PYTHONPATH": path},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout
