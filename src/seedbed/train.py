"""Training: `python train.py seed=42`.

`train(cfg, run_dir)` reads like the recipe it is, in the order of the work,
and resumes a run in its own directory when `resume.path` is set; `main` is
the Hydra task (`seedbed.cli` wraps it for the command line).
"""

from __future__ import annotations

import itertools
import logging
import secrets
import tempfile
import time
import traceback
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch.nn.parallel import DistributedDataParallel

from seedbed.checkpoint import Checkpointer
from seedbed.config import register_configs, validate
from seedbed.data import DataSplits
from seedbed.determinism import set_determinism
from seedbed.distributed import (
    RankInfo,
    agree_on_signal,
    gather_rng_states,
    init_distributed,
    launched_rank,
    rank_device,
    teardown_distributed,
)
from seedbed.environment import ENVIRONMENT_FILE, read_environment, write_environment
from seedbed.errors import ConfigError, SeedbedError, error_line, user_error
from seedbed.init import init_weights
from seedbed.interrupts import GracefulStop, TrainingInterrupted, signal_hook_for_tests
from seedbed.launchers import dataloader_context, job_threads, parallel_jobs
from seedbed.loader import EpochBatches, EpochBatchSampler
from seedbed.loggers import AllLoggers, build_loggers, check_logger_packages
from seedbed.loop import LoopState, fit
from seedbed.optim import build_optimizer, build_scheduler
from seedbed.record import (
    METRICS_FILE,
    MetricsLog,
    RunRecord,
    command_line,
    loss_series_sha256,
    read_metrics,
    weights_sha256,
)
from seedbed.resume import plan_resume, rewind_run_dir, run_dir_of
from seedbed.seeding import capture_rng_states, restore_rng_states, seed_everything

log = logging.getLogger("seedbed")

# Filled by each Hydra job as it starts: an error raised before any did is a composition error.
jobs_started: list[int] = []
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
# What `trainer.perturb_step` adds to one weight: a change verify and compare must catch.
PERTURBATION = 1e-3


def run_name() -> str:
    """`<YYYY-MM-DD_HH-MM-SS>_<6 hex>`: sortable by time, unique even within one second."""
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{secrets.token_hex(3)}"


def resumed_run_dir(resume_path: str | None, new_run_dir: str) -> str:
    """Hydra's run dir: the resumed run's own directory, else a new one."""
    return str(run_dir_of(resume_path)) if resume_path else new_run_dir


def hydra_output_subdir(resume_path: str | None) -> str:
    """Where Hydra keeps its record: a resume adds its own beside the original `.hydra/`."""
    return f".hydra/resume_{run_name()}" if resume_path else ".hydra"


OmegaConf.register_new_resolver("run_name", run_name, use_cache=True, replace=True)
OmegaConf.register_new_resolver("resumed_run_dir", resumed_run_dir, use_cache=True, replace=True)
OmegaConf.register_new_resolver(
    "hydra_output_subdir", hydra_output_subdir, use_cache=True, replace=True
)
register_configs()

SINGLE_PROCESS = RankInfo()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device", name, "auto or cpu: CUDA is not available here")
    return torch.device(name)


def build_batches(
    data: DataSplits, cfg: DictConfig, seeds: Any, ranks: RankInfo = SINGLE_PROCESS
) -> tuple[EpochBatches, EpochBatches]:
    """Training batches (shuffled per epoch from the data stream, this rank's shard of them)
    and validation batches (all of them, on every rank)."""
    loader = cfg.loader
    workers = {
        "num_workers": loader.num_workers,
        "pin_memory": loader.pin_memory,
        "persistent_workers": loader.persistent_workers,
        "prefetch_factor": loader.prefetch_factor,
        "multiprocessing_context": dataloader_context(),
    }
    train_sampler = EpochBatchSampler(
        len(data.train),
        loader.batch_size,
        seed=seeds.streams["data"],
        shuffle=loader.shuffle,
        drop_last=loader.drop_last,
        rank=ranks.rank,
        world_size=ranks.world_size,
    )
    train = EpochBatches(
        data.train.with_augment_seed(seeds.streams["augment"]),
        train_sampler,
        generator=seeds.generator("data"),
        **workers,
    )
    val_sampler = EpochBatchSampler(len(data.val), loader.batch_size, seed=0, shuffle=False)
    val = EpochBatches(data.val, val_sampler, pin_memory=loader.pin_memory)
    return train, val


