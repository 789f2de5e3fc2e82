"""Optimizer and learning-rate scheduler, built from their config groups by `_target_`.

Every scheduler but `plateau` is stepped once per optimizer step, so its
position is a pure function of the step counter; `build_scheduler` converts
epoch-based settings (`step`'s `step_size`) into optimizer steps and sizes the
schedules that span the run (`cosine`'s `T_max`, `onecycle`'s and
`warmup_cosine`'s `total_steps`, when null) from its total optimizer steps.
`plateau` (ReduceLROnPlateau) is stepped on `task.monitor` after each
validation instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau

from seedbed.core.errors import ConfigError
from seedbed.task import Monitor

# Schedule keys that, left null, size the schedule from the run's length (cosine's T_max,
# onecycle's and warmup_cosine's total_steps): a resume refuses more epochs for them.
RUN_LENGTH_KEYS = ("T_max", "total_steps")


def spans_the_run(sched: DictConfig) -> bool:
    """Whether the schedule is sized from the run's length (trainer.epochs)."""
    return any(key in sched and sched[key] is None for key in RUN_LENGTH_KEYS)


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: DictConfig) -> torch.optim.Optimizer:
    """The optimizer of `cfg` (`optim` group) over `params`."""
    return instantiate(cfg, params=list(params), _convert_="all")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: DictConfig,
    total_steps: int,
    steps_per_epoch: int,
    monitor: Monitor | None = None,
) -> LRScheduler | None:
    """The scheduler of `cfg` (`sched` group); None for `none`. `total_steps` and
    `steps_per_epoch` count optimizer steps; `monitor` is what `plateau` watches."""
    if cfg.get("_target_") is None:
        return None
    options = OmegaConf.to_container(cfg, resolve=True)
    for key in RUN_LENGTH_KEYS:
        if key in options and options[key] is None:
            options[key] = max(1, total_steps)
    if is_onecycle_target(options["_target_"]) and options.get("total_steps", 0) < total_steps:
        # OneCycleLR raises at the step past its cycle: refuse before the first step instead.
        raise ConfigError(
            "sched.total_steps",
            options["total_steps"],
            f"an int >= {total_steps} (this run's optimizer steps: the cycle must cover them) "
            "or null (the whole run)",
        )
    if "step_size" in options:
        options["step_size"] = max(1, options["step_size"] * steps_per_epoch)
    if options.get("max_lr", 0) is None:  # onecycle peaks at optim.lr unless told otherwise
        options["max_lr"] = optimizer.param_groups[0]["lr"]
    if is_plateau_target(options["_target_"]):
        if monitor is None:
            raise ConfigError(
                "sched", "plateau", "a task with a monitored metric (task.monitor): this has none"
            )
        if options.get("mode") is None:
            options["mode"] = monitor.mode
    return instantiate(options, optimizer=optimizer, _convert_="all")


def is_plateau_target(target: str) -> bool:
    return target.rsplit(".", 1)[-1] == ReduceLROnPlateau.__name__


def is_onecycle_target(target: str) -> bool:
    return target.rsplit(".", 1)[-1] == OneCycleLR.__name__


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int | None = None,
    warmup_fraction: float = 0.05,
    eta_min: float = 0.0,
) -> LambdaLR:
    """A linear rise to each group's learning rate over `warmup_steps` (null:
    `warmup_fraction` of `total_steps`), then a half cosine down to `eta_min`, reached by
    the last of `total_steps` steps. A LambdaLR: its position (`last_epoch`) is its state."""
    if warmup_steps is None:
        warmup_steps = int(warmup_fraction * total_steps)
    warmup_steps = min(warmup_steps, total_steps)
    decay_steps = max(1, total_steps - warmup_steps - 1)  # the last step uses eta_min

    def factor_for(base_lr: float) -> Callable[[int], float]:
        floor = eta_min / base_lr if base_lr > 0 else 0.0

        def factor(step: int) -> float:
            if step < warmup_steps:  # step 0 already learns: (s + 1) / (warmup + 1)
                return (step + 1) / (warmup_steps + 1)
            progress = min(1.0, (step - warmup_steps) / decay_steps)
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

        return factor

    return LambdaLR(optimizer, [factor_for(group["lr"]) for group in optimizer.param_groups])
