"""Test session set-up: the torchvision shim of tests/site (see its docstring) for this
process and for every training process the tests start."""

import os
import runpy
import sys
from pathlib import Path

SITE = Path(__file__).resolve().parent / "site"
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(SITE), os.environ.get("PYTHONPATH")) if p
)
# This process started before the variable; a pytest-xdist worker started after it, and has
# imported the shim already (a second copy would register its operators twice).
if getattr(sys.modules.get("sitecustomize"), "__file__", None) != str(SITE / "sitecustomize.py"):
    runpy.run_path(str(SITE / "sitecustomize.py"))


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _in_the_example_project():
    """Each test starts in the example project: a command run in-process (verify, eval, a
    tool given another --project) names the project of its process, as it does in its own."""
    from helpers import PROJECT_CONFIGS

    from seedbed.core.paths import use_project

    use_project(PROJECT_CONFIGS)
    yield
    use_project(PROJECT_CONFIGS)
