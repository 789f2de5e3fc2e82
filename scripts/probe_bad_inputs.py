"""How cleanly does a checkout refuse bad input? The bad-input table, run as a user runs it.

    python scripts/probe_bad_inputs.py                      # this checkout
    python scripts/probe_bad_inputs.py --checkout <dir>     # another one (e.g. an older commit)
    python scripts/probe_bad_inputs.py --jobs 2 --only resume --json probe.json

Every case of the table in tests/test_bad_inputs.py (this checkout's: the same table for
any code measured), plus the cases below that only a fresh process can show, runs as its
own command (`python train.py ...`, `python eval.py ...`, `python -m seedbed.tools.<tool>
...`) with the code of `--checkout`, against a fresh copy of one small finished run made by
that code. Each outcome is counted as:

- one line: exit status 2, one non-empty line on stderr, no traceback anywhere;
- names it: that line holds what the table says it must name;
- untouched: every file that was there before (the finished run, the user's files beside
  it) is byte for byte as it was, and nothing was added but the case's own new run
  directory.

Prints a table of the cases that are not clean and the counts; nothing is asserted (the
test suite asserts).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "site")]

import test_bad_inputs as table  # noqa: E402  (the table lives with its test)

# Only a fresh process shows these: what the launcher finds on PATH.
EXTRA = {
    "slurm sweep without SLURM": table.Case(
        "train",
        ["-m", "hydra/launcher=slurm", "hydra.sweep.dir={tmp}/sweep", *table.TINY],
        "hydra/launcher=slurm",
    ),
}


def entry(checkout: Path, script: str) -> Path:
    """`train.py` or `eval.py` of a checkout: its example project's (seedbed 0.2 on), else
    the checkout's own (earlier layouts), so that a before/after pair runs the same probe."""
    project = checkout / "example" / script
    return project if project.is_file() else checkout / script


def command(checkout: Path, tool: str, args: list[str], run_dir: Path) -> list[str]:
    if tool == "train":  # Hydra's flags (-m) first
        flags = [a for a in args if a.startswith("-")]
        rest = [a for a in args if not a.startswith("-")]
        train = [sys.executable, str(entry(checkout, "train.py"))]
        return [*train, *flags, f"hydra.run.dir={run_dir}", *rest]
    if tool == "eval":
        return [sys.executable, str(entry(checkout, "eval.py")), *args]
    return [sys.executable, "-m", f"seedbed.tools.{tool}", *args]


def environment(checkout: Path) -> dict[str, str]:
    """The checkout's code first on the path (and the tests' torchvision shim)."""
    paths = [str(checkout / "src"), str(ROOT / "tests" / "site"), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    env["PATH"] = os.pathsep.join(  # no SLURM here, whatever this machine has
        p for p in env.get("PATH", "").split(os.pathsep) if not (Path(p) / "srun").exists()
    )
    return env


def snapshot(root: Path) -> dict[str, str]:
    """{relative path: sha256 of its bytes, or what it is} of everything under `root`."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[key] = "link:" + os.readlink(path)
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            found[key] = "dir"
        else:
            found[key] = "special"
    return found


def probe(name: str, case: table.Case, finished: Path, checkout: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="probe-") as scratch:
        tmp = Path(scratch)
        run = tmp / "run"
        shutil.copytree(finished, run, symlinks=True)
        if case.prepare is not None:
            case.prepare(tmp, run)
        fill = {"tmp": tmp, "run": run, "ckpt": run / "checkpoints" / "last.pt"}
        args = [arg.format(**fill) for arg in case.args]
        run_dir = Path(case.run_dir.format(**fill))
        before = snapshot(tmp)
        try:
            done = subprocess.run(
                command(checkout, case.tool, args, run_dir),
                cwd=tmp,
                capture_output=True,
                text=True,
                env=environment(checkout),
                timeout=300,
            )
            code, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired:
            code, out, err = "timeout", "", ""
        finally:
            while table.HELD:
                table.HELD.pop().release()
        after = snapshot(tmp)
    lines = [line for line in err.splitlines() if line.strip()]
    new_run = run_dir.relative_to(tmp).as_posix() if run_dir != run else None
    changed = sorted(k for k in before if after.get(k) != before[k])
    added = sorted(
        k for k in after if k not in before and not (new_run and k.split("/")[0] == new_run)
    )
    one_line = code == 2 and len(lines) == 1 and "Traceback" not in out + err
    return {
        "case": name,
        "exit": code,
        "stderr_lines": len(lines),
        "one_line": one_line,
        "names_it": one_line and case.names in lines[0],
        "untouched": not changed and not added,
        "changed": changed[:5],
        "added": added[:5],
        "line": lines[-1][:160] if lines else "",
    }


def finished_run(checkout: Path, where: Path) -> Path:
    """The small finished run each case gets a copy of, made by the checkout's code."""
    run = where / "finished"
    subprocess.run(
        command(checkout, "train", list(table.TINY), run),
        cwd=where,
        check=True,
        capture_output=True,
        env=environment(checkout),
    )
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the code measured")
    parser.add_argument("--jobs", type=int, default=1, help="cases run at once")
    parser.add_argument("--only", help="only the cases whose name holds this")
    parser.add_argument("--json", type=Path, help="write every outcome here")
    options = parser.parse_args()
    checkout = options.checkout.resolve()
    cases = {**table.CASES, **EXTRA}
    if options.only:
        cases = {k: v for k, v in cases.items() if options.only in k}
    with tempfile.TemporaryDirectory(prefix="probe-finished-") as where:
        finished = finished_run(checkout, Path(where))
        # A case that holds a run's lock from this process runs alone: the held locks are
        # one list, released after each case.
        alone = {k: v for k, v in cases.items() if v.prepare is table._hold_lock}
        with ThreadPoolExecutor(options.jobs) as pool:
            results = list(
                pool.map(
                    lambda item: probe(*item, finished, checkout),
                    [item for item in cases.items() if item[0] not in alone],
                )
            )
        results += [probe(name, case, finished, checkout) for name, case in alone.items()]
    for result in results:
        if not (result["one_line"] and result["names_it"] and result["untouched"]):
            flags = " ".join(
                word
                for word, ok in (
                    ("NOT-ONE-LINE", result["one_line"]),
                    ("NOT-NAMED", result["names_it"]),
                    ("TOUCHED", result["untouched"]),
                )
                if not ok
            )
            print(
                f"{result['case']}: exit {result['exit']} {flags} {result['changed']}"
                f"{result['added']} | {result['line']}"
            )
    total = len(results)
    counts = {key: sum(r[key] for r in results) for key in ("one_line", "names_it", "untouched")}
    both = sum(r["one_line"] and r["untouched"] for r in results)
    print(
        f"\n{checkout}: {total} bad inputs; one line (exit 2, no traceback) "
        f"{counts['one_line']}/{total}, naming what the table says {counts['names_it']}/{total}, "
        f"every file untouched {counts['untouched']}/{total}, one line and untouched "
        f"{both}/{total}"
    )
    if options.json:
        options.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
