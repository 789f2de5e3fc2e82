"""The summary of a sweep: `python -m seedbed.tools.summarize multirun/<sweep>`.

Reads every job directory of a sweep (`run.json`, `metrics.jsonl`) and writes,
beside them, `summary.json` and `summary.md` (per final metric: n, mean, std,
min, max and a 95% confidence interval by Student's t; the seeds; every failed
job with its error) and `curves.png` (validation metrics per epoch: each run a
thin line, mean ± std as a band; needs the `plot` extra). The summary is
recomputed from the run directories alone, so it can be rebuilt at any time.

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
import statistics
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

from seedbed.runs.errors import EXIT_USER_ERROR
from seedbed.runs.files import atomic_write
from seedbed.runs.record import CONFIG_FILE, METRICS_FILE, RUN_FILE, read_metrics

log = logging.getLogger(__name__)

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
CURVES_PNG = "curves.png"
CONFIDENCE = 0.95


def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with `df` degrees of freedom (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2 == 1:
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= cos2 * (2 * k) / (2 * k + 1)
            total += term
        mass = theta + (math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0)
        return 2.0 / math.pi * mass
    term, total = 1.0, 1.0
    for k in range(1, df // 2):
        term *= cos2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


def t_quantile(p: float, df: int) -> float:
    """The `p` quantile (p > 0.5) of Student's t with `df` degrees of freedom, by bisection.

    Exact to ~1e-12 from the closed-form distribution function, so that a summary
    needs no scipy; tested against scipy and published tables.
    """
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    mass = 2 * p - 1  # P(|T| < t) for the two-sided interval
    low, high = 0.0, 1.0
    while _t_two_sided_mass(high, df) < mass:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if _t_two_sided_mass(mid, df) < mass:
            low = mid
        else:
            high = mid
        if high - low < 1e-13 * high:
            break
    return (low + high) / 2


def describe(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, sample std, min, max and the 95% t interval of the mean (None where n < 2)."""
    n = len(values)
    mean = statistics.fmean(values) if n else None
    std = statistics.stdev(values) if n > 1 else None
    ci = None
    if std is not None:
        half = t_quantile(0.5 + CONFIDENCE / 2, n - 1) * std / math.sqrt(n)
        ci = [mean - half, mean + half]
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "min": min(values) if n else None,
        "max": max(values) if n else None,
        "ci95": ci,
    }


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep's job directories (Hydra's subdirs: 0, 1, ...), in job order."""
    dirs = [p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    dirs = [p for p in dirs if (p / RUN_FILE).exists() or (p / ".hydra").exists()]
    return sorted(dirs, key=lambda p: (int(p.name) if p.name.isdigit() else math.inf, p.name))


def _read_job(job_dir: Path) -> dict[str, Any]:
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    if not (job_dir / RUN_FILE).exists():
        return {
            "run_dir": job_dir.name,
            "status": "failed",
            "error": "no run.json: the job failed before training started (see its log)",
            "overrides": overrides,
        }
    record = json.loads((job_dir / RUN_FILE).read_text())
    seed = (record.get("seeds") or {}).get("seed")
    if seed is None and (job_dir / CONFIG_FILE).exists():  # failed before seeding: as configured
        config = yaml.safe_load((job_dir / CONFIG_FILE).read_text())
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


def _curves(job_dir: Path) -> dict[str, list[float]]:
    """Each validation metric (whatever the task reports: `val/...`) per epoch."""
    rows = [r for r in read_metrics(job_dir / METRICS_FILE) if r.get("kind") == "val"]
    rows.sort(key=lambda r: r["epoch"])
    names = dict.fromkeys(k for r in rows for k in r if k.startswith("val/"))
    return {name: [r[name] for r in rows if name in r] for name in names}


def build_summary(sweep_dir: Path) -> dict[str, Any]:
    """Everything summary.json holds, recomputed from the sweep's run directories."""
    jobs = [_read_job(d) for d in _job_dirs(sweep_dir)]
    completed = [j for j in jobs if j["status"] == "completed"]
    monitor = next((j["monitor"] for j in completed if j.get("monitor")), None)
    names = sorted(
        {k for j in completed for k, v in j["final_metrics"].items() if isinstance(v, int | float)}
    )
    if monitor is not None and monitor["metric"] in names:  # the headline comes first
        names.insert(0, names.pop(names.index(monitor["metric"])))
    metrics = {
        name: describe(
            [float(j["final_metrics"][name]) for j in completed if name in j["final_metrics"]]
        )
        for name in names
    }
    return {
        "sweep_dir": str(sweep_dir),
        "jobs": len(jobs),
        "completed": len(completed),
        "seeds": [j["seed"] for j in completed],
        "monitor": monitor,
        "metrics": metrics,
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


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# Sweep summary: {summary['sweep_dir']}",
        "",
        f"{summary['completed']} of {summary['jobs']} jobs completed; "
        f"seeds: {', '.join(str(s) for s in summary['seeds']) or 'none'}.",
        "",
        *(
            [f"Monitored metric: {m['metric']} ({m['mode']}), first below.", ""]
            if (m := summary.get("monitor"))
            else []
        ),
        "| metric | n | mean | std | min | max | 95% CI (Student's t) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in summary["metrics"].items():
        ci = f"[{_fmt(s['ci95'][0])}, {_fmt(s['ci95'][1])}]" if s["ci95"] else "–"
        lines.append(
            f"| {name} | {s['n']} | {_fmt(s['mean'])} | {_fmt(s['std'])} | {_fmt(s['min'])} "
            f"| {_fmt(s['max'])} | {ci} |"
        )
    lines += ["", "## Runs", "", "| run dir | seed | status | overrides |", "|---|---|---|---|"]
    for run in summary["runs"]:
        overrides = " ".join(run["overrides"])
        lines.append(f"| {run['run_dir']} | {run.get('seed')} | {run['status']} | {overrides} |")
    if summary["failed"]:
        lines += ["", "## Failed jobs", ""]
        lines += [f"- `{f['run_dir']}` (seed {f['seed']}): {f['error']}" for f in summary["failed"]]
    lines += ["", f"Curves: {summary['plot']}", ""]
    return "\n".join(lines)


def plot_curves(sweep_dir: Path, run_dirs: list[str], path: Path) -> str:
    """Write curves.png; return what happened, for the summary (the plot is optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed: sweeps run on servers
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return "skipped: matplotlib is not installed (pip install 'seedbed[plot]')"
    if not run_dirs:
        return "skipped: no completed run"
    curves = [_curves(sweep_dir / name) for name in run_dirs]
    names = list(dict.fromkeys(name for c in curves for name in c))
    if not names:
        return "skipped: no validation records"
    figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
    axes = axes[0]
    for axis, metric in zip(axes, names):
        series = [c[metric] for c in curves if c.get(metric)]
        for name, values in zip(run_dirs, series):
            axis.plot(range(1, len(values) + 1), values, linewidth=0.7, alpha=0.6, label=name)
        length = min((len(s) for s in series), default=0)
        if len(series) > 1 and length:
            epochs = range(1, length + 1)
            means = [statistics.fmean(s[e - 1] for s in series) for e in epochs]
            stds = [statistics.stdev([s[e - 1] for s in series]) for e in epochs]
            axis.plot(epochs, means, color="black", linewidth=2, label="mean")
            axis.fill_between(
                epochs,
                [m - s for m, s in zip(means, stds)],
                [m + s for m, s in zip(means, stds)],
                color="gray",
                alpha=0.3,
                label="mean ± std",
            )
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(metric)
    axes[0].legend(fontsize="small")
    figure.tight_layout()
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=100))
    plt.close(figure)
    return CURVES_PNG


@contextmanager
def _sweep_lock(sweep_dir: Path) -> Iterator[None]:
    # Parallel jobs finish at the same time: the last writer must also be the last reader.
    with (sweep_dir / ".summary.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
            summary["plot"] = plot_curves(sweep_dir, completed, sweep_dir / CURVES_PNG)
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

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            _summarise_quietly(sweep_dir)


def _summarise_quietly(sweep_dir: Path, plot_only_after_a_failure: bool = False) -> None:
    # A summary that cannot be written must not turn a finished training job into a failure.
    try:
        write_summary(sweep_dir, plot_only_after_a_failure)
    except Exception as error:
        log.warning("could not write the sweep summary of %s: %s", sweep_dir, error)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not Path(args[0]).is_dir():
        given = args[0] if args else None
        print(
            f"error: sweep_dir={given!r} is not allowed: an existing sweep directory "
            "(usage: python -m seedbed.tools.summarize multirun/<sweep>)",
            file=sys.stderr,
        )
        sys.exit(EXIT_USER_ERROR)
    summary = write_summary(args[0])
    print(f"{summary['completed']}/{summary['jobs']} jobs completed; wrote {args[0]}/{SUMMARY_MD}")


if __name__ == "__main__":
    main()
