"""The training loop: plain PyTorch, top to bottom.

Per step: forward, loss, backward, optional clipping, optimizer and scheduler
step. The loss stays on the device until every `log_every` steps, when the
window is copied once, checked for non-finite values and appended to
metrics.jsonl: no per-step synchronisation, no per-step file write. After each
epoch: validation loss and accuracy. `LoopState` holds the counters (epoch,
step, batch within the epoch) and the losses not yet logged, and speaks
state_dict like everything else: a run resumed from it logs exactly the
records the uninterrupted run logs.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seedbed.errors import SeedbedError
from seedbed.loader import EpochBatches
from seedbed.record import MetricsLog

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """Where training stands: the epoch in progress, steps done, batches done in this epoch,
    the losses of the steps since the last log record, and the last logged window mean."""

    epoch: int = 0
    step: int = 0
    batch: int = 0
    losses: list[Tensor] = field(default_factory=list)
    train_loss: float = math.nan

    def state_dict(self) -> dict[str, Any]:
        # The pending losses stay on their device: the checkpoint copies everything at once.
        pending = torch.stack(self.losses) if self.losses else torch.zeros(0)
        return {
            "epoch": self.epoch,
            "step": self.step,
            "batch": self.batch,
            "pending_losses": pending,
            "train_loss": self.train_loss,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.step, self.batch = state["epoch"], state["step"], state["batch"]
        self.losses = list(state["pending_losses"].unbind()) if "pending_losses" in state else []
        self.train_loss = state.get("train_loss", math.nan)


class NonFiniteLoss(SeedbedError):
    pass


@torch.no_grad()
def evaluate(model: nn.Module, batches: EpochBatches, device: torch.device) -> dict[str, float]:
    """Mean loss and accuracy over every batch, in eval mode."""
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    batches.set_epoch(0)
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        total_loss += F.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(dim=1) == y).sum()
        count += len(y)
    model.train(was_training)
    return {
        "val_loss": total_loss.item() / max(count, 1),
        "val_acc": correct.item() / max(count, 1),
    }


def _progress(total: int, epoch: int, initial: int) -> Any:
    """A tqdm bar on a terminal; None (plain log lines) otherwise or without tqdm."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(
        total=total, initial=initial, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True
    )


def _flush_losses(state: LoopState, optimizer: torch.optim.Optimizer, metrics: MetricsLog) -> float:
    """Copy the window's losses once, check them, append one record; return the window mean."""
    losses = torch.stack(state.losses).double().cpu()
    state.losses.clear()
    finite = torch.isfinite(losses)
    if not finite.all():
        first = state.step - len(losses) + 1 + int((~finite).nonzero()[0])
        raise NonFiniteLoss(
            f"training loss is {float(losses[~finite][0])} at step {first} (epoch {state.epoch}); "
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
            "lr": optimizer.param_groups[0]["lr"],
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
    state: LoopState,
    epochs: int,
    device: torch.device,
    log_every: int,
    metrics: MetricsLog,
    grad_clip: float | None = None,
    limit_train_batches: int | None = None,
    on_step_end: Callable[[LoopState], None] | None = None,
    on_epoch_end: Callable[[LoopState, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Train from `state` until `epochs` are done; return the final metrics.

    `on_step_end` runs after every step and `on_epoch_end` after each validation
    (checkpoints, a requested stop); either may raise to end training there.
    """
    batches_per_epoch = min(len(train_batches), limit_train_batches or math.inf)
    state.losses = [loss.to(device) for loss in state.losses]  # restored ones come on the CPU
    val: dict[str, float] = {}
    model.train()
    while state.epoch < epochs:
        train_batches.set_epoch(state.epoch, start_batch=state.batch)
        bar = _progress(batches_per_epoch, state.epoch, state.batch)
        for x, y in train_batches:
            if state.batch >= batches_per_epoch:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            state.losses.append(loss.detach())
            state.step += 1
            state.batch += 1
            if state.step % log_every == 0:
                state.train_loss = _flush_losses(state, optimizer, metrics)
                log.debug("epoch %d step %d loss %.6f", state.epoch, state.step, state.train_loss)
                if bar is not None:
                    bar.set_postfix(loss=f"{state.train_loss:.4f}", refresh=False)
            if bar is not None:
                bar.update()
            if on_step_end is not None:
                on_step_end(state)
        if bar is not None:
            bar.close()
        if state.losses:
            state.train_loss = _flush_losses(state, optimizer, metrics)

        val = evaluate(model, val_batches, device)
        metrics.write({"kind": "val", "epoch": state.epoch, "step": state.step, **val})
        log.info(
            "epoch %d/%d  step %d  train_loss %.4f  val_loss %.4f  val_acc %.4f",
            state.epoch + 1,
            epochs,
            state.step,
            state.train_loss,
            val["val_loss"],
            val["val_acc"],
        )
        state.epoch += 1
        state.batch = 0
        if on_epoch_end is not None:
            on_epoch_end(state, val)

    if not val:
        val = evaluate(model, val_batches, device)
    return {"train_loss": state.train_loss, **val, "epochs": state.epoch, "steps": state.step}
