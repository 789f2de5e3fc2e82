"""One master seed, independent named streams.

`derive_seeds(seed)` gives one seed per source of randomness through
`numpy.random.SeedSequence`, keyed by the stream's name, so adding a stream
never shifts the others and pinning one (`seeds.init=7`) leaves the rest as
they were. `seed_everything` seeds the global RNGs from their streams and
returns the seeds actually used; the run record stores them.

Randomness that depends on a counter (the shuffle of epoch e, the augmentation
of sample i in epoch e) is drawn from a child of its stream keyed by that
counter: see `child_seed`. `capture_rng_states` / `restore_rng_states` save and
restore every RNG a run draws from, for an exact resume.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from seedbed.core.errors import require

STREAMS = ("init", "data", "augment", "torch", "python", "numpy")
# What every rank of a distributed run shares: the initial weights, one data order, and the
# augmentation of a sample (keyed by its index). The other streams are drawn per rank.
SHARED_STREAMS = ("init", "data", "augment")


def _stream_key(name: str) -> int:
    # A stable key per name: the derived seeds do not depend on the order of STREAMS.
    return zlib.crc32(name.encode())


def child_seed(seed: int, *counters: int) -> int:
    """A 32-bit seed for (seed, counters...), statistically independent of its siblings."""
    sequence = np.random.SeedSequence(entropy=seed, spawn_key=tuple(counters))
    return int(sequence.generate_state(1, np.uint32)[0])


def derive_seeds(seed: int, pinned: Mapping[str, int | None] | None = None) -> dict[str, int]:
    """One seed per stream: the pinned value where given, else derived from `seed`."""
    pinned = pinned or {}
    unknown = set(pinned) - set(STREAMS)
    if unknown:
        raise KeyError(f"unknown seed streams {sorted(unknown)}; streams are {STREAMS}")
    return {
        name: pinned[name] if pinned.get(name) is not None else child_seed(seed, _stream_key(name))
        for name in STREAMS
    }


@dataclass(frozen=True)
class Seeds:
    """The seeds a run uses: the master seed and one per stream."""

    seed: int
    streams: dict[str, int]

    def generator(self, stream: str, device: str | torch.device = "cpu") -> torch.Generator:
        """A fresh torch.Generator seeded from `stream` alone."""
        return torch.Generator(device=device).manual_seed(self.streams[stream])

    def as_record(self) -> dict[str, Any]:
        return {"seed": self.seed, "streams": dict(self.streams)}


def rank_streams(streams: Mapping[str, int], rank: int) -> dict[str, int]:
    """The streams of one rank of a distributed run: shared ones as they are, the others keyed
    by the rank, so that dropout differs between ranks and stays reproducible."""
    return {
        name: value if name in SHARED_STREAMS else child_seed(value, rank)
        for name, value in streams.items()
    }


def seed_everything(
    seed: int, pinned: Mapping[str, int | None] | None = None, rank: int | None = None
) -> Seeds:
    """Seed Python, NumPy's global RNG and torch (CPU and every CUDA device) from their streams;
    `rank` (distributed runs only) gives each rank its own non-shared streams."""
    streams = derive_seeds(seed, pinned)
    if rank is not None:
        streams = rank_streams(streams, rank)
    seeds = Seeds(seed=seed, streams=streams)
    random.seed(seeds.streams["python"])
    np.random.seed(seeds.streams["numpy"])
    torch.manual_seed(seeds.streams["torch"])  # also seeds every CUDA device, lazily
    return seeds


def capture_rng_states(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every global RNG state (Python, NumPy, torch CPU, each CUDA device) and `generators`'.

    Only plain values and CPU tensors, so `torch.load(weights_only=True)` can read them.
    Reading CUDA generator states does not synchronise the device.
    """
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            **numpy_state,
            "state": {**numpy_state["state"], "key": numpy_state["state"]["key"].tolist()},
        },
        "torch": torch.get_rng_state(),
        # An uninitialised CUDA still holds its seeded default state: nothing to save.
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }


def restore_rng_states(
    states: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None
) -> None:
    """Put back what `capture_rng_states` saved; `generators` are restored by name."""
    random.setstate(states["python"])
    numpy_state = states["numpy"]
    key = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state({**numpy_state, "state": {**numpy_state["state"], "key": key}})
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        if len(states["cuda"]) != torch.cuda.device_count():
            raise RuntimeError(
                f"the checkpoint holds the RNG states of {len(states['cuda'])} CUDA devices; "
                f"this machine has {torch.cuda.device_count()}"
            )
        torch.cuda.set_rng_state_all(states["cuda"])
    for name, generator in (generators or {}).items():
        generator.set_state(states["generators"][name])


@dataclass
class SeedsConfig:
    """Pin one stream's seed; a stream left at null is derived from the top-level `seed`."""

    init: int | None = None
    """Weight initialisation."""
    data: int | None = None
    """Data order: the shuffle of each epoch."""
    augment: int | None = None
    """Per-sample augmentation."""
    torch: int | None = None
    """The global torch RNG (CPU and every CUDA device): dropout and any op without a generator."""
    python: int | None = None
    """Python's `random` module."""
    numpy: int | None = None
    """NumPy's legacy global RNG (`np.random.*`)."""


SEED_MAX = 2**32 - 1


def check_seeds(cfg: DictConfig) -> None:
    """`seed` and every pinned stream's seed: ints in [0, 2**32-1]."""
    allowed = f"an int in [0, {SEED_MAX}] (2**32-1)"
    require(0 <= cfg.seed <= SEED_MAX, "seed", cfg.seed, allowed)
    for stream, value in cfg.seeds.items():
        if value is not None:
            require(0 <= value <= SEED_MAX, f"seeds.{stream}", value, allowed)
