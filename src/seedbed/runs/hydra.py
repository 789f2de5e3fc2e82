"""The Hydra-facing side of a run: the schema of the whole config, the resolvers train.yaml
uses, the ConfigStore registration, and `validate`.

Each group's schema lives beside the component it describes (`LoaderConfig` in
`seedbed.data.loader`, `TrainerConfig` in `seedbed.loop`, ...), and so does the check of
the values types cannot express (`check_loader`, `check_trainer`, ...): `validate` runs the
check of each group on what the group declares, so a component of your own is asked only
about the keys it has. Composition checks keys and types against the schemas (an unknown
key or `seed=abc` fails before anything runs); each failure names the key, the value and
what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from seedbed.core.checkpoint import CheckpointConfig, check_checkpoint
from seedbed.core.determinism import DeterminismConfig, check_determinism
from seedbed.core.distributed import launched_world_size
from seedbed.core.errors import ConfigError
from seedbed.core.loggers import check_loggers
from seedbed.core.paths import LIBRARY_CONFIGS, run_dir_of, run_name
from seedbed.core.seeding import SeedsConfig, check_seeds
from seedbed.data.arrays import (
    SyntheticDataConfig,
    SyntheticImagesConfig,
    SyntheticRegressionConfig,
    check_data,
)
from seedbed.data.loader import LoaderConfig, check_loader, micro_batch_size
from seedbed.data.npz import NpzDataConfig
from seedbed.data.vision import Cifar10DataConfig, ImageFolderDataConfig, MnistDataConfig
from seedbed.init import InitConfig, check_init
from seedbed.loop import TrainerConfig, check_trainer
from seedbed.models import CNNConfig, MLPConfig, ResNet18Config, check_model
from seedbed.optim import (
    AdamWConfig,
    CosineSchedConfig,
    NoSchedConfig,
    OneCycleSchedConfig,
    PlateauSchedConfig,
    SGDConfig,
    StepSchedConfig,
    WarmupCosineSchedConfig,
    check_optim,
    check_sched,
)
from seedbed.task import ClassificationTaskConfig, RegressionTaskConfig, optuna_direction
from seedbed.validation import check_component_targets, check_finite, check_group_keys


@dataclass
class ResumeConfig:
    """Continue a run in its own directory: `resume=<path>` is short for `resume.path=<path>`."""

    path: str | None = None
    """A run directory (its newest good checkpoint) or one checkpoint file; null: a new run."""
    force: bool = False
    """Resume even where the config differs in keys that change the results (recorded)."""


@dataclass
class TrainConfig:
    """The whole run. Group values (`data`, `model`, ...) are checked by their own schemas."""

    seed: int = 0
    """Master seed, an int in [0, 2**32-1]: every stream below is derived from it."""
    seeds: SeedsConfig = field(default_factory=SeedsConfig)
    """Per-stream overrides."""
    task: Any = MISSING
    data: Any = MISSING
    model: Any = MISSING
    init: InitConfig = field(default_factory=InitConfig)
    optim: Any = MISSING
    sched: Any = MISSING
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    determinism: DeterminismConfig = field(default_factory=DeterminismConfig)
    logger: dict[str, Any] = field(default_factory=dict)
    """Metric loggers beside metrics.jsonl (always written), by name, each a `_target_` and
    its settings: `logger=csv`, `'logger=[tensorboard,wandb]'` (docs/logging.md)."""
    callbacks: dict[str, Any] = field(default_factory=dict)
    """Callbacks by name, each a `_target_` and its settings: `callbacks=ema`,
    `'callbacks=[ema,grad_norm]'` (docs/callbacks.md)."""
    tags: list[str] = field(default_factory=list)
    """Words that describe the run (`tags=[ablation,lr]`): in run.json, given to the loggers,
    and a sweep summary can group by them."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig)
    recipe: str = MISSING
    """The training function `train(cfg, run)` that `python train.py` runs, by its importable
    name: `<package>.<module>.<function>` (a project's configs/train.yaml names its own,
    `mypaper.train.train`). Read from this command's config, never from a file read back."""
    allow_targets: list[str] = field(default_factory=list)
    """Module prefixes (e.g. `otherpkg.models`) trusted as `_target_` in configs read from files
    (a checkpoint's, a run's config.yaml), beyond the component classes seedbed trusts, the
    builders your configs name and your own package (the recipe's): read from this command's
    config, never from the file."""


