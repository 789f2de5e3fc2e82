"""Your own callbacks: one class here and one YAML in configs/callbacks/ each
(`python train.py callbacks=weight_norm`, or `'callbacks=[ema,weight_norm]'` with seedbed's).

A callback handles any of the loop's events: `on_step_end(state)` after each optimizer
step, `on_validation(state, val)` after each validation (return True to stop training),
`on_epoch_end(state)`. Its constructor may ask for `model`, `metrics` (where records go:
metrics.jsonl and the loggers) and `run_dir` by name. With `state_dict()` and
`load_state_dict()` it is saved in every checkpoint (as `callback.<its name>`) and restored
on a resume, so a resumed run ends as the uninterrupted one. Never draw from the global
random generators here: the run's own streams would shift.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


class WeightNorm:
    """Logs the global L2 norm of the weights every `every_steps` optimizer steps
    (`weights/norm` in metrics.jsonl and the loggers) and, at each epoch's end, the largest
    so far: a state, checkpointed, so a resumed run reports the same largest."""

    def __init__(self, model: nn.Module, metrics: Any, every_steps: int = 50) -> None:
        self.model, self.metrics, self.every_steps = model, metrics, every_steps
        self.largest = 0.0

    @torch.no_grad()
    def on_step_end(self, state: Any) -> None:
        if state.step % self.every_steps:
            return
        norms = torch.stack([p.norm() for p in self.model.parameters()])
        norm = float(torch.linalg.vector_norm(norms))
        self.largest = max(self.largest, norm)
        self.metrics.write(
            {"kind": "weights", "epoch": state.epoch, "step": state.step, "norm": norm}
        )

    def on_epoch_end(self, state: Any) -> None:
        log.info("largest weight norm so far: %.4f", self.largest)

    def state_dict(self) -> dict[str, Any]:
        return {"largest": self.largest}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.largest = state["largest"]
