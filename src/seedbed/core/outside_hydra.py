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
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, open_dict

# The formats of configs/hydra/job_logging/seedbed.yaml.
FILE_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] %(message)s"
LOG_FILE = "train.log"


def _writes_to(path: Path) -> bool:
    """Some handler of the root or `seedbed` logger already writes `path` (a Hydra job's)."""
    handlers = [*logging.getLogger().handlers, *logging.getLogger("seedbed").handlers]
    files = [h.baseFilename for h in handlers if isinstance(h, logging.FileHandler)]
    return any(os.path.realpath(f) == os.path.realpath(path) for f in files)


@contextmanager
def job_logging(run_dir: Path) -> Iterator[None]:
    """Log `seedbed` to `run_dir/train.log` (everything) and to stdout (INFO and up, unless
    the root logger already prints somewhere), as Hydra's job logging does; nothing more
    where a Hydra job already logs there. (A test that sets HydraConfig itself, as
    lightning-hydra-template's do, still gets train.log.)"""
    run_dir.mkdir(parents=True, exist_ok=True)
    if _writes_to(run_dir / LOG_FILE):
        yield
        return
    log = logging.getLogger("seedbed")
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
