"""Render example/ afresh from the template (`make example`): the clone's example project is
exactly what `seedbed new example` renders, and tests/test_project.py checks that it is.

Files the rendering does not hold (installs, caches, run records) are left alone; every
rendered file is replaced, and a file the template no longer renders is removed."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from seedbed.project.new import render, rendered_files

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example"


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch) / "example"
        render({"name": "example"}, fresh)
        new = rendered_files(fresh)
        for stale in rendered_files(EXAMPLE) - new:
            (EXAMPLE / stale).unlink()
            print(f"removed {stale}")
        for path in sorted(new):
            (EXAMPLE / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(fresh / path, EXAMPLE / path)
    print(f"example/ rendered afresh ({len(new)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
