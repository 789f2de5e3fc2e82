"""One run, any number of processes: the same global batches on 1, 2 or 4 ranks, weights
within float tolerance of each other, the same world size twice bit for bit, and a resume on
another world size that continues with exactly the samples the uninterrupted run took.

One set of real runs (module-scoped) serves every assertion: torchrun for the ranks, this
process for the one-process runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import TINY, read_run, run_cli, run_multirun, torchrun

from seedbed.core.checkpoint import load_checkpoint
from seedbed.core.errors import SeedbedError
from seedbed.core.record import read_metrics
from seedbed.core.seeding import SHARED_STREAMS, STREAMS, derive_seeds, rank_streams
from seedbed.data.loader import EpochBatchSampler
from seedbed.evaluate import evaluate_checkpoint
from seedbed.tools.verify import verify

# Measured on this machine (2-core CPU, gloo, torch 2.13): 1 vs 2 ranks 3.0e-8, 1 vs 4
# ranks with accumulation 2.98e-8..5.96e-8: the all-reduce only sums in another order.
WEIGHT_TOLERANCE = 1e-6
# TINY: 270 training samples, global batch 32: 9 steps per epoch (the last global batch
# filled up with 18 of the epoch's first samples), 18 steps in all; a checkpoint every 4.
RUN = [*TINY, "seed=7", "checkpoint.every_steps=4", "checkpoint.keep_last=null"]
# Dropout draws from each rank's own stream (a mask per rank's micro-batch): with it, runs of
# different world sizes are different draws. The cross-world-size weight comparisons run
# without; the same-world-size ones keep the default dropout.
NO_DROPOUT = [*RUN, "model.dropout=0"]


def step_hashes(run_dir: Path) -> list[tuple[int, str]]:
    records = read_metrics(run_dir / "metrics.jsonl")
    return [(r["step"], r["sha256"]) for r in records if r["kind"] == "samples"]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def max_weight_difference(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa if wa[k].is_floating_point())


def ranks(root: Path, name: str, *overrides: str, **options: Any) -> tuple[Path, str]:
    """torchrun (`options`: its `nproc`, `env`, `check`) into the run directory `root/name`."""
    run_dir = root / name
    ran = torchrun(root / f"{name}-cwd", f"hydra.run.dir={run_dir}", *overrides, **options)
    return run_dir, ran.stdout + ran.stderr


def copy_of(run_dir: Path, name: str) -> Path:
    copy = run_dir.parent / name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ranks")
    found: dict[str, Path] = {}
    code, _, err = run_cli(root / "one", *NO_DROPOUT)
    assert code == 0, err
    found["one"] = root / "one"
    found["two"], _ = ranks(root, "two", "trainer.distributed=true", *NO_DROPOUT)
    # The global batch named: with it null, accumulation would double it (batch_size x 2).
    split_in_8 = ["loader.global_batch_size=32", "trainer.accumulate_grad_batches=2"]
    four = ["trainer.distributed=true", *NO_DROPOUT, *split_in_8]
    found["four"], _ = ranks(root, "four", *four, nproc=4)
    found["ddp"], found_console = ranks(root, "ddp", "trainer.distributed=true", *RUN)
    (root / "ddp-console.txt").write_text(found_console)
    found["ddp_again"], _ = ranks(root, "ddp_again", "trainer.distributed=true", *RUN)
    # Resumed from step 4 (mid-epoch 1): on the same 2 ranks, on 1 process, on 4 ranks.
    resumed = copy_of(found["ddp"], "resumed_on_2")
    ranks(root, "resumed_on_2", f"resume={resumed}/checkpoints/step_000004.pt")
    found["resumed_on_2"] = resumed
    on_one = copy_of(found["two"], "resumed_on_1")
    resume_one = [f"resume={on_one}/checkpoints/step_000004.pt", "trainer.distributed=false"]
    code, _, err = run_cli(None, *resume_one)
    assert code == 0, err
    found["resumed_on_1"] = on_one
    on_four = copy_of(found["two"], "resumed_on_4")
    resume_four = [f"resume={on_four}/checkpoints/step_000004.pt"]
    ranks(root, "resumed_on_4", *resume_four, *split_in_8, nproc=4)
    found["resumed_on_4"] = on_four
    return found


def test_each_step_of_any_world_size_takes_one_global_batch_in_the_same_order():
    n, seed = 70, 5
    for drop_last in (False, True):
        splits = [(1, 1), (1, 4), (2, 1), (2, 2), (4, 1)]  # (world size, accumulation)
        served = {}
        for world, accumulate in splits:
            samplers = [
                EpochBatchSampler(
                    n,
                    16 // (world * accumulate),
                    seed,
                    drop_last=drop_last,
                    rank=r,
                    world_size=world,
                    accumulate=accumulate,
                )
                for r in range(world)
            ]
            for sampler in samplers:
                sampler.set_epoch(3)
            micro = [list(s.batch_indices()) for s in samplers]
            steps = []
            for step in range(samplers[0].steps):
                windows = range(step * accumulate, (step + 1) * accumulate)
                steps.append(torch.cat([micro[r][b] for b in windows for r in range(world)]))
                assert torch.equal(steps[-1], samplers[0].global_batch_indices(3, step))
            served[(world, accumulate)] = torch.cat(steps)
        first = served[(1, 1)]
        assert all(torch.equal(order, first) for order in served.values())
        # 70 samples in global batches of 16: 4 whole ones and 6 left, dropped or filled up
        # with the epoch's first 10; the same for every world size.
        assert len(first) == (64 if drop_last else 80)
        if not drop_last:
            assert torch.equal(first[70:], first[:10])
            assert sorted(set(first.tolist())) == list(range(n))


def test_rank_streams_share_init_data_augment_and_differ_elsewhere():
    streams = derive_seeds(42)
    rank0, rank1 = rank_streams(streams, 0), rank_streams(streams, 1)
    for name in STREAMS:
        if name in SHARED_STREAMS:
            assert rank0[name] == rank1[name] == streams[name]
        else:
            assert rank0[name] != rank1[name]


@pytest.mark.slow
def test_one_two_and_four_ranks_take_the_same_samples_at_every_step(runs):
    one = step_hashes(runs["one"])
    assert [step for step, _ in one] == list(range(1, 19))
    assert len({sha for _, sha in one}) == 18
    for name in ("two", "four", "ddp"):  # dropout changes the weights, never the samples
        assert step_hashes(runs[name]) == one, name
    assert read_run(runs["four"])["batches"] == {
        "global": 32,
        "micro": 4,
        "world_size": 4,
        "accumulate": 2,
        "steps_per_epoch": 9,
        "padded": 18,
        "dropped": 0,
    }


@pytest.mark.slow
def test_weights_and_losses_agree_across_world_sizes_within_float_tolerance(runs):
    for name in ("two", "four"):
        assert max_weight_difference(runs["one"], runs[name]) < WEIGHT_TOLERANCE, name
        one, other = read_run(runs["one"]), read_run(runs[name])
        assert one["weights_sha256"] != other["weights_sha256"]  # not bits: another sum order
        # The logged loss is the global batch's (averaged over the ranks), not rank 0's.
        for key in ("train/loss", "val/loss", "val/acc"):
            assert one["final_metrics"][key] == pytest.approx(
                other["final_metrics"][key], rel=1e-5
            ), (name, key)


@pytest.mark.slow
def test_same_world_size_twice_is_bit_identical_with_one_console_and_one_run_dir(runs):
    first, again = read_run(runs["ddp"]), read_run(runs["ddp_again"])
    assert first["status"] == again["status"] == "completed"
    assert first["weights_sha256"] == again["weights_sha256"]
    assert first["loss_series_sha256"] == again["loss_series_sha256"]
    assert first["distributed"]["world_size"] == 2 and first["distributed"]["backend"] == "gloo"
    assert first["segments"] == [{"from_step": 0, "world_size": 2}]
    lines = (runs["ddp"].parent / "ddp-console.txt").read_text().splitlines()
    epochs = [line.split("  ")[0] for line in lines if line.startswith("epoch ")]
    assert epochs == ["epoch 1/2", "epoch 2/2"]
    others = [line for line in lines if "rank 1" in line]
    assert all(line.startswith("[rank 1] ") for line in others), others
    assert "seedbed-rank1" not in "\n".join(lines)
    assert sorted(p.name for p in (runs["ddp"].parent / "ddp-cwd").iterdir()) == []


@pytest.mark.slow
def test_resume_on_the_same_world_size_with_dropout_is_bit_identical(runs):
    finished, resumed = read_run(runs["ddp"]), read_run(runs["resumed_on_2"])
    checkpoint = load_checkpoint(runs["ddp"] / "checkpoints" / "step_000004.pt")
    # Every rank's own RNG states are in rank 0's checkpoint: dropout differs per rank.
    rng = checkpoint["rng_ranks"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])
    assert checkpoint["position"] == {
        "epoch": 0,
        "samples_in_epoch": 128,
        "samples": 128,
        "global_batch": 32,
        "world_size": 2,
        "accumulate": 1,
    }
    assert resumed["status"] == "completed" and len(resumed["resumes"]) == 1
    assert resumed["weights_sha256"] == finished["weights_sha256"]
    assert resumed["loss_series_sha256"] == finished["loss_series_sha256"]
    metrics = "metrics.jsonl"
    assert (runs["resumed_on_2"] / metrics).read_text() == (runs["ddp"] / metrics).read_text()


@pytest.mark.slow
def test_resume_on_another_world_size_continues_with_the_samples_of_the_uninterrupted_run(runs):
    uninterrupted = step_hashes(runs["two"])
    for name, world in (("resumed_on_1", 1), ("resumed_on_4", 4)):
        record = read_run(runs[name])
        assert record["status"] == "completed", name
        assert record["segments"] == [
            {"from_step": 0, "world_size": 2},
            {"from_step": 4, "world_size": world},
        ]
        # Steps 1-4 are the 2-rank segment's records, kept; 5-18 were taken on `world` ranks.
        assert step_hashes(runs[name]) == uninterrupted, name
        assert max_weight_difference(runs["two"], runs[name]) < WEIGHT_TOLERANCE, name
        loss = read_run(runs["two"])["final_metrics"]["train/loss"]
        assert record["final_metrics"]["train/loss"] == pytest.approx(loss, rel=1e-5)


@pytest.mark.slow
def test_distributed_validation_gives_the_single_process_metrics(runs):
    """Every rank validates every sample in one fixed order (no reduction over ranks): the
    2-rank run's recorded validation equals one process evaluating its final weights."""
    result = evaluate_checkpoint(runs["ddp"] / "checkpoints" / "last.pt", "val")
    single = result["metrics"]
    recorded = read_run(runs["ddp"])["final_metrics"]
    assert {k: single[k] for k in ("val/loss", "val/acc")} == {
        k: recorded[k] for k in ("val/loss", "val/acc")
    }


