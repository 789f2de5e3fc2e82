"""Metric loggers beside metrics.jsonl, as components: `logger=csv`, `logger=wandb`,
`'logger=[tensorboard,mlflow]'`.

A logger is a `_target_` in the `logger` group (one YAML each, under
configs/logger/), built with a `LoggerContext` (the run directory, the resolved
config, tags, seeds, code version, and what a resume continues from) and its
own settings. Its interface is small: `write(record)` gets each record
metrics.jsonl gets (`{"kind": "train", "step": 40, "loss": ...}` becomes the
scalar `train/loss` at step 40), `close()` ends it, and an optional
`run_record()` returns what run.json keeps of it (`loggers.<name>`) so that a
resume continues the same run: MLflow's and W&B's run ids. A resumed run logs
each step once: TensorBoard purges the points after the checkpoint, the CSV is
rewritten from the records metrics.jsonl kept. A logger whose package is
missing fails before training starts, naming the extra. Where a logger writes
comes from the current command, never from a config read back from a file.
"""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from seedbed.core.errors import ConfigError, SeedbedError
from seedbed.core.files import is_inside

# Keys of a record that say where it belongs rather than what was measured.
POSITION_KEYS = ("kind", "epoch", "step")


class MetricsWriter(Protocol):
    def write(self, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """`{"kind": "train", "loss": 0.5, "val/acc": 0.9}` -> `{"train/loss": 0.5, "val/acc": 0.9}`:
    numbers only; names that already say their split keep it."""
    kind = record.get("kind", "metrics")
    return {
        key if "/" in key else f"{kind}/{key}": float(value)
        for key, value in record.items()
        if key not in POSITION_KEYS and isinstance(value, (int, float)) and value is not True
    }


@dataclass
class LoggerContext:
    """What every logger is built with, besides its own settings."""

    run_dir: Path
    name: str
    """Its key in the `logger` group (and in run.json's `loggers`)."""
    config: dict[str, Any]
    """The run's resolved config (what a tracker logs as its parameters)."""
    tags: list[str] = field(default_factory=list)
    seeds: Mapping[str, Any] = field(default_factory=dict)
    git: Mapping[str, Any] = field(default_factory=dict)
    resumed_at: int | None = None
    """A resume: the step of the checkpoint it starts from; None for a new run."""
    kept: Sequence[Mapping[str, Any]] = ()
    """A resume: the records metrics.jsonl kept after the rewind."""
    recorded: Mapping[str, Any] = field(default_factory=dict)
    """A resume: what run.json kept of this logger (its `run_record()`), {} when nothing."""


class TensorBoardLogger:
    """Scalars into `<run dir>/<log_dir>` with the standard SummaryWriter."""

    def __init__(self, context: LoggerContext, log_dir: str = "tensorboard") -> None:
        from torch.utils.tensorboard import SummaryWriter

        path = context.run_dir / log_dir
        # TensorBoard drops every earlier point at or after purge_step. The checkpoint's own
        # step may hold points written before it was saved (kept) and after (to be redone):
        # purge it whole, then write back the kept ones.
        try:
            self.writer = SummaryWriter(log_dir=str(path), purge_step=context.resumed_at)
        except OSError as error:  # a file in its place, no permission, a full disk
            raise SeedbedError(
                f"logger.{context.name}.log_dir: {path} cannot be a folder of event files "
                f"({error.strerror})"
            ) from error
        for record in context.kept:
            if context.resumed_at is not None and record.get("step") == context.resumed_at:
                self.write(record)

    def write(self, record: Mapping[str, Any]) -> None:
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, global_step=record.get("step"))

    def close(self) -> None:
        self.writer.close()


