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
from seedbed.callbacks import build_callbacks, checkpointed
from seedbed.compile import compile_model
from seedbed.core.errors import ConfigError
from seedbed.data.loader import build_batches
from seedbed.evaluate import evaluate_checkpoint
from seedbed.init import init_weights
from seedbed.learning import NotLearningWarning, judged_epoch
from seedbed.loop import EarlyStopping, LoopSettings, LoopState, fit
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
    if cfg.trainer.test_after_fit and "test" not in data.splits():
        raise ConfigError(
            "trainer.test_after_fit",
            True,
            "false: this run's data has no test split (set data.test_fraction, "
            "or give the .npz x_test and y_test)",
        )
    model = instantiate(cfg.model, input_shape=data.input_shape, num_outputs=data.num_outputs)
    init_weights(model, cfg.init.scheme, seeds.generator("init"), mode=cfg.init.mode)
    model.to(device)
    run.record_model(model)  # parameters per module: run.json and train.log
    # DDP wraps the model; FSDP2 (trainer.distributed=fsdp) shards its parameters in place,
    # so the optimizer is built after, on the sharded ones. Checkpoints keep plain keys.
    trained = run.distribute(model)

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
    limit = trainer.overfit_batches or trainer.limit_train_batches  # debugging: a few
    batches_per_epoch = min(
        len(train_batches), (limit or math.inf) * trainer.accumulate_grad_batches
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

    # Your own (`callbacks=...`, configs/callbacks/): each is handed what it names of these.
    callbacks = build_callbacks(
        cfg.callbacks, model=model, metrics=run.metrics, run_dir=run.run_dir
    )

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
        **checkpointed(callbacks),  # by their names: callback.<name>
    )
    if trainer.compile:  # shares `model`'s weights: the checkpoint keeps plain keys
        trained = compile_model(trained, trainer.compile_mode, device)
    settings = LoopSettings.from_config(trainer, device, run.metrics, precision)
    # In this order after each event: the session last (it checkpoints what the others did).
    final = fit(
        trained,
        optimizer,
        scheduler,
        train_batches,
        val_batches,
        task,
        state,
        settings,
        [early_stopping, *callbacks.values(), not_learning, run],
    )
    if trainer.test_after_fit and run.writes_run_dir:  # best.pt (else last.pt) on the test split
        tested = evaluate_checkpoint(run.best_checkpoint(), "test", limit=trainer.limit_val_batches)
        final.update(run.record_test(tested))
    return final
