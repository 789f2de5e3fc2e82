"""The task: what is learned, and how it is scored (`configs/task/<name>.yaml`).

A task owns everything the rest of the code must not guess: the loss (any
`_target_`, e.g. `torch.nn.CrossEntropyLoss`), the metrics and their names
(`val/loss`, `val/acc`, ...), how targets are stored (int64 labels, float
values) and what the model's output needs from the data (classes, or the
target's width). It also names the metric that is monitored (`task.monitor`):
the one that picks best.pt, drives early stopping, is returned to Optuna and
heads a sweep's summary. Nothing else in seedbed spells a metric name.

A task of your own is one class with the methods of `Task` below, plus a
YAML in `configs/task/` whose `_target_` names it (see docs/your-project.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from hydra.utils import instantiate
from omegaconf import MISSING
from torch import Tensor, nn

from seedbed.core.errors import ConfigError
from seedbed.data.arrays import DataSplits
from seedbed.data.normalize import MODES as NORMALIZE_MODES
from seedbed.data.normalize import Normalization

# Bounds what a label may be before it sizes the model's output layer: a stray id of 10**9
# must be one clear line, not a 512 GB allocation.
MAX_CLASSES = 1_000_000


@dataclass(frozen=True)
class Monitor:
    """The metric that decides what is best: its name (`val/acc`) and whether to minimise it."""

    metric: str
    mode: str  # "min" or "max"

    @classmethod
    def of(cls, task: Any, metric: str, mode: str | None = None) -> Monitor:
        """`metric` of `task` (one of its `val/<name>`s), minimised unless `mode` says
        otherwise or the metric is in the task's `higher_is_better`."""
        allowed = [f"val/{name}" for name in task.metrics]
        if metric not in allowed:
            raise ConfigError(
                "task.monitor", metric, f"a metric this task reports: {', '.join(allowed)}"
            )
        if mode is None:
            higher = metric.split("/", 1)[1] in getattr(task, "higher_is_better", ())
            mode = "max" if higher else "min"
        if mode not in ("min", "max"):
            raise ConfigError("task.mode", mode, "min, max, or null (from the metric)")
        return cls(metric, mode)

    def improves(self, value: float, best: float | None, min_delta: float = 0.0) -> bool:
        """Whether `value` beats `best` by more than `min_delta` (any finite value beats None)."""
        if math.isnan(value):
            return False
        if best is None:
            return True
        return value < best - min_delta if self.mode == "min" else value > best + min_delta