@pytest.mark.slow
def test_submitit_tasks_are_the_ranks_of_one_ddp_run_and_a_job_back_with_other_tasks_resumes(
    tmp_path,
):
    """Two submitit tasks are one DDP run; the job that comes back (a requeue, which adds
    `resume.path=<its run dir>`, or a resubmission) with one task continues its samples."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    launch = ["seed=3", "hydra/launcher=submitit_local", "trainer.distributed=true", *TINY]
    every_4 = ["checkpoint.every_steps=4", "checkpoint.keep_last=null"]
    run_multirun(sweep, *launch, "hydra.launcher.tasks_per_node=2", *every_4)
    assert [p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")] == ["0"]
    record = read_run(sweep / "0")
    assert record["status"] == "completed"
    assert record["distributed"] == {"rank": 0, "world_size": 2, "local_rank": 0, "backend": "gloo"}
    assert record["batches"]["world_size"] == 2 and record["batches"]["micro"] == 16
    one_process = step_hashes_of_tiny_seed_3(tmp_path)
    assert step_hashes(sweep / "0") == one_process
    # Back from step 4 with one task, in the job's own run directory (in a new process: the
    # job must find its project from what Hydra composed, not from the command line's).
    resume = f"resume.path={sweep}/0/checkpoints/step_000004.pt"
    run_multirun(sweep, *launch, "hydra.launcher.tasks_per_node=1", *every_4, resume)
    record = read_run(sweep / "0")
    assert record["status"] == "completed" and record["distributed"]["world_size"] == 1
    assert record["segments"] == [
        {"from_step": 0, "world_size": 2},
        {"from_step": 4, "world_size": 1},
    ]
    assert step_hashes(sweep / "0") == one_process


def step_hashes_of_tiny_seed_3(tmp_path: Path) -> list[tuple[int, str]]:
    """Every step's samples of the same config in one process (in this one)."""
    code, _, err = run_cli(tmp_path / "one", "seed=3", *TINY)
    assert code == 0, err
    return step_hashes(tmp_path / "one")


@pytest.mark.slow
def test_verify_against_a_multi_rank_run_says_what_it_can_promise(runs, tmp_path):
    with pytest.raises(SeedbedError, match="weights only within float tolerance") as refused:
        verify([], against=str(runs["resumed_on_1"]), out=tmp_path / "verify")
    assert "it ran on 2, 1 rank(s)" in str(refused.value)
    assert not (tmp_path / "verify").exists()
