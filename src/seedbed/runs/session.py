"""The run session: everything around the recipe (a project's `train(cfg, run)`), so that the
recipe stays one page.

`RunSession` opens a run (a new one, or a resume planned and checked before
anything is written), records it in run.json from before step 0, applies
determinism, threads and the device, joins the process group of a distributed
run and seeds every stream; it hands the recipe a checkpointer that saves and
restores the stateful parts it is given, the hooks that checkpoint and stop on
a signal, and closes the run: `completed` with the final metrics and weight
fingerprints, or `failed`/`interrupted` with a one-line error (the traceback
goes to train.log).

    with RunSession(cfg, run_dir, overrides) as run:
        final = run.finish(train(run.cfg, run))

`run_training(cfg, run_dir)` is the same in one call: what the command line,
notebooks and tests use.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from hydra._internal.utils import _locate
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from seedbed.core.checkpoint import Checkpointer, Stateful
from seedbed.core.code_patch import patch_record
from seedbed.core.determinism import set_determinism
from seedbed.core.device import resolve_device
from seedbed.core.distributed import (
    RankInfo,
    agree_on_signal,
    distributed_mode,
    gather_rng_states,
    init_distributed,
    launched_rank,
    mean_over_ranks,
    rank_device,
    ranks_rng_state,
    teardown_distributed,
)
from seedbed.core.environment import ENVIRONMENT_FILE, read_environment, write_environment
from seedbed.core.errors import (
    ConfigError,
    SeedbedError,
    error_line,
    refused_arguments,
    refused_target,
    user_error,
)
from seedbed.core.files import refuse_unsafe_run_files, remove_temporary_files
from seedbed.core.interrupts import (
    GracefulStop,
    TrainingInterrupted,
    epoch_position,
    signal_hook_for_tests,
)
from seedbed.core.launchers import oversubscription, parallel_jobs, with_threads_resolved
from seedbed.core.lock import RunLock
from seedbed.core.loggers import (
    AllLoggers,
    LoggerContext,
    build_loggers,
    check_log_dir,
    check_logger_packages,
    logger_record,
)
from seedbed.core.outside_hydra import job_logging, without_hydra
from seedbed.core.paths import CHECKPOINT_DIR
from seedbed.core.record import (
    METRICS_FILE,
    RUN_FILE,
    MetricsLog,
    RunRecord,
    command_line,
    loss_series_sha256,
    read_metrics,
    weights_sha256,
)
from seedbed.core.seeding import Seeds, capture_rng_states, restore_rng_states, seed_everything
from seedbed.core.sharded import ShardedParts, full_model_state, shard_model
from seedbed.core.targets import _walk as walk_targets
from seedbed.core.targets import is_allowed, user_prefixes
from seedbed.data.loader import global_batch_size
from seedbed.runs.elastic import (
    SAMPLES_KIND,
    batch_position,
    check_same_global_batch,
    resumed_batch,
    segments_after_resume,
    step_samples_record,
)
from seedbed.runs.forced_resume import apply_settings, built_settings, rebuilds_schedule
from seedbed.runs.hydra import validate
from seedbed.runs.overview import debug_record, model_summary, show_config, summary_table
from seedbed.runs.resume import (
    ResumePlan,
    given_keys,
    plan_resume,
    restartable,
    rewind_run_dir,
)

log = logging.getLogger("seedbed")

# What `trainer.perturb_step` adds to one weight: a change verify and compare must catch.
PERTURBATION = 1e-3


class RunSession:
    """One run's record, environment, devices, seeds, checkpoints and stop signals."""

    def __init__(self, cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> None:
        """`overrides`: this command's overrides, applied to the saved config on a resume
        (None: `cfg` is the whole config)."""
        self.cfg, self.run_dir, self.overrides = without_hydra(cfg), Path(run_dir), overrides
        self.plan: ResumePlan | None = None
        self.mode: str | None = None  # trainer.distributed: None, "ddp" or "fsdp"
        self.ranks = RankInfo()
        self.device = torch.device("cpu")
        self.seeds: Seeds | None = None
        self.metrics: AllLoggers | None = None
        self.checkpoints: Checkpointer | None = None
        self._sampler: Any = None
        self._samples_step = 0  # the last step whose samples are in metrics.jsonl
        self._parts: dict[str, Stateful | None] = {}
        self._stop = GracefulStop()
        self._send_test_signal = signal_hook_for_tests()
        self._fit_started = 0.0
        self._lock = RunLock(self.run_dir)
        self._recording = False  # whether run.json is this process's to close
        # Known before the config is: on a resume, trainer.distributed comes from the checkpoint.
        self.writes_run_dir = launched_rank() == 0

    # -- opening ---------------------------------------------------------------------------

    def __enter__(self) -> RunSession:
        if self.writes_run_dir:
            # Before anything is read or written: one writer per run directory.
            self._lock.acquire()
        try:
            self._plan()
            self.cfg = with_threads_resolved(self.cfg)  # config.yaml says how many threads
        except BaseException:
            self._lock.release()
            raise
        self.record = RunRecord(self.run_dir)
        if self.plan is None:
            self.record.start(OmegaConf.to_yaml(self.cfg, resolve=True), command_line())
            self._recording = True
        try:
            self._open()
        except BaseException as error:
            self.__exit__(type(error), error, error.__traceback__)
            raise
        return self

    def _plan(self) -> None:
        """Check the run directory, and plan a resume, before anything in it is written."""
        if self.cfg.resume.path is not None:
            # Checked before anything is touched: a refused resume leaves the run as it was.
            self.plan = check_resume(self.cfg, self.run_dir, self.overrides, self.writes_run_dir)
            self.cfg = self.plan.config
        elif self.writes_run_dir:
            refuse_unsafe_run_files(self.run_dir)
            if (self.run_dir / RUN_FILE).exists():
                if not restartable(self.run_dir):
                    raise SeedbedError(
                        f"{self.run_dir} already holds a run ({RUN_FILE}): a new run needs a "
                        f"new directory; resume={self.run_dir} continues that one"
                    )
                log.warning("%s stopped before its first checkpoint: starting again", self.run_dir)
                (self.run_dir / METRICS_FILE).unlink(missing_ok=True)
        if self.writes_run_dir:
            for directory in (self.run_dir, self.run_dir / CHECKPOINT_DIR):
                remove_temporary_files(directory)  # left by a write that was killed

    def _open(self) -> None:
        cfg = self.cfg
        validate(cfg)
        self.mode = distributed_mode(cfg.trainer.distributed)
        if self.mode == "fsdp" and cfg.trainer.perturb_step is not None:
            raise ConfigError(
                "trainer.perturb_step",
                cfg.trainer.perturb_step,
                "null with trainer.distributed=fsdp (it perturbs a weight of one process)",
            )
        if self.writes_run_dir:
            show_config(cfg)
        check_logger_packages(cfg.logger)
        check_log_dir(cfg.logger, self.run_dir, given_keys(self.overrides))
        if self.plan is None and self.writes_run_dir and (warning := untrusted_targets(cfg)):
            log.warning(warning)
        if self.plan is not None and self.writes_run_dir:
            rewound = rewind_run_dir(self.run_dir, self.plan.path, self.plan.checkpoint)
            self._recording = True  # from here on, the resumed run's status is this process's
            self.record.resume(
                OmegaConf.to_yaml(cfg, resolve=True),
                command_line(),
                self.plan.record(self.run_dir, rewound),
            )
        applied = set_determinism(cfg.determinism.mode)  # before anything touches CUDA
        for note in applied["notes"]:
            log.warning(note)
        torch.set_num_threads(cfg.trainer.threads)  # part of what the run is: resolved above
        if (warning := oversubscription(cfg.trainer.threads)) is not None:
            log.warning(warning)
        device = resolve_device(cfg.trainer.device)
        if self.mode is not None:
            self.ranks = init_distributed(device)
        self.device = rank_device(device, self.ranks)
        rank = self.ranks.rank if self.mode is not None else None
        self.seeds = seed_everything(cfg.seed, cfg.seeds, rank)
        self.record.update(
            seeds=self.seeds.as_record(),
            determinism=applied,
            device=str(self.device),
            torch_threads=torch.get_num_threads(),
            parallel_jobs=parallel_jobs(),
            tags=list(cfg.tags),
            **({"debug": debug} if (debug := debug_record(cfg)) else {}),
            # What changes the bits besides the seed, resolved (config.yaml has it too).
            trainer={
                key: cfg.trainer[key]
                for key in ("precision", "accumulate_grad_batches", "compile", "compile_mode")
            },
        )
        if self.mode is not None:
            self.record.update(distributed={**asdict(self.ranks), "backend": dist.get_backend()})
        # After threads and determinism are set. A resumed run keeps the environment record
        # of where it started (run.json's `resumes` history says when it was resumed).
        if self.plan is None:
            environment = write_environment(self.run_dir)
            git = environment.get("git", {})
            self.record.update(environment=ENVIRONMENT_FILE, code_patch=patch_record(git))
        else:
            environment = read_environment(self.run_dir)
        self.jsonl = MetricsLog(self.run_dir / METRICS_FILE)
        base = LoggerContext(
            self.run_dir,
            "",
            cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True)),
            tags=list(cfg.tags),
            seeds=self.seeds.as_record(),
            git=environment.get("git", {}),
        )
        recorded = None
        if self.plan is not None:  # loggers continue: the records kept, their runs' ids
            kept = self.run_dir / METRICS_FILE  # none in the scratch dir of a rank other than 0
            base.resumed_at = self.plan.checkpoint["loop"]["step"]
            # The loggers' records: the samples bookkeeping stays in metrics.jsonl alone.
            kept_records = read_metrics(kept) if kept.is_file() else []
            base.kept = [r for r in kept_records if r.get("kind") != SAMPLES_KIND]
            data = self.record.data
            recorded = data.get("loggers") or (
                {"mlflow": data["mlflow"]} if "mlflow" in data else {}
            )
        extra = build_loggers(cfg.logger, base, recorded)
        # Kept for a later resume: the ids of this command's loggers and of those it dropped.
        kept_ids = {**(recorded or {}), **logger_record(extra).get("loggers", {})}
        if kept_ids:
            self.record.update(loggers=kept_ids)
        self.metrics = AllLoggers([self.jsonl, *extra.values()])

    # -- what the recipe is handed ----------------------------------------------------------

    def record_data(self, record: dict[str, Any]) -> None:
        """run.json's `data`: which files the run read (as given and absolute), their
        fingerprint (what `compare` names when the data changed) and the normalisation."""
        self.record.update(data=record)

    def record_model(self, model: nn.Module) -> None:
        """run.json's `model`: parameters per top-level module, total and trainable (also in
        train.log). Counted, not traced: no forward pass, so nothing draws or moves a statistic."""
        summary = model_summary(model)
        self.record.update(model=summary)
        log.info("model %s\n%s", type(model).__name__, summary_table(summary))

    def best_checkpoint(self) -> Path:
        """best.pt, or last.pt where the run keeps no best (checkpoint.save_best=false)."""
        directory = self.run_dir / CHECKPOINT_DIR
        best = directory / "best.pt"
        return best if best.exists() else directory / "last.pt"

    def record_test(self, result: dict[str, Any]) -> dict[str, float]:
        """run.json's `test` (an evaluation of a checkpoint on the test split, as eval.py
        writes it) and a `test` record for metrics.jsonl and the loggers, at the run's last step
        (trackers take steps in order; `test.step` says which checkpoint); returns the metrics."""
        self.record.update(test=result)
        step = self._parts["loop"].step
        self.metrics.write({"kind": "test", "step": step, **result["metrics"]})
        log.info(
            "test (%s): %s",
            result["checkpoint_file"],
            "  ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items()),
        )
        return dict(result["metrics"])

    def distribute(self, model: nn.Module) -> nn.Module:
        """What the loop calls: `model` itself, wrapped in DDP, or sharded in place by FSDP2
        (`seedbed.core.sharded`; its parameters are replaced: build the optimizer after)."""
        if self.mode is None:
            return model
        if self.mode == "fsdp":
            return shard_model(model)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def checkpointer(self, monitor: Any, batches_per_epoch: int, **parts: Stateful | None) -> None:
        """Checkpoint `parts` (by name; None where a run has no such part) from now on: restore
        them on a resume, else write the step-0 checkpoint, so a run killed at any point can
        be resumed. `parts["model"]` is what the final fingerprint is taken of.
        `batches_per_epoch` tells the epoch's last batch (whose checkpoint comes after the
        epoch's validation)."""
        saved_config = cast(dict[str, Any], OmegaConf.to_container(self.cfg, resolve=True))
        saved_config.pop("resume", None)  # where a run came from is not part of what it is
        distributed = self.mode is not None

        def extras() -> dict[str, Any]:
            pending = parts["loop"].losses
            return {
                # The losses not yet logged, averaged over the ranks (a collective): what
                # every rank of a resumed run, of any world size, continues the log with.
                "pending_losses_mean": (
                    mean_over_ranks(torch.stack(pending).double())
                    if distributed and pending
                    else None
                ),
                "rng": capture_rng_states(),
                # Every rank's own states (dropout differs per rank); None in one process.
                "rng_ranks": gather_rng_states() if distributed else None,
                "metrics_bytes": self.jsonl.tell(),
                "config": saved_config,
                # Where the run stands in global samples, and how it was split: what a resume
                # on another world size continues from.
                "position": batch_position(sampler, parts["loop"], self.ranks.world_size),
            }

        self._parts, self._monitor = parts, monitor
        loader = parts.get("loader")
        sampler = getattr(loader, "sampler", None)
        self._sampler = sampler
        if sampler is not None:
            self.record.update(
                batches={
                    "global": sampler.global_batch,
                    "micro": sampler.batch_size,
                    "world_size": sampler.world_size,
                    "accumulate": sampler.accumulate,
                    "steps_per_epoch": sampler.steps,
                    "padded": sampler.padded,
                    "dropped": sampler.dropped,
                }
            )
        step = self.plan.checkpoint["loop"]["step"] if self.plan is not None else 0
        self._samples_step = step
        self.record.update(
            segments=segments_after_resume(
                self.record.data.get("segments", []) if self.plan is not None else [],
                step,
                self.ranks.world_size,
            )
        )
        directory, sharded = self.run_dir / CHECKPOINT_DIR, None
        if self.mode == "fsdp":  # every rank writes its shards into rank 0's directory
            shared = [str(directory.resolve())]
            dist.broadcast_object_list(shared, src=0)
            directory = Path(shared[0])
            writes = self.writes_run_dir
            sharded = ShardedParts(cast(nn.Module, parts["model"]), parts.get("optimizer"), writes)
        self.checkpoints = Checkpointer(
            directory,
            parts,
            extras,
            monitor=monitor,
            batches_per_epoch=batches_per_epoch,
            sharded=sharded,
            writes=sharded is None or self.writes_run_dir,
            **OmegaConf.to_container(self.cfg.checkpoint, resolve=True),
        )
        if self.plan is not None:
            saved = self.plan.checkpoint
            # What the new config built, before the checkpoint replaces it: a forced change of
            # the optimizer's settings or the schedule is applied on top of the restored state.
            optimizer, scheduler = parts.get("optimizer"), parts.get("scheduler")
            reapply = self.cfg.resume.force and rebuilds_schedule(self.plan.changes)
            built = built_settings(optimizer, scheduler) if reapply and optimizer else None
            self.checkpoints.restore(saved)
            if saved.get("pending_losses_mean") is not None:
                parts["loop"].losses = list(saved["pending_losses_mean"].unbind())
            if built is not None:
                apply_settings(built, optimizer, scheduler, saved["loop"]["step"])
            if sampler is not None:  # another accumulation: the same samples, other counts
                parts["loop"].batch = resumed_batch(saved.get("position"), saved["loop"], sampler)
            rng = ranks_rng_state(saved, self.ranks.rank)
            if rng is not None:
                restore_rng_states(rng)  # last: nothing may draw between here and step 1
            loop = saved["loop"]
            where = epoch_position(loop["epoch"], loop["batch"])
            log.info("resumed from %s at step %d (%s)", self.plan.path, loop["step"], where)
        _perturb_after_step(parts.get("optimizer"), parts["model"], self.cfg.trainer.perturb_step)
        self._stop.__enter__()
        if self.plan is None:
            self.checkpoints.save(parts["loop"])
        log.info("run dir %s  %s  device %s", self.run_dir, seed_line(self.cfg), self.device)
        self._fit_started = time.perf_counter()

    def on_step_end(self, state: Any) -> None:
        """The loop's event after every optimizer step: record the step's samples, checkpoint
        when due, stop on a signal."""
        self._record_samples(state)
        self.checkpoints.after_step(state)
        if self._send_test_signal is not None:
            self._send_test_signal(state.step)
        self._stop_if_asked(state)

    def _record_samples(self, state: Any) -> None:
        """metrics.jsonl's `samples` record of the step just taken, once: a mid-epoch
        validation (and a stop there) comes before the step's own event."""
        if self._sampler is None or state.step == self._samples_step:
            return
        served = self._parts["loader"].take_served()
        self.jsonl.write(step_samples_record(self._sampler, state, served))
        self._samples_step = state.step

    def on_validation(self, state: Any, val: dict[str, float]) -> None:
        """The loop's event after each validation: best.pt, the epoch-end checkpoint, a stop."""
        self._record_samples(state)
        self.checkpoints.after_validation(state, val)
        self._stop_if_asked(state)

    def _stop_if_asked(self, state: Any) -> None:
        if self.mode is not None:  # stop together, or the ranks' collectives part
            self._stop.signum = agree_on_signal(self._stop.signum, self.device)
        if self._stop.signum is not None:
            saved = self.checkpoints.save(state)
            raise self._stop.error(saved, state.step, state.epoch, state.batch, self.run_dir)

    # -- closing -----------------------------------------------------------------------------

    def finish(self, final: dict[str, Any]) -> dict[str, Any]:
        """Write the last checkpoint and record the run as completed; return `final`."""
        fit_seconds = time.perf_counter() - self._fit_started  # evaluation synchronised
        self.checkpoints.save(self._parts["loop"])
        self._stop.__exit__(None, None, None)
        model = cast(nn.Module, self._parts["model"])
        # Of the full, unsharded weights: what one process with the same bits would hash.
        state = full_model_state(model) if self.mode == "fsdp" else model.state_dict()
        fingerprint = weights_sha256(state)
        stopping: Any = self._parts.get("early_stopping")  # EarlyStopping or None
        summary = stopping.summary() if stopping is not None else None
        self.record.finish(
            "completed",
            final_metrics=final,
            monitor={"metric": self._monitor.metric, "mode": self._monitor.mode},
            **({"early_stopping": summary} if summary is not None else {}),
            fit_seconds=round(fit_seconds, 4),
            weights_sha256=fingerprint,
            loss_series_sha256=loss_series_sha256(read_metrics(self.run_dir / METRICS_FILE)),
        )
        log.info("final %s", "  ".join(f"{k} {v:.6g}" for k, v in final.items()))
        log.info("run dir: %s", self.run_dir)
        log.info("weights sha256: %s", fingerprint)
        return final

    def __exit__(self, exc_type: Any, error: BaseException | None, tb: Any) -> None:
        try:
            self._stop.__exit__(None, None, None)
            if error is not None:
                message = error_line(error)
                interrupt = isinstance(error, (KeyboardInterrupt, TrainingInterrupted))
                status = "interrupted" if interrupt else "failed"
                if self._recording:  # a refused resume leaves the run's status as it was
                    self.record.finish(status, error=message.splitlines()[0])
                log.debug(
                    "traceback:\n%s", "".join(traceback.format_exception(exc_type, error, tb))
                )
                if (mine := user_error(error)) is not None and mine is not error:
                    raise mine from error  # e.g. a ConfigError raised inside instantiate
                if isinstance(error, InstantiationException) and (
                    refused_arguments(error.__cause__) or refused_target(error)
                ):
                    raise SeedbedError(message) from error  # a component refused its arguments
                if isinstance(error, OmegaConfBaseException):
                    raise SeedbedError(message) from error  # a config value we could not read
        finally:
            if self.metrics is not None:
                self.metrics.close()
                self.metrics = None
            teardown_distributed()
            self._lock.release()


