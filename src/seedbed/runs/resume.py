"""Resume a run where it stopped: find its newest good checkpoint, check the config, rewind.

`resume=<run dir>` takes `checkpoints/last.pt`, or, if that is unreadable, the
newest `step_*.pt` that is good (and says which it skipped). The resumed config
is the saved one with this command's overrides applied; it may differ from the
saved one only in keys that cannot change the results (`SAFE_ON_RESUME`),
unless `resume.force=true`. Rewinding truncates `metrics.jsonl` to where the
checkpoint was written (no record lost, none duplicated) and moves aside the
checkpoints of a later, abandoned continuation.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from seedbed.core.checkpoint import (
    STEP_FILE,
    CheckpointError,
    load_checkpoint,
    point_link,
    step_files,
)
from seedbed.core.environment import ENVIRONMENT_FILE
from seedbed.core.errors import ConfigError, SeedbedError
from seedbed.core.files import open_nofollow, read_bounded
from seedbed.core.interrupts import epoch_position
from seedbed.core.paths import CHECKPOINT_DIR, run_dir_of
from seedbed.core.received import check_received, without_downloads
from seedbed.core.record import METRICS_FILE, RUN_FILE, flatten, read_json
from seedbed.core.sharded import is_sharded
from seedbed.optim import spans_the_run
from seedbed.runs.forced_resume import refuse_unapplied, refuse_unknown_optimizer_settings
from seedbed.runs.hydra import TrainConfig

log = logging.getLogger(__name__)

# Keys that change how a run is logged, checkpointed or served, never its numbers.
# trainer.log_every changes which loss records are written, not the weights; data.download
# fetches the same checked files (a resume downloads only when its own command says so).
SAFE_ON_RESUME = (
    "trainer.epochs",
    "trainer.log_every",
    "allow_targets",
    "recipe",  # the project's code: what changed in it is code.patch's to record
    "checkpoint.",
    "logger.",
    "loader.num_workers",
    "loader.pin_memory",
    "loader.persistent_workers",
    "loader.prefetch_factor",
    "data.download",
    # The world size and the split of a global batch into accumulated micro-batches (and
    # naming the global batch the run had): the same samples per step (another global batch
    # is refused as the run resumes); only the
    # summation order (float rounding) and per-rank dropout change. run.json's `segments`
    # record each segment's world size.
    "trainer.distributed",
    "trainer.accumulate_grad_batches",
    "loader.global_batch_size",
)
_ABSENT = "<absent>"


def checkpoint_candidates(run_dir: Path) -> list[Path]:
    """last.pt, then every step file, newest first."""
    directory = run_dir / CHECKPOINT_DIR
    last = directory / "last.pt"
    found = [last] if last.exists() or last.is_symlink() else []
    return found + [p for p in step_files(directory) if p.resolve() != last.resolve()]


def restartable(run_dir: Path) -> bool:
    """A run that was stopped before its step-0 checkpoint: nothing to resume, start again."""
    try:
        status = read_json(run_dir / RUN_FILE).get("status")
    except SeedbedError:
        return False
    return status != "completed" and not checkpoint_candidates(run_dir)


def check_inside(path: Path, directory: Path) -> None:
    """A checkpoint link (last.pt, best.pt) must point at a file in its own directory."""
    if path.is_symlink() and path.resolve().parent != directory.resolve():
        raise CheckpointError(
            f"checkpoint {path} is refused: it links to {os.readlink(path)}, outside {directory}"
        )


def find_checkpoint(resume_path: str) -> tuple[Path, dict[str, Any], list[str]]:
    """(file, its contents, the messages of the bad ones skipped) for `resume.path`."""
    path = Path(resume_path)
    if not path.exists():
        raise ConfigError(
            "resume.path", resume_path, "a run directory or a checkpoint file (it does not exist)"
        )
    if path.is_file() or is_sharded(path):
        check_inside(path, path.parent)
        return path, load_checkpoint(path, tensors=False), []
    skipped: list[str] = []
    for candidate in checkpoint_candidates(path):
        try:
            check_inside(candidate, path / CHECKPOINT_DIR)
            checkpoint = load_checkpoint(
                candidate, tensors=False
            )  # a sharded one: its tensors later
        except CheckpointError as error:
            skipped.append(str(error))
            log.warning("%s; trying an older one", error)
            continue
        if skipped:
            log.warning("resuming from %s, the newest good checkpoint", candidate)
        return candidate, checkpoint, skipped
    reason = (
        "; ".join(skipped)
        if skipped
        else (
            "it holds no checkpoint: a run stopped before its first one is started again in place "
            f"by its own command with hydra.run.dir={path}"
        )
    )
    raise SeedbedError(f"resume.path={resume_path!r}: no usable checkpoint ({reason})")


def with_new_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """The saved config plus the keys the schema has gained since it was written, at their
    defaults: a new key's default is what runs did before it existed (`trainer.precision`
    32, `trainer.accumulate_grad_batches` 1, ...), so a run from an earlier version resumes
    without a change to refuse."""
    schema = OmegaConf.to_container(OmegaConf.structured(TrainConfig))

    def fill(into: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
        for key, default in defaults.items():
            if key not in into and default != "???":  # "???": a group, set by its option
                into[key] = default
            elif isinstance(into.get(key), dict) and isinstance(default, dict):
                fill(into[key], default)
        return into

    return fill(copy.deepcopy(saved), schema)


def given_keys(overrides: list[str] | None) -> set[str] | None:
    """The keys (and groups) this command line sets, whatever the spelling (`key=`, `+key=`,
    `++key=`); None for a programmatic call, whose whole config is the caller's."""
    if overrides is None:
        return None
    return {o.key_or_group for o in OverridesParser.create().parse_overrides(overrides)}


