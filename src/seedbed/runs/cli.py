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
import errno
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
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from seedbed.core.distributed import launched_rank, speak_only_as_rank_0
from seedbed.core.errors import EXIT_USER_ERROR, ConfigError, SeedbedError, error_line
from seedbed.core.files import refuse_unsafe_run_files
from seedbed.core.interrupts import SweepInterrupted, TrainingInterrupted, exit_status
from seedbed.core.lock import RunLock
from seedbed.core.outside_hydra import without_hydra
from seedbed.core.paths import PROJECT_CONFIG, project_configs, run_name, use_project
from seedbed.core.record import RUN_FILE, RunRecord, command_line
from seedbed.runs.hydra import register_configs
from seedbed.runs.resume import restartable
from seedbed.runs.session import check_resume, load_recipe, run_training

log = logging.getLogger("seedbed")

# A write the machine refused (a full disk or quota, a read-only or forbidden place), e.g.
# while Hydra writes .hydra/: one line naming the file, not a traceback.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def main() -> Any:
    """Hydra's main: `job` on the project's configs (`configs/train.yaml`)."""
    name = PROJECT_CONFIG.removesuffix(".yaml")
    return hydra.main(version_base="1.3", config_path=str(project_configs()), config_name=name)(
        job
    )()


# Filled by each Hydra job as it starts: an error raised before any did is a composition error.
jobs_started: list[int] = []
# The process that runs the command line: a sweep's jobs run in it one after another with
# Hydra's basic launcher, in other processes with joblib or submitit.
LAUNCHING_PID: list[int] = [0]


def job(cfg: DictConfig) -> float:
    """The Hydra task: one run in Hydra's output directory, with the recipe this command's
    config names. Returns the monitored metric's final value (`task.monitor`: what an Optuna
    search optimises)."""
    jobs_started.append(1)
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    # A job in another process (submitit, joblib; a requeued SLURM job) starts without the
    # command line's `use_project`: the project is the one whose configs Hydra composed.
    use_project(_composed_project(hydra_config) or project_configs())
    try:
        recipe = load_recipe(cfg.get("recipe"))
    except ConfigError as error:
        error.hydra_record = run_dir  # type: ignore[attr-defined]  # removed once reported
        raise
    overrides = list(hydra_config.overrides.task)
    if launched_rank() != 0:
        speak_only_as_rank_0(launched_rank())  # one console: rank 0's lines, others' warnings
        # Only rank 0 writes the run directory; the others record into a scratch one.
        with tempfile.TemporaryDirectory(prefix=f"seedbed-rank{launched_rank()}-") as scratch:
            final = run_training(cfg, Path(scratch), overrides, recipe)
        return final[cfg.task.monitor]
    try:
        final = run_training(cfg, run_dir, overrides, recipe)
    except TrainingInterrupted as stopped:
        if hydra_config.mode == RunMode.MULTIRUN and os.getpid() == LAUNCHING_PID[0]:
            # Ctrl-C means "stop the sweep": the launcher must not start the next job.
            raise SweepInterrupted(stopped.signum, str(stopped)) from stopped
        raise
    # The run's own monitor: a resumed run's config is the saved one, not this command's.
    return final[RunRecord(run_dir).data["monitor"]["metric"]]


def _composed_project(hydra_config: Any) -> Path | None:
    """The configs folder Hydra composed this job's primary config from."""
    for source in hydra_config.runtime.config_sources:
        if source.provider == "main" and source.schema == "file":
            return Path(source.path)
    return None


def _remove_hydras_record(run_dir: Path) -> None:
    """Remove the run directory Hydra made for a job that could not start, where it holds
    only Hydra's own record (`.hydra/`) and an empty train.log: nothing of a run is lost."""
    entries = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    log_file = run_dir / "train.log"
    if entries <= {".hydra", "train.log"} and (
        not log_file.exists() or not log_file.stat().st_size
    ):
        shutil.rmtree(run_dir, ignore_errors=True)
        # The default run directory's parents (outputs/train/), where this made them empty.
        for parent in run_dir.resolve().parents:
            if parent == Path.cwd().resolve() or not parent.is_relative_to(Path.cwd().resolve()):
                break
            with contextlib.suppress(OSError):  # not empty: kept
                parent.rmdir()


