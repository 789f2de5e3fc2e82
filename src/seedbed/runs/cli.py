"""The command line around the Hydra task: `python train.py ...` ends in one line, not a trace.

`cli` runs Hydra with HYDRA_FULL_ERROR set so that errors reach it, then turns
every expected one (a bad override, an impossible value, a missing file) into
one line on stderr and exit status 2, with the traceback kept in train.log. A
config that does not even compose still gets a run directory saying why. A run
stopped by a signal prints how to resume it and exits with 128 + the signal.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import shutil
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from seedbed.config import CONFIG_DIR, register_configs, run_name
from seedbed.runs.distributed import launched_rank
from seedbed.runs.errors import EXIT_USER_ERROR, ConfigError, SeedbedError, error_line
from seedbed.runs.files import refuse_links
from seedbed.runs.interrupts import TrainingInterrupted, exit_status
from seedbed.runs.lock import RunLock
from seedbed.runs.record import RUN_FILE, RunRecord, command_line
from seedbed.runs.resume import restartable, run_dir_of
from seedbed.runs.session import run_training

log = logging.getLogger("seedbed")

# Filled by each Hydra job as it starts: an error raised before any did is a composition error.
jobs_started: list[int] = []


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    """The Hydra task: one run in Hydra's output directory. Returns the monitored metric's
    final value (`task.monitor`: what an Optuna search optimises)."""
    jobs_started.append(1)
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    overrides = list(hydra_config.overrides.task)
    if launched_rank() != 0:
        log.setLevel(logging.WARNING)  # one rank's progress lines are enough on the console
        # Only rank 0 writes the run directory; the others record into a scratch one.
        with tempfile.TemporaryDirectory(prefix=f"seedbed-rank{launched_rank()}-") as scratch:
            final = run_training(cfg, Path(scratch), overrides)
        return final[cfg.task.monitor]
    final = run_training(cfg, run_dir, overrides)
    # The run's own monitor: a resumed run's config is the saved one, not this command's.
    return final[RunRecord(run_dir).data["monitor"]["metric"]]


def _record_composition_failure(error: BaseException) -> Path | None:
    """A config that does not compose still gets a run directory saying why (single runs only)."""
    args = sys.argv[1:]
    if any(
        a in ("-m", "--multirun") or a.startswith(("--cfg", "-c", "--help", "-h")) for a in args
    ):
        return None
    if any(a.startswith("resume.path=") for a in args):
        return None  # the run being resumed keeps its record; no new directory
    run_dir = next(
        (Path(a.split("=", 1)[1]) for a in args if a.startswith("hydra.run.dir=")),
        Path("outputs") / "train" / run_name(),
    )
    if (run_dir / RUN_FILE).exists():
        return None  # another run's record: never overwritten
    record = RunRecord(run_dir)
    record.start("# the config did not compose: see run.json\n", command_line())
    record.finish("failed", error=error_line(error))
    (run_dir / "train.log").write_text("".join(traceback.format_exception(error)))
    return run_dir


def expand_resume_shorthand(args: list[str]) -> list[str]:
    """`resume=<path>` is short for `resume.path=<path>`, so `resume.force=true` fits beside it."""
    return [f"resume.path={a[len('resume=') :]}" if a.startswith("resume=") else a for a in args]


def missing_resume_path(args: list[str]) -> str | None:
    """The message for a `resume.path` that does not exist, before Hydra makes any directory."""
    if "-m" in args or "--multirun" in args:
        return None
    for arg in args:
        if arg.startswith("resume.path="):
            path = arg.split("=", 1)[1]
            if path.strip() in ("", "''", '""'):
                error = ConfigError("resume.path", path, "a run directory or a checkpoint file")
                return f"{error} (leave resume out for a new run)"
            if path != "null" and not Path(path).exists():
                error = ConfigError("resume.path", path, "a run directory or a checkpoint file")
                return f"{error} (it does not exist)"
    return None


def multirun_under_torchrun(args: list[str]) -> str | None:
    """The message refusing `torchrun ... train.py -m ...`: every rank would run its own sweep
    (a second sweep folder, jobs whose ranks never meet), so it is refused up front."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not ({"-m", "--multirun"} & set(args)):
        return None
    return (
        "-m (a sweep) under torchrun is not supported: each rank would run its own sweep. "
        "DDP jobs in a sweep: python train.py -m hydra/launcher=slurm "
        "hydra.launcher.tasks_per_node=<ranks> trainer.distributed=true ... (one rank per task)"
    )


# Config groups that only mean something to a sweep: without -m Hydra would do one plain run.
MULTIRUN_ONLY = ("sweep", "hparams_search")


def multirun_only_without_m(args: list[str]) -> str | None:
    """The message for `sweep=...` or `hparams_search=...` given without -m, else None."""
    if "-m" in args or "--multirun" in args:
        return None
    for arg in args:
        group, sep, _ = arg.lstrip("+~").partition("=")
        if sep and group in MULTIRUN_ONLY:
            return (
                f"{arg} is not allowed without -m: it configures a sweep of several runs "
                f"(python train.py -m {arg} ...)"
            )
    return None


def without_schema_groups(help_text: str) -> str:
    """Hydra's --help lists every group, the `schema/*` ones seedbed registers to type-check
    the configs included: a user never chooses those."""
    lines = help_text.splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith(("schema:", "schema/")))


