"""The hosted experiment trackers as loggers: MLflow and Weights & Biases.

Each logs the run's resolved config (as MLflow params, as W&B's config), its seeds, code
version and tags, then every record as it comes; each continues its own run on a resume
(the id kept in run.json's `loggers.<name>.run_id`). Neither contacts a host it was not
told to: MLflow's telemetry and W&B's error reporting are off unless asked, W&B runs
offline unless `logger.wandb.mode=online`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from seedbed.core.errors import SeedbedError
from seedbed.core.loggers import LoggerContext, scalars
from seedbed.core.record import flatten, read_json


def seed_tags(context: LoggerContext) -> dict[str, str]:
    """The seeds and code version, as string tags."""
    seeds = context.seeds
    tags = {f"seeds.{name}": str(value) for name, value in seeds.get("streams", {}).items()}
    tags["seed"] = str(seeds.get("seed"))
    tags["git.commit"] = str(context.git.get("commit"))
    tags["git.dirty"] = str(context.git.get("dirty"))
    return tags


def run_status(run_dir: Path) -> str | None:
    """The run's own status: run.json is final by the time loggers close."""
    try:
        return read_json(run_dir / "run.json").get("status")
    except SeedbedError:
        return None


class MlflowLogger:
    """One MLflow run: the flattened config as params, seeds and code version as tags,
    metrics as they come, the run directory's files as artifacts at the end."""

    def __init__(
        self,
        context: LoggerContext,
        tracking_uri: str = "sqlite:///outputs/mlflow/mlflow.db",
        artifact_location: str = "outputs/mlflow/artifacts",
        experiment: str = "seedbed",
        log_artifacts: bool = True,
        telemetry: bool = False,
    ) -> None:
        """A resume (`context.recorded`'s `run_id`) continues its MLflow run."""
        if not telemetry:  # read when mlflow is imported: set before
            os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
        self.run_dir = run_dir = context.run_dir
        self.log_artifacts = log_artifacts
        tags = seed_tags(context)
        tags["run_dir"] = str(run_dir)
        tags.update({f"tag.{tag}": "true" for tag in context.tags})
        params = flatten(context.config)
        run_id = context.recorded.get("run_id")
        self.name = context.name
        try:
            self._start(tracking_uri, artifact_location, experiment, params, tags, run_id)
        except Exception as error:  # mlflow's own errors, many kinds: an unsupported URI, ...
            text = str(error).strip() or type(error).__name__
            first = text.splitlines()[0].split(". ")[0].strip()
            raise SeedbedError(
                f"logger.{self.name}.tracking_uri={tracking_uri!r} (artifact_location="
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
        status = run_status(self.run_dir)
        self.client.set_terminated(
            self.run_id,
            status={"completed": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED"),
        )

    def run_record(self) -> dict[str, Any]:
        return {"run_id": self.run_id}


class WandbLogger:
    """One W&B run: the resolved config (with the seeds and code version under `seedbed`),
    the tags, every record at its step. Its files go into `<run dir>/<dir>/wandb/`; offline
    (the default), `wandb sync` uploads them later. A resume continues the same W&B run id
    and logs from the step after its checkpoint."""

    def __init__(
        self,
        context: LoggerContext,
        project: str = "seedbed",
        entity: str | None = None,
        mode: str = "offline",
        dir: str = ".",
        telemetry: bool = False,
    ) -> None:
        if not telemetry:  # read when W&B's service process starts: set before
            os.environ["WANDB_ERROR_REPORTING"] = "false"
        import wandb

        self.run_dir = context.run_dir
        directory = context.run_dir / dir
        recorded = context.recorded.get("run_id")
        run_id = (
            recorded
            if isinstance(recorded, str) and re.fullmatch(r"[a-z0-9]{1,64}", recorded)
            else None
        )
        config = {
            **context.config,
            "seedbed": {**seed_tags(context), "run_dir": str(context.run_dir)},
        }
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(
                project=project,
                entity=entity,
                mode=mode,
                dir=str(directory),
                name=context.run_dir.name,
                id=run_id,
                resume="allow" if run_id else None,
                config=config,
                tags=list(context.tags),
                reinit="create_new",
                settings=wandb.Settings(
                    console="off",
                    x_disable_stats=True,
                    save_code=False,
                    disable_git=True,
                    quiet=True,
                ),
            )
        except Exception as error:  # W&B's own errors: no login for online, a bad entity
            first = (str(error).strip() or type(error).__name__).splitlines()[0]
            raise SeedbedError(
                f"logger.{context.name} (mode={mode!r}, project={project!r}) cannot start: {first}"
            ) from error
        self.resumed_at = context.resumed_at

    def write(self, record: Mapping[str, Any]) -> None:
        values = scalars(record)
        if values:
            self.run.log(values, step=int(record.get("step", 0)))

    def close(self) -> None:
        import wandb

        self.run.finish(exit_code=0 if run_status(self.run_dir) == "completed" else 1)
        if wandb.run is None:
            # finish() can return before W&B's service process has written the offline run
            # file out (seen on a loaded machine: a file holding the first record only).
            # Stopping the service waits for it; the next run in this process starts another.
            wandb.teardown()

    def run_record(self) -> dict[str, Any]:
        return {"run_id": self.run.id}
