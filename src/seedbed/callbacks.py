"""Callbacks: what acts during training without being one more parameter of `fit`.

A callback is any object with some of the loop's events (`on_step_end(state)`,
`on_validation(state, val)` returning True to stop, `on_epoch_end(state)`, a
`validation_model` attribute); one that speaks `state_dict()` /
`load_state_dict()` is saved in every checkpoint under `callback.<its name>`
and restored on a resume, so a resumed run ends bit-identical to the
uninterrupted one. `callbacks=ema` (a YAML under configs/callbacks/) selects
one; `build_callbacks` builds them by `_target_`, handing each the runtime
objects its constructor names (`model`, `metrics`, `run_dir`). A callback must
not draw from the global random generators: the run's streams would change
(docs/callbacks.md).
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig
from torch import nn

from seedbed.core.errors import ConfigError
from seedbed.core.loggers import MetricsWriter
from seedbed.loop import LoopState

log = logging.getLogger(__name__)

# The objects a callback's constructor may ask for by name.
RUNTIME_ARGUMENTS = ("model", "metrics", "run_dir")
# The key prefix of a callback's state in a checkpoint.
CHECKPOINT_PREFIX = "callback."


class EMA:
    """An exponential moving average of the model's weights (Polyak averaging), updated
    every `every_steps` optimizer steps: `ema = decay' * ema + (1 - decay') * weights`, where
    `decay' = min(decay, (1 + n) / (10 + n))` after n updates, so that the average follows the
    weights early on. Buffers (BatchNorm's running statistics) are copied, not averaged."""

    def __init__(
        self,
        model: nn.Module,
        decay: float = 0.999,
        every_steps: int = 1,
        use_for_validation: bool = True,
        use_for_best: bool = True,
    ) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError("callbacks.ema.decay", decay, "a number in (0, 1)")
        if every_steps < 1:
            raise ConfigError("callbacks.ema.every_steps", every_steps, "an int >= 1")
        self.model, self.decay, self.every_steps = model, decay, every_steps
        self.use_for_validation, self.use_for_best = use_for_validation, use_for_best
        self.average = copy.deepcopy(model).requires_grad_(False)
        self.updates = 0
        self._pairs = [
            (a, p)
            for a, p in zip(self.average.parameters(), model.parameters(), strict=True)
            if p.dtype.is_floating_point
        ]
        self._buffers = list(zip(self.average.buffers(), model.buffers(), strict=True))

    @property
    def validation_model(self) -> nn.Module | None:
        """What the loop validates (so early stopping and best.pt judge it) when asked."""
        return self.average if self.use_for_validation else None

    @torch.no_grad()
    def on_step_end(self, state: LoopState) -> None:
        if state.step % self.every_steps:
            return
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        averages, weights = zip(*self._pairs, strict=True) if self._pairs else ((), ())
        torch._foreach_lerp_(list(averages), list(weights), 1.0 - decay)
        for average, buffer in self._buffers:
            average.copy_(buffer)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.average.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.average.load_state_dict(state["weights"])
        self.updates = state["updates"]


class GradNorm:
    """Logs the global L2 norm of the gradients (before clipping is undone: what the step
    used) every `every_steps` optimizer steps: records `{"kind": "grad", "norm": ...}` in
    metrics.jsonl and the loggers (`grad/norm`). It reads one number a step from the device:
    on a GPU, a larger `every_steps` keeps the loop asynchronous."""

    def __init__(self, model: nn.Module, metrics: MetricsWriter, every_steps: int = 1) -> None:
        if every_steps < 1:
            raise ConfigError("callbacks.grad_norm.every_steps", every_steps, "an int >= 1")
        self.model, self.metrics, self.every_steps = model, metrics, every_steps

    def on_step_end(self, state: LoopState) -> None:
        if state.step % self.every_steps:
            return
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not grads:
            return
        norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
        self.metrics.write({"kind": "grad", "epoch": state.epoch, "step": state.step, "norm": norm})


class Profiler:
    """torch.profiler over a few optimizer steps (`wait`, then `warmup`, then `active`
    recorded), the trace written into `<run dir>/profiler/` (open it in TensorBoard or
    https://ui.perfetto.dev); a summary table of the busiest ops goes to train.log."""

    def __init__(self, run_dir: Path, wait: int = 1, warmup: int = 1, active: int = 3) -> None:
        from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

        self.directory = Path(run_dir) / "profiler"
        self.total = wait + warmup + active
        self.steps = 0
        activities = [ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        self.profile = profile(
            activities=activities,
            schedule=schedule(wait=wait, warmup=warmup, active=active, repeat=1),
            on_trace_ready=tensorboard_trace_handler(str(self.directory)),
            record_shapes=True,
        )
        self.profile.start()

    def on_step_end(self, state: LoopState) -> None:
        if self.steps >= self.total:
            return
        self.profile.step()
        self.steps += 1
        if self.steps == self.total:
            self.profile.stop()
            table = self.profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
            log.info("profiler: trace in %s\n%s", self.directory, table)


def build_callbacks(config: Mapping[str, Any] | None, **runtime: Any) -> dict[str, Any]:
    """The callbacks `config` (the `callbacks` group: name -> `_target_` and its settings)
    selects, built in order; each is handed those of `runtime` its constructor names."""
    built: dict[str, Any] = {}
    for name, node in (config or {}).items():
        if node is None:
            continue
        if not isinstance(node, (Mapping, DictConfig)) or "_target_" not in node:
            raise ConfigError(f"callbacks.{name}", node, "a mapping with a _target_ or null")
        wanted = inspect.signature(get_object(node["_target_"])).parameters
        given = {key: value for key, value in runtime.items() if key in wanted and key not in node}
        built[str(name)] = instantiate(node, **given)
    return built


def checkpointed(callbacks: Mapping[str, Any]) -> dict[str, Any]:
    """The callbacks that have a state, by their checkpoint key (`callback.<name>`)."""
    return {
        f"{CHECKPOINT_PREFIX}{name}": callback
        for name, callback in callbacks.items()
        if hasattr(callback, "state_dict") and hasattr(callback, "load_state_dict")
    }


def best_weights(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The weights a checkpoint's evaluation uses: an EMA's (`use_for_best`) when the run
    kept one, else the model's."""
    config = checkpoint.get("config") or {}
    for name, node in (config.get("callbacks") or {}).items():
        if (
            isinstance(node, Mapping)
            and node.get("_target_") == f"{__name__}.EMA"
            and node.get("use_for_best", True)
            and isinstance(state := checkpoint.get(f"{CHECKPOINT_PREFIX}{name}"), Mapping)
        ):
            return dict(state["weights"])
    return dict(checkpoint["model"])