def _print_help() -> None:
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            main()
    finally:
        sys.stdout.write(without_schema_groups(buffer.getvalue()))


def _print_sweep_end_after_a_failure() -> None:
    """Hydra skips the sweep's end when a job fails: its summary table still ends the sweep."""
    from seedbed.tools.summarize import print_sweep_end, started_sweeps

    if started_sweeps:
        print_sweep_end(started_sweeps.pop())


# `SEEDBED_DEBUG=smoke python train.py ...` runs as `python train.py ... debug=smoke`.
DEBUG_ENV = "SEEDBED_DEBUG"


def with_debug_from_env(args: list[str]) -> list[str]:
    """`args` plus `debug=<$SEEDBED_DEBUG>` when it is set, for a new run of the packaged
    config: how the tests run the README's commands (and the runs those start: verify's,
    a sweep's jobs, torchrun's ranks) as written, but small. A resume keeps its saved config,
    a rerun of a recorded config.yaml (`--config-name`) its own, and a `debug=` on the
    command line wins. The added override is part of the command run.json records."""
    debug = os.environ.get(DEBUG_ENV)
    if not debug:
        return args
    for arg in args:
        key = arg.lstrip("+~").partition("=")[0]
        if key in ("debug", "resume.path") or arg in ("--config-name", "-cn"):
            return args
    return [*args, f"debug={debug}"]


def check_run_dir_before_hydra(args: list[str]) -> None:
    """Refuse what would make Hydra itself write into a run directory it must not touch:
    a linked train.log, a run another process writes, an old run taken for a new one."""
    if "-m" in args or "--multirun" in args:
        return
    resume = next((a.split("=", 1)[1] for a in args if a.startswith("resume.path=")), "null")
    if resume != "null":
        run_dir = run_dir_of(resume)
    else:
        given = [a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")]
        if not given:
            return  # a fresh, unique directory
        run_dir = Path(given[-1])
        if (run_dir / RUN_FILE).exists() and not restartable(run_dir):
            raise SeedbedError(
                f"{run_dir} already holds a run ({RUN_FILE}): a new run needs a new "
                f"directory; resume={run_dir} continues that one"
            )
    if run_dir.is_dir():
        refuse_links(run_dir)
        with RunLock(run_dir):
            pass  # refused now if another process writes it; the session takes it for good


class _HoldHydraJobLine:
    """stderr, less Hydra's "Error executing job with overrides" line, which it writes before
    re-raising a job's error: held back, and dropped when the error is one of seedbed's
    (its own line says it all), written out otherwise."""

    PREFIX = "Error executing job with overrides:"

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.held: list[str] = []

    def write(self, text: str) -> int:
        if text.startswith(self.PREFIX):
            self.held.append(text)
            return len(text)
        return self.stream.write(text)

    def release(self, drop: bool) -> None:
        if not drop:
            for text in self.held:
                self.stream.write(text)
        self.held.clear()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def cli() -> None:
    """Run Hydra; an expected error becomes one line on stderr and exit status 2."""
    register_configs()
    sys.argv[1:] = with_debug_from_env(expand_resume_shorthand(sys.argv[1:]))
    if (message := multirun_under_torchrun(sys.argv[1:])) is not None:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    if launched_rank() != 0:
        # Every torchrun process would make its own Hydra run dir (each names it anew):
        # the ranks other than 0 log into a scratch one instead, removed when they exit.
        scratch = tempfile.mkdtemp(prefix=f"seedbed-rank{launched_rank()}-")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        sys.argv.append(f"hydra.run.dir={scratch}")
    for check in (missing_resume_path, multirun_only_without_m):
        if (message := check(sys.argv[1:])) is not None:
            print(f"error: {message}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
    try:
        if launched_rank() == 0:  # the other ranks never write the run directory
            check_run_dir_before_hydra(sys.argv[1:])
    except SeedbedError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        _print_help()
        return
    asked = os.environ.get("HYDRA_FULL_ERROR")
    if asked == "1":
        main()  # the user asked for full tracebacks
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's printer
    jobs_started.clear()
    stderr = sys.stderr = _HoldHydraJobLine(sys.stderr)
    try:
        main()
    except TrainingInterrupted as stopped:
        stderr.release(drop=True)
        print(str(stopped), file=sys.stderr)
        sys.exit(exit_status(stopped.signum))
    except (SeedbedError, KeyboardInterrupt) as error:
        stderr.release(drop=True)
        _print_sweep_end_after_a_failure()
        print(f"error: {error_line(error)}", file=sys.stderr)
        if isinstance(error, KeyboardInterrupt):
            sys.exit(exit_status(getattr(error, "signum", signal.SIGINT)))
        sys.exit(EXIT_USER_ERROR)
    except (HydraException, OmegaConfBaseException) as error:
        if jobs_started:
            raise  # a bug inside a job, not a bad config: keep the traceback
        # Composition failed (unknown key, wrong type, unknown option): no job ever ran.
        run_dir = _record_composition_failure(error)
        where = f" (recorded in {run_dir / 'run.json'})" if run_dir else ""
        print(f"error: {error_line(error)}{where}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    finally:
        stderr.release(drop=False)
        sys.stderr = stderr.stream
        if asked is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = asked
