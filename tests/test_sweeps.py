"""Sweeps summarise themselves and keep the promise on every launcher: joblib, submitit, Optuna."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import TINY, TRAIN, read_run, run_multirun, run_python

from seedbed.tools.summarize import (
    SUMMARY_JSON,
    describe,
    summary_table,
    t_quantile,
    write_summary,
)

ONE_EPOCH = [*TINY, "trainer.epochs=1"]  # where the per-epoch curves do not matter

# t(0.975, df) from published tables (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 10: 2.228, 30: 2.042, 100: 1.984}


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def overrides_of(job_dir: Path) -> list[str]:
    return yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())


def test_t_quantile_matches_published_table():
    for df, expected in T_975.items():
        assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4), df


def test_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (*range(1, 41), 57, 120, 1000):
        for p in (0.9, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9), (p, df)


def test_describe_gives_the_t_interval_of_the_mean():
    values = [0.5, 0.7, 0.9, 1.3]
    stats = describe(values)
    half = t_quantile(0.975, 3) * statistics.stdev(values) / math.sqrt(4)
    assert stats["n"] == 4 and stats["mean"] == statistics.fmean(values)
    assert stats["ci95"] == [stats["mean"] - half, stats["mean"] + half]
    assert describe([1.0])["std"] is None and describe([1.0])["ci95"] is None


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory):
    """`train.py -m sweep=seeds` over seeds 0, 1, 2: (its directory, what it printed)."""
    sweep = tmp_path_factory.mktemp("seeds") / "sweep"
    seeds = ["sweep=seeds", "hydra.sweeper.params.seed='0,1,2'"]
    ended = run_multirun(sweep, *seeds, *TINY)
    return sweep, ended


@pytest.mark.slow
def test_seed_sweep_summary_is_recomputed_from_the_run_dirs(seed_sweep, tmp_path):
    sweep, ended = seed_sweep
    jobs = job_dirs(sweep)
    records = [read_run(j) for j in jobs]
    assert [r["status"] for r in records] == ["completed"] * 3
    assert sorted(r["seeds"]["seed"] for r in records) == [0, 1, 2]

    summary = json.loads((sweep / SUMMARY_JSON).read_text())
    assert summary["completed"] == 3 and summary["failed"] == []
    assert sorted(summary["seeds"]) == [0, 1, 2]
    for name in ("val/loss", "val/acc", "train/loss"):
        values = [r["final_metrics"][name] for r in records]
        stats = summary["metrics"][name]
        assert stats["n"] == 3
        assert stats["mean"] == pytest.approx(statistics.fmean(values), rel=1e-12)
        assert stats["std"] == pytest.approx(statistics.stdev(values), rel=1e-12)
        assert (stats["min"], stats["max"]) == (min(values), max(values))
    assert "| val/loss | 3 |" in (sweep / "summary.md").read_text()
    # Epochs and steps are counts of what each run did, not statistics with an interval.
    assert "epochs" not in summary["metrics"] and "steps" not in summary["metrics"]
    assert summary["groups"][0]["counts"] == {"epochs": [2], "steps": [18]}
    assert "Each run: epochs 2, steps 18." in (sweep / "summary.md").read_text()
    assert "\n  epochs 2, steps 18\n" in ended.stdout
    # The sweep ends by printing where it is and the table: mean ± std and the interval.
    stats = summary["metrics"]["val/loss"]
    assert f"sweep {sweep}: 3 of 3 jobs completed" in ended.stdout
    assert "all runs: seeds 0, 1, 2" in ended.stdout
    mean_std, ci = f"{stats['mean']:.6g} ± {stats['std']:.6g}", f"[{stats['ci95'][0]:.6g}, "
    row = re.compile(rf"^  val/loss +3  {re.escape(mean_std)} +{re.escape(ci)}", re.MULTILINE)
    assert row.search(ended.stdout), ended.stdout
    assert ended.stdout.rstrip().endswith(f"summary: {sweep / 'summary.md'}")
    try:
        import matplotlib  # noqa: F401

        assert summary["plot"] == "curves.png" and (sweep / "curves.png").stat().st_size > 0
    except ImportError:
        assert summary["plot"].startswith("skipped")

    # The standalone command rebuilds the same summary from the run dirs alone.
    (sweep / SUMMARY_JSON).unlink()
    rebuilt = run_python("-m", "seedbed.tools.summarize", str(sweep), cwd=tmp_path)
    assert json.loads((sweep / SUMMARY_JSON).read_text()) == summary
    assert row.search(rebuilt.stdout)  # the same table as at the end of the sweep


def test_summarize_rejects_a_missing_directory(tmp_path):
    result = run_python(
        "-m", "seedbed.tools.summarize", str(tmp_path / "nope"), cwd=tmp_path, check=False
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "sweep_dir=" in result.stderr


@pytest.mark.slow
def test_failed_job_is_listed_and_the_others_complete(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_multirun(sweep, "seed=0,4294967296,2", *ONE_EPOCH, check=False)
    assert result.returncode == 2
    assert "seed=4294967296 is not allowed" in result.stderr.splitlines()[-1]
    statuses = [read_run(j)["status"] for j in job_dirs(sweep)]
    assert statuses == ["completed", "failed", "completed"]

    summary = json.loads((sweep / SUMMARY_JSON).read_text())
    assert summary["completed"] == 2 and summary["seeds"] == [0, 2]
    assert summary["metrics"]["val/loss"]["n"] == 2
    [failed] = summary["failed"]
    assert failed["run_dir"] == "1" and failed["seed"] == 4294967296
    # Hydra skipped the sweep's end: the command line still prints the table and the failure.
    assert f"sweep {sweep}: 2 of 3 jobs completed" in result.stdout
    failed_line = "failed jobs (1):\n  1 (seed 4294967296): seed=4294967296 is not allowed"
    assert failed_line in result.stdout
    assert "seed=4294967296 is not allowed" in failed["error"]
    assert "seed=4294967296 is not allowed" in (sweep / "summary.md").read_text()
    if importlib.util.find_spec("matplotlib"):  # Hydra skipped the end of the sweep: drawn anyway
        assert summary["plot"] == "curves.png" and (sweep / "curves.png").is_file()


@pytest.mark.slow
def test_joblib_parallel_jobs_give_the_sequential_weights(seed_sweep, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    # Both at default settings, the thread count included (test_everywhere_sweeps: the same
    # for a CNN, whose kernels do depend on it); the sequential one is the seed-sweep test's.
    # DataLoader workers in the parallel jobs only: num_workers does not change results.
    sequential, parallel = seed_sweep[0], tmp_path / "parallel"
    run_multirun(
        parallel,
        "seed=0,1",
        *TINY,
        "loader.num_workers=1",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    )

    for seq_dir, par_dir in zip(job_dirs(sequential)[:2], job_dirs(parallel), strict=True):
        seq, par = read_run(seq_dir), read_run(par_dir)
        assert par["status"] == "completed", par["error"]
        assert par["parallel_jobs"] == 2 and par["torch_threads"] == seq["torch_threads"]
        assert par["seeds"] == seq["seeds"]
        assert par["weights_sha256"] == seq["weights_sha256"]
        assert par["loss_series_sha256"] == seq["loss_series_sha256"]
    assert len(job_dirs(parallel)) == 2


@pytest.mark.slow
def test_submitit_local_runs_every_job(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    run_multirun(sweep, "seed=0,1", "hydra/launcher=submitit_local", *ONE_EPOCH)
    records = [read_run(j) for j in job_dirs(sweep)]
    assert [r["status"] for r in records] == ["completed", "completed"]
    assert [r["seeds"]["seed"] for r in records] == [0, 1]
    assert json.loads((sweep / SUMMARY_JSON).read_text())["completed"] == 2


@pytest.mark.slow
def test_optuna_search_is_reproducible(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    searches = []
    for name in ("first", "again"):
        sweep = tmp_path / name
        run_multirun(sweep, "hparams_search=optuna", "hydra.sweeper.n_trials=3", *ONE_EPOCH)
        jobs = job_dirs(sweep)
        assert len(jobs) == 3
        assert all(read_run(j)["status"] == "completed" for j in jobs)
        result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
        values = [read_run(j)["final_metrics"]["val/loss"] for j in jobs]
        assert result["best_value"] == min(values)
        trials = [[o for o in overrides_of(j) if o.startswith("optim.")] for j in jobs]
        assert all(len(t) == 2 for t in trials)
        searches.append((trials, [read_run(j)["weights_sha256"] for j in jobs], result))
        # Three different configurations: three groups of one seed each, best first, and no
        # confidence interval (it would be over different hyperparameters, not seeds).
        groups = json.loads((sweep / SUMMARY_JSON).read_text())["groups"]
        assert sorted(g["differs"] for g in groups) == sorted(sorted(t) for t in trials)
        assert all(g["seeds"] == [0] and g["metrics"]["val/loss"]["ci95"] is None for g in groups)
        assert groups[0]["metrics"]["val/loss"]["mean"] == result["best_value"]
    assert searches[0] == searches[1]
    assert len({tuple(t) for t in searches[0][0]}) == 3  # three different trials


def test_requeued_slurm_job_resumes_its_run_dir():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from helpers import PROJECT_CONFIGS as CONFIG_DIR
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from hydra_plugins.seedbed_slurm.resuming_launcher import ResumingSlurmLauncher
    from seedbed.runs.hydra import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        overrides = ["seed=3", "hydra/launcher=slurm"]
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    assert (
        cfg.hydra.launcher._target_
        == "hydra_plugins.seedbed_slurm.resuming_launcher.ResumingSlurmLauncher"
    )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = "multirun/sweep/4"
    HydraConfig.instance().set_config(cfg)
    try:
        launcher = ResumingSlurmLauncher(
            **{k: v for k, v in cfg.hydra.launcher.items() if k != "_target_"}
        )
        requeued = launcher.checkpoint(["seed=3", "resume=old"], "hydra.sweep.dir", 4, "id", {})
    finally:
        HydraConfig.instance().cfg = None
    assert requeued.function is launcher
    assert requeued.args[:3] == (["seed=3", "resume.path=multirun/sweep/4"], "hydra.sweep.dir", 4)


def test_summary_without_matplotlib_says_the_plot_was_skipped(tmp_path, monkeypatch):
    for seed, loss in enumerate([0.5, 0.7]):
        job = tmp_path / str(seed)
        job.mkdir()
        record = {
            "status": "completed",
            "seeds": {"seed": seed},
            "final_metrics": {"val/loss": loss},
        }
        (job / "run.json").write_text(json.dumps(record))
        (job / "metrics.jsonl").write_text(
            json.dumps({"kind": "val", "epoch": 0, "val/loss": loss})
        )
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    summary = write_summary(tmp_path)
    assert summary["plot"].startswith("skipped: matplotlib is not installed")
    assert not (tmp_path / "curves.png").exists()
    assert "skipped: matplotlib is not installed" in (tmp_path / "summary.md").read_text()
    assert summary["seeds"] == [0, 1] and summary["metrics"]["val/loss"]["n"] == 2


def fake_job(sweep: Path, name: str, overrides: list[str], val_loss: list[float]) -> None:
    """A completed job directory as the summary reads it: run.json, metrics, overrides."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    seed = int(next((o.split("=")[1] for o in overrides if o.startswith("seed=")), 0))
    record = {
        "status": "completed",
        "seeds": {"seed": seed},
        "final_metrics": {"val/loss": val_loss[-1]},
        "monitor": {"metric": "val/loss", "mode": "min"},
    }
    (job / "run.json").write_text(json.dumps(record))
    rows = [{"kind": "val", "epoch": e, "val/loss": v} for e, v in enumerate(val_loss)]
    (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_parameter_sweep_summary_groups_runs_by_their_parameters(tmp_path):
    # Two learning rates with seeds 0 and 1 each; a third tried twice with seed 0 (as Optuna may).
    losses = {("0.1", "0"): 0.9, ("0.1", "1"): 0.7, ("0.01", "0"): 0.4, ("0.01", "1"): 0.6}
    for i, ((lr, seed), loss) in enumerate(losses.items()):
        fake_job(tmp_path, str(i), [f"optim.lr={lr}", f"seed={seed}", "trainer.epochs=1"], [loss])
    fake_job(tmp_path, "4", ["optim.lr=0.5", "trainer.epochs=1"], [0.45])
    fake_job(tmp_path, "5", ["optim.lr=0.5", "trainer.epochs=1"], [0.45])
    summary = write_summary(tmp_path)

    groups = summary["groups"]
    assert [g["differs"] for g in groups] == [["optim.lr=0.5"], ["optim.lr=0.01"], ["optim.lr=0.1"]]
    assert [g["seeds"] for g in groups] == [[0, 0], [0, 1], [0, 1]]
    best, small, large = (g["metrics"]["val/loss"] for g in groups)
    assert best["mean"] == 0.45 and best["ci95"] is None  # one seed twice: no interval
    assert small == describe([0.4, 0.6]) and large == describe([0.9, 0.7])
    assert summary["metrics"] == groups[0]["metrics"]  # the headline is the best group's
    table = summary_table(summary)
    assert "group 1 (best): optim.lr=0.5; seeds 0, 0" in table
    assert "group 2: optim.lr=0.01; seeds 0, 1" in table
    assert "trainer.epochs" not in table  # shared by every run: not what tells groups apart


def test_curves_of_one_epoch_runs_show_their_points_on_integer_ticks(tmp_path):
    pytest.importorskip("matplotlib")
    from seedbed.tools.curves import curves_figure

    curves = {"0": {"val/loss": [0.7]}, "1": {"val/loss": [0.5]}}
    figure = curves_figure(curves, band=True)
    [axis] = figure.axes
    drawn = {line.get_label(): line.get_marker() for line in axis.get_lines()}
    assert {drawn[name] for name in ("0", "1", "mean")} == {"o"}  # every run and the mean
    assert list(axis.get_xticks()) == [1]
    ten = {"0": {"val/loss": [1.0 / e for e in range(1, 11)]}}
    assert list(curves_figure(ten, band=False).axes[0].get_xticks()) == list(range(1, 11))


@pytest.mark.slow
def test_ctrl_c_stops_a_sequential_sweep_and_prints_what_finished(tmp_path):
    # SIGINT to the process group, as a terminal sends it, while job 2 of 4 trains.
    sweep = tmp_path / "sweep"
    args = [TRAIN, "-m", f"hydra.sweep.dir={sweep}", "seed=0,1,2,3", "data.n_samples=2000"]
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        sweep_process = subprocess.Popen(
            [sys.executable, *args, "trainer.epochs=3"],
            cwd=tmp_path,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        started = sweep / "1" / "checkpoints" / "last.pt"  # its step-0 checkpoint: training
        deadline = time.monotonic() + 120
        while not started.exists() and sweep_process.poll() is None:
            assert time.monotonic() < deadline, "job 2 never started"
            time.sleep(0.02)
        os.killpg(sweep_process.pid, signal.SIGINT)
        code = sweep_process.wait(timeout=120)
    assert code == 130, err.read_text()
    assert [p.name for p in job_dirs(sweep)] == ["0", "1"]  # jobs 3 and 4 never started
    assert read_run(sweep / "0")["status"] == "completed"
    assert read_run(sweep / "1")["status"] == "interrupted"
    printed = out.read_text()
    assert f"sweep {sweep}: 1 of 2 jobs completed" in printed
    assert "1 (seed 1): interrupted by SIGINT after step" in printed
    assert json.loads((sweep / SUMMARY_JSON).read_text())["completed"] == 1
    stopped = err.read_text()
    assert "resume with: python" in stopped and stopped.rstrip().endswith(
        "the sweep stopped: its later jobs were not started"
    )