def resumed_config(
    saved: dict[str, Any], cfg: DictConfig, overrides: list[str] | None
) -> DictConfig:
    """The saved config with this command's `overrides` taken from `cfg`.

    Without `overrides` (a programmatic call), `cfg` itself is the config to resume with.
    """
    if overrides is None:
        return cfg
    effective = OmegaConf.create(without_downloads(saved))
    # Where the run writes and what it sends is this command's: its loggers, never the file's.
    effective.logger = OmegaConf.to_container(cfg.logger, resolve=True)
    dropped = [
        name for name, on in (saved.get("logger") or {}).items() if on and not cfg.logger.get(name)
    ]
    if dropped:
        log.warning(
            "the run logged to %s; this resume does not: loggers (and where they write) come "
            "from the resume's own command (logger=%s to continue them)",
            ", ".join(dropped),
            f"[{','.join(dropped)}]" if len(dropped) > 1 else dropped[0],
        )
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key == "resume" or key.startswith(("resume.", "hydra.")):
            continue
        if override.is_delete():
            OmegaConf.update(effective, key, None, merge=False)
            continue
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if isinstance(value, str) and value == _ABSENT:
            raise ConfigError(
                key,
                override.input_line,
                "a config key on resume (a group such as experiment or debug sets other keys: "
                "give those keys instead)",
            )
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        OmegaConf.update(effective, key, value, merge=False)
    effective.resume = OmegaConf.to_container(cfg.resume, resolve=True)
    # The code that runs, and what it trusts, are this project's, never the file's.
    effective.recipe = cfg.recipe
    effective.allow_targets = OmegaConf.to_container(cfg.allow_targets, resolve=True)
    return effective


def config_changes(saved: dict[str, Any], cfg: DictConfig) -> dict[str, tuple[Any, Any]]:
    """{key: (saved value, new value)} for every leaf that differs; `resume` aside."""
    new = OmegaConf.to_container(cfg, resolve=True)
    old_flat = flatten({k: v for k, v in saved.items() if k != "resume"})
    new_flat = flatten({k: v for k, v in new.items() if k != "resume"})
    return {
        key: (old_flat.get(key, _ABSENT), new_flat.get(key, _ABSENT))
        for key in sorted(set(old_flat) | set(new_flat))
        if old_flat.get(key, _ABSENT) != new_flat.get(key, _ABSENT)
    }


def is_safe_on_resume(key: str, cfg: DictConfig) -> bool:
    if key == "trainer.epochs" and spans_the_run(cfg.sched):
        return False  # the schedule spans the whole run: its length changes the numbers
    # `logger.` covers the group itself too: `logger` emptied, or set where it was empty.
    return any(
        key == safe or (safe.endswith(".") and f"{key}.".startswith(safe))
        for safe in SAFE_ON_RESUME
    )


