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
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from seedbed.compile import COMPILE_MODES
from seedbed.core.device import DEVICES
from seedbed.core.distributed import distributed_mode, mean_over_ranks
from seedbed.core.errors import SeedbedError, require, require_choice
from seedbed.core.loggers import MetricsWriter
from seedbed.data.loader import EpochBatches
from seedbed.precision import PRECISIONS, Precision
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

    def on_validation(self, state: LoopState, val: dict[str, float]) -> bool:
        """The loop's event: True stops training."""
        stop = self.update(val, state)
        if stop:
            log.info(
                "early stopping at step %d: %s has not improved on %.6g for %d validations",
                state.step,
                self.monitor.metric,
                self.best,
                self.stale,
            )
        return stop

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


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: EpochBatches,
    task: Task,
    device: torch.device,
    split: str = "val",
    limit: int | None = None,
) -> dict[str, float]:
    """The task's metrics over every batch (the first `limit` ones, when set), in eval mode,
    named `<split>/<metric>`."""
    was_training = model.training
    model.eval()
    sums: dict[str, Tensor] = {}
    count = 0
    batches.set_epoch(0)
    on_cpu = device.type == "cpu"
    for index, (x, y) in enumerate(batches):
        if limit is not None and index >= limit:
            break
        if not on_cpu:
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


def _flush_losses(state: LoopState, metrics: MetricsWriter) -> float:
    """Copy the window's losses once, check them, append one record; return the window mean.
    The arithmetic is Python's on the copied numbers: a handful of tensor ops here cost more
    than the loop's other work per step together."""
    # Over the ranks, in float64: a run resumed on another world size restores the ranks'
    # mean, which averages back to itself exactly.
    losses = mean_over_ranks(torch.stack(state.losses).double()).tolist()  # the one copy
    state.losses.clear()
    for offset, value in enumerate(losses):
        if not math.isfinite(value):
            first, epoch = state.step - len(losses) + 1 + offset, state.epoch + 1
            raise NonFiniteLoss(
                f"training loss is {value} at step {first} (epoch {epoch}); "
                "lower optim.lr or set trainer.grad_clip"
            )
    mean = math.fsum(losses) / len(losses)
    metrics.write(
        {
            "kind": "train",
            "epoch": state.epoch,
            "step": state.step,
            "loss": losses[-1],
            "loss_mean": mean,
            "lr": state.lr,
        }
    )
    return mean


@dataclass
class LoopSettings:
    """What the loop needs beside the stateful parts: how long, where, and how to log.
    `LoopSettings.from_config(cfg.trainer, ...)` fills it from the `trainer` group."""

    epochs: int
    device: torch.device
    metrics: MetricsWriter
    """Where the train and val records go (metrics.jsonl and the run's loggers)."""
    log_every: int = 20
    grad_clip: float | None = None
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None
    overfit_batches: int | None = None
    accumulate_grad_batches: int = 1
    precision: Precision | None = None
    val_every_steps: int | None = None
    detect_anomaly: bool = False

    @classmethod
    def from_config(
        cls,
        trainer: Any,
        device: torch.device,
        metrics: MetricsWriter,
        precision: Precision | None = None,
    ) -> LoopSettings:
        return cls(
            epochs=trainer.epochs,
            device=device,
            metrics=metrics,
            log_every=trainer.log_every,
            grad_clip=trainer.grad_clip,
            limit_train_batches=trainer.limit_train_batches,
            limit_val_batches=trainer.limit_val_batches,
            overfit_batches=trainer.overfit_batches,
            accumulate_grad_batches=trainer.accumulate_grad_batches,
            precision=precision,
            val_every_steps=trainer.val_every_steps,
            detect_anomaly=trainer.detect_anomaly,
        )

    @property
    def train_batches_limit(self) -> int | None:
        """Optimizer steps per epoch at most: `overfit_batches` wins over the limit."""
        return self.overfit_batches or self.limit_train_batches