class CsvLogger:
    """One CSV per run (`<run dir>/<file>`): a row per record, columns `kind`, `epoch`,
    `step`, then each scalar (`train/loss`, `val/acc`, ...) as it first appears; empty where a
    record has no such value. `pandas.read_csv` reads it as it is. A resume rewrites it
    from the records metrics.jsonl kept, so each record is in it once."""

    def __init__(self, context: LoggerContext, file: str = "metrics.csv") -> None:
        self.path = context.run_dir / file
        self.columns: list[str] = list(POSITION_KEYS)
        self.rows: list[dict[str, Any]] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")  # a new run's, or a resume's rewound copy
        except OSError as error:
            raise SeedbedError(
                f"logger.{context.name}.file: {self.path} cannot be written ({error.strerror})"
            ) from error
        for record in context.kept:
            self.write(record)

    def write(self, record: Mapping[str, Any]) -> None:
        row = {key: record.get(key) for key in POSITION_KEYS}
        row.update(scalars(record))
        self.rows.append(row)
        new = [name for name in row if name not in self.columns]
        if new:  # a new column: the header changes, the file is written again (rare)
            self.columns += new
            with self.path.open("w", newline="") as file:
                writer = csv.DictWriter(file, self.columns)
                writer.writeheader()
                writer.writerows(self.rows)
            return
        with self.path.open("a", newline="") as file:
            csv.DictWriter(file, self.columns).writerow(row)

    def close(self) -> None:
        pass


class AllLoggers:
    """Writes each record to every logger; closes every one even if one fails."""

    def __init__(self, loggers: Sequence[MetricsWriter]) -> None:
        self.loggers = list(loggers)

    def write(self, record: Mapping[str, Any]) -> None:
        for logger in self.loggers:
            logger.write(record)

    def close(self) -> None:
        errors = []
        for logger in self.loggers:
            try:
                logger.close()
            except Exception as error:  # noqa: BLE001 - the others must still close
                errors.append(error)
        if errors:
            raise errors[0]


# The packaged loggers: their settings' schema, the package each imports and the extra that
# installs it, and the settings that name where it writes (inside the run directory unless
# this command line says otherwise).
@dataclass
class TensorBoardConfig:
    """TensorBoard event files (torch.utils.tensorboard.SummaryWriter)."""

    log_dir: str = "tensorboard"
    """Directory of the event files, relative to the run directory."""


@dataclass
class CsvConfig:
    """A CSV of the run's records, for spreadsheets and pandas."""

    file: str = "metrics.csv"
    """The file, relative to the run directory."""


@dataclass
class MlflowConfig:
    """One MLflow run per training run: params, tags, metrics, and the run directory's files."""

    tracking_uri: str = "sqlite:///outputs/mlflow/mlflow.db"
    """Where runs are stored; the default is a local database under outputs/ (relative to where
    you start the run)."""
    artifact_location: str = "outputs/mlflow/artifacts"
    """Where a new experiment stores its artifacts (relative paths: from where you start)."""
    experiment: str = "seedbed"
    """Experiment name; created when it does not exist."""
    log_artifacts: bool = True
    """Copy the run directory's files (all but checkpoints/) as artifacts at the end."""
    telemetry: bool = False
    """MLflow's usage telemetry (it reports to MLflow's servers): off unless set true, so a run
    contacts no host it was not told to (sets MLFLOW_DISABLE_TELEMETRY for this process)."""


@dataclass
class WandbConfig:
    """One Weights & Biases run per training run: the config, tags, metrics; its files in the
    run directory. A resume continues the same W&B run (its id is in run.json)."""

    project: str = "seedbed"
    """The W&B project."""
    entity: str | None = None
    """The W&B team or user; null: your default."""
    mode: str = "offline"
    """offline (files only; `wandb sync <run dir>/wandb/offline-run-*` uploads them later),
    online, or disabled. offline unless set: a run contacts no host it was not told to."""
    dir: str = "."
    """Where W&B's `wandb/` folder goes, relative to the run directory."""
    telemetry: bool = False
    """W&B's error reporting (it sends crash reports to W&B's servers): off unless set true
    (sets WANDB_ERROR_REPORTING for this process)."""


@dataclass(frozen=True)
class KnownLogger:
    schema: type
    package: str
    extra: str
    destinations: tuple[str, ...] = ()


