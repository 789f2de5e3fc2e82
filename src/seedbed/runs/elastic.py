"""A run's position in global samples: what lets it resume on another number of processes.

A run is defined by its global batch (`seedbed.data.loader.EpochBatchSampler`):
optimizer step s of epoch e takes the same samples on 1, 2 or 4 ranks. A
checkpoint records where the run stands in those terms (the epoch, the samples
of it already taken, the global batch) and how the last segment split it
(world size, accumulation); a resume with another split converts the loop's
micro-batch count, and refuses another global batch (another run).

After every optimizer step, each rank checks that the micro-batches it was
served are its part of the step's global batch, and the run records the
SHA-256 of that global batch's sample indices in metrics.jsonl
(`{"kind": "samples", "step": ..., "sha256": ...}`): equal records prove two
runs, of any world sizes, took the same samples at every step.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor

from seedbed.core.errors import ConfigError, SeedbedError

SAMPLES_KIND = "samples"
"""metrics.jsonl's bookkeeping of each step's samples: not a metric, no logger gets it."""


def batch_position(sampler: Any, loop: Any, world_size: int) -> dict[str, int] | None:
    """Where `loop` stands, in global samples: the checkpoint's `position`."""
    if sampler is None:
        return None
    steps_in_epoch = -(-loop.batch // sampler.accumulate)
    return {
        "epoch": loop.epoch,
        "samples_in_epoch": steps_in_epoch * sampler.global_batch,
        "samples": loop.step * sampler.global_batch,
        "global_batch": sampler.global_batch,
        "world_size": world_size,
        "accumulate": sampler.accumulate,
    }


def check_same_global_batch(position: dict[str, Any] | None, global_batch: int) -> None:
    """Refuse to resume with another global batch: it would be another run."""
    if position is None:
        return  # a checkpoint from before positions were recorded: same world size only
    if position["global_batch"] != global_batch:
        raise ConfigError(
            "loader.global_batch_size",
            global_batch,
            f"{position['global_batch']}, the global batch the run was checkpointed with "
            f"(world size {position['world_size']} x accumulation {position['accumulate']}): "
            "a resume may change how a global batch is split, never its size (resume with "
            f"loader.global_batch_size={position['global_batch']}, or start a new run)",
        )


def resumed_batch(position: dict[str, Any] | None, loop: dict[str, Any], sampler: Any) -> int:
    """The loop's micro-batch count within the epoch, for this segment's accumulation."""
    if position is None:
        return int(loop["batch"])
    return position["samples_in_epoch"] // sampler.global_batch * sampler.accumulate


def samples_sha256(indices: Tensor) -> str:
    """SHA-256 of sample indices, in order, as little-endian int64."""
    return hashlib.sha256(indices.to(torch.int64).numpy().astype("<i8").tobytes()).hexdigest()


def step_samples_record(sampler: Any, state: Any, served: Tensor) -> dict[str, Any]:
    """metrics.jsonl's record of the step just taken: the SHA-256 of its global batch, after
    checking that this rank was served exactly its part of it. The order is the epoch's the
    sampler was set to: `trainer.overfit_batches` serves epoch 0's every epoch."""
    served_epoch = sampler.epoch
    step_in_epoch = -(-state.batch // sampler.accumulate) - 1
    first = step_in_epoch * sampler.accumulate
    expected = [sampler.micro_batch_indices(served_epoch, b) for b in range(first, state.batch)]
    mine = torch.cat(expected) if expected else served
    if not torch.equal(served.cpu(), mine):
        raise SeedbedError(
            f"rank {sampler.rank} was served other samples than its part of step {state.step}'s "
            "global batch: the loader does not follow the run's sample order"
        )
    indices = sampler.global_batch_indices(served_epoch, step_in_epoch)
    return {
        "kind": SAMPLES_KIND,
        "epoch": state.epoch,
        "step": state.step,
        "sha256": samples_sha256(indices),
    }


def segments_after_resume(
    segments: list[dict[str, int]], step: int, world_size: int
) -> list[dict[str, int]]:
    """run.json's `segments`: from which optimizer step the run ran on how many ranks. A
    resume drops the segments after its checkpoint's step and starts one there."""
    kept = [segment for segment in segments if segment["from_step"] < step]
    return [*kept, {"from_step": step, "world_size": world_size}]
