"""Says early, in one line, when a run is not learning: a warning, never an error.

After the first epoch's validation the monitored metric is compared with what a constant
prediction scores on the same split (`seedbed.task.constant_baseline`: the most frequent
class, the mean target). A run that does no better has learned nothing a constant could
not, and the line names the settings that are the usual cause, with their values. The
check reads the validation metrics the loop computes anyway: it costs nothing per step and
does not change the run.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from seedbed.loop import LoopState
from seedbed.task import constant_baseline

log = logging.getLogger("seedbed")


class NotLearningWarning:
    """A validation hook: warn once, at the end of the first epoch, if the monitored metric
    is no better than a constant prediction's."""

    def __init__(self, task: Any, data: Any, cfg: DictConfig) -> None:
        self.monitor = task.monitor
        self.baseline = constant_baseline(task, data)
        self.knobs = knobs(cfg)

    def __call__(self, state: LoopState, val: dict[str, float]) -> None:
        if self.baseline is None or not (state.epoch == 1 and state.batch == 0):
            return  # only the first epoch's end (a resumed run past it has passed it)
        metric = self.monitor.metric
        value, constant = val[metric], self.baseline[metric]
        if self.monitor.improves(value, constant):
            return
        log.warning(
            "not learning: after epoch 1, %s %.4g is no better than a constant prediction's "
            "%.4g; try %s",
            metric,
            value,
            constant,
            self.knobs,
        )


def knobs(cfg: DictConfig) -> str:
    """The settings worth trying, with the values this run has."""
    tries = [f"a lower optim.lr (now {cfg.optim.get('lr')})"]
    if "sgd" in str(cfg.optim.get("_target_", "")).lower():
        tries.append("optim=adamw")
    if cfg.trainer.get("grad_clip") is None:
        tries.append("trainer.grad_clip=1.0")
    if cfg.data.get("normalize") == "none":
        tries.append("data.normalize=standard")
    if cfg.task.get("normalize_targets") == "none":
        tries.append("task.normalize_targets=standard")
    tries.append("more trainer.epochs")
    return ", ".join(tries)
