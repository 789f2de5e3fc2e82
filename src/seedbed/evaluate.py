"""Evaluate a checkpoint: `python eval.py ckpt=outputs/train/<run>/checkpoints/best.pt`.

The task, data and model are rebuilt from the run's own resolved config (saved
in the checkpoint), the weights loaded, and a split (val by default, train, or
the held-out test split) evaluated in eval mode with the task's metrics. The
result goes to `eval_<split>.json` in the run directory (`eval_val.json`,
`eval_test.json`: one split's result never replaces another's), or to `out=`: a file
name taken relative to the run directory (so it never lands in the working tree), or an
absolute path. `out=` never names one of the run's own files (run.json, metrics.jsonl,
checkpoints/, ...) and never leaves the run directory unless it is absolute. Evaluation
draws no random numbers and the file holds no time, so the same checkpoint gives the
same file, byte for byte.

The checkpoint may come from someone else: its config must be plain data with every
`_target_` on the allow-list (`seedbed.core.received`), and it never downloads.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from seedbed.callbacks import best_weights
from seedbed.core.checkpoint import load_checkpoint
from seedbed.core.determinism import set_determinism
from seedbed.core.device import resolve_device
from seedbed.core.errors import EXIT_USER_ERROR, ConfigError, SeedbedError, error_line
from seedbed.core.files import RUN_DIR_FOLDERS, WRITTEN_IN_RUN_DIR, atomic_write
from seedbed.core.paths import project_configs, run_dir_of, use_project
from seedbed.core.received import check_received, without_downloads
from seedbed.core.record import RUN_FILE, read_json, to_json, weights_sha256
from seedbed.core.sharded import sharded_sha256
from seedbed.data.fingerprint import file_sha256
from seedbed.data.loader import eval_batches
from seedbed.loop import evaluate
from seedbed.runs.hydra import register_configs
from seedbed.task import build_task

SPLITS = ("val", "train", "test")
USAGE = (
    "usage: python eval.py ckpt=<checkpoint.pt> [split=val|train|test] "
    "[out=<file in the run dir, or an absolute path>] [device=<d>] "
    "[allow_targets=[<module prefix>,...]]"
)
KEYS = ("ckpt", "split", "out", "device", "allow_targets")


def evaluate_checkpoint(
    path: str | Path,
    split: str = "val",
    device: str | None = None,
    allow_targets: Sequence[str] = (),
    limit: int | None = None,
) -> dict:
    """The checkpoint's task metrics on `split`, with what identifies them. `allow_targets`:
    module prefixes trusted as `_target_` in the checkpoint's config, beyond seedbed's list
    (a model of your own package: `mypkg.models`). `limit`: the first this many batches only."""
    if split not in SPLITS:
        raise ConfigError("split", split, f"one of {', '.join(SPLITS)}")
    path = Path(path)
    target = resolve_device(device, key="device") if device else None
    checkpoint = load_checkpoint(path)
    stored = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    if not isinstance(stored, dict) or not isinstance(checkpoint.get("model"), dict):
        raise SeedbedError(f"checkpoint {path} holds no run config and model weights")
    # Before anything is resolved or built.
    check_received(stored, f"checkpoint {path}", allow_targets)
    cfg = OmegaConf.create(without_downloads(stored))
    set_determinism(cfg.determinism.mode)
    target = target or resolve_device(cfg.trainer.device, key="device")
    task = build_task(cfg.task)
    data = task.prepare(instantiate(cfg.data, **_data_arguments(cfg, path, checkpoint)))
    if data.target_normalization is not None and checkpoint.get("target_normalization"):
        data.target_normalization.load_state_dict(checkpoint["target_normalization"])
    splits = data.splits()
    if split not in splits:
        raise ConfigError(
            "split",
            split,
            f"one of {', '.join(splits)}: this run's data has no test split "
            "(set data.test_fraction, or give the .npz x_test and y_test)",
        )
    model = instantiate(cfg.model, input_shape=data.input_shape, num_outputs=data.num_outputs)
    weights = best_weights(checkpoint)  # an EMA's average, when the run says so
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        message = f"checkpoint {path}: its weights do not fit its model ({first})"
        raise SeedbedError(message) from None
    model.to(target)
    dataset = splits[split]
    if split == "train":  # evaluated as it is stored: without augmentation
        dataset = dataset.unaugmented()
    batches = eval_batches(dataset, cfg.loader.batch_size)
    result = evaluate(model, batches, task, target, split=split, limit=limit)
    return {
        "checkpoint": str(path),
        "checkpoint_file": path.resolve().name,
        "checkpoint_sha256": sharded_sha256(path) if path.is_dir() else file_sha256(path),
        "weights_sha256": weights_sha256(weights),
        "epoch": checkpoint["loop"]["epoch"],
        "step": checkpoint["loop"]["step"],
        "split": split,
        "device": str(target),
        "samples": len(dataset),
        "metrics": result,
    }


def _data_arguments(cfg: Any, path: Path, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What rebuilding the run's data needs beyond its config: the normalisation statistics
    training used, and the absolute paths run.json recorded where a relative one does not
    resolve from here (eval.py may run from any directory)."""
    arguments: dict[str, Any] = {}
    if checkpoint.get("data_normalization") is not None:
        arguments["normalization"] = checkpoint["data_normalization"]
    run_file = run_dir_of(path) / RUN_FILE
    recorded = read_json(run_file).get("data") or {} if os.path.lexists(run_file) else {}
    for key, absolute in (recorded.get("paths") or {}).items():
        given = cfg.data.get(key)
        if isinstance(given, str) and not Path(given).exists():
            arguments[key] = absolute
    return arguments


