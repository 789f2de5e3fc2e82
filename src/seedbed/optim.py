"""Optimizer and learning-rate scheduler, built from their config groups by `_target_`.

Every scheduler is stepped once per optimizer step, so its position is a pure
function of the step counter; `build_scheduler` converts epoch-based settings
(`step`'s `step_size`) into steps.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: DictConfig) -> torch.optim.Optimizer:
    """The optimizer of `cfg` (`optim` group) over `params`."""
    return instantiate(cfg, params=list(params), _convert_="all")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: DictConfig, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The scheduler of `cfg` (`sched` group), stepped per optimizer step; None for `none`."""
    if cfg.get("_target_") is None:
        return None
    options = OmegaConf.to_container(cfg, resolve=True)
    if "T_max" in options and options["T_max"] is None:
        options["T_max"] = max(1, total_steps)
    if "step_size" in options:
        options["step_size"] = max(1, options["step_size"] * steps_per_epoch)
    return instantiate(options, optimizer=optimizer, _convert_="all")