def check_changes(changes: dict[str, tuple[Any, Any]], cfg: DictConfig) -> None:
    """Refuse changes that would alter the results, unless resume.force=true."""
    unsafe = {k: v for k, v in changes.items() if not is_safe_on_resume(k, cfg)}
    if unsafe and not cfg.resume.force:
        diff = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in unsafe.items())
        raise SeedbedError(
            f"resume refused: the config differs from the saved one in {diff}; only "
            f"{', '.join(s + '*' if s.endswith('.') else s for s in SAFE_ON_RESUME)} may change "
            "(trainer.epochs not with a schedule sized from the run's length: "
            "cosine's T_max, onecycle's or warmup_cosine's total_steps null); "
            "resume.force=true resumes anyway"
        )


def check_epochs(epochs: int, loop: dict[str, Any]) -> None:
    if epochs < loop["epoch"] or (epochs == loop["epoch"] and loop["batch"] > 0):
        needed = loop["epoch"] + (1 if loop["batch"] > 0 else 0)
        raise ConfigError(
            "trainer.epochs",
            epochs,
            f"an int >= {needed} on resume: the checkpoint is from step {loop['step']} "
            f"({epoch_position(loop['epoch'], loop['batch'])})",
        )


@dataclass
class Rewound:
    """What rewinding the run directory did, for run.json."""

    discarded: list[str] = field(default_factory=list)
    metrics_note: str | None = None


def rewind_run_dir(run_dir: Path, checkpoint_path: Path, checkpoint: dict[str, Any]) -> Rewound:
    """Make the run directory look as it did when `checkpoint` was written."""
    done = Rewound()
    directory = run_dir / CHECKPOINT_DIR
    step = checkpoint["loop"]["step"]
    source = checkpoint_path.resolve()
    # Checkpoints of a continuation that went further are moved aside, not deleted.
    for path in step_files(directory):
        if path.resolve() != source and int(path.stem.split("_")[1]) > step:
            aside = directory / "discarded" / path.name
            aside.parent.mkdir(exist_ok=True)
            os.replace(path, aside)
            done.discarded.append(path.name)
    # A last.pt that is a file of its own (a copy that followed the links) is the checkpoint
    # itself: pointing it at its own name would make a link to itself, and lose it.
    if source.parent == directory.resolve() and source.name != "last.pt":
        point_link(directory / "last.pt", source.name)
    best = checkpoint.get("best")
    best_link = directory / "best.pt"
    if best and (directory / best["file"]).exists():
        point_link(best_link, best["file"])
    elif best_link.is_symlink() and not best_link.exists():
        best_link.unlink()

    metrics = run_dir / METRICS_FILE
    offset = checkpoint.get("metrics_bytes", 0)
    size = metrics.stat().st_size if metrics.exists() else 0
    cut = offset  # drop what was logged after the checkpoint: it is redone
    if size < offset:
        # Cut short (a damaged copy) or gone: keep the whole records, drop a half-written one.
        cut = read_bounded(metrics, "metrics log").rfind(b"\n") + 1 if metrics.exists() else 0
        held = f"holds {size} bytes, fewer than" if metrics.exists() else "is missing: lost"
        done.metrics_note = (
            f"{METRICS_FILE} {held} the {offset} written before step {step}: earlier "
            "records are missing"
        )
        log.warning(done.metrics_note)
    if size > cut:
        fd = open_nofollow(metrics, os.O_RDWR)  # never truncate a file a link points at
        try:
            os.ftruncate(fd, cut)
        finally:
            os.close(fd)
    return done


def check_run_files(run_dir: Path, checkpoint: dict[str, Any]) -> None:
    """Refuse, naming the file, a run directory whose record cannot be continued: run.json
    and environment.json must read, and metrics.jsonl must be whole up to the checkpoint
    (past it, or a half-written last line, is cut when rewinding)."""
    read_json(run_dir / RUN_FILE)
    if (run_dir / ENVIRONMENT_FILE).exists():
        read_json(run_dir / ENVIRONMENT_FILE)
    metrics = run_dir / METRICS_FILE
    if not metrics.exists():
        return
    kept = read_bounded(metrics, "metrics log")[: checkpoint.get("metrics_bytes", 0)]
    whole = kept[: kept.rfind(b"\n") + 1]
    for number, line in enumerate(whole.splitlines(), 1):
        try:
            if not isinstance(json.loads(line), dict):
                raise ValueError("not a JSON object")
        except ValueError as error:
            raise SeedbedError(
                f"{metrics} line {number} is damaged ({str(error).splitlines()[0]}): the "
                "records before the checkpoint must be whole to continue the run"
            ) from None


