"""The work the benchmarks time: one model, one dataset, several ways to train on it.

Every loop starts from the same initial weights, trains the same number of
steps with the same batch size and optimizer, and validates after each epoch;
only the machinery around the work differs. Each returns seconds per step of
its training loop alone (set-up excluded).
"""

from __future__ import annotations

import contextlib
import copy
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from seedbed.core.checkpoint import Checkpointer
from seedbed.core.determinism import set_determinism
from seedbed.core.paths import use_project
from seedbed.core.record import MetricsLog
from seedbed.core.seeding import seed_everything
from seedbed.data.arrays import DataSplits
from seedbed.data.loader import build_batches
from seedbed.init import init_weights
from seedbed.loop import LoopSettings, LoopState, fit
from seedbed.optim import build_optimizer
from seedbed.precision import build_precision
from seedbed.runs.hydra import register_configs
from seedbed.runs.session import run_training
from seedbed.task import Task, build_task

# The benchmarks run the clone's example project (what `seedbed new example` renders).
CONFIG_DIR = use_project(Path(__file__).resolve().parents[1] / "example" / "configs")


@dataclass
class Work:
    cfg: DictConfig
    task: Task
    data: DataSplits
    model: nn.Module  # initialised, never trained: each loop trains a copy
    epochs: int
    batch_size: int

    @property
    def steps(self) -> int:
        """Batches trained on (optimizer steps without accumulation)."""
        return self.epochs * -(-len(self.data.train) // self.batch_size)

    @property
    def samples(self) -> int:
        return self.epochs * len(self.data.train)


def setup(overrides: list[str], epochs: int) -> Work:
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*overrides, f"trainer.epochs={epochs}"])
    seeds = seed_everything(cfg.seed, cfg.seeds)
    task = build_task(cfg.task)
    data: DataSplits = task.prepare(instantiate(cfg.data))
    model = instantiate(cfg.model, input_shape=data.input_shape, num_outputs=data.num_outputs)
    init_weights(model, cfg.init.scheme, seeds.generator("init"), mode=cfg.init.mode)
    return Work(cfg, task, data, model, epochs, cfg.loader.batch_size)


@torch.no_grad()
def _validate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    model.eval()
    total = 0.0
    for i in range(0, len(y), batch_size):
        total += F.cross_entropy(
            model(x[i : i + batch_size]), y[i : i + batch_size], reduction="sum"
        )
    model.train()
    return float(total) / len(y)


def fit_seconds(run_dir: Path, overrides: list[str]) -> float:
    """A whole `train()` run in this process; the time its training loop took (run.json)."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    run_training(cfg, run_dir)
    return json.loads((run_dir / "run.json").read_text())["fit_seconds"]


@contextlib.contextmanager
def timed_checkpoint_saves() -> Iterator[list[float]]:
    """Time every `Checkpointer.save` made inside the block (capture, serialise, write, fsync)."""
    seconds: list[float] = []
    original = Checkpointer.save

    def save(self: Checkpointer, loop: Any) -> Path:
        started = time.perf_counter()
        try:
            return original(self, loop)
        finally:
            seconds.append(time.perf_counter() - started)

    Checkpointer.save = save
    try:
        yield seconds
    finally:
        Checkpointer.save = original


def seedbed_loop(
    work: Work, determinism: str | None = None, precision: str = "32", accumulate: int = 1
) -> float:
    """seedbed's own fit(), as train.py calls it (metrics written to a temporary file);
    seconds per batch."""
    if determinism is not None:
        set_determinism(determinism)
    seeds = seed_everything(work.cfg.seed, work.cfg.seeds)
    model = copy.deepcopy(work.model)
    train_batches, val_batches = build_batches(work.data, work.cfg.loader, seeds)
    optimizer = build_optimizer(model.parameters(), work.cfg.optim)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = MetricsLog(Path(tmp) / "metrics.jsonl")
        started = time.perf_counter()
        settings = LoopSettings(
            epochs=work.epochs,
            device=torch.device("cpu"),
            metrics=metrics,
            log_every=work.cfg.trainer.log_every,
            accumulate_grad_batches=accumulate,
            precision=build_precision(precision, torch.device("cpu")),
        )
        started = time.perf_counter()
        fit(model, optimizer, None, train_batches, val_batches, work.task, LoopState(), settings)
        elapsed = time.perf_counter() - started
        metrics.close()
    return elapsed / work.steps


def hand_written_loop(work: Work, accumulate: int = 1) -> float:
    """The work itself: index the tensors with a random permutation, step, validate; with
    `accumulate`, one optimizer step per that many batches (seconds per batch)."""
    model = copy.deepcopy(work.model)
    optimizer = build_optimizer(model.parameters(), work.cfg.optim)
    x, y = work.data.train.x, work.data.train.y
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for _ in range(work.epochs):
        order = torch.randperm(len(y), generator=generator)
        for batch, i in enumerate(range(0, len(y), work.batch_size)):
            idx = order[i : i + work.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            if accumulate == 1:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                continue
            (loss / accumulate).backward()  # the epoch's last window is left short: it is 1%
            if (batch + 1) % accumulate == 0:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        _validate(model, work.data.val.x, work.data.val.y, work.batch_size)
    return (time.perf_counter() - started) / work.steps


def dataloader_loop(work: Work) -> float:
    """The usual recipe: DataLoader(TensorDataset, shuffle=True), then the same steps."""
    model = copy.deepcopy(work.model)
    optimizer = build_optimizer(model.parameters(), work.cfg.optim)
    loader = DataLoader(
        TensorDataset(work.data.train.x, work.data.train.y),
        batch_size=work.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    started = time.perf_counter()
    for _ in range(work.epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _validate(model, work.data.val.x, work.data.val.y, work.batch_size)
    return (time.perf_counter() - started) / work.steps


def lightning_loop(work: Work) -> float:
    """The same model, data and steps under Lightning's Trainer(deterministic=True)."""
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self, net: nn.Module, cfg: DictConfig) -> None:
            super().__init__()
            self.net, self.cfg = net, cfg

        def training_step(self, batch, _index):
            xb, yb = batch
            return F.cross_entropy(self.net(xb), yb)

        def validation_step(self, batch, _index):
            xb, yb = batch
            self.log("val_loss", F.cross_entropy(self.net(xb), yb), prog_bar=False)

        def configure_optimizers(self):
            return build_optimizer(self.net.parameters(), self.cfg.optim)

    module = Module(copy.deepcopy(work.model), work.cfg)
    train = DataLoader(
        TensorDataset(work.data.train.x, work.data.train.y),
        batch_size=work.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    val = DataLoader(TensorDataset(work.data.val.x, work.data.val.y), batch_size=work.batch_size)
    trainer = L.Trainer(
        max_epochs=work.epochs,
        deterministic=True,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    started = time.perf_counter()
    trainer.fit(module, train, val)
    return (time.perf_counter() - started) / work.steps


def bare_startup_script() -> str:
    """A script that does what `python train.py` must do before its first step, bare."""
    return """
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

rng = np.random.default_rng(0)
centres = rng.standard_normal((10, 32)) * 0.5
y = rng.integers(0, 10, size=8192)
x = centres[y] + rng.standard_normal((8192, 32))
x, y = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
model = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 128),
                      nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 10))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
loss = F.cross_entropy(model(x[:64]), y[:64])
loss.backward()
optimizer.step()
"""