def parse_args(args: list[str]) -> dict[str, str]:
    """`key=value` pairs (and `--out <file>`); unknown keys are refused."""
    options: dict[str, str] = {}
    args = list(args)
    while args:
        arg = args.pop(0).removeprefix("--")
        key, sep, value = arg.partition("=")
        if not sep and key == "out" and args:
            value = args.pop(0)
        elif not sep:
            raise SeedbedError(f"{arg!r} is not key=value; {USAGE}")
        if key not in KEYS:
            raise ConfigError(key, value, f"one of {', '.join(KEYS)}; {USAGE}")
        options[key] = value
    if "ckpt" not in options:
        raise SeedbedError(f"ckpt is missing; {USAGE}")
    return options


def output_path(ckpt: str, out: str | None, split: str) -> Path:
    """Where the result goes: `<run>/eval_<split>.json`, or `out=` (relative to the run
    directory, or absolute); refused, naming `out`, if it is one of the run's own files or
    folders, or a relative path that leaves the run directory."""
    run_dir = run_dir_of(ckpt)
    if out is None:
        return run_dir / f"eval_{split}.json"
    path = Path(out) if Path(out).is_absolute() else run_dir / out
    # The parent with its links followed, the name as given (os.replace replaces a link).
    where = Path(os.path.realpath(path.parent)) / path.name
    root = Path(os.path.realpath(run_dir))
    inside = where.is_relative_to(root) and where != root
    own_names = {name.split("/")[0] for name in WRITTEN_IN_RUN_DIR}
    if (
        (inside and where.relative_to(root).parts[0] in own_names)
        or where == root
        or (not inside and not Path(out).is_absolute())
    ):
        raise ConfigError(
            "out",
            out,
            "a file that is none of the run's own ("
            + ", ".join(sorted(n + ("/" if n in RUN_DIR_FOLDERS else "") for n in own_names))
            + "): a name in the run directory, or an absolute path",
        )
    return path


def prefixes(value: str) -> list[str]:
    """`allow_targets=[mypkg.models,other]` (or without brackets) as a list of prefixes."""
    inner = value.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    found = [part.strip().strip("'\"") for part in inner.split(",") if part.strip()]
    for prefix in found:
        if not all(part.isidentifier() for part in prefix.split(".")):
            raise ConfigError(
                "allow_targets", value, f"a list of module prefixes like [mypkg.models]; {USAGE}"
            )
    return found


def write_eval(result: dict[str, Any], out: Path) -> None:
    text = to_json(result, indent=2, sort_keys=True) + "\n"
    atomic_write(out, lambda file: file.write(text.encode()))


def cli(config_dir: str | Path | None = None) -> None:
    """`python eval.py ckpt=...` in the project whose configs are `config_dir` (default
    `./configs`: what it trusts): print the metrics, write eval_<split>.json; errors in one
    line."""
    use_project(config_dir or project_configs())
    register_configs()  # the schemas name the builders a checkpoint's config may use
    try:
        options = parse_args(sys.argv[1:])
        split = options.get("split", "val")
        # Relative to the run directory (an absolute path is kept as it is): a file written
        # into the working directory would sit in the repository and mark later runs dirty.
        # Checked before the evaluation: a refused out= costs nothing.
        out = output_path(options["ckpt"], options.get("out"), split)
        result = evaluate_checkpoint(
            options["ckpt"],
            split,
            options.get("device"),
            prefixes(options.get("allow_targets", "")),
        )
        try:
            write_eval(result, out)
        except OSError as error:
            raise SeedbedError(f"out={str(out)!r} cannot be written: {error.strerror}") from None
    except SeedbedError as error:
        print(f"error: {error_line(error)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except (OmegaConfBaseException, HydraException) as error:
        print(f"error: checkpoint {options['ckpt']}: {error_line(error)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    metrics = "  ".join(f"{k} {v:.6g}" for k, v in result["metrics"].items())
    print(f"{metrics}  (step {result['step']})")
    print(f"wrote {out}")


if __name__ == "__main__":  # python -m seedbed.evaluate ckpt=...
    cli()