def perturb_after_step(optimizer: Any, model: torch.nn.Module, step: int | None) -> None:
    """Debugging aid (`trainer.perturb_step`): after that optimizer step (counted from the
    start of this process), add PERTURBATION to the first weight, so that verify and compare
    can be seen to catch a one-step change."""
    if step is None:
        return
    steps_done = itertools.count(1)

    def hook(_optimizer: Any, _args: Any, _kwargs: Any) -> None:
        if next(steps_done) == step:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] += PERTURBATION

    optimizer.register_step_post_hook(hook)


def train(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train as `cfg` says, recording everything in `run_dir`; return the final metrics.

    With `resume.path` set, continue the run in `run_dir` from its checkpoint, with the
    saved config plus this command's `overrides` (None: `cfg` is the whole config).
    """
    plan = None
    # Known before the config is: on a resume, trainer.distributed comes from the checkpoint.
    writes_run_dir = launched_rank() == 0
    if cfg.resume.path is not None:
        # Checked before run.json is touched: a refused resume leaves the run as it was.
        plan = plan_resume(cfg, run_dir if writes_run_dir else None, overrides, validate)
        cfg = plan.config
    record = RunRecord(run_dir)
    if plan is None:
        record.start(OmegaConf.to_yaml(cfg, resolve=True), command_line())
    metrics: AllLoggers | None = None
    try:
        validate(cfg)
        check_logger_packages(cfg.logger)
        if plan is not None and writes_run_dir:
            rewound = rewind_run_dir(run_dir, plan.path, plan.checkpoint)
            config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
            record.resume(config_yaml, command_line(), plan.record(run_dir, rewound))
        applied = set_determinism(cfg.determinism.mode)  # before anything touches CUDA
        for note in applied["notes"]:
            log.warning(note)
        threads = job_threads(cfg.trainer.threads)  # a fair share of the cores in a parallel sweep
        if threads is not None:
            torch.set_num_threads(threads)
        device = resolve_device(cfg.trainer.device)
        ranks = init_distributed(device) if cfg.trainer.distributed else SINGLE_PROCESS
        device = rank_device(device, ranks)
        seeds = seed_everything(
            cfg.seed, cfg.seeds, ranks.rank if cfg.trainer.distributed else None
        )
        record.update(
            seeds=seeds.as_record(),
            determinism=applied,
            device=str(device),
            torch_threads=torch.get_num_threads(),
            parallel_jobs=parallel_jobs(),
        )
        if cfg.trainer.distributed:
            record.update(distributed={**asdict(ranks), "backend": dist.get_backend()})
        # After threads and determinism are set. A resumed run keeps the environment record
        # of where it started (run.json's `resumes` history says when it was resumed).
        if plan is None:
            environment = write_environment(run_dir)
            record.update(environment=ENVIRONMENT_FILE)
        else:
            environment = read_environment(run_dir)

        data: DataSplits = instantiate(cfg.data)
        model = instantiate(cfg.model, input_shape=data.input_shape, num_classes=data.num_classes)
        init_weights(model, cfg.init.scheme, seeds.generator("init"), mode=cfg.init.mode)
        model.to(device)
        trained = model  # what the loop calls; `model` stays the plain module for state_dicts
        if cfg.trainer.distributed:
            trained = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        train_batches, val_batches = build_batches(data, cfg, seeds, ranks)
        if ranks.world_size > 1:
            record.update(
                shard={
                    "samples": train_batches.sampler.shard_size,
                    "padded": train_batches.sampler.padded,
                }
            )
        optimizer = build_optimizer(model.parameters(), cfg.optim)
        steps_per_epoch = min(
            len(train_batches), cfg.trainer.limit_train_batches or len(train_batches)
        )
        scheduler = build_scheduler(
            optimizer, cfg.sched, steps_per_epoch * cfg.trainer.epochs, steps_per_epoch
        )
        state = LoopState()
        jsonl = MetricsLog(run_dir / METRICS_FILE)
        metrics = AllLoggers(
            [jsonl, *build_loggers(cfg, run_dir, seeds.as_record(), environment.get("git", {}))]
        )
        saved_config = OmegaConf.to_container(cfg, resolve=True)
        saved_config.pop("resume", None)  # where a run came from is not part of what it is

        def capture() -> dict[str, Any]:
            return {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "loop": state.state_dict(),
                "loader": train_batches.state_dict(),
                "rng": capture_rng_states(),
                # Every rank's own states (dropout differs per rank); None in one process.
                "rng_ranks": gather_rng_states() if cfg.trainer.distributed else None,
                "best": checkpoints.best,
                "metrics_bytes": jsonl.tell(),
                "config": saved_config,
            }

        checkpoints = Checkpointer(
            run_dir / "checkpoints",
            capture,
            steps_per_epoch=steps_per_epoch,
            **OmegaConf.to_container(cfg.checkpoint, resolve=True),
        )
        if plan is not None:
            saved = plan.checkpoint
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(saved["scheduler"])
            state.load_state_dict(saved["loop"])
            train_batches.load_state_dict(saved["loader"])
            checkpoints.best = saved["best"]
            rng = saved["rng"] if saved.get("rng_ranks") is None else saved["rng_ranks"][ranks.rank]
            restore_rng_states(rng)  # last: nothing may draw between here and step 1
            log.info("resumed from %s at epoch %d step %d", plan.path, state.epoch, state.step)

        perturb_after_step(optimizer, model, cfg.trainer.perturb_step)
        with GracefulStop() as stop:
            send_test_signal = signal_hook_for_tests()

            def stop_if_asked(state: LoopState) -> None:
                if cfg.trainer.distributed:  # stop together, or the ranks' collectives part
                    stop.signum = agree_on_signal(stop.signum, device)
                if stop.signum is not None:
                    raise stop.error(checkpoints.save(state), state.step, state.epoch, run_dir)

            def after_step(state: LoopState) -> None:
                checkpoints.after_step(state)
                if send_test_signal is not None:
                    send_test_signal(state.step)
                stop_if_asked(state)

            def after_epoch(state: LoopState, val: dict[str, float]) -> None:
                checkpoints.after_epoch(state, val)
                stop_if_asked(state)

            if plan is None:
                checkpoints.save(state)  # step 0: a run killed at any point can be resumed
            log.info("run dir %s  seed %d  device %s", run_dir, cfg.seed, device)
            fit_started = time.perf_counter()
            final = fit(
                trained,
                optimizer,
                scheduler,
                train_batches,
                val_batches,
                state=state,
                epochs=cfg.trainer.epochs,
                device=device,
                log_every=cfg.trainer.log_every,
                metrics=metrics,
                grad_clip=cfg.trainer.grad_clip,
                limit_train_batches=cfg.trainer.limit_train_batches,
                on_step_end=after_step,
                on_epoch_end=after_epoch,
            )
            fit_seconds = time.perf_counter() - fit_started  # evaluate() synchronised the device
            checkpoints.save(state)
        fingerprint = weights_sha256(model.state_dict())
        record.finish(
            "completed",
            final_metrics=final,
            fit_seconds=round(fit_seconds, 4),
            weights_sha256=fingerprint,
            loss_series_sha256=loss_series_sha256(read_metrics(run_dir / METRICS_FILE)),
        )
        log.info("final %s", "  ".join(f"{k} {v:.6g}" for k, v in final.items()))
        log.info("run dir: %s", run_dir)
        log.info("weights sha256: %s", fingerprint)
        return final
    except BaseException as error:
        message = error_line(error)
        interrupt = isinstance(error, (KeyboardInterrupt, TrainingInterrupted))
        record.finish("interrupted" if interrupt else "failed", error=message.splitlines()[0])
        log.debug("traceback:\n%s", traceback.format_exc())
        if (mine := user_error(error)) is not None and mine is not error:
            raise mine from error  # e.g. a ConfigError raised inside hydra.utils.instantiate
        if isinstance(error, OmegaConfBaseException):
            raise SeedbedError(message) from error  # a config value our code could not read
        raise
    finally:
        if metrics is not None:
            metrics.close()
        teardown_distributed()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    """The Hydra task: one run in Hydra's output directory. Returns the final val_loss."""
    jobs_started.append(1)
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    overrides = list(hydra_config.overrides.task)
    if launched_rank() != 0:
        log.setLevel(logging.WARNING)  # one rank's progress lines are enough on the console
        # Only rank 0 writes the run directory; the others record into a scratch one.
        with tempfile.TemporaryDirectory(prefix=f"seedbed-rank{launched_rank()}-") as scratch:
            return train(cfg, Path(scratch), overrides)["val_loss"]
    return train(cfg, run_dir, overrides)["val_loss"]
