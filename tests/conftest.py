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