class Task(Protocol):
    """What the loop, evaluation, checkpoints and summaries need from a task.

    Optional: `constant_output(train_y, num_outputs)`, the best output that ignores the
    input; with it, a run that does no better by its first epoch of 50+ steps warns that it
    is not learning (`seedbed.learning`)."""

    metrics: tuple[str, ...]
    monitor: Monitor

    def prepare(self, data: DataSplits) -> DataSplits:
        """Check and convert the targets; set `data.num_outputs`. Raise ConfigError if unfit."""

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """The training loss of one batch (a scalar, mean over the batch)."""

    def metric_sums(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Per-batch sums of what the metrics need, on the device (no synchronisation)."""

    def reduce(self, sums: dict[str, Tensor], count: int) -> dict[str, float]:
        """The metrics (named as in `metrics`) from the sums over `count` samples."""


@torch.no_grad()
def constant_baseline(task: Any, data: DataSplits) -> dict[str, float] | None:
    """The task's validation metrics of a model that ignores its input and always outputs
    `task.constant_output(...)` (the most frequent class, the mean target); None for a task
    without one. What a run must beat to have learned anything."""
    constant = getattr(task, "constant_output", None)
    if constant is None:
        return None
    y = torch.as_tensor(data.val.y)
    output = constant(torch.as_tensor(data.train.y), data.num_outputs)
    sums = task.metric_sums(output.expand(len(y), -1), y)
    return {f"val/{name}": value for name, value in task.reduce(sums, len(y)).items()}


def build_loss(loss: Any) -> nn.Module:
    """The loss module from its config (a `_target_`), or one line naming what is wrong."""
    target = loss.get("_target_") if hasattr(loss, "get") else loss
    try:
        module = instantiate(loss)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            "task.loss._target_", target, f"a loss class that can be built ({first})"
        ) from error
    if not callable(module):
        raise ConfigError("task.loss._target_", target, "a callable loss (e.g. torch.nn.MSELoss)")
    return module


@torch.no_grad()
def check_loss_accepts(task: Any, data: DataSplits) -> None:
    """Call the task's loss once on zeros shaped like the model's output and two training
    targets, so that a loss refusing its settings (HuberLoss with delta <= 0) is one line
    naming it now, not a traceback at the first step."""
    target = data.splits()["train"].y[:2]
    output = torch.zeros((len(target), data.num_outputs))
    try:
        task.loss(output, target)
    except (RuntimeError, ValueError, TypeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        name = type(task.loss_fn).__name__
        raise ConfigError("task.loss", name, f"settings its loss accepts ({first})") from error


class Classification:
    """One label per sample, an int in [0, classes): cross-entropy, loss and accuracy."""

    metrics = ("loss", "acc")
    higher_is_better = {"acc"}

    def __init__(
        self, loss: Any, label_smoothing: float = 0.0, monitor: str = "val/loss", mode: Any = None
    ) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError("task.label_smoothing", label_smoothing, "a number in [0, 1)")
        self.loss_fn = build_loss(loss)
        self.monitor = Monitor.of(self, monitor, mode)

    def prepare(self, data: DataSplits) -> DataSplits:
        splits = data.splits()
        for name, dataset in splits.items():
            y = dataset.y
            if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
                raise ConfigError(
                    "task",
                    "classification",
                    f"integer class labels (the {name} labels are {y.dtype}); "
                    "for real-valued targets use task=regression",
                )
            if y.ndim != 1:
                raise ConfigError(
                    "task",
                    "classification",
                    f"one label per sample (the {name} labels have shape {tuple(y.shape)})",
                )
            if len(y) and int(y.min()) < 0:
                raise ConfigError(
                    "task", "classification", f"labels >= 0 (the {name} split has {int(y.min())})"
                )
            dataset.y = y.to(torch.int64)
        largest = max(int(d.y.max()) for d in splits.values() if len(d.y))
        if largest >= MAX_CLASSES:
            raise ConfigError(
                "task",
                "classification",
                f"labels < {MAX_CLASSES} (found {largest}): relabel your classes 0..K-1",
            )
        data.num_outputs = max(data.num_classes or 0, largest + 1)
        check_loss_accepts(self, data)
        return data

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return self.loss_fn(output, target)

    def constant_output(self, train_y: Tensor, num_outputs: int) -> Tensor:
        """The best output that ignores the input: the log of the training split's class
        frequencies (add-one smoothed), so its accuracy is the most frequent class's."""
        counts = torch.bincount(train_y, minlength=num_outputs).double() + 1
        return (counts / counts.sum()).log().float()

    def metric_sums(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        return {
            "loss": self.loss_fn(output, target).double() * len(target),
            "correct": (output.argmax(dim=1) == target).sum(),
        }

    def reduce(self, sums: dict[str, Tensor], count: int) -> dict[str, float]:
        n = max(count, 1)
        return {"loss": sums["loss"].item() / n, "acc": sums["correct"].item() / n}


class Regression:
    """Real-valued targets, one value or a vector per sample: MSE by default; RMSE and MAE.

    With `normalize_targets="standard"` (the config's default) each target column is
    standardised with the mean and std of the training split: the model learns targets of
    mean 0 and std 1 whatever their offset and scale, so one learning rate fits every target.
    Everything a person reads is in the target's own units: the model's outputs are mapped
    back (`predict`) before any metric, so `val/loss`, `val/rmse`, `val/mae`, eval.py's
    results and the logged training loss are those of the predictions in target units. The
    statistics (`self.targets`, also `data.target_normalization`) are a checkpoint part, like
    the input statistics."""

    metrics = ("loss", "rmse", "mae")
    higher_is_better: set[str] = set()

    def __init__(
        self,
        loss: Any,
        monitor: str = "val/loss",
        mode: Any = None,
        normalize_targets: str = "none",  # "none": what a run saved before the key did
    ) -> None:
        if normalize_targets not in NORMALIZE_MODES:
            raise ConfigError(
                "task.normalize_targets", normalize_targets, f"one of {', '.join(NORMALIZE_MODES)}"
            )
        self.loss_fn = build_loss(loss)
        self.monitor = Monitor.of(self, monitor, mode)
        self.normalize_targets = normalize_targets
        self.targets: Normalization | None = None
        self.width = 1

    def prepare(self, data: DataSplits) -> DataSplits:
        widths = set()
        for name, dataset in data.splits().items():
            y = dataset.y
            if y.is_complex() or y.dtype == torch.bool:
                raise ConfigError(
                    "task", "regression", f"real-valued targets (the {name} targets are {y.dtype})"
                )
            if y.ndim == 1:
                y = y.unsqueeze(1)  # one value per sample: the model's output is (batch, 1)
            if y.ndim != 2 or y.shape[1] == 0:
                raise ConfigError(
                    "task",
                    "regression",
                    f"targets of shape (samples,) or (samples, d) with d >= 1 (the {name} "
                    f"targets have shape {tuple(dataset.y.shape)})",
                )
            if not bool(torch.isfinite(y.to(torch.float64)).all()):
                raise ConfigError(
                    "task", "regression", f"finite targets (the {name} split has NaN or inf)"
                )
            dataset.y = y.to(torch.float32)
            widths.add(y.shape[1])
        if len(widths) != 1:
            raise ConfigError(
                "task", "regression", f"one target width in every split (got {sorted(widths)})"
            )
        self.width = data.num_outputs = widths.pop()
        check_loss_accepts(self, data)
        if self.normalize_targets == "standard":
            self.targets = data.target_normalization = target_statistics(data.train.y)
            data.record["targets"] = self.targets.record()
        return data

    def constant_output(self, train_y: Tensor, num_outputs: int) -> Tensor:
        """The best output that ignores the input (for a squared error): the training mean."""
        if self.targets is not None:
            return torch.zeros(num_outputs)  # the mean, standardised
        return train_y.double().mean(dim=0).float()

    def predict(self, output: Tensor) -> Tensor:
        """The model's output in the target's units."""
        return output if self.targets is None else self.targets.invert(output)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """The training loss. Standardised targets: the gradient is that of the loss on
        standardised targets (what the optimizer should see), the value that of the
        predictions in target units (what train/loss reports, beside val/loss)."""
        if self.targets is None:
            return self.loss_fn(output, target)
        standardised = self.loss_fn(output, self.targets.apply(target))
        in_units = self.loss_fn(self.predict(output.detach()).double(), target.double())
        return standardised + (in_units - standardised.detach())

    def metric_sums(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        prediction = self.predict(output)
        error = (prediction - target).double()
        return {
            "loss": self.loss_fn(prediction, target).double() * len(target),
            "squared": error.square().sum(),
            "absolute": error.abs().sum(),
        }

    def reduce(self, sums: dict[str, Tensor], count: int) -> dict[str, float]:
        n = max(count, 1)
        values = n * self.width  # RMSE and MAE average over every target value
        return {
            "loss": sums["loss"].item() / n,
            "rmse": math.sqrt(sums["squared"].item() / values),
            "mae": sums["absolute"].item() / values,
        }


def target_statistics(y: Tensor) -> Normalization:
    """Each target column's mean and std on the training split, or one line naming a column
    that does not vary (it cannot be standardised)."""
    low, high = y.min(dim=0).values, y.max(dim=0).values
    constant = (low == high).nonzero().flatten().tolist()
    if constant:
        column = constant[0]
        raise ConfigError(
            "task.normalize_targets",
            "standard",
            f"targets that vary on the training split (target column {column} is "
            f"{float(low[column]):g} in all {len(y)} training samples); "
            "task.normalize_targets=none trains on them as they are",
        )
    return Normalization.fit(y)


def build_task(cfg: Any) -> Task:
    """The task of `cfg` (the `task` group): its loss, metrics and monitored metric."""
    from omegaconf import OmegaConf

    return instantiate(OmegaConf.to_container(cfg, resolve=True), _recursive_=False)


@dataclass
class LossConfig:
    """The loss: any class built by `_target_` with these keyword arguments."""

    _target_: str = MISSING


@dataclass
class ClassificationTaskConfig:
    """Integer class labels: cross-entropy; reports val/loss and val/acc."""

    _target_: str = "seedbed.task.Classification"
    _recursive_: bool = False
    loss: Any = field(
        default_factory=lambda: {
            "_target_": "torch.nn.CrossEntropyLoss",
            "label_smoothing": "${..label_smoothing}",
        }
    )
    """The loss (a `_target_`); its label_smoothing follows `task.label_smoothing`."""
    label_smoothing: float = 0.0
    """Label smoothing of the cross-entropy, in [0, 1)."""
    monitor: str = "val/loss"
    """The metric that picks best.pt, drives early stopping, is returned to Optuna and heads
    a sweep's summary: val/loss or val/acc."""
    mode: str | None = None
    """min or max; null: from the metric (max for acc, min otherwise)."""


@dataclass
class RegressionTaskConfig:
    """Real-valued targets (one value or a vector per sample): MSE; reports val/loss,
    val/rmse and val/mae."""

    _target_: str = "seedbed.task.Regression"
    _recursive_: bool = False
    loss: Any = field(default_factory=lambda: {"_target_": "torch.nn.MSELoss"})
    """The loss (a `_target_`), e.g. torch.nn.L1Loss or torch.nn.HuberLoss."""
    monitor: str = "val/loss"
    """The metric that picks best.pt, drives early stopping, is returned to Optuna and heads
    a sweep's summary: val/loss, val/rmse or val/mae."""
    mode: str | None = None
    """min or max; null: min (every regression metric is an error)."""
    normalize_targets: str = "standard"
    """standard: each target column is standardised with the mean and std of the training
    split for training (saved in every checkpoint, like the inputs'); the loss and metrics
    are still reported in the target's own units. none: the model learns the targets as
    stored. A target that does not vary on the training split cannot be standardised."""


def optuna_direction(monitor: str, mode: str | None) -> str:
    """`minimize` or `maximize`: what an Optuna search does with the monitored metric."""
    if mode is None:
        mode = "max" if monitor.endswith("/acc") else "min"
    return "maximize" if mode == "max" else "minimize"