def check_positions(checkpoint: dict[str, Any], path: Path) -> None:
    """The checkpoint's positions are what seedbed writes: the loop's counters, a metrics
    offset, best.pt's step file by its name (never a path that leads elsewhere)."""
    loop, best = checkpoint["loop"], checkpoint.get("best")
    counters = [loop.get(key) for key in ("epoch", "batch", "step")]
    offset = checkpoint.get("metrics_bytes", 0)
    if not all(isinstance(value, int) and value >= 0 for value in [*counters, offset]):
        raise CheckpointError(f"checkpoint {path} is refused: its loop position is damaged")
    if best is not None and not (
        isinstance(best, dict) and STEP_FILE.fullmatch(str(best.get("file")))
    ):
        named = best.get("file") if isinstance(best, dict) else best
        raise CheckpointError(
            f"checkpoint {path} is refused: best.file={named!r} is not a step file's name "
            "(step_<step>.pt)"
        )


@dataclass
class ResumePlan:
    """A checked resume: where from, with which config, and what changed."""

    path: Path
    checkpoint: dict[str, Any]
    config: DictConfig
    changes: dict[str, tuple[Any, Any]]
    skipped: list[str]

    def record(self, run_dir: Path, rewound: Rewound) -> dict[str, Any]:
        """The entry run.json's `resumes` history keeps for this resume."""
        loop = self.checkpoint["loop"]
        return {
            "checkpoint": os.path.relpath(self.path.resolve(), run_dir.resolve()),
            "epoch": loop["epoch"],
            "step": loop["step"],
            "changes": {key: list(change) for key, change in self.changes.items()},
            "forced": bool(self.config.resume.force),
            "skipped_checkpoints": self.skipped,
            "discarded_checkpoints": rewound.discarded,
            **({"metrics_note": rewound.metrics_note} if rewound.metrics_note else {}),
        }


def plan_resume(
    cfg: DictConfig, run_dir: Path | None, overrides: list[str] | None, validate: Any
) -> ResumePlan:
    """Find the checkpoint and check the config; raise before anything is written.

    `run_dir` is the directory the run continues in; None for a DDP rank other than 0,
    which reads the checkpoint but leaves the run directory to rank 0.
    """
    path, checkpoint, skipped = find_checkpoint(cfg.resume.path)
    if run_dir is not None and run_dir_of(path).resolve() != run_dir.resolve():
        raise ConfigError(
            "resume.path",
            cfg.resume.path,
            f"a run directory or a checkpoint in <run>/{CHECKPOINT_DIR}/ of the run being "
            f"continued ({run_dir})",
        )
    saved = checkpoint.get("config")
    if not isinstance(saved, dict) or not isinstance(checkpoint.get("loop"), dict):
        raise CheckpointError(f"checkpoint {path} holds no run config or loop position")
    # Before anything is resolved or built from it: the checkpoint may come from someone else.
    check_received(saved, f"checkpoint {path}", cfg.get("allow_targets") or ())
    check_positions(checkpoint, path)
    if run_dir is not None:
        check_run_files(run_dir, checkpoint)
    saved = with_new_defaults(saved)
    effective = resumed_config(saved, cfg, overrides)
    validate(effective)
    changes = config_changes(saved, effective)
    check_changes(changes, effective)
    if effective.resume.force:  # a forced change must be one the resumed run really makes
        forced = {k: v for k, v in changes.items() if not is_safe_on_resume(k, effective)}
        refuse_unapplied(forced, effective)
        refuse_unknown_optimizer_settings(forced, effective)
    check_epochs(effective.trainer.epochs, checkpoint["loop"])
    if changes:
        log.warning(
            "resuming with changes%s: %s",
            " (forced)" if effective.resume.force else "",
            ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items()),
        )
    return ResumePlan(path, checkpoint, effective, changes, skipped)
