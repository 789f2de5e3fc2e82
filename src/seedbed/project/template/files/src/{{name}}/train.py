"""The training recipe: `python train.py seed=42` runs it (configs/train.yaml names it).

`train(cfg, run)` reads in the order of the work: the task, the data, the
model and its initial weights, the batches, the precision, the optimizer and
scheduler (sized in optimizer steps), then the loop (on the compiled model
when `trainer.compile=true`). Everything around it (the run directory and its record, resuming,
devices, distributed set-up, seeding, signals, errors) is the run session's
(`seedbed.runs.session`), which hands in `run`. This file is yours: edit it when
your training needs another part (`seedbed cp loop` gives you seedbed's loop to
own, too); the promise (same bits every time, exact resume) holds as long as
every stateful part is handed to `run.checkpointer`.
"""

from __future__ import annotations

import math
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig
from seedbed.compile import compile_model
from seedbed.data.loader import build_batches
from seedbed.init import init_weights
from seedbed.learning import NotLearningWarning, judged_epoch
from seedbed.loop import EarlyStopping, LoopState, fit
from seedbed.optim import build_optimizer, build_scheduler
from seedbed.precision import build_precision
from seedbed.runs.session import RunSession
from seedbed.task import build_task


def train(cfg: DictConfig, run: RunSession) -> dict[str, Any]:
    """Train as `cfg` says; return the final metrics (`train/loss`, the task's `val/*`)."""
    seeds, device = run.seeds, run.device  # seeded and placed by the session, before all else
    task = build_task(cfg.task)
    data = task.prepare(instantiate(cfg.data))
    run.record_data(data.record)  # what was read: paths, fingerprint, normalisation
    model = instantiate(cfg.model, input_shape=data.input_shape, num_outputs=data.num_outputs)
    init_weights(model, cfg.init.scheme, seeds.generator("init"), mode=cfg.init.mode)
    model.to(device)

    trainer = cfg.trainer
    # Each step takes one global batch, the same samples on any number of ranks: each rank
    # its micro-batches of it, `accumulate_grad_batches` of them per step.
    train_batches, val_batches = build_batches(
        data,
        cfg.loader,
        seeds,
        run.ranks.rank,
        run.ranks.world_size,
        device,
        accumulate=trainer.accumulate_grad_batches,
    )
    # Counted in optimizer steps: one per `accumulate_grad_batches` batches.
    batches_per_epoch = min(
        len(train_batches),
        (trainer.limit_train_batches or math.inf) * trainer.accumulate_grad_batches,
    )
    steps_per_epoch = math.ceil(batches_per_epoch / trainer.accumulate_grad_batches)
    precision = build_precision(trainer.precision, device)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    scheduler = build_scheduler(
        optimizer, cfg.sched, steps_per_epoch * trainer.epochs, steps_per_epoch, task.monitor
    )
    state = LoopState()
    early_stopping = EarlyStopping(task.monitor, **trainer.early_stopping)
    # One line if the run has learned nothing by its first epoch of 50+ steps.
    not_learning = NotLearningWarning(
        task, data, cfg, judged_epoch(steps_per_epoch, trainer.epochs)
    )

    def after_validation(state: LoopState, val: dict[str, float]) -> None:
        not_learning(state, val)
        run.after_validation(state, val)  # best.pt, the epoch-end checkpoint, a stop

    # Saved in every checkpoint and restored on a resume, by these names.
    run.checkpointer(
        task.monitor,
        batches_per_epoch,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=precision.scaler,
        loop=state,
        loader=train_batches,
        early_stopping=early_stopping,
        data_normalization=data.normalization,
        target_normalization=data.target_normalization,
    )
    trained = run.distribute(model)
    if trainer.compile:  # shares `model`'s weights: the checkpoint keeps plain keys
        trained = compile_model(trained, trainer.compile_mode, device)
    return fit(
        trained,
        optimizer,
        scheduler,
        train_batches,
        val_batches,
        task=task,
        state=state,
        epochs=trainer.epochs,
        device=device,
        log_every=trainer.log_every,
        metrics=run.metrics,
        grad_clip=trainer.grad_clip,
        limit_train_batches=trainer.limit_train_batches,
        accumulate_grad_batches=trainer.accumulate_grad_batches,
        precision=precision,
        val_every_steps=trainer.val_every_steps,
        early_stopping=early_stopping,
        on_step_end=run.after_step,
        on_validation=after_validation,
    )
