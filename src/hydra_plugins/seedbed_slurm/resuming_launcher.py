"""`hydra/launcher=slurm`: Hydra's submitit SLURM launcher, whose requeued jobs resume their run.

On a timeout or a preemption, submitit calls the launcher's `checkpoint` inside the running
job and requeues what it returns (at most `hydra.launcher.max_num_timeout` times). Hydra's own
launcher requeues the job exactly as it was submitted, which would train again from step 0
into the same run directory; this one adds `resume=<the job's run directory>`, so that the
requeued job continues from the run's last checkpoint.

It lives in the `hydra_plugins` namespace because Hydra only instantiates launchers from
there, and it is defined only where the `slurm` extra is installed (Hydra imports every
plugin module at start-up).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from hydra.core.hydra_config import HydraConfig


def resume_overrides(overrides: Sequence[str], run_dir: str) -> list[str]:
    """The job's overrides, resuming from `run_dir` (replacing any earlier resume path).

    Written as `resume.path=`: these overrides go to Hydra directly, not through the command
    line's `resume=` shorthand."""
    kept = [o for o in overrides if not o.startswith(("resume=", "resume.path="))]
    return [*kept, f"resume.path={run_dir}"]


if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    class ResumingSlurmLauncher(SlurmLauncher):
        """SlurmLauncher whose requeued jobs get `resume.path=<their run dir>`."""

        def checkpoint(self, sweep_overrides: Sequence[str], *args: Any, **kwargs: Any) -> Any:
            run_dir = HydraConfig.get().runtime.output_dir  # set by Hydra for the running job
            overrides = resume_overrides(sweep_overrides, run_dir)
            return super().checkpoint(overrides, *args, **kwargs)
