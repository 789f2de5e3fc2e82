"""What a training job needs to know about the launcher that started it.

Threads are part of what a run is: `trainer.threads` is 1 unless a config says
otherwise, so a seed gives the same bits alone and in any sweep. With
`trainer.threads=null` a job takes a fair share of the cores instead
(`cores // n_jobs` in a joblib sweep), and the number chosen is written into
the run's config.yaml, so that a rerun of that file uses it. Jobs of a joblib
sweep run in loky worker processes, whose default multiprocessing context
cannot start DataLoader workers, so the DataLoader is given the `fork` context
there.
"""

from __future__ import annotations

import copy
import multiprocessing
import os

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


def available_cores() -> int:
    """CPU cores this process may run on (affinity and cgroup-aware where the OS says so)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parallel_jobs() -> int:
    """How many jobs the launcher runs at once on this machine: joblib's n_jobs, else 1."""
    if not HydraConfig.initialized():
        return 1
    n_jobs = HydraConfig.get().launcher.get("n_jobs")
    if n_jobs is None:
        return 1
    if n_jobs < 0:  # joblib's convention: -1 is every core, -2 all but one, ...
        return max(available_cores() + 1 + n_jobs, 1)
    return max(int(n_jobs), 1)


def job_threads(requested: int | None) -> int:
    """torch threads for this job: `requested`, else a fair share of the cores."""
    if requested is not None:
        return requested
    return max(available_cores() // parallel_jobs(), 1)


def oversubscription(threads: int) -> str | None:
    """A warning when this job's threads times the jobs running at once exceed the cores."""
    jobs, cores = parallel_jobs(), available_cores()
    if jobs * threads <= cores:
        return None
    return (
        f"{jobs} parallel jobs x trainer.threads={threads} on {cores} cores: the jobs "
        "oversubscribe the cores and slow each other down (results are not affected)"
    )


def with_threads_resolved(cfg: DictConfig) -> DictConfig:
    """A copy of `cfg` whose `trainer.threads` is the number this job uses (never null), so
    that config.yaml records it."""
    if cfg.trainer.threads is not None:
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg.trainer.threads = job_threads(None)
    return cfg


def dataloader_context() -> str | None:
    """`fork` inside a loky worker (its own context has no `Process.env`); else the default."""
    return "fork" if multiprocessing.get_start_method(allow_none=True) == "loky" else None