KNOWN_LOGGERS = {
    "seedbed.core.loggers.TensorBoardLogger": KnownLogger(
        TensorBoardConfig, "tensorboard", "tensorboard", ("log_dir",)
    ),
    "seedbed.core.loggers.CsvLogger": KnownLogger(CsvConfig, "csv", "", ("file",)),
    "seedbed.core.trackers.MlflowLogger": KnownLogger(MlflowConfig, "mlflow", "mlflow"),
    "seedbed.core.trackers.WandbLogger": KnownLogger(WandbConfig, "wandb", "wandb", ("dir",)),
}
WANDB_MODES = ("offline", "online", "disabled")


def _selected(logger_cfg: Mapping[str, Any]) -> dict[str, tuple[Mapping[str, Any], Any]]:
    """name -> (settings, KnownLogger or None) of each selected logger."""
    selected = {}
    for name, node in (logger_cfg or {}).items():
        if node is None:
            continue
        if not isinstance(node, (Mapping, DictConfig)) or "_target_" not in node:
            raise ConfigError(f"logger.{name}", node, "a mapping with a _target_ or null")
        selected[str(name)] = (node, KNOWN_LOGGERS.get(str(node["_target_"])))
    return selected


def check_loggers(logger_cfg: DictConfig) -> None:
    """The keys and values of the packaged loggers' settings (a logger of your own is asked
    only for its `_target_`)."""
    for name, (node, known) in _selected(logger_cfg).items():
        if known is None:
            continue
        allowed = set(known.schema.__dataclass_fields__) | {"_target_"}
        for key in node:
            if key not in allowed:
                raise ConfigError(
                    f"logger.{name}.{key}", node[key], f"a key of {', '.join(sorted(allowed))}"
                )
        if known.schema is WandbConfig and node.get("mode", "offline") not in WANDB_MODES:
            raise ConfigError(f"logger.{name}.mode", node.get("mode"), " | ".join(WANDB_MODES))


def check_logger_packages(logger_cfg: DictConfig) -> None:
    """Fail now, before any training, when a selected logger's package is missing."""
    for name, (_node, known) in _selected(logger_cfg).items():
        if known is None or not known.extra:
            continue
        if importlib.util.find_spec(known.package) is None:
            raise SeedbedError(
                f"logger={name} needs the {known.package} package: pip install "
                f"'seedbed[{known.extra}]' (or drop logger={name})"
            )


def check_log_dir(logger_cfg: DictConfig, run_dir: Path, given: set[str] | None) -> None:
    """Loggers write inside the run directory: a destination that leaves it (`..`, a link)
    is taken only from this command line (`given`: the keys it sets; None: a programmatic
    call, whose whole config is the caller's)."""
    if given is None:
        return
    for name, (node, known) in _selected(logger_cfg).items():
        for key in known.destinations if known is not None else ():
            value = node.get(key, getattr(known.schema(), key))
            if f"logger.{name}.{key}" in given or is_inside(run_dir / value, run_dir):
                continue
            raise ConfigError(
                f"logger.{name}.{key}",
                value,
                "a path inside the run directory (one outside it only when given on this "
                "command line)",
            )


def build_loggers(
    logger_cfg: DictConfig, base: LoggerContext, recorded: Mapping[str, Any] | None = None
) -> dict[str, MetricsWriter]:
    """The loggers `logger_cfg` selects, started, by name; metrics.jsonl is not one of them.
    `base` is every logger's context but its name; `recorded`: run.json's `loggers` of a
    resumed run."""
    check_logger_packages(logger_cfg)
    loggers: dict[str, MetricsWriter] = {}
    for name, (node, _known) in _selected(logger_cfg).items():
        kept = dict((recorded or {}).get(name) or {})
        context = LoggerContext(**{**vars(base), "name": name, "recorded": kept})
        settings = (
            OmegaConf.to_container(node, resolve=True)
            if isinstance(node, DictConfig)
            else dict(node)
        )
        target = get_object(str(settings.pop("_target_")))
        loggers[name] = target(context, **settings)
    return loggers


def logger_record(loggers: Mapping[str, MetricsWriter]) -> dict[str, Any]:
    """What run.json keeps of the loggers (`loggers.<name>`), so that a resume continues them."""
    kept = {}
    for name, logger in loggers.items():
        run_record = getattr(logger, "run_record", None)
        if run_record is not None and (record := run_record()):
            kept[name] = record
    return {"loggers": kept} if kept else {}
