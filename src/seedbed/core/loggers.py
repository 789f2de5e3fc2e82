"""Optional metric loggers beside metrics.jsonl: TensorBoard and MLflow.

Each logger takes the records metrics.jsonl gets, through the same two
methods (`write(record)`, `close()`), so the training loop knows nothing about
them. A record `{"kind": "train", "step": 40, "loss": ...}` becomes the scalar
`train/loss` at step 40. A logger whose package is missing fails before
training starts, naming the extra to install.

A resumed run continues what it logged: MLflow logs into the same MLflow run
(its id is in run.json, `mlflow.run_id`), and TensorBoard purges the points
after the checkpoint it resumed from, so each step has one point, as in the
rewound metrics.jsonl.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf

from seedbed.core.errors import ConfigError, SeedbedError
from seedbed.core.files import is_inside
from seedbed.core.record import flatten, read_json

# Keys of a record that say where it belongs rather than what was measured.
POSITION_KEYS = ("kind", "epoch", "step")
# The packages each logger imports, and the extra that installs them.
LOGGER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}


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


class TensorBoardLogger:
    """Scalars into `<run dir>/<log_dir>` with the standard SummaryWriter."""

    def __init__(
        self, log_dir: Path, resumed_at: int | None = None, kept: Sequence[Mapping] = ()
    ) -> None:
        """`resumed_at`: the step of the checkpoint a resume starts from; `kept`: the records
        metrics.jsonl kept after the rewind."""
        from torch.utils.tensorboard import SummaryWriter

        # TensorBoard drops every earlier point at or after purge_step. The checkpoint's own
        # step may hold points written before it was saved (kept) and after (to be redone):
        # purge it whole, then write back the kept ones.
        try:
            self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=resumed_at)
        except OSError as error:  # a file in its place, no permission, a full disk
            raise SeedbedError(
                f"logger.tensorboard.log_dir: {log_dir} cannot be a folder of event files "
                f"({error.strerror})"
            ) from error
        if resumed_at is not None:
            for record in kept:
                if record.get("step") == resumed_at:
                    self.write(record)

    def write(self, record: Mapping[str, Any]) -> None:
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, global_step=record.get("step"))

    def close(self) -> None:
        self.writer.close()


class MlflowLogger:
    """One MLflow run: the flattened config as params, seeds and code version as tags,
    metrics as they come, the run directory's files as artifacts at the end."""

    def __init__(
        self,
        run_dir: Path,
        *,
        tracking_uri: str,
        artifact_location: str,
        experiment: str,
        log_artifacts: bool,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        run_id: str | None = None,
        telemetry: bool = False,
    ) -> None:
        """`run_id`: the MLflow run of the run being resumed, continued instead of a new one."""
        if not telemetry:  # read when mlflow is imported: set before
            os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
        self.run_dir = run_dir
        self.log_artifacts = log_artifacts
        try:
            self._start(tracking_uri, artifact_location, experiment, params, tags, run_id)
        except Exception as error:  # mlflow's own errors, many kinds: an unsupported URI, ...
            text = str(error).strip() or type(error).__name__
            first = text.splitlines()[0].split(". ")[0].strip()
            raise SeedbedError(
                f"logger.mlflow.tracking_uri={tracking_uri!r} (artifact_location="
                f"{artifact_location!r}) cannot be used: {first}"
            ) from error

    def _start(
        self,
        tracking_uri: str,
        artifact_location: str,
        experiment: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        run_id: str | None,
    ) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        if run_id is not None and (found_run := self._run_in_store(run_id)) is not None:
            from mlflow.entities import RunStatus

            # Params stay as first logged: MLflow refuses to change one (a resume's overrides
            # are in run.json's `resumes`).
            self.run_id = found_run
            self.client.update_run(self.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            return
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            location = artifact_location
            if "://" not in location and not location.startswith("file:"):
                location = Path(location).resolve().as_uri()
            experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        run = self.client.create_run(experiment_id, run_name=self.run_dir.name, tags=dict(tags))
        self.run_id = run.info.run_id
        self._log_params(params)

    def _run_in_store(self, run_id: Any) -> str | None:
        """`run_id` (read from run.json) if this store holds that run; None for a run logged
        elsewhere (a received run directory): the resume then starts a new MLflow run."""
        from mlflow.exceptions import MlflowException

        if not (isinstance(run_id, str) and re.fullmatch(r"[0-9a-f]{32}", run_id)):
            return None
        try:
            return str(self.client.get_run(run_id).info.run_id)
        except MlflowException:
            return None

    def _log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def write(self, record: Mapping[str, Any]) -> None:
        import time

        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        step = int(record.get("step", 0))
        metrics = [Metric(key, value, stamp, step) for key, value in scalars(record).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        if self.log_artifacts:
            for path in sorted(self.run_dir.rglob("*")):
                relative = path.relative_to(self.run_dir)
                if path.is_file() and relative.parts[0] != "checkpoints":
                    parent = relative.parent.as_posix()
                    self.client.log_artifact(
                        self.run_id, str(path), None if parent == "." else parent
                    )
        self.client.set_terminated(self.run_id, status=_mlflow_status(self.run_dir))


def _mlflow_status(run_dir: Path) -> str:
    """The run's own status (run.json is final by the time loggers close), in MLflow's words."""
    try:
        status = read_json(run_dir / "run.json").get("status")
    except SeedbedError:
        status = None
    return {"completed": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")


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


def check_logger_packages(logger_cfg: DictConfig) -> None:
    """Fail now, before any training, when a selected logger's package is missing."""
    for name, (module, extra) in LOGGER_PACKAGES.items():
        if logger_cfg.get(name) is not None and importlib.util.find_spec(module) is None:
            raise SeedbedError(
                f"logger={name} needs the {module} package: pip install 'seedbed[{extra}]' "
                f"(or drop logger={name})"
            )


def check_log_dir(logger_cfg: DictConfig, run_dir: Path, given: set[str] | None) -> None:
    """TensorBoard writes inside the run directory: a `log_dir` that leaves it (`..`, a link)
    is taken only from this command line (`given`: the keys it sets; None: a programmatic
    call, whose whole config is the caller's)."""
    settings = logger_cfg.get("tensorboard")
    if settings is None or given is None or "logger.tensorboard.log_dir" in given:
        return
    if not is_inside(run_dir / settings.log_dir, run_dir):
        raise ConfigError(
            "logger.tensorboard.log_dir",
            settings.log_dir,
            "a folder inside the run directory (one outside it only when given on this "
            "command line)",
        )


def build_loggers(
    cfg: DictConfig,
    run_dir: Path,
    seeds: Mapping[str, Any],
    git: Mapping[str, Any],
    resumed: Mapping[str, Any] | None = None,
) -> list[MetricsWriter]:
    """The loggers `cfg.logger` selects, started; metrics.jsonl is not one of them.
    `resumed` (a resume): `step`, the checkpoint's step; `kept`, the records metrics.jsonl
    kept; `record`, run.json as it was (where the MLflow run id is)."""
    check_logger_packages(cfg.logger)
    loggers: list[MetricsWriter] = []
    if cfg.logger.tensorboard is not None:
        log_dir = run_dir / cfg.logger.tensorboard.log_dir
        if resumed is None:
            loggers.append(TensorBoardLogger(log_dir))
        else:
            loggers.append(TensorBoardLogger(log_dir, resumed["step"], resumed["kept"]))
    if cfg.logger.mlflow is not None:
        settings = cfg.logger.mlflow
        tags = {f"seeds.{name}": str(value) for name, value in seeds.get("streams", {}).items()}
        tags["seed"] = str(seeds.get("seed"))
        tags["git.commit"] = str(git.get("commit"))
        tags["git.dirty"] = str(git.get("dirty"))
        tags["run_dir"] = str(run_dir)
        loggers.append(
            MlflowLogger(
                run_dir,
                tracking_uri=settings.tracking_uri,
                artifact_location=settings.artifact_location,
                experiment=settings.experiment,
                log_artifacts=settings.log_artifacts,
                telemetry=settings.telemetry,
                params=flatten(OmegaConf.to_container(cfg, resolve=True)),
                tags=tags,
                run_id=((resumed or {}).get("record") or {}).get("mlflow", {}).get("run_id"),
            )
        )
    return loggers


def logger_record(loggers: Sequence[MetricsWriter]) -> dict[str, Any]:
    """What run.json keeps of the loggers: the MLflow run's id, so that a resume continues it."""
    for logger in loggers:
        if isinstance(logger, MlflowLogger):
            return {"mlflow": {"run_id": logger.run_id}}
    return {}


@dataclass
class TensorBoardConfig:
    """TensorBoard event files (torch.utils.tensorboard.SummaryWriter)."""

    log_dir: str = "tensorboard"
    """Directory of the event files, relative to the run directory."""


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
class LoggerConfig:
    """Extra metric loggers; metrics.jsonl is always written. Select with
    `logger=tensorboard`, `logger=mlflow` or `logger=[tensorboard,mlflow]`."""

    tensorboard: TensorBoardConfig | None = None
    """Set by `logger=tensorboard`; null: off."""
    mlflow: MlflowConfig | None = None
    """Set by `logger=mlflow`; null: off."""