def check_resume(
    cfg: DictConfig, run_dir: Path, overrides: list[str] | None, writes_run_dir: bool = True
) -> ResumePlan:
    """Everything that can refuse a resume, checked before anything is written: the run
    directory's files, its checkpoint and the config read from it, the config to resume
    with, the loggers. The command line calls it before Hydra starts (which writes .hydra/
    and train.log into the run directory), the session again once it holds the lock.

    `writes_run_dir` is false on a DDP rank other than 0: it reads the checkpoint, rank 0
    checks the run directory."""
    if writes_run_dir:
        refuse_unsafe_run_files(run_dir)
    plan = plan_resume(cfg, run_dir if writes_run_dir else None, overrides, validate)
    trainer = plan.config.trainer
    given = global_batch_size(plan.config.loader, trainer.accumulate_grad_batches)
    check_same_global_batch(plan.checkpoint.get("position"), given)
    if distributed_mode(trainer.distributed) == "fsdp" and "sharded" not in plan.checkpoint:
        saved = plan.checkpoint.get("config", {}).get("trainer", {}).get("distributed", False)
        raise ConfigError(
            "trainer.distributed",
            "fsdp",
            f"{saved!r} to resume {plan.path}: it is one file, not a sharded checkpoint (FSDP2 "
            "resumes only those; a sharded one resumes with fsdp, ddp or in one process)",
        )
    check_logger_packages(plan.config.logger)
    check_log_dir(plan.config.logger, run_dir, given_keys(overrides))
    return plan