def _record_composition_failure(error: BaseException) -> Path | None:
    """A config that does not compose still gets a run directory saying why (single runs only)."""
    args = sys.argv[1:]
    if any(
        a in ("-m", "--multirun") or a.startswith(("--cfg", "-c", "--help", "-h")) for a in args
    ):
        return None
    if mentions_resume(args):
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
    """`resume=<path>` is short for `resume.path=<path>` (`+`/`++` kept), so that
    `resume.force=true` fits beside it."""
    expanded = []
    for arg in args:
        plus = arg[: len(arg) - len(arg.lstrip("+"))]
        if arg[len(plus) :].startswith("resume="):
            arg = f"{plus}resume.path={arg[len(plus) + len('resume=') :]}"
        expanded.append(arg)
    return expanded


def mentions_resume(args: list[str]) -> bool:
    """Whether an override sets `resume` or a key under it, however it is spelled."""
    keys = (arg.lstrip("+~").split("=", 1)[0] for arg in args if not arg.startswith("-"))
    return any(key == "resume" or key.startswith("resume.") for key in keys)


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


SLURM_MISSING = (
    "hydra/launcher=slurm needs a SLURM cluster: srun and sbatch are not on PATH here "
    "(start the sweep on the cluster's login node; hydra/launcher=submitit_local runs the "
    "same jobs on this machine)"
)


def slurm_without_srun(args: list[str]) -> str | None:
    """The message for a SLURM sweep started where SLURM is not, before anything is written."""
    if not ({"-m", "--multirun"} & set(args)) or shutil.which("srun") is not None:
        return None
    chosen = [a.split("=", 1)[1] for a in args if a.lstrip("+~").startswith("hydra/launcher=")]
    return SLURM_MISSING if chosen and chosen[-1] == "slurm" else None


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
    config: how the tests run the docs' commands (and the runs those start: verify's,
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
    a linked train.log, a run another process writes, an old run taken for a new one.
    Nothing is written here (not even a `.lock`): a refused command changes nothing."""
    if "-m" in args or "--multirun" in args or mentions_resume(args):
        return  # a resume: check_resume_before_hydra
    given = [a.split("=", 1)[1] for a in args if a.lstrip("+").startswith("hydra.run.dir=")]
    if not given:
        return  # a fresh, unique directory
    run_dir = Path(given[-1])
    if (run_dir / RUN_FILE).exists() and not restartable(run_dir):
        raise SeedbedError(
            f"{run_dir} already holds a run ({RUN_FILE}): a new run needs a new "
            f"directory; resume={run_dir} continues that one"
        )
    if run_dir.is_dir():
        refuse_unsafe_run_files(run_dir)
        RunLock(run_dir).check_free()  # refused now if another process writes it


# Hydra's flags that do not run the job (print the config, help, shell completion).
NOT_RUNNING = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion")


def compose_command(args: list[str]) -> tuple[DictConfig, list[str]] | None:
    """(the config `python train.py <args>` runs with, Hydra's node included; its overrides),
    composed as Hydra's own run composes it (config dir, config name, overrides) but without
    running anything or writing anywhere; None where Hydra itself would refuse the arguments
    (it then says why, before it writes anything) or would not run a job."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path, get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    if any(arg.split("=", 1)[0] in NOT_RUNNING for arg in args):
        return None
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # argparse's own complaint: Hydra's
            parsed = get_args_parser().parse_args(args)
        search_path = create_config_search_path(str(project_configs()))
        if parsed.config_dir is not None:
            extra = os.path.abspath(parsed.config_dir)
            search_path.prepend(provider="command-line", path=f"file://{extra}")
        hydra = Hydra.create_main_hydra2(task_name="train", config_search_path=search_path)
        cfg = hydra.compose_config(
            parsed.config_name or "train", parsed.overrides, run_mode=RunMode.RUN
        )
        return cfg, list(parsed.overrides)
    except (SystemExit, Exception):  # noqa: BLE001 - Hydra's run reports it in one line
        return None
    finally:
        GlobalHydra.instance().clear()


def check_resume_before_hydra(args: list[str]) -> None:
    """A resume, however `resume.path` is spelled (`resume=`, `resume.path=`, `++...`), is
    checked in full before Hydra starts: Hydra writes `.hydra/` and adds to train.log in the
    run directory before the job runs, and makes the directory itself, so a resume refused
    in the job would change the run it refused (or make a folder where there was none)."""
    if "-m" in args or "--multirun" in args or not mentions_resume(args):
        return
    composed = compose_command(args)
    if composed is None:
        return
    cfg, overrides = composed
    try:
        path, run_dir = cfg.resume.path, Path(cfg.hydra.run.dir)
    except OmegaConfBaseException:
        return  # a value only Hydra's run can resolve: the job checks it
    if path is None:
        return
    if str(path).strip() in ("", "''", '""'):
        error = ConfigError("resume.path", path, "a run directory or a checkpoint file")
        raise SeedbedError(f"{error} (leave resume out for a new run)")
    if not Path(path).exists():
        error = ConfigError("resume.path", path, "a run directory or a checkpoint file")
        raise SeedbedError(f"{error} (it does not exist)")
    RunLock(run_dir).check_free()  # another process writing it: refused first, as in the job
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)  # the job logs what its own check finds
    try:
        check_resume(without_hydra(cfg), run_dir, overrides)
    except OmegaConfBaseException as error:  # a value of the config to resume with
        raise SeedbedError(error_line(error)) from error
    finally:
        logging.disable(previous)


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