# Groups whose options have different fields; the others are typed in TrainConfig directly.
GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "task": {"classification": ClassificationTaskConfig, "regression": RegressionTaskConfig},
    "data": {
        "synthetic": SyntheticDataConfig,
        "synthetic_regression": SyntheticRegressionConfig,
        "synthetic_images": SyntheticImagesConfig,
        "npz": NpzDataConfig,
        "mnist": MnistDataConfig,
        "cifar10": Cifar10DataConfig,
        "image_folder": ImageFolderDataConfig,
    },
    "model": {"mlp": MLPConfig, "cnn": CNNConfig, "resnet18": ResNet18Config},
    "optim": {"sgd": SGDConfig, "adamw": AdamWConfig},
    "sched": {
        "none": NoSchedConfig,
        "cosine": CosineSchedConfig,
        "step": StepSchedConfig,
        "plateau": PlateauSchedConfig,
        "onecycle": OneCycleSchedConfig,
        "warmup_cosine": WarmupCosineSchedConfig,
    },
}


def resumed_run_dir(resume_path: str | None, new_run_dir: str) -> str:
    """Hydra's run dir: the resumed run's own directory, else a new one."""
    return str(run_dir_of(resume_path)) if resume_path else new_run_dir


def hydra_output_subdir(resume_path: str | None) -> str:
    """Where Hydra keeps its record: a resume adds its own beside the original `.hydra/`."""
    return f".hydra/resume_{run_name()}" if resume_path else ".hydra"


def register_configs() -> None:
    """Make the configs composable: the resolvers train.yaml uses, and the schemas under
    `schema/` (a YAML option starts from its own, e.g. `defaults: [/schema/model@_here_:
    mlp]`, so composition checks its keys and types). Called by the command line before
    Hydra starts; call it yourself before `hydra.compose`."""
    for name, resolver in (
        ("run_name", run_name),
        ("resumed_run_dir", resumed_run_dir),
        ("hydra_output_subdir", hydra_output_subdir),
        ("optuna_direction", optuna_direction),
    ):
        OmegaConf.register_new_resolver(name, resolver, use_cache=True, replace=True)
    cs = ConfigStore.instance()
    cs.store(group="schema", name="train", node=TrainConfig)
    for group, schemas in GROUP_SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node)


# The check of each group's values, beside the component that uses them.
CHECKS: dict[str, Callable[[DictConfig], None]] = {
    "init": check_init,
    "determinism": check_determinism,
    "loader": check_loader,
    "trainer": check_trainer,
    "checkpoint": check_checkpoint,
    "logger": check_loggers,
    "optim": check_optim,
    "sched": check_sched,
    "data": check_data,
    "model": check_model,
}


def validate(cfg: DictConfig) -> None:
    """Check every value types cannot; raise ConfigError for the first one that is wrong."""
    known = {f.name for f in fields(TrainConfig)}
    for key in cfg:
        if key not in known:
            allowed = f"a key of the schema: {', '.join(sorted(known))}"
            raise ConfigError(str(key), cfg[key], allowed)
    plain = OmegaConf.to_container(cfg, resolve=True)
    check_group_keys(plain, TrainConfig, GROUP_SCHEMAS)  # keys added with + or ++ included
    check_finite(plain)
    check_seeds(cfg)
    for group, check in CHECKS.items():
        if isinstance(cfg.get(group), DictConfig):
            check(cfg[group])
    if isinstance(cfg.get("loader"), DictConfig) and isinstance(cfg.get("trainer"), DictConfig):
        # world size x micro-batch x accumulation = global batch, for the ranks launched
        world = launched_world_size() if cfg.trainer.distributed else 1
        micro_batch_size(cfg.loader, world, cfg.trainer.accumulate_grad_batches)
    check_component_targets(plain, GROUP_SCHEMAS, options())


def options() -> dict[str, list[str]]:
    """The options of each group with a schema: what `model=<option>` can name."""
    return {
        group: sorted({*schemas, *(p.stem for p in (LIBRARY_CONFIGS / group).glob("*.yaml"))})
        for group, schemas in GROUP_SCHEMAS.items()
    }
