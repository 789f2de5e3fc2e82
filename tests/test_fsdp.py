"""FSDP2 (`trainer.distributed=fsdp`): the same global batches as one process, weights within
float tolerance of it, the same world size twice bit for bit, a stopped run resumed on the
same world size bit for bit, a sharded checkpoint resumed on another world size (and in one
process) continuing with the samples of the uninterrupted run, and sharded checkpoints read
as data.

One set of real runs (module-scoped, slow) serves every assertion on runs: torchrun for the
ranks, this process for the one-process runs; the refusals of a received checkpoint use one
written in this process.
"""

from __future__ import annotations

import os
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from helpers import read_run, run_cli, torchrun
from test_distributed import NO_DROPOUT, RUN, copy_of, max_weight_difference, ranks, step_hashes

from seedbed.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from seedbed.core.interrupts import TEST_SIGNAL_ENV
from seedbed.core.record import weights_sha256
from seedbed.core.sharded import METADATA_FILE, STATE_FILE, SafeReader, _MetadataUnpickler
from seedbed.evaluate import evaluate_checkpoint

# Measured on this machine (2-core CPU, gloo, torch 2.13): FSDP2 on 2 ranks against one
# process 5.96e-8 (the reduce-scatter sums the ranks' gradients in another order; FSDP2 on 2
# ranks gave the very bits of DDP on 2 ranks); a 2-rank checkpoint resumed on 1 rank 5.96e-8.
WEIGHT_TOLERANCE = 1e-6
FSDP = "trainer.distributed=fsdp"


