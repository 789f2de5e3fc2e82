"""Does this config reproduce here, bit for bit?

    python -m seedbed.tools.verify seed=42 trainer.epochs=2       # two fresh runs, compared
    python -m seedbed.tools.verify --against outputs/train/<run>  # rerun a recorded run, compare
                                        # (fresh, resumed or a sweep job; from any directory)
    python -m seedbed.tools.verify --vary loader.num_workers=2    # must not change the numbers

Each run is a fresh `python train.py` process (nothing shared in memory, as a
user would rerun it) writing to `outputs/verify/<name>/`, kept for `compare`.
The loss series is compared step by step and the final weights tensor by
tensor, bit for bit. Exit 0 when identical; 1 with the first diverging step,
the differing tensors and the likely causes; 2 when a run could not be made.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from seedbed.core.errors import EXIT_USER_ERROR, SeedbedError
from seedbed.core.paths import LIBRARY_SEARCH_PATH, project_configs, run_name, use_project
from seedbed.core.received import check_received, without_downloads
from seedbed.core.record import CONFIG_FILE, RUN_FILE, read_json, read_yaml
from seedbed.runs.hydra import register_configs
from seedbed.tools.arguments import OneLineParser
from seedbed.tools.compare import (
    EXIT_DIFFERENT,
    check_run_dir,
    compare_runs,
    format_report,
)

# train.py at the top of a checkout (src/seedbed/configs -> the checkout's root).
# A recorded config.yaml is fully resolved but has no defaults list: these lines give it the
# schema (types and checks) and the logging set-up a normal run gets.
RERUN_HEADER = {
    "defaults": ["seedbed", "_self_"],
    "hydra": {"searchpath": [LIBRARY_SEARCH_PATH]},
}


def train_command(run_dir: Path, overrides: list[str], flags: list[str]) -> list[str]:
    """`python <project>/train.py <flags> hydra.run.dir=<run_dir> <overrides>`: Hydra wants
    flags first. -P keeps the working directory (a recorded run's, see recorded_cwd) off the
    import path: the project's code is what its own train.py imports."""
    script = project_configs().parent / "train.py"
    if not script.is_file():
        raise SeedbedError(
            f"{script} not found: run verify in a seedbed project's root, or name it with "
            "--project <dir>"
        )
    return [sys.executable, "-P", str(script), *flags, f"hydra.run.dir={run_dir}", *overrides]


# The child's lines shown while it trains: one per epoch, as train.py prints them.
EPOCH_LINE = re.compile(r"^epoch \d+/\d+ ")


def run_training(
    run_dir: Path,
    overrides: list[str],
    flags: list[str] | None = None,
    cwd: Path | None = None,
    label: str = "run",
) -> None:
    """One training run in a fresh process (in `cwd`, default this one), its epochs shown as
    they end; a failure becomes its one-line error."""
    print(f"{label}: {run_dir}", flush=True)
    with subprocess.Popen(
        train_command(run_dir, overrides, flags or []),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one pipe: the error line comes last, after the epochs
        text=True,
        env=dict(os.environ),
        cwd=cwd,
    ) as child:
        lines = []
        for line in child.stdout:
            lines.append(line.rstrip())
            if EPOCH_LINE.match(line):
                print(f"  {line.rstrip()}", flush=True)
    if child.returncode != 0:
        lines = [line for line in lines if line.strip()]
        last = lines[-1] if lines else f"exit status {child.returncode}"
        raise SeedbedError(f"the run in {run_dir} failed: {last.removeprefix('error: ')}")


def rerun_config(recorded: Path, where: Path, allow_targets: Sequence[str] = ()) -> list[str]:
    """Arguments that make train.py compose exactly the recorded, resolved config.
    `allow_targets`: module prefixes trusted as `_target_` beyond seedbed's list."""
    config = read_yaml(recorded / CONFIG_FILE)
    if not isinstance(config, dict) or "seed" not in config:
        raise SeedbedError(
            f"{recorded / CONFIG_FILE} is not a resolved run config: "
            "expected the config.yaml of a run that started"
        )
    # The rerun builds what it names; `hydra`/`defaults` would configure Hydra itself.
    for key in ("hydra", "defaults"):
        if key in config:
            raise SeedbedError(f"{recorded / CONFIG_FILE}: key {key!r} is refused in a run config")
    check_received(config, str(recorded / CONFIG_FILE), allow_targets)
    # A rerun is a check, not a new tracked run: it logs to its own metrics.jsonl only, and
    # fetches nothing (the recorded loggers and downloads are the sender's choice).
    config = without_downloads(config)
    config["logger"] = {}
    # A relative data path that does not resolve from here: the absolute one run.json recorded.
    recorded_data = read_json(recorded / RUN_FILE).get("data") or {}
    for key, absolute in (recorded_data.get("paths") or {}).items():
        given = (config.get("data") or {}).get(key)
        if isinstance(given, str) and not Path(given).exists():
            config["data"][key] = absolute
    # Where the run came from is not part of what it is: a resumed run reruns from the start.
    config.pop("resume", None)
    where.mkdir(parents=True, exist_ok=True)
    (where / "rerun.yaml").write_text(yaml.safe_dump({**RERUN_HEADER, **config}, sort_keys=False))
    return ["--config-dir", str(where), "--config-name", "rerun"]


def recorded_cwd(recorded: Path) -> Path | None:
    """The directory the run was started in (Hydra's record of it), where relative paths in
    its config (e.g. `data.path`) mean what they meant; None when unknown or gone."""
    hydra_record = recorded / ".hydra" / "hydra.yaml"
    if not os.path.lexists(hydra_record):
        return None
    # Hydra's own record: kept unresolved (it holds `${...}` in every run), never resolved
    # here; only a plain path is taken from it.
    try:
        cwd = read_yaml(hydra_record)["hydra"]["runtime"]["cwd"]
    except (KeyError, TypeError):
        return None
    if not isinstance(cwd, str) or "${" in cwd:
        raise SeedbedError(
            f"{hydra_record}: hydra.runtime.cwd={cwd!r} is refused: a plain path (the "
            "directory the run was started in), never resolved from a received file"
        )
    return Path(cwd) if cwd and Path(cwd).is_dir() else None


def refuse_other_world_sizes(recorded: Path, record: dict) -> None:
    """verify reruns in one process and promises bits: a run that took any segment on more
    ranks can match it only within float tolerance (the same samples at every step, summed in
    another order), so it is refused, saying what can be checked instead."""
    sizes = [s.get("world_size") for s in record.get("segments") or [] if isinstance(s, dict)]
    if any(size != 1 for size in sizes):
        shown = ", ".join(f"{size}" for size in sizes)
        raise SeedbedError(
            f"--against {recorded}: it ran on {shown} rank(s) (run.json segments), and verify "
            "reruns in one process: the same samples at every step, weights only within float "
            "tolerance, so no bit-for-bit promise; compare its metrics.jsonl `samples` records "
            "with a one-process run's, or rerun it with torchrun on its world size and compare"
        )


def verify(
    overrides: list[str],
    *,
    against: str | None = None,
    vary: list[str] | None = None,
    allow_targets: Sequence[str] = (),
    out: Path | None = None,
) -> dict:
    """Make the runs, compare them; return compare's report."""
    out = out or Path("outputs") / "verify" / run_name()
    if (out / RUN_FILE).exists() or (out / ".hydra").is_dir():
        raise SeedbedError(
            f"--out {out} is a run directory: verify writes its runs (first/, second/ or "
            "rerun/) into a new directory, or one it made before"
        )
    if against is not None:
        recorded = check_run_dir(against)
        if overrides:
            raise SeedbedError(
                f"overrides {' '.join(overrides)} with --against: not allowed, the rerun uses "
                "the recorded config as it is"
            )
        forced = [r for r in read_json(recorded / RUN_FILE).get("resumes") or [] if r.get("forced")]
        if any(r.get("changes") for r in forced):
            first = next(r for r in forced if r.get("changes"))
            changes = ", ".join(
                f"{k}: {old!r} -> {new!r}" for k, (old, new) in first["changes"].items()
            )
            raise SeedbedError(
                f"--against {recorded}: it was resumed with forced changes ({changes} at step "
                f"{first.get('step')}), so no one config reproduces it: a rerun of its "
                "config.yaml cannot match"
            )
        refuse_other_world_sizes(recorded, read_json(recorded / RUN_FILE))
        # Absolute: the rerun starts where the recorded run did, wherever verify is run from.
        recorded, out = recorded.resolve(), out.resolve()
        rerun = out / "rerun"
        flags = rerun_config(recorded, out / "config", allow_targets)
        run_training(
            rerun, vary or [], flags=flags, cwd=recorded_cwd(recorded), label=f"rerun of {recorded}"
        )
        return compare_runs(recorded, rerun)
    first, second = out / "first", out / "second"
    run_training(first, overrides, label="run 1 of 2")
    run_training(second, [*overrides, *(vary or [])], label="run 2 of 2")
    return compare_runs(first, second)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m seedbed.tools.verify",
        description="Run a config twice in fresh processes (or rerun a recorded run) and "
        "compare the loss series and final weights bit for bit.",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, as for train.py")
    parser.add_argument("--against", metavar="RUN_DIR", help="rerun this run from its config")
    parser.add_argument(
        "--vary",
        metavar="OVERRIDE",
        action="append",
        default=[],
        help="an override for the second run (or the rerun) only, e.g. loader.num_workers=2: "
        "checks that it does not change the numbers",
    )
    parser.add_argument(
        "--out", type=Path, help="where the runs go (default outputs/verify/<name>)"
    )
    parser.add_argument(
        "--allow-targets",
        metavar="PREFIX",
        action="append",
        default=[],
        help="with --against: a module prefix trusted as _target_ in the recorded config "
        "(a model of your own package, e.g. mypkg.models)",
    )
    parser.add_argument(
        "--project",
        type=Path,
        default=Path("."),
        help="the project whose train.py runs and whose configs say what is trusted "
        "(default: this directory)",
    )
    args = parser.parse_args(argv)
    use_project(args.project / "configs")
    register_configs()  # the schemas name the builders a recorded config may use
    try:
        report = verify(
            args.overrides,
            against=args.against,
            vary=args.vary,
            out=args.out,
            allow_targets=args.allow_targets,
        )
    except SeedbedError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(format_report(report))
    return 0 if report["identical"] else EXIT_DIFFERENT


if __name__ == "__main__":
    sys.exit(main())
