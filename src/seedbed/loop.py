"""The training loop: plain PyTorch, top to bottom.

Per batch: forward and the task's loss (under autocast for mixed precision),
backward (scaled for float16); every `accumulate_grad_batches` batches, one
optimizer step: optional clipping, the optimizer and scheduler step. Every
count (steps, logging, checkpoints, schedules) is of optimizer steps. The loss
stays on the device until every `log_every` steps, when the window is copied
once, checked for non-finite values and appended to metrics.jsonl: no per-step
synchronisation, no per-step file write. After each epoch, and every
`val_every_steps` if set: the task's validation metrics (`val/loss`, ...),
then a plateau scheduler and early stopping on the monitored one.
`LoopState` holds the counters (epoch, step, batch within the epoch) and the
losses not yet logged, and `EarlyStopping` its own; both speak state_dict like
everything else, so a run resumed from them logs exactly the records, and
stops at exactly the step, of the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from seedbed.core.errors import SeedbedError
from seedbed.core.record import MetricsLog
from seedbed.data.loader import EpochBatches
from seedbed.precision import Precision
from seedbed.task import Monitor, Task

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """Where training stands: the epoch in progress, optimizer steps done, batches done in
    this epoch, the losses of the steps since the last log record, the last logged window
    mean, and the learning rate the last step used."""

    epoch: int = 0
    step: int = 0
    batch: int = 0
    losses: list[Tensor] = field(default_factory=list)
    train_loss: float = math.nan
    lr: float = math.nan

    def state_dict(self) -> dict[str, Any]:
        # The pending losses stay on their device: the checkpoint copies everything at once.
        pending = torch.stack(self.losses) if self.losses else torch.zeros(0)
        return {
            "epoch": self.epoch,
            "step": self.step,
            "batch": self.batch,
            "pending_losses": pending,
            "train_loss": self.train_loss,
            "lr": self.lr,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.step, self.batch = state["epoch"], state["step"], state["batch"]
        self.losses = list(state["pending_losses"].unbind()) if "pending_losses" in state else []
        self.train_loss = state.get("train_loss", math.nan)
        self.lr = state.get("lr", math.nan)


@dataclass
class EarlyStopping:
    """Stop when the monitored metric has not improved by more than `min_delta` for
    `patience` validations in a row; `patience=None` never stops (the best is still kept)."""

    monitor: Monitor
    patience: int | None = None
    min_delta: float = 0.0
    best: float | None = None
    stale: int = 0
    stopped_at: dict[str, Any] | None = None

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    def update(self, val: dict[str, float], state: LoopState) -> bool:
        """Take one validation's metrics; return True when training should stop now."""
        value = val[self.monitor.metric]
        if self.monitor.improves(value, self.best, self.min_delta):
            self.best, self.stale = value, 0
        else:
            self.stale += 1
        if self.patience is not None and self.stale >= self.patience:
            self.stopped_at = {"epoch": state.epoch, "step": state.step}
        return self.stopped

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "stale": self.stale, "stopped_at": self.stopped_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.stale, self.stopped_at = state["best"], state["stale"], state["stopped_at"]

    def summary(self) -> dict[str, Any] | None:
        """What run.json says of it: None while it is off."""
        if self.patience is None:
            return None
        return {
            "stopped_early": self.stopped,
            **({"epoch": self.stopped_at["epoch"]} if self.stopped_at else {}),
            "metric": self.monitor.metric,
            "best": self.best,
            "patience": self.patience,
            "min_delta": self.min_delta,
        }


class NonFiniteLoss(SeedbedError):
    pass


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: EpochBatches, task: Task, device: torch.device, split: str = "val"
) -> dict[str, float]:
    """The task's metrics over every batch, in eval mode, named `<split>/<metric>`."""
    was_training = model.training
    model.eval()
    sums: dict[str, Tensor] = {}
    count = 0
    batches.set_epoch(0)
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        for name, value in task.metric_sums(model(x), y).items():
            sums[name] = sums[name] + value if name in sums else value
        count += len(y)
    model.train(was_training)
    return {f"{split}/{name}": value for name, value in task.reduce(sums, count).items()}


