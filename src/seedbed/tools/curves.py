"""curves.png of a sweep: each validation metric per epoch, one panel per metric.

Each run is a thin line; with one configuration (a seed sweep) the mean ± std
over its runs is drawn as a band. Short runs get markers and every epoch a
tick, so that a sweep of 1-epoch runs still shows its points. Needs the `plot`
extra (matplotlib); without it the summary says the plot was skipped.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from seedbed.core.errors import SeedbedError
from seedbed.core.files import atomic_write
from seedbed.core.record import METRICS_FILE, read_metrics

CURVES_PNG = "curves.png"
# Up to this many epochs every point is marked and every epoch has its own tick.
MARKED_EPOCHS = 12


def read_curves(job_dir: Path) -> dict[str, list[float]]:
    """Each validation metric (whatever the task reports: `val/...`) per epoch."""
    rows = [r for r in read_metrics(job_dir / METRICS_FILE) if r.get("kind") == "val"]
    rows.sort(key=lambda r: r["epoch"])
    names = dict.fromkeys(k for r in rows for k in r if k.startswith("val/"))
    return {name: [r[name] for r in rows if name in r] for name in names}


def curves_figure(curves: dict[str, dict[str, list[float]]], band: bool) -> Any:
    """The figure for `curves` (run name -> metric -> values per epoch); `band`: draw the mean
    ± std over the runs (only meaningful when they differ by their seed alone)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed: sweeps run on servers
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(name for c in curves.values() for name in c))
    figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
    axes = axes[0]
    longest = max((len(v) for c in curves.values() for v in c.values()), default=0)
    marker = "o" if longest <= MARKED_EPOCHS else None
    for axis, metric in zip(axes, names):
        series = {run: c[metric] for run, c in curves.items() if c.get(metric)}
        for run, values in series.items():
            epochs = range(1, len(values) + 1)
            axis.plot(epochs, values, linewidth=0.8, alpha=0.7, marker=marker, label=run)
        length = min((len(s) for s in series.values()), default=0)
        if band and len(series) > 1 and length:
            epochs = range(1, length + 1)
            columns = [[s[e - 1] for s in series.values()] for e in epochs]
            means = [statistics.fmean(c) for c in columns]
            stds = [statistics.stdev(c) for c in columns]
            axis.plot(epochs, means, color="black", linewidth=2, marker=marker, label="mean")
            low, high = [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)]
            if length == 1:  # a band one point wide is invisible: an error bar instead
                axis.errorbar([1], means, yerr=stds, color="gray", capsize=6, label="mean ± std")
            else:
                axis.fill_between(epochs, low, high, color="gray", alpha=0.3, label="mean ± std")
        axis.set_xlabel("epoch")
        if longest <= MARKED_EPOCHS:
            axis.set_xticks(range(1, longest + 1))
            axis.set_xlim(0.5, longest + 0.5)
        else:
            from matplotlib.ticker import MaxNLocator

            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(metric)
    axes[0].legend(fontsize="small")
    figure.tight_layout()
    return figure


def plot_curves(sweep_dir: Path, run_dirs: list[str], path: Path, band: bool = True) -> str:
    """Write curves.png; return what happened, for the summary (the plot is optional)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "skipped: matplotlib is not installed (pip install 'seedbed[plot]')"
    if not run_dirs:
        return "skipped: no completed run"
    curves, left_out = {}, []
    for name in run_dirs:
        try:
            curves[name] = read_curves(sweep_dir / name)
        except SeedbedError as error:  # a damaged or refused metrics.jsonl: the others drawn
            left_out.append(str(error))
    note = f" (left out: {'; '.join(left_out)})" if left_out else ""
    if not any(curves.values()):
        return f"skipped: no validation records{note}"
    import matplotlib.pyplot as plt

    figure = curves_figure(curves, band)
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=100))
    plt.close(figure)
    return f"{CURVES_PNG}{note}"
