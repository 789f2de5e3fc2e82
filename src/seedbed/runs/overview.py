"""What a run says about itself at its start: the resolved config as a tree (rich on a
terminal when installed, plain YAML in train.log otherwise), the model's parameters per
top-level module, and the debugging settings in force (run.json's `debug`)."""

from __future__ import annotations

import logging
import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

log = logging.getLogger("seedbed")

# The trainer keys that make a debugging run (debug=fdr|limit|overfit|profiler|anomaly), and
# their values when off.
DEBUG_KEYS = {
    "limit_train_batches": None,
    "limit_val_batches": None,
    "overfit_batches": None,
    "detect_anomaly": False,
}


def show_config(cfg: DictConfig) -> None:
    """The resolved config: a rich tree on a terminal (when rich is installed), and always
    plain YAML in train.log (config.yaml in the run directory holds it too)."""
    text = OmegaConf.to_yaml(cfg, resolve=True)
    log.debug("config:\n%s", text)
    if not sys.stderr.isatty():
        return
    try:
        from rich.console import Console
        from rich.syntax import Syntax
        from rich.tree import Tree
    except ImportError:
        sys.stderr.write(text)
        return
    tree = Tree("config", guide_style="dim")
    for group, value in OmegaConf.to_container(cfg, resolve=True).items():
        branch = tree.add(str(group), style="bold")
        body = OmegaConf.to_yaml(value) if isinstance(value, (dict, list)) else f"{value}\n"
        branch.add(Syntax(body.rstrip(), "yaml", theme="ansi_dark", background_color="default"))
    Console(stderr=True).print(tree)


def model_summary(model: nn.Module) -> dict[str, Any]:
    """Parameters per top-level module, total and trainable."""

    def count(module: nn.Module, trainable_only: bool = False) -> int:
        return sum(
            p.numel()
            for p in module.parameters()
            if p.requires_grad or not trainable_only  # shared weights are counted once
        )

    modules = {
        name: {"type": type(child).__name__, "parameters": count(child)}
        for name, child in model.named_children()
    }
    return {
        "class": type(model).__name__,
        "modules": modules,
        "parameters": count(model),
        "trainable": count(model, trainable_only=True),
    }


def summary_table(summary: dict[str, Any]) -> str:
    """`model_summary` as the lines train.log shows."""
    rows = [(name, m["type"], m["parameters"]) for name, m in summary["modules"].items()]
    width = max([len(name) for name, _, _ in rows] + [len("trainable")])
    lines = [f"  {name:<{width}}  {kind:<20} {n:>12,}" for name, kind, n in rows]
    lines.append(f"  {'total':<{width}}  {'':<20} {summary['parameters']:>12,}")
    lines.append(f"  {'trainable':<{width}}  {'':<20} {summary['trainable']:>12,}")
    return "\n".join(lines)


def debug_record(cfg: DictConfig) -> dict[str, Any]:
    """The debugging settings this run uses (those not at their off value, and the profiler
    callback); {} for a real run."""
    trainer = cfg.trainer
    record = {key: trainer[key] for key, off in DEBUG_KEYS.items() if trainer.get(key) != off}
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is not None and node.get("_target_") == "seedbed.callbacks.Profiler":
            record["profiler"] = name
    return record