def _progress(total: int, epoch: int, initial: int) -> Any:
    """A tqdm bar on a terminal; None (plain log lines) otherwise or without tqdm."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(  # epochs are numbered from 1 wherever a person reads them
        total=total, initial=initial, desc=f"epoch {epoch + 1}", leave=False, dynamic_ncols=True
    )


def _flush_losses(state: LoopState, metrics: MetricsLog) -> float:
    """Copy the window's losses once, check them, append one record; return the window mean."""
    losses = torch.stack(state.losses).double().cpu()
    state.losses.clear()
    finite = torch.isfinite(losses)
    if not finite.all():
        first = state.step - len(losses) + 1 + int((~finite).nonzero()[0])
        value, epoch = float(losses[~finite][0]), state.epoch + 1
        raise NonFiniteLoss(
            f"training loss is {value} at step {first} (epoch {epoch}); "
            "lower optim.lr or set trainer.grad_clip"
        )
    mean = float(losses.mean())
    metrics.write(
        {
            "kind": "train",
            "epoch": state.epoch,
            "step": state.step,
            "loss": float(losses[-1]),
            "loss_mean": mean,
            "lr": state.lr,
        }
    )
    return mean


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    train_batches: EpochBatches,
    val_batches: EpochBatches,
    *,
    task: Task,
    state: LoopState,
    epochs: int,
    device: torch.device,
    log_every: int,
    metrics: MetricsLog,
    grad_clip: float | None = None,
    limit_train_batches: int | None = None,
    accumulate_grad_batches: int = 1,
    precision: Precision | None = None,
    val_every_steps: int | None = None,
    early_stopping: EarlyStopping | None = None,
    on_step_end: Callable[[LoopState], None] | None = None,
    on_validation: Callable[[LoopState, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Train from `state` until `epochs` are done or early stopping ends it; return the final
    metrics (`train/loss`, the task's `val/*`, `epochs`, `steps`).

    One optimizer step per `accumulate_grad_batches` batches (windows restart each epoch;
    an epoch's last window may be shorter). `on_step_end` runs after every optimizer step
    and `on_validation` after each validation (checkpoints, a requested stop); either may
    raise to end training there. Both run only between windows, so a checkpoint never holds
    half a window and a signal finishes the window first.
    """
    accumulate = accumulate_grad_batches
    batches_per_epoch = min(len(train_batches), (limit_train_batches or math.inf) * accumulate)
    amp = precision.autocast() if precision is not None else contextlib.nullcontext()
    scaler = precision.scaler if precision is not None else None
    plateau = isinstance(scheduler, ReduceLROnPlateau)  # stepped on the metric, not per step
    no_sync = getattr(model, "no_sync", None)  # DDP: all-reduce once per window
    state.losses = [loss.to(device) for loss in state.losses]  # restored ones come on the CPU
    on_cpu = device.type == "cpu"  # nothing to copy: saves two calls a step
    val: dict[str, float] = {}
    window_loss = torch.zeros(())  # the mean loss of the window in progress

    def validate() -> dict[str, float]:
        """The task's validation metrics, written to metrics.jsonl with the step."""
        with amp:
            result = evaluate(model, val_batches, task, device)
        metrics.write({"kind": "val", "epoch": state.epoch, "step": state.step, **result})
        return result

    def after_validation(val: dict[str, float]) -> bool:
        """Plateau, early stopping and the hook see every validation; True: stop now."""
        if plateau:
            scheduler.step(val[task.monitor.metric])
        stop = early_stopping is not None and early_stopping.update(val, state)
        if on_validation is not None:
            on_validation(state, val)
        if stop:
            log.info(
                "early stopping at step %d: %s has not improved on %.6g for %d validations",
                state.step,
                early_stopping.monitor.metric,
                early_stopping.best,
                early_stopping.stale,
            )
        return stop

    model.train()
    stopped = early_stopping is not None and early_stopping.stopped
    while state.epoch < epochs and not stopped:
        train_batches.set_epoch(state.epoch, start_batch=state.batch)
        bar = _progress(batches_per_epoch, state.epoch, state.batch)
        for x, y in train_batches:
            if state.batch >= batches_per_epoch:
                break
            if not on_cpu:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            window_start = state.batch - state.batch % accumulate
            window = min(accumulate, batches_per_epoch - window_start)
            if state.batch == window_start:
                optimizer.zero_grad(set_to_none=True)
            state.batch += 1
            last = state.batch == window_start + window
            with no_sync() if no_sync is not None and not last else contextlib.nullcontext():
                with amp:
                    loss = task.loss(model(x), y)
                if window > 1:  # the window's gradient is the mean over its batches
                    loss = loss / window
                (scaler.scale(loss) if scaler is not None else loss).backward()
            first = state.batch == window_start + 1
            window_loss = loss.detach() if first else window_loss + loss.detach()
            if bar is not None:
                bar.update()
            if not last:
                continue

            if grad_clip is not None:
                if scaler is not None:
                    scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            state.lr = optimizer.param_groups[0]["lr"]  # what this step used: the record's lr
            if scheduler is not None and not plateau:
                scheduler.step()
            state.losses.append(window_loss)
            state.step += 1
            if state.step % log_every == 0:
                state.train_loss = _flush_losses(state, metrics)
                if bar is not None:
                    bar.set_postfix(loss=f"{state.train_loss:.4f}", refresh=False)
            # Mid-epoch validation; the epoch's last step is validated at the epoch's end.
            due = val_every_steps is not None and state.step % val_every_steps == 0
            if due and state.batch < batches_per_epoch:
                val = validate()
                if stopped := after_validation(val):
                    break
            if on_step_end is not None:
                on_step_end(state)
        if bar is not None:
            bar.close()
        if state.losses:
            state.train_loss = _flush_losses(state, metrics)
        if stopped:
            break  # by a mid-epoch validation: that was the last one

        val = validate()
        log.info(
            "epoch %d/%d  step %d  train/loss %.4f  %s",
            state.epoch + 1,
            epochs,
            state.step,
            state.train_loss,
            "  ".join(f"{name} {value:.4f}" for name, value in val.items()),
        )
        state.epoch += 1
        state.batch = 0
        stopped = after_validation(val)

    if not val:
        with amp:
            val = evaluate(model, val_batches, task, device)
    return {"train/loss": state.train_loss, **val, "epochs": state.epoch, "steps": state.step}
