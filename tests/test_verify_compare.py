"""verify proves a config reproduces bit for bit, and locates the first difference when not;
compare explains what differs between two recorded runs."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from helpers import IN_PROJECT, SMALL, run_train

from seedbed.core.checkpoint import load_checkpoint
from seedbed.core.record import read_metrics
from seedbed.tools.compare import compare_runs
from seedbed.tools.compare import main as compare_main
from seedbed.tools.verify import main as verify_main

# Every step logged, so that a divergence is located to the exact step.
EVERY_STEP = [*SMALL, "trainer.log_every=1"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A run made by train.py, as a user makes one."""
    run_dir = tmp_path_factory.mktemp("recorded") / "run"
    run_train(run_dir, *EVERY_STEP, "seed=0")
    return run_dir


@pytest.fixture(scope="module")
def other_seed(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("other") / "run"
    run_train(run_dir, *EVERY_STEP, "seed=1")
    return run_dir


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


@pytest.mark.slow
def test_verify_on_the_default_config_says_identical(tmp_path, capsys):
    assert verify_main([*EVERY_STEP, "--out", str(tmp_path), *IN_PROJECT]) == 0
    out = capsys.readouterr().out
    assert last_line(out).startswith("identical")
    first, second = tmp_path / "first", tmp_path / "second"
    # While the runs train, verify says which one it is on and shows each one's epochs.
    lines = out.splitlines()
    assert lines.index(f"run 1 of 2: {first}") < lines.index(f"run 2 of 2: {second}")
    shown = [line.split("  ")[1] for line in lines if line.startswith("  epoch ")]
    assert shown == ["epoch 1/2", "epoch 2/2"] * 2
    assert read_metrics(first / "metrics.jsonl") == read_metrics(second / "metrics.jsonl")


@pytest.mark.slow
def test_verify_against_a_recorded_run_reproduces_it_and_compare_calls_the_twins_identical(
    recorded, tmp_path, capsys
):
    assert verify_main(["--against", str(recorded), "--out", str(tmp_path), *IN_PROJECT]) == 0
    assert last_line(capsys.readouterr().out).startswith("identical")
    twin = tmp_path / "rerun"
    assert (twin / "config.yaml").read_text() == (recorded / "config.yaml").read_text()
    report = compare_runs(recorded, twin)
    assert report["identical"] and report["weights_equal"] and report["divergence"] is None


@pytest.mark.slow
def test_verify_names_the_first_diverging_step_and_the_parameters_that_differ(tmp_path, capsys):
    perturb_step = 5  # trainer.perturb_step: a one-step change in the second run only
    code = verify_main(
        [
            *EVERY_STEP,
            "--vary",
            f"trainer.perturb_step={perturb_step}",
            "--out",
            str(tmp_path),
            *IN_PROJECT,
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    # The weight changed after step 5, so the loss of step 6 is the first that differs.
    first_differing = perturb_step + 1
    assert f"metrics: first divergence at train step {first_differing}" in out
    assert last_line(out).startswith(f"different: metrics diverge at train step {first_differing}")
    first = load_checkpoint(tmp_path / "first" / "checkpoints" / "last.pt")["model"]
    perturbed = next(iter(first))
    assert f"  {perturbed}: max abs diff " in out
    assert "config trainer.perturb_step: None vs 5" in out


@pytest.mark.slow
def test_compare_reports_the_seed_difference_and_the_first_diverging_step(
    recorded, other_seed, capsys
):
    assert compare_main([str(recorded), str(other_seed), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["seeds"]["seed"] == [0, 1]
    assert report["config"]["seed"] == [0, 1]
    first_logged = read_metrics(recorded / "metrics.jsonl")[0]
    assert report["divergence"]["step"] == first_logged["step"]
    assert report["weights_equal"] is False and not report["identical"]
    assert report["verdict"].startswith("different")
    assert "the seeds differ" in report["verdict"]

    assert compare_main([str(recorded), str(other_seed)]) == 1
    text = capsys.readouterr().out
    assert "seeds:\n  seed: 0 | 1" in text
    assert f"metrics: first divergence at train step {first_logged['step']}" in text


@pytest.mark.slow
def test_compare_points_at_the_environment_when_the_numbers_part(recorded, tmp_path, capsys):
    """A copy of the run as if recorded elsewhere: another torch, one loss one bit apart."""
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(recorded, elsewhere)
    env = json.loads((elsewhere / "environment.json").read_text())
    env["torch"]["version"] = "0.0.0-elsewhere"
    (elsewhere / "environment.json").write_text(json.dumps(env))
    records = read_metrics(elsewhere / "metrics.jsonl")
    changed = next(i for i, r in enumerate(records) if r["kind"] == "train" and r["step"] == 3)
    records[changed]["loss"] = math.nextafter(records[changed]["loss"], math.inf)  # one bit
    (elsewhere / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    assert compare_main([str(recorded), str(elsewhere)]) == 1
    out = capsys.readouterr().out
    assert "metrics: first divergence at train step 3" in out
    assert "likely causes:\n  torch version: " in out
    assert "weights: equal" in out


def test_bad_run_directories_are_one_line_errors(tmp_path, capsys):
    missing = tmp_path / "no_such_run"
    for main, args in (
        (compare_main, [str(missing), str(tmp_path)]),
        (compare_main, [str(tmp_path), str(tmp_path)]),  # exists, but holds no run.json
        (verify_main, ["--against", str(missing)]),
    ):
        assert main(args) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        assert args[-2 if main is compare_main else -1] in lines[0]
        assert "expected a run directory" in lines[0]
