"""Distributed data parallel: same seed and world size → same bits; rank 0 alone writes."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY, read_run, run_multirun, torchrun

from seedbed.core.checkpoint import load_checkpoint
from seedbed.core.seeding import SHARED_STREAMS, STREAMS, derive_seeds, rank_streams
from seedbed.data.loader import EpochBatchSampler


def test_ranks_share_one_permutation_and_split_it_like_distributed_sampler():
    n, world = 11, 3
    shards = []
    for rank in range(world):
        sampler = EpochBatchSampler(n, batch_size=2, seed=5, rank=rank, world_size=world)
        sampler.set_epoch(1)
        shards.append(torch.cat(list(sampler.batch_indices())))
        assert len(sampler) == 2 and sampler.padded == 1 and sampler.shard_size == 4
    single = EpochBatchSampler(n, batch_size=n, seed=5)
    single.set_epoch(1)
    order = next(single.batch_indices())
    padded = torch.cat([order, order[:1]])
    for rank, shard in enumerate(shards):
        assert torch.equal(shard, padded[rank::world])
    assert sorted(torch.cat(shards).tolist()) == sorted([*range(n), order[0].item()])


def test_rank_streams_share_init_data_augment_and_differ_elsewhere():
    streams = derive_seeds(42)
    rank0, rank1 = rank_streams(streams, 0), rank_streams(streams, 1)
    for name in STREAMS:
        if name in SHARED_STREAMS:
            assert rank0[name] == rank1[name] == streams[name]
        else:
            assert rank0[name] != rank1[name]


@pytest.mark.slow
def test_two_ddp_runs_give_identical_weights_and_one_run_dir(tmp_path):
    hashes = []
    for name in ("first", "again"):
        ran = torchrun(tmp_path / name, "trainer.distributed=true", "seed=42", *TINY)
        [run_dir] = list((tmp_path / name / "outputs" / "train").iterdir())
        # One console: rank 0's lines once; another rank's warnings only, with its rank.
        lines = ran.stdout.splitlines()
        epochs = [line.split("  ")[0] for line in lines if line.startswith("epoch ")]
        assert epochs == ["epoch 1/2", "epoch 2/2"], ran.stdout
        assert sum(line.startswith(("final ", "run dir")) for line in lines) == 3, ran.stdout
        others = [line for line in lines + ran.stderr.splitlines() if "rank 1" in line]
        assert all(line.startswith("[rank 1] ") for line in others), others
        assert "seedbed-rank1" not in ran.stdout
        assert [p.name for p in (tmp_path / name).iterdir()] == ["outputs"]
        record = read_run(run_dir)
        assert record["status"] == "completed"
        assert (
            record["distributed"]["world_size"] == 2 and record["distributed"]["backend"] == "gloo"
        )
        # 270 training samples (385 less 77 val and 38 test) over 2 ranks: 135 each, none padded.
        assert record["shard"] == {"samples": 135, "padded": 0}
        assert (run_dir / "checkpoints" / "last.pt").is_file()
        hashes.append(record["weights_sha256"])
    assert hashes[0] == hashes[1]


@pytest.mark.slow
def test_ddp_run_resumed_from_its_epoch_checkpoint_ends_identical(tmp_path):
    workdir = tmp_path / "ddp"
    torchrun(workdir, "trainer.distributed=true", "seed=7", *TINY)
    [run_dir] = list((workdir / "outputs" / "train").iterdir())
    finished = read_run(run_dir)
    metrics_before = (run_dir / "metrics.jsonl").read_text()
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "step_000005.pt")  # end of epoch 1
    assert checkpoint["loop"] == {**checkpoint["loop"], "epoch": 1, "step": 5}
    # Every rank's own RNG states are in rank 0's checkpoint: dropout differs per rank.
    ranks = checkpoint["rng_ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])

    torchrun(workdir, f"resume=outputs/train/{run_dir.name}/checkpoints/step_000005.pt")
    record = read_run(run_dir)
    assert record["status"] == "completed" and len(record["resumes"]) == 1
    assert record["weights_sha256"] == finished["weights_sha256"]
    assert record["loss_series_sha256"] == finished["loss_series_sha256"]
    assert (run_dir / "metrics.jsonl").read_text() == metrics_before
    assert [p.name for p in (workdir / "outputs" / "train").iterdir()] == [run_dir.name]


@pytest.mark.slow
def test_submitit_tasks_are_the_ranks_of_one_ddp_run(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    run_multirun(
        sweep,
        "seed=3",
        "hydra/launcher=submitit_local",
        "hydra.launcher.tasks_per_node=2",
        "trainer.distributed=true",
        *TINY,
    )
    assert [p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")] == ["0"]
    record = read_run(sweep / "0")
    assert record["status"] == "completed"
    assert record["distributed"] == {"rank": 0, "world_size": 2, "local_rank": 0, "backend": "gloo"}
    assert record["shard"] == {"samples": 135, "padded": 0}
