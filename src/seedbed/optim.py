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
from dataclasses import dataclass, field

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau

from seedbed.core.errors import ConfigError, require, require_at_least, require_choice
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


@dataclass
class SGDConfig:
    """Stochastic gradient descent with momentum (`optim=sgd`; the default is AdamW). lr 0.05
    suits the synthetic default, not every model: on the digits as images it stays at chance."""

    _target_: str = "torch.optim.SGD"
    lr: float = 0.05
    """Learning rate (> 0)."""
    momentum: float = 0.9
    """Momentum factor."""
    weight_decay: float = 0.0
    """L2 penalty."""
    nesterov: bool = False
    """Nesterov momentum."""


@dataclass
class AdamWConfig:
    """Adam with decoupled weight decay: the default for every packaged model and task, chosen
    from runs on real data (docs/real-data.md)."""

    _target_: str = "torch.optim.AdamW"
    lr: float = 1e-3
    """Learning rate (> 0)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """Coefficients of the running averages of the gradient and its square."""
    weight_decay: float = 0.01
    """Decoupled weight decay."""
    eps: float = 1e-8
    """Added to the denominator for numerical stability."""


@dataclass
class NoSchedConfig:
    """A constant learning rate."""

    _target_: str | None = None


@dataclass
class CosineSchedConfig:
    """Cosine decay over the whole run, stepped after every optimizer step."""

    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    T_max: int | None = None
    """Steps of one half cosine; null means every step of the run."""
    eta_min: float = 0.0
    """Final learning rate."""


@dataclass
class PlateauSchedConfig:
    """Lower the learning rate when `task.monitor` stops improving: stepped after each
    validation (each epoch, and every `trainer.val_every_steps`), never per step."""

    _target_: str = "torch.optim.lr_scheduler.ReduceLROnPlateau"
    mode: str | None = None
    """min or max; null: the task's (`task.mode`, from the monitored metric)."""
    factor: float = 0.1
    """Multiply the learning rate by this on a plateau, in (0, 1)."""
    patience: int = 2
    """Validations without improvement before the learning rate is lowered."""
    threshold: float = 1e-4
    """An improvement must beat the best by more than this (relative, see threshold_mode)."""
    threshold_mode: str = "rel"
    """rel: by a fraction of the best; abs: by an absolute amount."""
    cooldown: int = 0
    """Validations to wait after a reduction before counting again."""
    min_lr: float = 0.0
    """The learning rate never goes below this."""


@dataclass
class OneCycleSchedConfig:
    """The one-cycle policy: warm up to `max_lr`, then anneal far below the start, over the
    whole run, stepped after every optimizer step."""

    _target_: str = "torch.optim.lr_scheduler.OneCycleLR"
    max_lr: float | None = None
    """The peak learning rate; null: `optim.lr`."""
    total_steps: int | None = None
    """Optimizer steps of the cycle; null: every optimizer step of the run."""
    pct_start: float = 0.3
    """Fraction of the cycle spent warming up, in (0, 1)."""
    anneal_strategy: str = "cos"
    """cos or linear."""
    div_factor: float = 25.0
    """The starting learning rate is max_lr / div_factor."""
    final_div_factor: float = 1e4
    """The final learning rate is max_lr / (div_factor * final_div_factor)."""
    cycle_momentum: bool = False
    """Cycle the optimizer's momentum (or Adam's beta1) inversely to the learning rate."""


@dataclass
class WarmupCosineSchedConfig:
    """Linear warm-up from 0 to `optim.lr`, then cosine decay to `eta_min` at the run's last
    step, stepped after every optimizer step: the most common recipe."""

    _target_: str = "seedbed.optim.warmup_cosine"
    warmup_steps: int | None = None
    """Optimizer steps of the linear warm-up; null: `warmup_fraction` of the run."""
    warmup_fraction: float = 0.05
    """The warm-up's share of the run when `warmup_steps` is null, in [0, 1)."""
    total_steps: int | None = None
    """Optimizer steps of warm-up plus decay; null: every optimizer step of the run."""
    eta_min: float = 0.0
    """The learning rate at the end of the decay."""


@dataclass
class StepSchedConfig:
    """Multiply the learning rate by `gamma` every `step_size` epochs."""

    _target_: str = "torch.optim.lr_scheduler.StepLR"
    step_size: int = 5
    """Epochs between decays."""
    gamma: float = 0.1
    """Decay factor."""


def check_optim(optim: DictConfig) -> None:
    """The ranges torch's optimizers need, for the keys this optimizer declares."""
    lr = optim.get("lr")
    require(lr is None or lr > 0, "optim.lr", lr, "a number > 0")
    for key in ("momentum", "weight_decay"):
        require_at_least(optim, "optim", key, 0.0)
    require_at_least(optim, "optim", "eps", 0.0, strict=True)
    betas = optim.get("betas")
    if betas is not None:
        ok = len(betas) == 2 and all(isinstance(b, int | float) and 0 <= b < 1 for b in betas)
        require(ok, "optim.betas", list(betas), "two numbers in [0, 1)")


def check_sched(sched: DictConfig) -> None:
    """The ranges of the packaged schedulers, and of the keys any scheduler declares."""
    target = sched.get("_target_")
    if target == PlateauSchedConfig._target_:
        require(sched.mode in (None, "min", "max"), "sched.mode", sched.mode, "min, max or null")
        require(0 < sched.factor < 1, "sched.factor", sched.factor, "a number in (0, 1)")
        require(sched.patience >= 0, "sched.patience", sched.patience, "an int >= 0")
        require_choice("sched.threshold_mode", sched.threshold_mode, ("rel", "abs"))
        require(sched.threshold >= 0, "sched.threshold", sched.threshold, "a number >= 0")
        require(sched.cooldown >= 0, "sched.cooldown", sched.cooldown, "an int >= 0")
        require(sched.min_lr >= 0, "sched.min_lr", sched.min_lr, "a number >= 0")
    elif target == OneCycleSchedConfig._target_:
        require(0 < sched.pct_start < 1, "sched.pct_start", sched.pct_start, "a number in (0, 1)")
        require_choice("sched.anneal_strategy", sched.anneal_strategy, ("cos", "linear"))
        max_lr = sched.max_lr
        require(max_lr is None or max_lr > 0, "sched.max_lr", max_lr, "a number > 0 or null")
        for key in ("div_factor", "final_div_factor"):
            require(sched[key] > 0, f"sched.{key}", sched[key], "a number > 0")
    elif target == WarmupCosineSchedConfig._target_:
        warmup, total = sched.warmup_steps, sched.total_steps
        allowed = "an int >= 0 or null"
        require(warmup is None or warmup >= 0, "sched.warmup_steps", warmup, allowed)
        fraction = sched.warmup_fraction
        require(0 <= fraction < 1, "sched.warmup_fraction", fraction, "a number in [0, 1)")
        require(
            warmup is None or total is None or warmup <= total,
            "sched.warmup_steps",
            warmup,
            f"an int <= sched.total_steps ({total}): the warm-up is part of the schedule",
        )
    total = sched.get("total_steps")
    require(total is None or total > 0, "sched.total_steps", total, "an int > 0 or null")
    for key in ("T_max", "step_size", "gamma"):
        require_at_least(sched, "sched", key, 0, strict=True)
    require_at_least(sched, "sched", "eta_min", 0.0)
