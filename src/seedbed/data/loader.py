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
    """Yields this rank's micro-batches of the current epoch as lists of (epoch, index), from
    micro-batch `start_batch`.

    The run is defined by its global batch: one optimizer step takes `batch_size` x
    `world_size` x `accumulate` samples, the next slice of the epoch's order, whatever the
    world size. The epoch's order (a function of the data seed and the epoch) is first made a
    whole number of global batches, the same way for every world size: cut to the last whole
    one with `drop_last`, else padded with its own beginning (`padded` samples are seen twice
    in the epoch). A global batch is taken `accumulate` windows in turn; each window is cut
    into `world_size` consecutive micro-batches, rank r taking the r-th: so one process with
    `accumulate` x `world_size` accumulation takes the same micro-batches in the same order.
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
        accumulate: int = 1,
        pad_last: bool = True,
    ) -> None:
        """`pad_last=False` (validation, eval): the last batch is short, nothing is seen
        twice; for one process only."""
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.rank, self.world_size, self.accumulate = rank, world_size, accumulate
        self.global_batch = batch_size * world_size * accumulate
        whole, rest = divmod(n, self.global_batch)
        self.steps = whole if drop_last or rest == 0 else whole + 1
        self.padded = self.steps * self.global_batch - n if pad_last and not drop_last else 0
        self.dropped = rest if drop_last else 0
        self.epoch, self.start_batch = 0, 0
        self._order: tuple[int, Tensor] | None = None

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        """Micro-batches of this rank per epoch: `accumulate` per optimizer step."""
        return self.steps * self.accumulate

    def epoch_order(self, epoch: int) -> Tensor:
        """The epoch's samples, whole global batches of them, the same for every world size."""
        if self._order is not None and self._order[0] == epoch:
            return self._order[1]
        if self.shuffle:
            order = epoch_permutation(self.seed, epoch, self.n)
        else:
            order = torch.arange(self.n)
        total = min(self.steps * self.global_batch, self.n + self.padded)
        if total > self.n:  # padded with the order's own beginning (repeated if n is small)
            order = order.repeat(-(-total // self.n))
        order = order[:total]
        self._order = (epoch, order)
        return order

    def global_batch_indices(self, epoch: int, step: int) -> Tensor:
        """The samples of the `step`-th optimizer step of `epoch` (counted from 0), all ranks'."""
        order = self.epoch_order(epoch)
        return order[step * self.global_batch : (step + 1) * self.global_batch]

    def micro_batch_indices(self, epoch: int, batch: int) -> Tensor:
        """The samples of this rank's `batch`-th micro-batch of `epoch` (counted from 0)."""
        step, window = divmod(batch, self.accumulate)
        start = step * self.global_batch + (window * self.world_size + self.rank) * self.batch_size
        return self.epoch_order(epoch)[start : start + self.batch_size]

    def batch_indices(self) -> Iterator[Tensor]:
        """The index tensor of each remaining micro-batch of the current epoch."""
        for b in range(self.start_batch, len(self)):
            yield self.micro_batch_indices(self.epoch, b)

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
        # The samples of each micro-batch served since `take_served()` (training only): what
        # the run records per optimizer step and checks against its global batch.
        self.track_served = False
        self.served: list[Tensor] = []
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

    def take_served(self) -> Tensor:
        """The samples served since the last call, in order (empty unless `track_served`)."""
        served, self.served = self.served, []
        return torch.cat(served) if served else torch.zeros(0, dtype=torch.long)

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
            self.served.clear()
            batches = iter(self.loader)
            first = self.sampler.start_batch
            try:
                # The loader keeps the sampler's order: the k-th batch is micro-batch first + k.
                for k, batch in enumerate(batches):
                    if self.track_served:
                        self.served.append(
                            self.sampler.micro_batch_indices(self.sampler.epoch, first + k)
                        )
                    yield batch
            except Exception:
                # A sample that cannot be loaded ends the run, and its traceback keeps this
                # iterator alive: stop the workers now. Left to a later garbage collection
                # (a notebook's, the next in-process run's), the shutdown waited 5 s per worker.
                shutdown = getattr(batches, "_shutdown_workers", None)
                if shutdown is not None:
                    shutdown()
                raise
            return
        self.served.clear()
        for indices in self.sampler.batch_indices():
            if self.track_served:
                self.served.append(indices)
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
    accumulate: int = 1,
) -> tuple[EpochBatches, EpochBatches]:
    """Training batches (this rank's micro-batches of each epoch's global batches, the order
    shuffled per epoch from the data stream) and validation batches (all of them, on every
    rank), as `loader` (the config group) says; with `loader.on_device`, in-memory splits are
    moved to `device` first. `accumulate`: micro-batches per optimizer step."""
    if loader.get("on_device", False):
        move_to_device(data, device)
    micro = micro_batch_size(loader, world_size, accumulate)
    train_sampler = EpochBatchSampler(
        len(data.train),
        micro,
        seed=seeds.streams["data"],
        shuffle=loader.shuffle,
        drop_last=loader.drop_last,
        rank=rank,
        world_size=world_size,
        accumulate=accumulate,
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
    train.track_served = True
    return train, eval_batches(data.val, loader.batch_size, loader.pin_memory)


def global_batch_size(loader: Any, accumulate: int) -> int:
    """Samples per optimizer step: `loader.global_batch_size`, or when null what one process
    takes per step, `loader.batch_size` x `accumulate` (so a config means the same run on
    any number of processes)."""
    given = loader.get("global_batch_size")
    return int(given) if given is not None else loader.batch_size * accumulate


def micro_batch_size(loader: Any, world_size: int, accumulate: int) -> int:
    """Samples per forward pass on each rank: the global batch over world size x accumulation.
    A global batch they do not divide is refused, naming the global batches that work."""
    total = global_batch_size(loader, accumulate)
    parts = world_size * accumulate
    if total % parts != 0:
        key = (
            "loader.global_batch_size"
            if loader.get("global_batch_size") is not None
            else ("loader.batch_size")
        )
        nearby = sorted({max(parts, total - total % parts), total - total % parts + parts})
        raise ConfigError(
            key,
            loader.get("global_batch_size") or loader.batch_size,
            f"a global batch divisible by world size x trainer.accumulate_grad_batches = "
            f"{world_size} x {accumulate} = {parts}: e.g. loader.global_batch_size="
            f"{' or '.join(str(v) for v in nearby)} (global = world x micro-batch x accumulation)",
        )
    return total // parts


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
    sampler = EpochBatchSampler(len(dataset), batch_size, seed=0, shuffle=False, pad_last=False)
    return EpochBatches(dataset, sampler, pin_memory=pin_memory)


@dataclass
class LoaderConfig:
    """How batches are served. batch_size, global_batch_size, shuffle and drop_last define the
    run's batches; the others change only the speed."""

    batch_size: int = 64
    """Samples per batch of a one-process run (> 0), and per validation batch. With
    `global_batch_size` null, a step takes batch_size x trainer.accumulate_grad_batches
    samples on any number of processes."""
    global_batch_size: int | None = None
    """Samples per optimizer step over all ranks and accumulated batches (> 0); each rank's
    micro-batch is this / (world size x trainer.accumulate_grad_batches), which must divide
    it. null: loader.batch_size x trainer.accumulate_grad_batches."""
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
    """Drop the epoch's last incomplete global batch; false: fill it up with the epoch's
    first samples (the same for every world size)."""
    on_device: bool = False
    """Keep in-memory data (without per-sample augmentation) on the training device and index
    batches there: no host-to-device copy per step, so small models are not host-bound.
    Needs num_workers=0."""


def check_loader(loader: DictConfig) -> None:
    require(loader.batch_size > 0, "loader.batch_size", loader.batch_size, "an int > 0")
    given = loader.get("global_batch_size")
    require(given is None or given > 0, "loader.global_batch_size", given, "an int > 0 or null")
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
