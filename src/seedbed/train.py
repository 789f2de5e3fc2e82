"""Training entry point: `python train.py seed=42`.

`train(cfg, run_dir)` reads like the recipe it is, in the order of the work;
`main` is the Hydra task; `cli` wraps Hydra so that every expected error
(a bad override, an impossible value, a missing file) ends as one line on
stderr and a non-zero exit, with the traceback kept in train.log.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import sys
import tempfile
import traceback
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch.nn.parallel import DistributedDataParallel

from seedbed.checkpoint import save_checkpoint
from seedbed.config import register_configs, validate
from seedbed.data import DataSplits
from seedbed.determinism import set_determinism
from seedbed.distributed import (
    RankInfo,
    init_distributed,
    launched_rank,
    rank_device,
    teardown_distributed,
)
from seedbed.errors import ConfigError, SeedbedError
from seedbed.init import init_weights
from seedbed.launchers import dataloader_context, job_threads, parallel_jobs
from seedbed.loader import EpochBatches, EpochBatchSampler
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
from seedbed.seeding import seed_everything

log = logging.getLogger("seedbed")

# Filled by each Hydra job as it starts: an error raised before any did is a composition error.
_jobs_started: list[int] = []
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
EXIT_USER_ERROR = 2


def run_name() -> str:
    """`<YYYY-MM-DD_HH-MM-SS>_<6 hex>`: sortable by time, unique even within one second."""
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{secrets.token_hex(3)}"


OmegaConf.register_new_resolver("run_name", run_name, use_cache=True, replace=True)
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


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train as `cfg` says, recording everything in `run_dir`; return the final metrics."""
    record = RunRecord(run_dir)
    record.start(OmegaConf.to_yaml(cfg, resolve=True), command_line())
    metrics: MetricsLog | None = None
    try:
        validate(cfg)
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

        def save_last(state: LoopState, _val: dict[str, float]) -> None:
            if not ranks.is_main:
                return  # the ranks hold the same weights: rank 0 writes them
            save_checkpoint(
                run_dir / "checkpoints" / "last.pt",
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "loop": state.state_dict(),
                },
            )

        metrics = MetricsLog(run_dir / METRICS_FILE)
        log.info("run dir %s  seed %d  device %s", run_dir, cfg.seed, device)
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
            on_epoch_end=save_last,
        )
        if state.step == 0:
            save_last(state, {})
        fingerprint = weights_sha256(model.state_dict())
        record.finish(
            "completed",
            final_metrics=final,
            weights_sha256=fingerprint,
            loss_series_sha256=loss_series_sha256(read_metrics(run_dir / METRICS_FILE)),
        )
        log.info("final %s", "  ".join(f"{k} {v:.6g}" for k, v in final.items()))
        log.info("run dir: %s", run_dir)
        log.info("weights sha256: %s", fingerprint)
        return final
    except BaseException as error:
        message = error_line(error)
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        record.finish(status, error=message)
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
    _jobs_started.append(1)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.trainer.distributed and launched_rank() != 0:
        log.setLevel(logging.WARNING)  # one rank's progress lines are enough on the console
        # Only rank 0 writes the run directory; the others record into a scratch one.
        with tempfile.TemporaryDirectory(prefix=f"seedbed-rank{launched_rank()}-") as scratch:
            return train(cfg, Path(scratch))["val_loss"]
    return train(cfg, run_dir)["val_loss"]


def _one_line(text: str) -> str:
    """Hydra's multi-line messages as one line: `...; Available options in 'init': a, b, c`."""
    parts: list[str] = []
    for line in text.split("Config search path:")[0].splitlines():
        if not line.strip():
            continue
        if line.startswith("\t") and parts:
            parts[-1] += ("" if parts[-1].endswith(":") else ",") + " " + line.strip()
        else:
            parts.append(line.strip())
    return "; ".join(parts)


def user_error(error: BaseException) -> SeedbedError | None:
    """The SeedbedError behind `error` (e.g. raised inside hydra.utils.instantiate), if any."""
    while error is not None:
        if isinstance(error, SeedbedError):
            return error
        error = error.__cause__ or error.__context__
    return None


def error_line(error: BaseException) -> str:
    """One line for the user: our own messages as they are, config errors with their key."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if (mine := user_error(error)) is not None:
        return str(mine)
    cause = error.__cause__ if isinstance(error, HydraException) else None
    if isinstance(cause, OmegaConfBaseException):
        error = cause
    if isinstance(error, OmegaConfBaseException):
        message = str(error.msg if getattr(error, "msg", None) else error).splitlines()[0]
        key = getattr(error, "full_key", None)
        return f"{key}: {message}" if key else message
    if isinstance(error, HydraException):
        return _one_line(str(error))
    first = str(error).strip().splitlines()
    return f"{type(error).__name__}: {first[0] if first else ''}".rstrip(": ")


def _record_composition_failure(error: BaseException) -> Path | None:
    """A config that does not compose still gets a run directory saying why (single runs only)."""
    args = sys.argv[1:]
    if any(
        a in ("-m", "--multirun") or a.startswith(("--cfg", "-c", "--help", "-h")) for a in args
    ):
        return None
    run_dir = next(
        (Path(a.split("=", 1)[1]) for a in args if a.startswith("hydra.run.dir=")),
        Path("outputs") / "train" / run_name(),
    )
    record = RunRecord(run_dir)
    record.start("# the config did not compose: see run.json\n", command_line())
    record.finish("failed", error=error_line(error))
    (run_dir / "train.log").write_text("".join(traceback.format_exception(error)))
    return run_dir


def cli() -> None:
    """Run Hydra; an expected error becomes one line on stderr and exit status 2."""
    if launched_rank() != 0:
        # Every torchrun process would make its own Hydra run dir (each names it anew):
        # the ranks other than 0 log into a scratch one instead, removed when they exit.
        scratch = tempfile.mkdtemp(prefix=f"seedbed-rank{launched_rank()}-")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        sys.argv.append(f"hydra.run.dir={scratch}")
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        main()  # the user asked for full tracebacks
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's printer
    try:
        main()
    except (SeedbedError, KeyboardInterrupt) as error:
        print(f"error: {error_line(error)}", file=sys.stderr)
        sys.exit(130 if isinstance(error, KeyboardInterrupt) else EXIT_USER_ERROR)
    except (HydraException, OmegaConfBaseException) as error:
        if _jobs_started:
            raise  # a bug inside a job, not a bad config: keep the traceback
        # Composition failed (unknown key, wrong type, unknown option): no job ever ran.
        run_dir = _record_composition_failure(error)
        where = f" (recorded in {run_dir / 'run.json'})" if run_dir else ""
        print(f"error: {error_line(error)}{where}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
