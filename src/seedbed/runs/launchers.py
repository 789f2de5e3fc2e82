"""What a training job needs to know about the launcher that started it.

A parallel sweep (`hydra/launcher=joblib`) runs `n_jobs` trainings at once on
one machine: each job gets `cores // n_jobs` torch threads unless
`trainer.threads` says otherwise, so that jobs do not oversubscribe the cores
(the count is recorded in run.json: some CPU kernels give different bits with
a different thread count). Jobs run in joblib's loky worker processes, whose
default multiprocessing context cannot start DataLoader workers, so the
DataLoader is given the `fork` context there.
"""

from __future__ import annotations

import multiprocessing
import os

from hydra.core.hydra_config import HydraConfig


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


def job_threads(requested: int | None) -> int | None:
    """torch threads for this job: `requested`, else a fair share of the cores in a parallel
    sweep, else None (PyTorch's default)."""
    if requested is not None:
        return requested
    jobs = parallel_jobs()
    return max(available_cores() // jobs, 1) if jobs > 1 else None


def dataloader_context() -> str | None:
    """`fork` inside a loky worker (its own context has no `Process.env`); else the default."""
    return "fork" if multiprocessing.get_start_method(allow_none=True) == "loky" else None
