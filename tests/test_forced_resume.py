"""A forced resume applies what it records, or refuses the change, naming why: run.json's
record of the resume, config.yaml and the learning rates in metrics.jsonl agree."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from helpers import MACHINERY, train_in_process

from seedbed.core.checkpoint import load_checkpoint
from seedbed.core.errors import SeedbedError
from seedbed.core.record import read_metrics
from seedbed.tools import verify

# 112 training samples in batches of 32: 4 steps an epoch, 12 in all, the lr of every step
# logged; a checkpoint every 2 steps, all kept. SGD at lr 0.05 named in full: the cases below
# change its settings (and change it for AdamW, the default).
RUN = [
    *MACHINERY,
    "optim=sgd",
    "optim.lr=0.05",
    "data.n_samples=160",
    "trainer.epochs=3",
    "loader.batch_size=32",
    "trainer.log_every=1",
    "checkpoint.every_steps=2",
    "checkpoint.keep_last=null",
]
STEP = 6  # resumed mid-epoch 2


def lr_by_step(run_dir: Path) -> dict[int, float]:
    return {
        r["step"]: r["lr"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"
    }


def resume_forced(run_dir: Path, *changes: str) -> dict:
    checkpoint = run_dir / "checkpoints" / f"step_{STEP:06d}.pt"
    return train_in_process(run_dir, f"resume={checkpoint}", *changes, "resume.force=true")


def test_a_forced_lr_is_the_lr_of_every_step_after_the_resume(tmp_path):
    run_dir = tmp_path / "run"
    train_in_process(run_dir, *RUN)
    record = resume_forced(run_dir, "optim.lr=0.2")
    assert record["status"] == "completed"
    assert record["resumes"][-1]["changes"] == {"optim.lr": [0.05, 0.2]}
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["optim"]["lr"] == 0.2
    lrs = lr_by_step(run_dir)
    assert sorted(lrs) == list(range(1, 13))
    assert {lr for step, lr in lrs.items() if step <= STEP} == {0.05}
    assert {lr for step, lr in lrs.items() if step > STEP} == {0.2}
    # No one config reproduces it: verify --against says so rather than report a mismatch.
    with pytest.raises(SeedbedError, match=r"resumed with forced changes \(optim.lr: 0.05 -> 0.2"):
        verify.verify([], against=str(run_dir), out=tmp_path / "verify")
    assert not (tmp_path / "verify").exists()


@pytest.mark.parametrize(
    "sched,changes",
    [
        (["sched=cosine"], ["optim.lr=0.2"]),
        (["sched=onecycle"], ["optim.lr=0.2"]),
        (["sched=step", "sched.step_size=1"], ["sched.gamma=0.5"]),
        (["sched=cosine"], ["trainer.epochs=5"]),  # T_max null: the schedule spans the run
    ],
    ids=["cosine lr", "onecycle lr", "step gamma", "cosine epochs"],
)
def test_a_forced_schedule_change_continues_the_new_schedule_where_it_stands(
    tmp_path, sched, changes
):
    # After the resume, each step's lr is the one of a run configured so from the start.
    resumed, reference = tmp_path / "resumed", tmp_path / "reference"
    train_in_process(resumed, *RUN, *sched)
    train_in_process(reference, *RUN, *sched, *changes)
    # On a resume a key of a group is given with its group, as on the first command.
    record = resume_forced(resumed, *sched, *changes)
    key, value = changes[0].split("=")
    assert list(record["resumes"][-1]["changes"]) == [key]
    assert record["resumes"][-1]["changes"][key][1] == yaml.safe_load(value)
    configs = [yaml.safe_load((run / "config.yaml").read_text()) for run in (resumed, reference)]
    for config in configs:
        config.pop("resume")
    assert configs[0] == configs[1]  # config.yaml says what the reference run was configured
    after = {step: lr for step, lr in lr_by_step(resumed).items() if step > STEP}
    expected = lr_by_step(reference)
    assert after == {step: lr for step, lr in expected.items() if step > STEP}
    assert len(after) == max(expected) - STEP


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("forced") / "run"
    train_in_process(run_dir, *RUN, "sched=plateau")
    return run_dir


@pytest.mark.parametrize(
    "change,why",
    [
        ("seed=6", "seed: 0 -> 6 (the random streams continue from the checkpoint's state)"),
        ("seeds.data=3", "seeds.data: None -> 3 (the random streams"),
        ("model.hidden=[64]", "model.hidden: [128, 128] -> [64] (the checkpoint's weights"),
        ("init.scheme=orthogonal", "(the initial weights were drawn at step 0)"),
        ("data.class_sep=2.0", "(the checkpoint's position is in the saved data)"),
        ("loader.batch_size=16", "counted in the saved batches"),
        ("optim=adamw", "optim._target_: 'torch.optim.SGD' -> 'torch.optim.AdamW'"),
        ("optim.lr=0.2", "optim.lr: 0.05 -> 0.2 (a plateau schedule's learning rate so far"),
        ("task.monitor=val/acc", "compare values of the saved monitored metric"),
    ],
)
def test_a_forced_change_the_run_cannot_make_is_refused_and_changes_nothing(
    finished, tmp_path, change, why
):
    run_dir = Path(shutil.copytree(finished, tmp_path / "run", symlinks=True))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    with pytest.raises(SeedbedError, match="resume refused: resume.force=true cannot apply") as e:
        train_in_process(run_dir, f"resume={run_dir}", change, "resume.force=true")
    assert why in str(e.value) and "start a new run" in str(e.value)
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name in before}
    after.pop("train.log"), before.pop("train.log")
    assert after == before


def test_a_forced_plateau_setting_is_applied(finished, tmp_path):
    run_dir = Path(shutil.copytree(finished, tmp_path / "run", symlinks=True))
    changes = ["sched=plateau", "sched.patience=0", "sched.factor=0.5", "trainer.epochs=4"]
    record = train_in_process(run_dir, f"resume={run_dir}", *changes, "resume.force=true")
    assert record["status"] == "completed"
    assert record["resumes"][-1]["changes"] == {
        "sched.factor": [0.1, 0.5],
        "sched.patience": [2, 0],
        "trainer.epochs": [3, 4],
    }
    before = load_checkpoint(finished / "checkpoints" / "last.pt")["scheduler"]
    after = load_checkpoint(run_dir / "checkpoints" / "last.pt")["scheduler"]
    assert (after["patience"], after["factor"]) == (0, 0.5)
    # Its state went on from the checkpoint's: one more validation seen.
    assert after["last_epoch"] == before["last_epoch"] + 1