def untrusted_targets(cfg: DictConfig) -> str | None:
    """A warning when the run builds a `_target_` that files read back from it (by eval.py,
    resume=, verify --against) are refused unless the reader trusts it: a model of the user's
    own package, say. None when every target is on seedbed's allow-list or the user's own
    (configs/train.yaml), which those readers take."""
    trusted = user_prefixes()
    plain = OmegaConf.to_container(cfg, resolve=True)
    outside = {
        key: target
        for key, target in walk_targets(plain, "")
        if isinstance(target, str) and not is_allowed(target, trusted)
    }
    if not outside:
        return None
    modules = sorted({target.rpartition(".")[0] or target for target in outside.values()})
    listed = ", ".join(f"{key}={target!r}" for key, target in outside.items())
    return (
        f"{listed}: outside the targets seedbed builds from files it reads; eval.py and "
        f"resume= of this run will need allow_targets=[{','.join(modules)}], verify --against "
        f"{' '.join('--allow-targets ' + m for m in modules)} (or set allow_targets in "
        "configs/train.yaml)"
    )


def seed_line(cfg: DictConfig) -> str:
    """`seed 0`, naming every pinned stream too: with `seeds.init=7` the weights do not come
    from `seed` alone, and the console's first line should not suggest they do."""
    pinned = {name: value for name, value in cfg.seeds.items() if value is not None}
    if not pinned:
        return f"seed {cfg.seed}"
    return f"seed {cfg.seed} (pinned: {', '.join(f'seeds.{k}={v}' for k, v in pinned.items())})"


def _perturb_after_step(optimizer: Any, model: nn.Module, step: int | None) -> None:
    """Debugging aid (`trainer.perturb_step`): after that optimizer step (counted from the
    start of this process), add PERTURBATION to the first weight, so that verify and compare
    can be seen to catch a one-step change."""
    if step is None or optimizer is None:
        return
    steps_done = itertools.count(1)

    def hook(_optimizer: Any, _args: Any, _kwargs: Any) -> None:
        if next(steps_done) == step:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] += PERTURBATION

    optimizer.register_step_post_hook(hook)


# What a recipe is: `train(cfg, run)` returning the final metrics.
Recipe = Callable[[DictConfig, "RunSession"], dict[str, Any]]
RECIPE_RULE = "a function train(cfg, run) importable by its name, e.g. mypaper.train.train"


def load_recipe(name: Any) -> Recipe:
    """The recipe `name` (this command's `recipe`, never a file's): imported, checked callable."""
    if not isinstance(name, str) or not name or "." not in name:
        raise ConfigError("recipe", name, RECIPE_RULE)
    package = name.split(".")[0]
    if importlib.util.find_spec(package) is None:
        raise ConfigError(
            "recipe",
            name,
            f"{RECIPE_RULE} (no package {package!r} is installed: run `make install`, or "
            "`pip install -e .`, in your project)",
        )
    try:
        found = _locate(name)
    except Exception as error:  # noqa: BLE001 - any import failure is the config's to fix
        raise ConfigError("recipe", name, f"{RECIPE_RULE} ({error_line(error)})") from error
    if not callable(found) or isinstance(found, type):
        raise ConfigError("recipe", name, f"{RECIPE_RULE} (it is a {type(found).__name__})")
    return found


def run_training(
    cfg: DictConfig,
    run_dir: str | Path,
    overrides: list[str] | None = None,
    recipe: Recipe | None = None,
) -> dict[str, Any]:
    """Train as `cfg` says, with `recipe` (default: the one `cfg.recipe` names), recording
    everything in `run_dir`; return the final metrics.

    With `resume.path` set, continue the run in `run_dir` from its checkpoint, with the
    saved config plus `overrides` (this command's; None: `cfg` is the whole config).
    """
    recipe = recipe or load_recipe(cfg.get("recipe"))
    with job_logging(Path(run_dir)), RunSession(cfg, Path(run_dir), overrides) as run:
        return run.finish(recipe(run.cfg, run))