def _hooks(callbacks: Sequence[Any], event: str) -> list[Callable[..., Any]]:
    """The callbacks' handlers of `event`, in order: an event nobody handles costs nothing."""
    return [getattr(callback, event) for callback in callbacks if hasattr(callback, event)]


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    train_batches: EpochBatches,
    val_batches: EpochBatches,
    task: Task,
    state: LoopState,
    settings: LoopSettings,
    callbacks: Sequence[Any] = (),
) -> dict[str, float]:
    """Train from `state` until `settings.epochs` are done or a callback stops it; return
    the final metrics (`train/loss`, the task's `val/*`, `epochs`, `steps`).

    One optimizer step per `accumulate_grad_batches` batches (windows restart each epoch;
    an epoch's last window may be shorter). `callbacks` (docs/callbacks.md) may handle, in
    their order, any of these events:

    - `on_step_end(state)` after every optimizer step;
    - `on_validation(state, val)` after each validation; returning True stops training;
    - `on_epoch_end(state)` after an epoch (and its validation), counters already moved on;
    - `validation_model` (an attribute): a module to validate instead of `model` (EMA);
    - `stopped` (an attribute): true when a resumed run had already been stopped by it.

    A handler may raise to end training there. Events come only between windows, so a
    checkpoint never holds half a window and a signal finishes the window first.
    """
    device, metrics = settings.device, settings.metrics
    accumulate = settings.accumulate_grad_batches
    limit = settings.train_batches_limit
    batches_per_epoch = min(len(train_batches), (limit or math.inf) * accumulate)
    precision = settings.precision
    amp = precision.autocast() if precision is not None else contextlib.nullcontext()
    scaler = precision.scaler if precision is not None else None
    plateau = isinstance(scheduler, ReduceLROnPlateau)  # stepped on the metric, not per step
    no_sync = getattr(model, "no_sync", None)  # DDP: all-reduce once per window
    state.losses = [loss.to(device) for loss in state.losses]  # restored ones come on the CPU
    on_cpu = device.type == "cpu"  # nothing to copy: saves two calls a step
    on_step_end = _hooks(callbacks, "on_step_end")
    on_validation = _hooks(callbacks, "on_validation")
    on_epoch_end = _hooks(callbacks, "on_epoch_end")
    validated = next(
        (m for c in callbacks if (m := getattr(c, "validation_model", None)) is not None), model
    )
    val: dict[str, float] = {}
    window_loss = torch.zeros(())  # the mean loss of the window in progress
    log_every, grad_clip = settings.log_every, settings.grad_clip
    val_every = settings.val_every_steps

    def validate() -> dict[str, float]:
        """The task's validation metrics, written to metrics.jsonl with the step."""
        with amp:
            result = evaluate(
                validated, val_batches, task, device, limit=settings.limit_val_batches
            )
        metrics.write({"kind": "val", "epoch": state.epoch, "step": state.step, **result})
        return result

    def after_validation(val: dict[str, float]) -> bool:
        """Plateau and every callback see every validation; True: stop now."""
        if plateau:
            scheduler.step(val[task.monitor.metric])
        stop = False
        for hook in on_validation:
            stop = bool(hook(state, val)) or stop
        return stop

    model.train()
    stopped = any(getattr(c, "stopped", False) for c in callbacks)  # resumed after a stop
    anomaly = torch.autograd.set_detect_anomaly(settings.detect_anomaly)
    with anomaly:
        while state.epoch < settings.epochs and not stopped:
            # overfit_batches: the same first batches (epoch 0's order) every epoch.
            epoch = 0 if settings.overfit_batches else state.epoch
            train_batches.set_epoch(epoch, start_batch=state.batch)
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
                if no_sync is not None and not last:
                    with no_sync(), amp:
                        loss = task.loss(model(x), y) / window
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                else:
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
                state.lr = optimizer.param_groups[0]["lr"]  # what this step used: the record's
                if scheduler is not None and not plateau:
                    scheduler.step()
                state.losses.append(window_loss)
                state.step += 1
                if state.step % log_every == 0:
                    state.train_loss = _flush_losses(state, metrics)
                    if bar is not None:
                        bar.set_postfix(loss=f"{state.train_loss:.4f}", refresh=False)
                # Mid-epoch validation; the epoch's last step is validated at the epoch's end.
                due = val_every is not None and state.step % val_every == 0
                if due and state.batch < batches_per_epoch:
                    val = validate()
                    if stopped := after_validation(val):
                        break
                for hook in on_step_end:
                    hook(state)
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
                settings.epochs,
                state.step,
                state.train_loss,
                "  ".join(f"{name} {value:.4f}" for name, value in val.items()),
            )
            state.epoch += 1
            state.batch = 0
            stopped = after_validation(val)
            for hook in on_epoch_end:
                hook(state)

    if not val:
        with amp:
            val = evaluate(validated, val_batches, task, device, limit=settings.limit_val_batches)
    return {"train/loss": state.train_loss, **val, "epochs": state.epoch, "steps": state.step}


@dataclass
class EarlyStoppingConfig:
    """Stop when `task.monitor` has not improved for `patience` validations in a row."""

    patience: int | None = None
    """Validations without improvement before training stops; null: never stop early."""
    min_delta: float = 0.0
    """An improvement must beat the best so far by more than this."""


