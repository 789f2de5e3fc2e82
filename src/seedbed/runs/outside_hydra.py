"""What a run started outside the command line (a notebook, a test) needs from Hydra's job.

`without_hydra(cfg)` drops the `hydra` node that `compose(...,
return_hydra_config=True)` adds: it is Hydra's, not the run's, and refers to a
job that does not exist (`hydra.job.num`). Under Hydra,
`hydra/job_logging=seedbed` sends the `seedbed` logger to the console and to
`<run dir>/train.log`; `job_logging(run_dir)` gives a run without a Hydra job
the same two outputs for the length of the run, so that it too keeps its
traceback in train.log and prints the weights hash.
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

# The formats of configs/hydra/job_logging/seedbed.yaml.
FILE_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] %(message)s"
LOG_FILE = "train.log"


@contextmanager
def job_logging(run_dir: Path) -> Iterator[None]:
    """Log `seedbed` to `run_dir/train.log` (everything) and to stdout (INFO and up, unless
    the root logger already prints somewhere), as Hydra's job logging does; nothing under a
    Hydra job, which has its own."""
    if HydraConfig.initialized():
        yield
        return
    log = logging.getLogger("seedbed")
    run_dir.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(run_dir / LOG_FILE)
    to_file.setFormatter(logging.Formatter(FILE_FORMAT))
    handlers: list[logging.Handler] = [to_file]
    if not logging.getLogger().handlers:  # a notebook or a script: nothing prints INFO yet
        to_console = logging.StreamHandler(sys.stdout)
        to_console.setLevel(logging.INFO)
        handlers.append(to_console)
    level = log.level
    log.setLevel(logging.DEBUG)
    for handler in handlers:
        log.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
        log.setLevel(level)


def without_hydra(cfg: DictConfig) -> DictConfig:
    """`cfg`, or a copy of it without the `hydra` node."""
    if "hydra" not in cfg:
        return cfg
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg
