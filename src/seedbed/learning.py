"""Says early, in one line, when a run is not learning: a warning, never an error.

After the validation of the first epoch that ends at least MIN_STEPS optimizer steps into
the run (epoch 1 on all but small data; the last epoch of a shorter run), the monitored
metric is compared with what a constant prediction scores on the same split
(`seedbed.task.constant_baseline`: the most frequent class, the mean target). A run that
does no better has learned nothing a constant could not, and the line names the settings
that are the usual cause, with their values. The check reads the validation metrics the
loop computes anyway: it costs nothing per step and does not change the run.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from omegaconf import DictConfig

from seedbed.loop import LoopState
from seedbed.task import constant_baseline

log = logging.getLogger("seedbed")

# Optimizer steps a run has before it is judged. An epoch of a few steps has not had the
# time: at the defaults, scikit-learn's diabetes (353 training samples: 6 steps of 64) is
# worse than its mean after epoch 1 and better from epoch 2 on.
MIN_STEPS = 50


def judged_epoch(steps_per_epoch: int, epochs: int) -> int:
    """The epoch after which a run is judged: the first to end MIN_STEPS steps or more into
    the run, or the last one."""
    return max(1, min(epochs, math.ceil(MIN_STEPS / max(1, steps_per_epoch))))


class NotLearningWarning:
    """A callback: warn once, at the end of epoch `epoch` (see `judged_epoch`), if the
    monitored metric is no better than a constant prediction's."""

    def __init__(self, task: Any, data: Any, cfg: DictConfig, epoch: int) -> None:
        self.monitor = task.monitor
        self.baseline = constant_baseline(task, data)
        self.knobs = knobs(cfg)
        self.epoch = epoch

    def on_validation(self, state: LoopState, val: dict[str, float]) -> None:
        if self.baseline is None or not (state.epoch == self.epoch and state.batch == 0):
            return  # only that epoch's end (a resumed run past it has passed it)
        metric = self.monitor.metric
        value, constant = val[metric], self.baseline[metric]
        if self.monitor.improves(value, constant):
            return
        log.warning(
            "not learning: after epoch %d (%d steps), %s %.4g is no better than a constant "
            "prediction's %.4g; try %s",
            state.epoch,
            state.step,
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