@dataclass
class TrainerConfig:
    """The training loop."""

    epochs: int = 10
    """Passes over the training split (>= 0)."""
    device: str = "auto"
    """auto (cuda when available, else cpu), cpu or cuda."""
    log_every: int = 20
    """Write the loss to metrics.jsonl every this many optimizer steps (> 0)."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value; null turns clipping off."""
    limit_train_batches: int | None = None
    """Stop each epoch after this many optimizer steps (debugging: with accumulation, this
    many times `accumulate_grad_batches` batches); null means the whole epoch."""
    precision: str = "32"
    """32 (float32), bf16-mixed (bfloat16 autocast; CPU and CUDA) or 16-mixed (float16
    autocast with a gradient scaler; CUDA only)."""
    accumulate_grad_batches: int = 1
    """Batches per optimizer step (>= 1): gradients of this many batches are averaged, so the
    step matches one batch this many times larger. Steps, logging, checkpoints, schedulers,
    `limit_train_batches` and `val_every_steps` count optimizer steps."""
    compile: bool = False
    """torch.compile the model (needs a C++ compiler on the CPU, triton on CUDA)."""
    compile_mode: str = "default"
    """torch.compile's mode: default, reduce-overhead, max-autotune or
    max-autotune-no-cudagraphs."""
    val_every_steps: int | None = None
    """Also validate every this many optimizer steps; null: once per epoch only. best.pt,
    early stopping and sched=plateau consider every validation."""
    threads: int | None = 1
    """torch intra-op threads. Some CPU kernels give other bits with another count, so the
    default is a fixed 1: the same weights alone, in any sweep and on any machine, and no
    collapse on a busy machine (see docs/threads.md). null: a fair share of this
    machine's cores (cores // a joblib sweep's n_jobs), faster on an idle machine, written as
    a number into config.yaml so that a rerun of it uses the same count."""
    limit_val_batches: int | None = None
    """Validate (and test) on this many batches only (debugging); null: all of them."""
    overfit_batches: int | None = None
    """Debugging: train on the same first this-many optimizer steps' batches every epoch
    (epoch 0's order), so the training loss must go near zero; null: off."""
    detect_anomaly: bool = False
    """torch.autograd's anomaly detection (debugging: slow; names the op that made a NaN)."""
    test_after_fit: bool = False
    """After training, evaluate best.pt (last.pt without one) on the test split; the
    result goes into run.json (`test`) and the loggers."""
    perturb_step: int | None = None
    """Debugging aid, never for real runs: after this optimizer step, add 1e-3 to the first
    weight (`python -m seedbed.tools.verify --vary trainer.perturb_step=5` must then fail)."""
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    """Stop when the monitored metric stalls (off by default)."""
    distributed: Any = False
    """false (one process), ddp (true says the same: DistributedDataParallel) or fsdp (FSDP2,
    `fully_shard`: parameters, gradients and optimizer state sharded over the ranks, sharded
    checkpoints): one process per rank, started by torchrun or as the tasks of a submitit
    job; gloo on the CPU, nccl on CUDA. Only rank 0 writes the run directory. (Typed Any so
    that both a bool and a name pass the schema; checked by `distributed_mode`.)"""


def check_trainer(trainer: DictConfig) -> None:
    def at_least_one(key: str, allowed: str = "an int > 0 or null") -> None:
        value = trainer[key]
        require(value is None or value > 0, f"trainer.{key}", value, allowed)

    require(trainer.epochs >= 0, "trainer.epochs", trainer.epochs, "an int >= 0")
    require_choice("trainer.device", trainer.device, DEVICES)
    require(trainer.log_every > 0, "trainer.log_every", trainer.log_every, "an int > 0")
    at_least_one("grad_clip", "a number > 0 or null")
    at_least_one("limit_train_batches")
    at_least_one("limit_val_batches")
    at_least_one("overfit_batches")
    at_least_one("perturb_step")
    at_least_one("val_every_steps")
    threads, cpus = trainer.threads, os.cpu_count() or 1
    require(
        threads is None or 0 < threads <= cpus,
        "trainer.threads",
        threads,
        f"an int in [1, {cpus}] (this machine's logical CPUs) or null (a fair share of them)",
    )
    require_choice("trainer.precision", trainer.precision, PRECISIONS)
    accumulate = trainer.accumulate_grad_batches
    require(accumulate >= 1, "trainer.accumulate_grad_batches", accumulate, "an int >= 1")
    require_choice("trainer.compile_mode", trainer.compile_mode, COMPILE_MODES)
    distributed_mode(trainer.distributed)
    stopping = trainer.early_stopping
    patience, delta = stopping.patience, stopping.min_delta
    allowed = "an int > 0 or null (off)"
    require(patience is None or patience > 0, "trainer.early_stopping.patience", patience, allowed)
    require(delta >= 0, "trainer.early_stopping.min_delta", delta, "a number >= 0")
