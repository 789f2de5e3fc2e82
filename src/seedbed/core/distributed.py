"""Data-parallel training over processes, started by torchrun or as the tasks of a submitit job.

`trainer.distributed=ddp` (or `true`) makes each process one rank of a
`DistributedDataParallel` run, `fsdp` of an FSDP2 run (`seedbed.core.sharded`): backend
gloo on the CPU, nccl on CUDA. The
ranks share the weight-init, data-order and augmentation streams (the same
initial weights; each step's global batch the same as in one process, each
rank taking its micro-batches of it, see `seedbed.data.loader`; a sample's
augmentation keyed by its index, whichever rank draws it) and derive their own
dropout/global streams from the master seed and their rank (see
`seeding.seed_everything`). Only rank 0 writes the run directory: the others
work in a scratch directory that is removed when they finish.

Two runs with the same seed and world size give the same bits. Another world
size takes the same samples at every step, and gives the same weights up to
float rounding (the gradient all-reduce sums in another order) unless dropout
(drawn per rank) or BatchNorm (statistics per micro-batch) make it another run.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from seedbed.core.errors import ConfigError
from seedbed.core.seeding import capture_rng_states

DISTRIBUTED_MODES = "false, true (the same as ddp), ddp or fsdp"


def distributed_mode(value: Any) -> str | None:
    """`trainer.distributed` as a mode: None (one process), "ddp" or "fsdp"; ConfigError
    for anything else. true means ddp, as it did before fsdp existed."""
    if value is False:
        return None
    if value is True or value == "ddp":
        return "ddp"
    if value == "fsdp":
        return "fsdp"
    raise ConfigError("trainer.distributed", value, DISTRIBUTED_MODES)


@dataclass(frozen=True)
class RankInfo:
    """Where this process stands in the run: its rank, the number of ranks, its local rank."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_rank() -> int:
    """This process's rank as its launcher set it (torchrun, a submitit task, srun), else 0.

    Known before torch.distributed starts, so that Hydra and the run record can
    already tell rank 0 from the others.
    """
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if "SUBMITIT_EXECUTOR" in os.environ:
        from submitit import JobEnvironment

        return JobEnvironment().global_rank
    return int(os.environ.get("SLURM_PROCID", "0"))


def launched_world_size() -> int:
    """The number of ranks this process's launcher started (torchrun, a submitit task, srun),
    else 1: known before torch.distributed starts, so a config can be checked against it."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    if "SUBMITIT_EXECUTOR" in os.environ:
        from submitit import JobEnvironment

        return JobEnvironment().num_tasks
    return int(os.environ.get("SLURM_NTASKS", "1"))


def ranks_rng_state(saved: dict[str, Any], rank: int) -> dict | None:
    """The RNG states rank `rank` resumes with from checkpoint `saved`: its own from the run's
    last segment; None for a rank that segment did not have (it keeps its states as seeded
    from the master seed and its rank)."""
    ranks = saved.get("rng_ranks")
    if ranks is None:
        return saved["rng"] if rank == 0 else None
    return ranks[rank] if rank < len(ranks) else None


class RankPrefixed:
    """A console stream of a rank other than 0: each line it writes starts `[rank N] `, so a
    warning or an error of that rank is told apart from rank 0's."""

    def __init__(self, stream: Any, rank: int) -> None:
        self.stream, self.prefix, self.at_line_start = stream, f"[rank {rank}] ", True

    def write(self, text: str) -> int:
        out = []
        for line in text.splitlines(keepends=True):
            out.append(self.prefix + line if self.at_line_start else line)
            self.at_line_start = line.endswith("\n")
        self.stream.write("".join(out))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def speak_only_as_rank_0(rank: int) -> None:
    """One console for a distributed run: on a rank other than 0, the console (stdout,
    stderr) says warnings and errors only, each line prefixed with the rank. Call once the
    logging is configured (Hydra configures it as a job starts); its log file keeps all."""
    if rank == 0:
        return
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, RankPrefixed):
            setattr(sys, name, RankPrefixed(stream, rank))
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:  # the console, not a log file
            handler.setLevel(max(handler.level, logging.WARNING))
            if not isinstance(handler.stream, RankPrefixed):
                handler.setStream(RankPrefixed(handler.stream, rank))


def _export_submitit_environment() -> None:
    """In a submitit task, set the env:// variables (RANK, WORLD_SIZE, MASTER_ADDR, ...)."""
    if "RANK" in os.environ or "SUBMITIT_EXECUTOR" not in os.environ:
        return
    from submitit.helpers import TorchDistributedEnvironment

    # Keep every GPU visible: the device is chosen by LOCAL_RANK, as under torchrun.
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def init_distributed(device: torch.device) -> RankInfo:
    """Join the process group (env:// rendezvous) and pick this rank's device."""
    _export_submitit_environment()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ConfigError(
            "trainer.distributed",
            True,
            "false unless started by torchrun or as the tasks of a submitit job "
            "(RANK and WORLD_SIZE are not set)",
        )
    info = RankInfo(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info


def rank_device(device: torch.device, info: RankInfo) -> torch.device:
    """This rank's device: cuda:<local rank> on GPUs, the CPU as it is."""
    return torch.device("cuda", info.local_rank) if device.type == "cuda" else device


def teardown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather_rng_states() -> list[dict]:
    """Every rank's RNG states, in rank order, for rank 0's checkpoint (a collective)."""
    states: list[dict] = [{} for _ in range(dist.get_world_size())]
    dist.all_gather_object(states, capture_rng_states())
    return states


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """`values` averaged over the ranks of a distributed run (a collective), as they are in
    one process: a logged training loss is the global batch's, whatever the world size."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    total = values.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / dist.get_world_size()


def agree_on_signal(signum: int | None, device: torch.device) -> int | None:
    """The stop signal any rank has received (a collective, once a step): all ranks then
    checkpoint and stop after the same step, so their collectives stay in step."""
    flag = torch.tensor([signum or 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None
