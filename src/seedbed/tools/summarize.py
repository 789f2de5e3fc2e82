"""The summary of a sweep: `python -m seedbed.tools.summarize multirun/<sweep>`.

Reads every job directory of a sweep (`run.json`, `metrics.jsonl`) and writes,
beside them, `summary.json` and `summary.md` (runs grouped by their parameters,
best group first; per group and final metric: n, mean, std, min, max and a 95%
confidence interval by Student's t over its seeds; every failed job with its
error) and `curves.png` (`seedbed.tools.curves`). The summary is recomputed from
the run directories alone, so it can be rebuilt at any time; the same table is
printed at the end of a sweep and by this command.

`SweepSummary` is the Hydra callback that does the same after every job of a
multirun: Hydra skips `on_multirun_end` when a job fails, so a summary written
only there would be missing exactly when it matters most. (curves.png waits for
the end of the sweep unless a job has failed.)
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from seedbed.core.errors import EXIT_USER_ERROR, SeedbedError
from seedbed.core.files import atomic_write, file_kind
from seedbed.core.record import CONFIG_FILE, RUN_FILE, read_json, read_yaml
from seedbed.tools.curves import CURVES_PNG, plot_curves
from seedbed.tools.stats import describe, t_quantile  # noqa: F401 (tests import t_quantile)

log = logging.getLogger(__name__)

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep's job directories (Hydra's subdirs: 0, 1, ...), in job order."""
    dirs = [p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    dirs = [p for p in dirs if os.path.lexists(p / RUN_FILE) or (p / ".hydra").exists()]
    return sorted(dirs, key=lambda p: (int(p.name) if p.name.isdigit() else math.inf, p.name))


def _read_job(job_dir: Path) -> dict[str, Any]:
    """A job's record; an unreadable one is listed as failed, naming what is wrong."""
    try:
        return _read_job_files(job_dir)
    except (SeedbedError, OSError, ValueError, yaml.YAMLError, AttributeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return {
            "run_dir": job_dir.name,
            "status": "failed",
            "error": f"unreadable: {first}",
            "seed": None,
            "overrides": [],
        }


def _read_job_files(job_dir: Path) -> dict[str, Any]:
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    # The job's command-line overrides as Hydra recorded them: shown as text, never resolved.
    overrides = read_yaml(overrides_file) if os.path.lexists(overrides_file) else []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise SeedbedError(f"{overrides_file} is damaged: expected a list of overrides")
    if not os.path.lexists(job_dir / RUN_FILE):
        return {
            "run_dir": job_dir.name,
            "status": "failed",
            "error": "no run.json: the job failed before training started (see its log)",
            "overrides": overrides,
        }
    record = read_json(job_dir / RUN_FILE)
    seed = (record.get("seeds") or {}).get("seed")
    if seed is None and (job_dir / CONFIG_FILE).exists():  # failed before seeding: as configured
        config = read_yaml(job_dir / CONFIG_FILE)
        seed = config.get("seed") if isinstance(config, dict) else None
    return {
        "run_dir": job_dir.name,
        "status": record.get("status"),
        "error": record.get("error"),
        "seed": seed,
        "overrides": overrides,
        "final_metrics": record.get("final_metrics") or {},
        "monitor": record.get("monitor"),
        "weights_sha256": record.get("weights_sha256"),
    }


def _parameters(overrides: list[str]) -> tuple[str, ...]:
    """What a job was configured with apart from its seed: the key of its group."""
    return tuple(sorted(o for o in overrides if not o.lstrip("+~").startswith("seed=")))


# Final "metrics" that count what was done (epochs run, optimizer steps): shown as the counts
# they are, not as statistics with an interval.
COUNTS = ("epochs", "steps")


def _counts(jobs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """{count: its distinct values over `jobs`}, e.g. {"epochs": [5], "steps": [45]}."""
    found = {
        name: sorted({j["final_metrics"][name] for j in jobs if name in j["final_metrics"]})
        for name in COUNTS
    }
    return {name: values for name, values in found.items() if values}


def _group(params: tuple[str, ...], jobs: list[dict[str, Any]], names: list[str]) -> dict:
    seeds = [j["seed"] for j in jobs]
    # A confidence interval says how the mean varies with the seed: only over distinct seeds
    # of one configuration (repeats of one seed are the same run again, bit for bit).
    distinct = len(set(seeds)) == len(seeds)
    metrics = {}
    for name in names:
        values = [float(j["final_metrics"][name]) for j in jobs if name in j["final_metrics"]]
        if values:
            metrics[name] = describe(values) if distinct else {**describe(values), "ci95": None}
    return {
        "params": list(params),
        "runs": [j["run_dir"] for j in jobs],
        "seeds": seeds,
        "metrics": metrics,
        "counts": _counts(jobs),
    }


def _best_first(groups: list[dict], monitor: dict | None) -> list[dict]:
    if monitor is None:
        return groups
    sign = -1.0 if monitor["mode"] == "max" else 1.0

    def key(group: dict) -> float:
        stats = group["metrics"].get(monitor["metric"])
        return math.inf if stats is None else sign * stats["mean"]

    return sorted(groups, key=key)


def build_summary(sweep_dir: Path) -> dict[str, Any]:
    """Everything summary.json holds, recomputed from the sweep's run directories.

    Completed runs are grouped by their parameters (their overrides but `seed`), best group
    first by the monitored metric's mean: statistics over seeds of one configuration, never
    across different ones. `metrics` is the best group's (the only one in a seed sweep)."""
    jobs = [_read_job(d) for d in _job_dirs(sweep_dir)]
    completed = [j for j in jobs if j["status"] == "completed"]
    monitor = next((j["monitor"] for j in completed if j.get("monitor")), None)
    names = sorted(
        {
            k
            for j in completed
            for k, v in j["final_metrics"].items()
            if isinstance(v, int | float) and k not in COUNTS
        }
    )
    if monitor is not None and monitor["metric"] in names:  # the headline comes first
        names.insert(0, names.pop(names.index(monitor["metric"])))
    by_params: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for job in completed:
        by_params.setdefault(_parameters(job["overrides"]), []).append(job)
    groups = _best_first([_group(p, js, names) for p, js in by_params.items()], monitor)
    # Shown per group: what differs between groups (a setting all runs share says nothing).
    shared = set.intersection(*(set(g["params"]) for g in groups)) if groups else set()
    for group in groups:
        group["differs"] = [p for p in group["params"] if p not in shared]
    return {
        "sweep_dir": str(sweep_dir),
        "jobs": len(jobs),
        "completed": len(completed),
        "seeds": [j["seed"] for j in completed],
        "monitor": monitor,
        "metrics": groups[0]["metrics"] if groups else {},
        "groups": groups,
        "failed": [
            {"run_dir": j["run_dir"], "seed": j.get("seed"), "error": j["error"]}
            for j in jobs
            if j["status"] in ("failed", "interrupted")
        ],
        "unfinished": [j["run_dir"] for j in jobs if j["status"] == "running"],
        "runs": jobs,
    }


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.6g}"


def _ci(stats: dict[str, Any]) -> str:
    return f"[{_fmt(stats['ci95'][0])}, {_fmt(stats['ci95'][1])}]" if stats["ci95"] else "–"


def _group_title(summary: dict[str, Any], index: int, group: dict[str, Any]) -> str:
    best = " (best)" if index == 0 and len(summary["groups"]) > 1 and summary["monitor"] else ""
    seeds = ", ".join(str(s) for s in group["seeds"])
    if len(summary["groups"]) == 1:
        return f"all runs: seeds {seeds}"
    return f"group {index + 1}{best}: {' '.join(group['differs'])}; seeds {seeds}"


def summary_table(summary: dict[str, Any]) -> str:
    """What a person reads at the end of a sweep: per group, metric, n, mean ± std and the 95%
    interval; then the failed jobs."""
    monitor = summary.get("monitor")
    lines = [
        f"sweep {summary['sweep_dir']}: {summary['completed']} of {summary['jobs']} jobs "
        f"completed" + (f"; monitored {monitor['metric']} ({monitor['mode']})" if monitor else "")
    ]
    for index, group in enumerate(summary["groups"]):
        lines += ["", _group_title(summary, index, group)]
        width = max(len("metric"), *(len(name) for name in group["metrics"]))
        lines.append(f"  {'metric':<{width}}  {'n':>3}  {'mean ± std':<25}  95% CI (Student's t)")
        for name, s in group["metrics"].items():
            spread = f"{_fmt(s['mean'])} ± {_fmt(s['std'])}"
            lines.append(f"  {name:<{width}}  {s['n']:>3}  {spread:<25}  {_ci(s)}")
        if group.get("counts"):
            lines.append(f"  {_counts_text(group['counts'])}")
    if summary["failed"]:
        lines += ["", f"failed jobs ({len(summary['failed'])}):"]
        lines += [f"  {f['run_dir']} (seed {f['seed']}): {f['error']}" for f in summary["failed"]]
    return "\n".join(lines)


def _counts_text(counts: dict[str, list[Any]]) -> str:
    """`epochs 5, steps 45` (`epochs 3 or 5` where the runs differ)."""
    return ", ".join(
        f"{name} {' or '.join(str(v) for v in values)}" for name, values in counts.items()
    )


def summary_markdown(summary: dict[str, Any]) -> str:
    monitor = summary.get("monitor")
    lines = [
        f"# Sweep summary: {summary['sweep_dir']}",
        "",
        f"{summary['completed']} of {summary['jobs']} jobs completed; "
        f"seeds: {', '.join(str(s) for s in summary['seeds']) or 'none'}.",
        "",
        *(
            [f"Monitored metric: {monitor['metric']} ({monitor['mode']}), first below.", ""]
            if monitor
            else []
        ),
        "Runs are grouped by their parameters (their overrides but `seed`), best group first;",
        "the confidence interval is over the seeds of one group.",
    ]
    for index, group in enumerate(summary["groups"]):
        lines += [
            "",
            f"## {_group_title(summary, index, group)}",
            "",
            "| metric | n | mean | std | min | max | 95% CI (Student's t) |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, s in group["metrics"].items():
            lines.append(
                f"| {name} | {s['n']} | {_fmt(s['mean'])} | {_fmt(s['std'])} | {_fmt(s['min'])} "
                f"| {_fmt(s['max'])} | {_ci(s)} |"
            )
        if group.get("counts"):
            lines += ["", f"Each run: {_counts_text(group['counts'])}."]
    lines += ["", "## Runs", "", "| run dir | seed | status | overrides |", "|---|---|---|---|"]
    for run in summary["runs"]:
        overrides = " ".join(run["overrides"])
        lines.append(f"| {run['run_dir']} | {run.get('seed')} | {run['status']} | {overrides} |")
    if summary["failed"]:
        lines += ["", "## Failed jobs", ""]
        lines += [f"- `{f['run_dir']}` (seed {f['seed']}): {f['error']}" for f in summary["failed"]]
    lines += ["", f"Curves: {summary['plot']}", ""]
    return "\n".join(lines)


@contextmanager
def _sweep_lock(sweep_dir: Path) -> Iterator[None]:
    # Parallel jobs finish at the same time: the last writer must also be the last reader.
    path = sweep_dir / ".summary.lock"
    try:  # a FIFO in its place (a received sweep) must not hang the open
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as error:
        raise SeedbedError(f"{path} cannot be opened: {error.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SeedbedError(f"{path} is refused: it is {file_kind(os.fstat(fd).st_mode)}")
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


PLOT_AT_END = "drawn when the sweep ends (or now by: python -m seedbed.tools.summarize <sweep dir>)"


def write_summary(sweep_dir: str | Path, plot_only_after_a_failure: bool = False) -> dict[str, Any]:
    """(Re)build summary.json, summary.md and curves.png of `sweep_dir`; return the summary.

    `plot_only_after_a_failure` leaves curves.png to the end of the sweep while every job so
    far has completed: drawing it after each job costs a parallel job about a second.
    """
    sweep_dir = Path(sweep_dir)
    with _sweep_lock(sweep_dir):
        summary = build_summary(sweep_dir)
        completed = [r["run_dir"] for r in summary["runs"] if r["status"] == "completed"]
        if plot_only_after_a_failure and not summary["failed"]:
            summary["plot"] = PLOT_AT_END
        else:
            # A band of mean ± std only over seeds of one configuration.
            band = len(summary["groups"]) == 1
            summary["plot"] = plot_curves(sweep_dir, completed, sweep_dir / CURVES_PNG, band)
        text = json.dumps(summary, indent=2) + "\n"
        atomic_write(sweep_dir / SUMMARY_JSON, lambda file: file.write(text.encode()))
        markdown = summary_markdown(summary)
        atomic_write(sweep_dir / SUMMARY_MD, lambda file: file.write(markdown.encode()))
    return summary


class SweepSummary(Callback):
    """Hydra callback (`hydra.callbacks.sweep_summary`): rebuild the summary after every job."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # After a failure Hydra skips on_multirun_end: then every job end draws the curves.
            _summarise_quietly(Path(config.hydra.sweep.dir), plot_only_after_a_failure=True)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Remembered in the launching process: if a job fails, Hydra skips on_multirun_end and
        # the command line prints the summary instead (`print_sweep_end`).
        started_sweeps.append(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            print_sweep_end(sweep_dir, _summarise_quietly(sweep_dir))


# The sweeps started in this process (by the SweepSummary callback), newest last.
started_sweeps: list[Path] = []


def print_sweep_end(sweep_dir: Path, summary: dict[str, Any] | None = None) -> None:
    """The end of a sweep on the console: its directory, the summary table, where it is kept."""
    if summary is None:
        summary = _summarise_quietly(sweep_dir)
    if summary is None:
        return
    print(f"\n{summary_table(summary)}\n\nsummary: {sweep_dir / SUMMARY_MD}", flush=True)


def _summarise_quietly(
    sweep_dir: Path, plot_only_after_a_failure: bool = False
) -> dict[str, Any] | None:
    # A summary that cannot be written must not turn a finished training job into a failure.
    try:
        return write_summary(sweep_dir, plot_only_after_a_failure)
    except Exception as error:
        log.warning("could not write the sweep summary of %s: %s", sweep_dir, error)
        return None


def not_a_sweep(path: Path) -> str | None:
    """Why `path` is not a sweep directory (nothing to summarise, nothing to write), or None."""
    if (path / RUN_FILE).is_file():
        return "it is a run directory (python -m seedbed.tools.compare <run> <run> compares runs)"
    if not _job_dirs(path):
        return "it holds no job directories (0/, 1/, ... with run.json or .hydra/)"
    return None


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    given = args[0] if args else None
    why = None if len(args) == 1 and Path(args[0]).is_dir() else "an existing sweep directory"
    if why is None and (reason := not_a_sweep(Path(args[0]))) is not None:
        why = f"a sweep directory: {reason}"
    if why is not None:
        print(
            f"error: sweep_dir={given!r} is not allowed: {why} "
            "(usage: python -m seedbed.tools.summarize multirun/<sweep>)",
            file=sys.stderr,
        )
        sys.exit(EXIT_USER_ERROR)
    try:
        summary = write_summary(args[0])
    except SeedbedError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    print(f"{summary_table(summary)}\n\nwrote {Path(args[0]) / SUMMARY_JSON}, {SUMMARY_MD}")


if __name__ == "__main__":
    main()
