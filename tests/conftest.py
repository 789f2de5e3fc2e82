"""Test session set-up: the torchvision shim of tests/site (see its docstring) for this
process and for every training process the tests start."""

import os
import runpy
from pathlib import Path

SITE = Path(__file__).resolve().parent / "site"
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(SITE), os.environ.get("PYTHONPATH")) if p
)
runpy.run_path(str(SITE / "sitecustomize.py"))  # this process: it started before the variable