def cli(config_dir: str | Path | None = None) -> None:
    """Run Hydra on the project whose configs are `config_dir` (default: `./configs`); an
    expected error becomes one line on stderr and exit status 2."""
    configs = use_project(config_dir or project_configs())
    if not (configs / PROJECT_CONFIG).is_file():
        print(
            f"error: {configs / PROJECT_CONFIG} not found: run train.py of a seedbed project "
            "(seedbed new <name> makes one)",
            file=sys.stderr,
        )
        sys.exit(EXIT_USER_ERROR)
    register_configs()
    LAUNCHING_PID[0] = os.getpid()
    sys.argv[1:] = with_debug_from_env(expand_resume_shorthand(sys.argv[1:]))
    if (message := multirun_under_torchrun(sys.argv[1:])) is not None:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    if launched_rank() != 0:
        speak_only_as_rank_0(launched_rank())  # its errors too, prefixed with its rank
        # Every torchrun process would make its own Hydra run dir (each names it anew):
        # the ranks other than 0 log into a scratch one instead, removed when they exit.
        scratch = tempfile.mkdtemp(prefix=f"seedbed-rank{launched_rank()}-")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        sys.argv.append(f"hydra.run.dir={scratch}")
    for check in (multirun_only_without_m, slurm_without_srun):
        if (message := check(sys.argv[1:])) is not None:
            print(f"error: {message}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
    try:
        if launched_rank() == 0:  # the other ranks never write the run directory
            check_run_dir_before_hydra(sys.argv[1:])
            check_resume_before_hydra(sys.argv[1:])
    except SeedbedError as error:
        print(f"error: {error_line(error)}", file=sys.stderr)
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
    except SweepInterrupted as stopped:
        stderr.release(drop=True)
        _print_sweep_end_after_a_failure()  # the summary of what finished
        print(f"{stopped}\nthe sweep stopped: its later jobs were not started", file=sys.stderr)
        sys.exit(exit_status(stopped.signum))
    except TrainingInterrupted as stopped:
        stderr.release(drop=True)
        print(str(stopped), file=sys.stderr)
        sys.exit(exit_status(stopped.signum))
    except (SeedbedError, KeyboardInterrupt) as error:
        stderr.release(drop=True)
        _print_sweep_end_after_a_failure()
        print(f"error: {error_line(error)}", file=sys.stderr)
        if (record := getattr(error, "hydra_record", None)) is not None:
            _remove_hydras_record(record)  # a recipe that cannot run: nothing written
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
    except RuntimeError as error:
        if 'Could not detect "srun"' not in str(error):  # submitit's, the launcher chosen
            raise  # in a config file rather than on the command line
        stderr.release(drop=True)
        print(f"error: {SLURM_MISSING}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except OSError as error:  # after Hydra's: a MissingConfigException is an OSError too
        if error.errno not in DISK_ERRORS:
            raise  # not the machine's disk: a bug, keep the traceback
        stderr.release(drop=True)
        where = f"{error.filename} cannot be written" if error.filename else "a write failed"
        print(f"error: {where}: {error.strerror}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    finally:
        stderr.release(drop=False)
        sys.stderr = stderr.stream
        if asked is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = asked
