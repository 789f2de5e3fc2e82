"""Batches for an epoch: the order is a function of (data seed, epoch), never of history.

`EpochBatches` serves the batches of one epoch, from any batch position (which
is all a mid-epoch resume needs). In-memory data without a per-sample
transform and `num_workers=0` is served by tensor indexing; everything else
goes through a `torch.utils.data.DataLoader` fed by the same batch sampler, so
both paths give exactly the same batches, and any `num_workers` gives the same
results.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from seedbed.core.errors import ConfigError, require
from seedbed.core.launchers import dataloader_context
from seedbed.core.seeding import Seeds, child_seed
from seedbed.data.arrays import ArrayDataset, DataSplits


def epoch_permutation(seed: int, epoch: int, n: int) -> Tensor:
    """The order of the `n` samples in `epoch`: drawn from a generator keyed by (seed, epoch)."""
    generator = torch.Generator().manual_seed(child_seed(seed, epoch))
    return torch.randperm(n, generator=generator)


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields the batches of the current epoch as lists of (epoch, index), from `start_batch`.

    With `world_size` > 1 (distributed training), every rank draws the same permutation and
    takes every `world_size`-th sample from position `rank`, as `DistributedSampler` does; the
    permutation is first padded with its own beginning to a multiple of `world_size`, so that
    all ranks run the same number of steps (`padded` samples are seen twice per epoch).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.rank, self.world_size = rank, world_size
        self.padded = -n % world_size
        self.shard_size = (n + self.padded) // world_size
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        full, rest = divmod(self.shard_size, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def batch_indices(self) -> Iterator[Tensor]:
        """The index tensor of each remaining batch of the current epoch."""
        if self.shuffle:
            order = epoch_permutation(self.seed, self.epoch, self.n)
        else:
            order = torch.arange(self.n)
        if self.world_size > 1:
            order = torch.cat([order, order[: self.padded]])[self.rank :: self.world_size]
        for b in range(self.start_batch, len(self)):
            yield order[b * self.batch_size : (b + 1) * self.batch_size]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for indices in self.batch_indices():
            yield [(self.epoch, i) for i in indices.tolist()]


class EpochBatches:
    """The training (or validation) batches of one epoch, by whichever path is fastest."""

    def __init__(
        self,
        dataset: ArrayDataset,
        sampler: EpochBatchSampler,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
        generator: torch.Generator | None = None,
        multiprocessing_context: str | None = None,
    ) -> None:
        self.dataset, self.sampler = dataset, sampler
        self.direct = num_workers == 0 and not dataset.has_transform
        self.pin_memory = pin_memory
        self.loader: DataLoader | None = None
        self.generator = generator if generator is not None else torch.Generator()
        self.epoch_start_generator_state = self.generator.get_state()
        if not self.direct:
            # An explicit generator: otherwise each new iterator draws its worker base seed
            # from the global torch RNG and shifts dropout by whether a DataLoader is used.
            self.loader = DataLoader(
                dataset,
                batch_sampler=sampler,
                num_workers=num_workers,
                pin_memory=pin_memory,
                persistent_workers=persistent_workers,
                prefetch_factor=prefetch_factor,
                generator=self.generator,
                multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
            )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch, start_batch)

    def __len__(self) -> int:
        return len(self.sampler)

    def state_dict(self) -> dict[str, Tensor]:
        # The DataLoader draws its workers' base seed from the generator as an epoch's
        # iterator starts: a resumed epoch restarts from the state before that draw.
        return {"generator": self.epoch_start_generator_state}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])
        self.epoch_start_generator_state = state["generator"]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.loader is not None:
            self.epoch_start_generator_state = self.generator.get_state()
            batches = iter(self.loader)
            try:
                yield from batches
            except Exception:
                # A sample that cannot be loaded ends the run, and its traceback keeps this
                # iterator alive: stop the workers now. Left to a later garbage collection
                # (a notebook's, the next in-process run's), the shutdown waited 5 s per worker.
                shutdown = getattr(batches, "_shutdown_workers", None)
                if shutdown is not None:
                    shutdown()
                raise
            return
        for indices in self.sampler.batch_indices():
            x, y = self.dataset.batch(indices.to(self.dataset.x.device))
            if self.pin_memory and x.device.type == "cpu":  # on_device data needs no pinning
                x, y = x.pin_memory(), y.pin_memory()
            yield x, y


def build_batches(
    data: DataSplits,
    loader: Any,
    seeds: Seeds,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str = "cpu",
) -> tuple[EpochBatches, EpochBatches]:
    """Training batches (shuffled per epoch from the data stream, this rank's shard of them)
    and validation batches (all of them, on every rank), as `loader` (the config group) says;
    with `loader.on_device`, in-memory splits are moved to `device` first."""
    if loader.get("on_device", False):
        move_to_device(data, device)
    train_sampler = EpochBatchSampler(
        len(data.train),
        loader.batch_size,
        seed=seeds.streams["data"],
        shuffle=loader.shuffle,
        drop_last=loader.drop_last,
        rank=rank,
        world_size=world_size,
    )
    train = EpochBatches(
        data.train.with_augment_seed(seeds.streams["augment"]),
        train_sampler,
        generator=seeds.generator("data"),
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        persistent_workers=loader.persistent_workers,
        prefetch_factor=loader.prefetch_factor,
        multiprocessing_context=dataloader_context(),
    )
    return train, eval_batches(data.val, loader.batch_size, loader.pin_memory)


def move_to_device(data: DataSplits, device: torch.device | str) -> None:
    """Every split's tensors on `device`, so batches are indexed there (no host copy per
    step). Only for in-memory data without a per-sample transform: a transform runs per
    sample on the host."""
    for name, dataset in data.splits().items():
        if dataset.has_transform or not isinstance(dataset, ArrayDataset):
            raise ConfigError(
                "loader.on_device",
                True,
                f"false for data with a per-sample transform or not in memory (the {name} "
                "split has one: data.augment, transforms or files)",
            )
        dataset.x, dataset.y = dataset.x.to(device), dataset.y.to(device)


def eval_batches(dataset: ArrayDataset, batch_size: int, pin_memory: bool = False) -> EpochBatches:
    """Every sample of `dataset` once, in order, unaugmented: for validation and eval.py."""
    sampler = EpochBatchSampler(len(dataset), batch_size, seed=0, shuffle=False)
    return EpochBatches(dataset, sampler, pin_memory=pin_memory)


@dataclass
class LoaderConfig:
    """How batches are served. None of these change the results, only the speed."""

    batch_size: int = 64
    """Samples per batch (> 0)."""
    shuffle: bool = True
    """Shuffle the training split each epoch (the order is a function of the data seed and
    the epoch)."""
    num_workers: int = 0
    """DataLoader worker processes; 0 serves in-memory data by direct batch indexing."""
    pin_memory: bool = False
    """Page-locked host memory for faster copies to the GPU."""
    persistent_workers: bool = False
    """Keep worker processes alive between epochs (needs num_workers > 0)."""
    prefetch_factor: int | None = None
    """Batches each worker loads ahead (needs num_workers > 0); null is PyTorch's default."""
    drop_last: bool = False
    """Drop the last incomplete training batch of each epoch."""
    on_device: bool = False
    """Keep in-memory data (without per-sample augmentation) on the training device and index
    batches there: no host-to-device copy per step, so small models are not host-bound.
    Needs num_workers=0."""


def check_loader(loader: DictConfig) -> None:
    require(loader.batch_size > 0, "loader.batch_size", loader.batch_size, "an int > 0")
    workers, prefetch = loader.num_workers, loader.prefetch_factor
    require(workers >= 0, "loader.num_workers", workers, "an int >= 0")
    require(
        not (loader.on_device and workers > 0),
        "loader.on_device",
        True,
        "false when loader.num_workers > 0 (data on the device is indexed in this process)",
    )
    if workers == 0:
        require(
            not loader.persistent_workers,
            "loader.persistent_workers",
            True,
            "false when loader.num_workers=0",
        )
        require(
            prefetch is None, "loader.prefetch_factor", prefetch, "null when loader.num_workers=0"
        )
    else:
        require(
            prefetch is None or prefetch > 0,
            "loader.prefetch_factor",
            prefetch,
            "an int > 0 or null",
        )