def fsdp(root: Path, name: str, *overrides: str, **options: Any) -> Path:
    return ranks(root, name, *overrides, **options)[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fsdp")
    found: dict[str, Path] = {}
    code, _, err = run_cli(root / "one", *NO_DROPOUT)
    assert code == 0, err
    found["one"] = root / "one"
    found["fsdp"] = fsdp(root, "fsdp", "trainer.distributed=fsdp", *NO_DROPOUT)
    # With dropout (each rank its own stream): twice the same bits, and a stop then a resume.
    found["dropout"] = fsdp(root, "dropout", FSDP, *RUN)
    found["dropout_again"] = fsdp(root, "dropout_again", FSDP, *RUN)
    stopped = fsdp(root, "stopped", FSDP, *RUN, env={TEST_SIGNAL_ENV: "SIGTERM:6"}, check=False)
    found["stopped_status"] = read_run(stopped)["status"]
    # A write killed mid-way leaves its hidden directory: the resume removes it.
    (stopped / "checkpoints" / ".step_000008.dcp.tmp").mkdir()
    torchrun(root / "resumed-cwd", f"resume={stopped}")
    found["stopped"] = stopped
    # The 2-rank checkpoint of step 4 (mid-epoch 1), resumed on 1 rank and in one process.
    on_one = copy_of(found["fsdp"], "resumed_on_1")
    torchrun(root / "on-1-cwd", f"resume={on_one}/checkpoints/step_000004.dcp", nproc=1)
    found["resumed_on_1"] = on_one
    plain = copy_of(found["fsdp"], "resumed_plain")
    code, _, err = run_cli(
        None, f"resume={plain}/checkpoints/step_000004.dcp", "trainer.distributed=false"
    )
    assert code == 0, err
    found["resumed_plain"] = plain
    return found


@pytest.mark.slow
def test_fsdp_takes_the_global_batches_of_one_process_and_agrees_within_tolerance(runs):
    one, sharded = read_run(runs["one"]), read_run(runs["fsdp"])
    assert sharded["status"] == "completed"
    assert sharded["distributed"]["world_size"] == 2
    assert step_hashes(runs["fsdp"]) == step_hashes(runs["one"])
    difference = max_weight_difference(runs["one"], runs["fsdp"])
    assert 0 < difference < WEIGHT_TOLERANCE
    assert one["final_metrics"]["train/loss"] == pytest.approx(
        sharded["final_metrics"]["train/loss"], rel=1e-5
    )


@pytest.mark.slow
def test_checkpoints_are_sharded_directories_and_the_fingerprint_is_of_the_full_weights(runs):
    directory = runs["fsdp"] / "checkpoints"
    last = directory / "last.pt"
    assert last.is_symlink() and os.readlink(last) == "step_000018.dcp"
    files = sorted(p.name for p in (directory / "step_000018.dcp").iterdir())
    assert files == [".metadata", "__0_0.distcp", "__1_0.distcp", "state.pt"]
    assert not list(directory.glob(".*.tmp"))
    # Read whole in one process: the unsharded weights, whose hash run.json records.
    checkpoint = load_checkpoint(last)
    assert weights_sha256(checkpoint["model"]) == read_run(runs["fsdp"])["weights_sha256"]
    assert sorted(checkpoint["optimizer"]["state"]) == list(range(len(checkpoint["model"])))
    # eval.py reads it too, and gives the run's own final validation.
    result = evaluate_checkpoint(last, "val")
    recorded = read_run(runs["fsdp"])["final_metrics"]
    assert result["metrics"]["val/loss"] == recorded["val/loss"]
    assert result["weights_sha256"] == read_run(runs["fsdp"])["weights_sha256"]


@pytest.mark.slow
def test_fsdp_on_the_same_world_size_twice_is_bit_identical(runs):
    first, again = read_run(runs["dropout"]), read_run(runs["dropout_again"])
    assert first["weights_sha256"] == again["weights_sha256"]
    assert first["loss_series_sha256"] == again["loss_series_sha256"]


@pytest.mark.slow
def test_a_stopped_fsdp_run_resumed_on_the_same_world_size_is_bit_identical(runs):
    assert runs["stopped_status"] == "interrupted"
    finished, resumed = read_run(runs["dropout"]), read_run(runs["stopped"])
    assert resumed["status"] == "completed" and len(resumed["resumes"]) == 1
    assert resumed["weights_sha256"] == finished["weights_sha256"]
    assert resumed["loss_series_sha256"] == finished["loss_series_sha256"]
    assert not (runs["stopped"] / "checkpoints" / ".step_000008.dcp.tmp").exists()


@pytest.mark.slow
def test_a_sharded_checkpoint_resumes_on_another_world_size_with_the_same_samples(runs):
    uninterrupted = step_hashes(runs["fsdp"])
    for name in ("resumed_on_1", "resumed_plain"):
        record = read_run(runs[name])
        assert record["status"] == "completed", name
        assert record["segments"] == [
            {"from_step": 0, "world_size": 2},
            {"from_step": 4, "world_size": 1},
        ]
        assert step_hashes(runs[name]) == uninterrupted, name
        assert max_weight_difference(runs["fsdp"], runs[name]) < WEIGHT_TOLERANCE, name
    # FSDP2 on one rank and one plain process read the same checkpoint into the same bits.
    on_one, plain = read_run(runs["resumed_on_1"]), read_run(runs["resumed_plain"])
    assert on_one["weights_sha256"] == plain["weights_sha256"]


def _metadata(path: Path):
    with (path / METADATA_FILE).open("rb") as file:
        return _MetadataUnpickler(file, path).load()


def sharded_checkpoint(directory: Path) -> Path:
    """A sharded checkpoint as an FSDP2 run writes one (DCP's files and state.pt), written
    in this process: what a received one looks like."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    with warnings.catch_warnings():  # "assuming the intent is to save in a single process"
        warnings.simplefilter("ignore", UserWarning)
        dcp.save({"model": model.state_dict()}, checkpoint_id=directory, no_dist=True)
    save_checkpoint(directory / STATE_FILE, {"loop": {"step": 1}, "optimizer": None})
    return directory


def test_a_received_sharded_checkpoint_is_read_as_data(tmp_path):
    source = sharded_checkpoint(tmp_path / "step_000001.dcp")
    assert sorted(load_checkpoint(source)["model"]) == ["0.bias", "0.weight", "1.bias", "1.weight"]

    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(source, target)
        return target

    # A .metadata that would run code when unpickled.
    planted = copy("code")
    (planted / METADATA_FILE).write_bytes(pickle.dumps(os.system))
    with pytest.raises(CheckpointError, match="posix.system, not a record DCP writes"):
        load_checkpoint(planted)
    # A storage entry that reads outside the checkpoint.
    outside = copy("outside")
    metadata = _metadata(outside)
    index = next(iter(metadata.storage_data))
    metadata.storage_data[index].relative_path = "../code/state.pt"
    (outside / METADATA_FILE).write_bytes(pickle.dumps(metadata))
    with pytest.raises(CheckpointError, match="not a shard file of its own"):
        load_checkpoint(outside)
    # A link among its files.
    linked = copy("linked")
    (linked / "__0_0.distcp").unlink()
    (linked / "__0_0.distcp").symlink_to(source / "__0_0.distcp")
    with pytest.raises(CheckpointError, match="__0_0.distcp is not a regular file"):
        load_checkpoint(linked)
    # Files, or tensors, past the bound on a checkpoint's size.
    with pytest.raises(CheckpointError, match="more than the 100 a checkpoint may have"):
        SafeReader(source, limit=100).read_metadata()
    huge = copy("huge")
    metadata = _metadata(huge)
    next(iter(metadata.state_dict_metadata.values())).size = torch.Size([2**40])
    (huge / METADATA_FILE).write_bytes(pickle.dumps(metadata))
    with pytest.raises(CheckpointError, match="claim .* bytes, past the bound"):
        load_checkpoint(huge)
