"""What `resume.force=true` can change, and how the resumed run comes to use it.

A resumed run is rebuilt from the new config, then every part is restored from
the checkpoint; a part's restored state holds the values it was built with. So
a forced change is real only where the resumed run reads the config again, and
run.json and config.yaml must not record one that is not:

- optimizer settings (`optim.lr`, `optim.momentum`, ...) are set on its parameter
  groups after its state (momentum buffers, step counts) is restored;
- the schedule (`sched.*`, and `trainer.epochs` for one sized from the run's
  length) is rebuilt from the new config and replayed to the checkpoint's step,
  so it stands where it would had the run been configured so from the start
  (a plateau schedule keeps its reductions so far, so its learning rate and mode
  cannot change);
- the loop's settings (`trainer.*`), determinism, dropout, the loss and the
  augmentation are read from the config as the run goes on.

Anything else is refused in one line saying why and what to do instead: the
seeds (the random streams continue from the checkpoint), the model's architecture
and initialisation, the data and how it is batched (the checkpoint's position is
in the saved batches), the components' classes and the monitored metric.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from seedbed.core.errors import SeedbedError

# Forced changes the resumed run uses, by key or prefix (a prefix ends with ".").
APPLIED_WHEN_FORCED = (
    "optim.",
    "sched.",
    "trainer.",
    "determinism.",
    "model.dropout",
    "task.label_smoothing",
    "task.loss.",
    "data.augment.",
    "loader.on_device",
)
# Why a change cannot be applied, by key or prefix: the most specific one that matches.
NOT_APPLIED: dict[str, str] = {
    "seed": "the random streams continue from the checkpoint's state",
    "seeds.": "the random streams continue from the checkpoint's state",
    "init.": "the initial weights were drawn at step 0",
    "model.": "the checkpoint's weights are the saved model's",
    "data.": "the checkpoint's position is in the saved data",
    "loader.": "the checkpoint's position in the epoch is counted in the saved batches",
    "task.": "best.pt and early stopping compare values of the saved monitored metric",
    "optim._target_": "the checkpoint holds the saved optimizer's state",
    "sched._target_": "the checkpoint holds the saved schedule's state",
}
PLATEAU_FIXED = "a plateau schedule's learning rate so far followed the validations"
SCALER_FIXED = "the gradient scaler's state is the saved precision's"


def _matches(key: str, pattern: str) -> bool:
    return key == pattern or (pattern.endswith(".") and key.startswith(pattern))


def _is_plateau(sched: DictConfig) -> bool:
    return str(sched.get("_target_") or "").endswith("ReduceLROnPlateau")


def why_not_applied(key: str, old: Any, new: Any, cfg: DictConfig) -> str | None:
    """Why a forced change of `key` (old -> new) cannot be applied; None when it can."""
    if key.endswith("._target_"):
        return NOT_APPLIED.get(key, "the checkpoint holds the saved component's state")
    if key in ("optim.lr", "sched.mode") and _is_plateau(cfg.sched):
        return PLATEAU_FIXED
    if key == "trainer.precision" and "16-mixed" in (old, new):
        return SCALER_FIXED
    if key in NOT_APPLIED:
        return NOT_APPLIED[key]
    if any(_matches(key, applied) for applied in APPLIED_WHEN_FORCED):
        return None
    prefixes = [prefix for prefix in NOT_APPLIED if _matches(key, prefix)]
    return NOT_APPLIED[max(prefixes, key=len)] if prefixes else "the saved state holds it"


def refuse_unapplied(changes: dict[str, tuple[Any, Any]], cfg: DictConfig) -> None:
    """Refuse a forced resume with a change the resumed run would not use, naming why."""
    refused = {
        key: reason
        for key, (old, new) in changes.items()
        if (reason := why_not_applied(key, old, new, cfg)) is not None
    }
    if not refused:
        return
    detail = "; ".join(
        f"{key}: {changes[key][0]!r} -> {changes[key][1]!r} ({reason})"
        for key, reason in refused.items()
    )
    raise SeedbedError(
        f"resume refused: resume.force=true cannot apply {detail}; resume without "
        f"{'that change' if len(refused) == 1 else 'those changes'}, or start a new run with "
        "them"
    )


def refuse_unknown_optimizer_settings(changes: dict[str, tuple[Any, Any]], cfg: DictConfig) -> None:
    """An optimizer setting is applied on its parameter groups: refuse one that is not there
    (a user's optimizer may take arguments it does not keep per group)."""
    keys = [key.removeprefix("optim.") for key in changes if key.startswith("optim.")]
    if not keys:
        return
    try:
        probe = instantiate(cfg.optim, params=[torch.nn.Parameter(torch.zeros(1))], _convert_="all")
    except Exception:  # noqa: BLE001 - a value it refuses is reported when the run builds it
        return
    unknown = [key for key in keys if key not in probe.defaults]
    if unknown:
        raise SeedbedError(
            f"resume refused: resume.force=true cannot apply "
            f"{', '.join('optim.' + k for k in unknown)}: {type(probe).__name__} keeps no "
            "such setting per parameter group; resume without it, or start a new run with it"
        )


def rebuilds_schedule(changes: dict[str, tuple[Any, Any]]) -> bool:
    """Whether forced changes touch what the optimizer's settings and the schedule are built
    from: the optimizer's settings (its learning rate is the schedule's base), the schedule's
    own, or the run's length in steps."""
    length = ("trainer.epochs", "trainer.limit_train_batches")
    return any(key.startswith(("optim.", "sched.")) or key in length for key in changes)


@dataclass
class BuiltSettings:
    """The optimizer's parameter groups and the schedule as the new config built them,
    taken before the checkpoint's state replaces them."""

    groups: list[dict[str, Any]]
    schedule: dict[str, Any] | None


def built_settings(optimizer: Any, scheduler: Any) -> BuiltSettings:
    groups = [
        {key: copy.deepcopy(value) for key, value in group.items() if key != "params"}
        for group in optimizer.param_groups
    ]
    schedule = copy.deepcopy(scheduler.state_dict()) if scheduler is not None else None
    return BuiltSettings(groups, schedule)


def apply_settings(built: BuiltSettings, optimizer: Any, scheduler: Any, step: int) -> None:
    """After the checkpoint is restored: the new config's optimizer settings on every group,
    and its schedule replayed to `step` (a plateau schedule keeps its state, taking the new
    config's factor, patience, threshold, cooldown and floor)."""
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    for group, settings in zip(optimizer.param_groups, built.groups, strict=True):
        reached = group["lr"]
        group.update(copy.deepcopy(settings))
        if plateau:
            group["lr"] = reached
    if scheduler is None:
        return
    if plateau:
        state = scheduler.state_dict()
        for key in ("factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lrs"):
            state[key] = built.schedule[key]
        state["default_min_lr"] = built.schedule.get("default_min_lr")
        scheduler.load_state_dict(state)
        return
    scheduler.load_state_dict(copy.deepcopy(built.schedule))
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": a replay
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(step):
            scheduler.step()
