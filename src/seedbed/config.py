"""The config schema: one dataclass per group, registered in Hydra's ConfigStore.

Composition checks keys and types against these dataclasses (an unknown key or
`seed=abc` fails before anything runs); `validate` then checks the values that
types cannot express (ranges, closed sets), each failure naming the key, the
value and what is allowed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from seedbed.compile import COMPILE_MODES
from seedbed.data.normalize import MODES as NORMALIZE_MODES
from seedbed.init import FAN_MODES, SCHEMES
from seedbed.precision import PRECISIONS
from seedbed.runs.determinism import MODES as DETERMINISM_MODES
from seedbed.runs.errors import ConfigError
from seedbed.validation import (
    check_component_targets,
    check_components,
    check_finite,
    check_group_keys,
)

SEED_MAX = 2**32 - 1
# The packaged configs: `configs/` at the top of a checkout points here.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class SeedsConfig:
    """Pin one stream's seed; a stream left at null is derived from the top-level `seed`."""

    init: int | None = None
    """Weight initialisation."""
    data: int | None = None
    """Data order: the shuffle of each epoch."""
    augment: int | None = None
    """Per-sample augmentation."""
    torch: int | None = None
    """The global torch RNG (CPU and every CUDA device): dropout and any op without a generator."""
    python: int | None = None
    """Python's `random` module."""
    numpy: int | None = None
    """NumPy's legacy global RNG (`np.random.*`)."""


@dataclass
class AugmentConfig:
    """Per-sample augmentation of the synthetic datasets (noise and feature dropout)."""

    noise_std: float = 0.1
    """Standard deviation of the Gaussian noise added to each input value."""
    drop_prob: float = 0.05
    """Probability that an input value is set to zero."""


@dataclass
class SyntheticDataConfig:
    """Gaussian class clusters in `n_features` dimensions, generated from `seed`."""

    _target_: str = "seedbed.data.arrays.synthetic_classification"
    n_samples: int = 8192
    """Samples in total, before the train/val split."""
    n_features: int = 32
    """Input dimension."""
    n_classes: int = 10
    """Number of classes."""
    class_sep: float = 0.5
    """Distance scale between class centres; smaller is harder."""
    val_fraction: float = 0.2
    """Fraction of samples held out for validation (the split depends on `seed` only)."""
    test_fraction: float = 0.1
    """Fraction held out for testing (`python eval.py ... split=test`); training and model
    selection never read it. 0 means no test split."""
    seed: int = 0
    """The dataset's own seed: the data does not change with the training seed."""
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    """Per-sample augmentation of the training split; null turns it off."""


@dataclass
class SyntheticRegressionConfig:
    """y = tanh(x W1) W2 / 4 + noise, `n_features` in, `n_targets` out, generated from
    `seed`: for `task=regression`."""

    _target_: str = "seedbed.data.arrays.synthetic_regression"
    n_samples: int = 8192
    """Samples in total, before the train/val/test split."""
    n_features: int = 16
    """Input dimension."""
    n_targets: int = 1
    """Target dimension (1: one value per sample)."""
    noise: float = 0.1
    """Standard deviation of the noise added to the targets."""
    val_fraction: float = 0.2
    """Fraction of samples held out for validation (the split depends on `seed` only)."""
    test_fraction: float = 0.1
    """Fraction held out for testing; 0 means no test split."""
    seed: int = 0
    """The dataset's own seed: the data does not change with the training seed."""
    augment: AugmentConfig | None = field(default_factory=lambda: AugmentConfig(0.0, 0.0))
    """Per-sample augmentation of the training split; off (all zero) by default: switch it on
    with `data.augment.noise_std=0.1`."""


@dataclass
class SyntheticImagesConfig:
    """Class templates plus noise, as (channels, size, size) images, generated from `seed`."""

    _target_: str = "seedbed.data.arrays.synthetic_images"
    n_samples: int = 4096
    """Samples in total, before the train/val split."""
    channels: int = 3
    """Image channels."""
    size: int = 16
    """Image height and width."""
    n_classes: int = 10
    """Number of classes."""
    noise: float = 1.0
    """Standard deviation of the per-sample noise around the class template."""
    val_fraction: float = 0.2
    """Fraction of samples held out for validation (the split depends on `seed` only)."""
    test_fraction: float = 0.1
    """Fraction held out for testing (`python eval.py ... split=test`); training and model
    selection never read it. 0 means no test split."""
    seed: int = 0
    """The dataset's own seed: the data does not change with the training seed."""
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    """Per-sample augmentation of the training split; null turns it off."""


@dataclass
class NpzDataConfig:
    """A user's own data: an .npz file with arrays `x` (inputs) and `y` (targets: integer
    labels for task=classification, floats for task=regression); optional `x_val`/`y_val`
    and `x_test`/`y_test` are used as those splits."""

    _target_: str = "seedbed.data.npz.npz_dataset"
    path: str = MISSING
    """Path to the .npz file (relative to where you start the run)."""
    val_fraction: float = 0.2
    """Fraction of samples held out for validation (unless the file has x_val/y_val)."""
    test_fraction: float = 0.0
    """Fraction held out for testing (unless the file has x_test/y_test); 0: no test split."""
    seed: int = 0
    """Seed of the train/val/test split only."""
    augment: AugmentConfig | None = field(default_factory=lambda: AugmentConfig(0.0, 0.0))
    """Per-sample augmentation of the training split; off (all zero) by default for your own
    data: switch it on with `data.augment.noise_std=0.1 data.augment.drop_prob=0.05`."""
    normalize: str = "standard"
    """standard: each input feature scaled to mean 0 and std 1 with statistics of the training
    split only (saved in run.json and every checkpoint); none: as stored. Unsigned integer
    inputs (uint8 images) are scaled to [0, 1] first either way."""


@dataclass
class MnistDataConfig:
    """MNIST through torchvision (`pip install -e '.[vision]'`): 28x28 grey digits, 10 classes;
    the official test set is the test split."""

    _target_: str = "seedbed.data.vision.mnist"
    _recursive_: bool = False
    root: str = "data"
    """Folder that holds (or will hold) MNIST/raw/."""
    download: bool = False
    """Download the files into `root` when they are not there."""
    val_fraction: float = 0.1
    """Fraction of the training files held out for validation (by `seed`)."""
    seed: int = 0
    """Seed of the train/val split only."""
    train_transform: list[Any] | None = None
    """torchvision.transforms.v2 transforms of the training split, each a `_target_` entry;
    null: to a float image normalised with MNIST's mean and std."""
    eval_transform: list[Any] | None = None
    """Transforms of the val and test splits; null: the same normalisation, nothing random."""


@dataclass
class Cifar10DataConfig:
    """CIFAR-10 through torchvision (`pip install -e '.[vision]'`): 32x32 colour images, 10
    classes; the official test set is the test split."""

    _target_: str = "seedbed.data.vision.cifar10"
    _recursive_: bool = False
    root: str = "data"
    """Folder that holds (or will hold) cifar-10-batches-py/."""
    download: bool = False
    """Download and extract the archive into `root` when the files are not there."""
    val_fraction: float = 0.1
    """Fraction of the training files held out for validation (by `seed`)."""
    seed: int = 0
    """Seed of the train/val split only."""
    train_transform: list[Any] | None = None
    """Transforms of the training split, each a `_target_` entry; null: random crop (padding
    4) and horizontal flip, normalised with CIFAR-10's mean and std."""
    eval_transform: list[Any] | None = None
    """Transforms of the val and test splits; null: the same normalisation, nothing random."""


@dataclass
class ImageFolderDataConfig:
    """Your images, one sub-folder per class (torchvision's ImageFolder; `.[vision]` extra)."""

    _target_: str = "seedbed.data.vision.image_folder"
    _recursive_: bool = False
    root: str = MISSING
    """The folder whose sub-folders are the classes."""
    image_size: int | None = None
    """Height and width of the images the default transforms produce; null: the first
    image's shorter side, at most 224 (small images are not upscaled; run.json's
    `data.image_size` says which size was used)."""
    val_fraction: float = 0.2
    """Fraction of the images held out for validation (by `seed`)."""
    test_fraction: float = 0.0
    """Fraction held out for testing; 0: no test split."""
    seed: int = 0
    """Seed of the train/val/test split only."""
    train_transform: list[Any] | None = None
    """Transforms of the training split, each a `_target_` entry; null: RandomResizedCrop to
    `image_size` and horizontal flip, normalised with ImageNet's mean and std."""
    eval_transform: list[Any] | None = None
    """Transforms of the val and test splits; null: resize and centre crop to `image_size`,
    normalised likewise."""


@dataclass
class LossConfig:
    """The loss: any class built by `_target_` with these keyword arguments."""

    _target_: str = MISSING


@dataclass
class ClassificationTaskConfig:
    """Integer class labels: cross-entropy; reports val/loss and val/acc."""

    _target_: str = "seedbed.task.Classification"
    _recursive_: bool = False
    loss: Any = field(
        default_factory=lambda: {
            "_target_": "torch.nn.CrossEntropyLoss",
            "label_smoothing": "${..label_smoothing}",
        }
    )
    """The loss (a `_target_`); its label_smoothing follows `task.label_smoothing`."""
    label_smoothing: float = 0.0
    """Label smoothing of the cross-entropy, in [0, 1)."""
    monitor: str = "val/loss"
    """The metric that picks best.pt, drives early stopping, is returned to Optuna and heads
    a sweep's summary: val/loss or val/acc."""
    mode: str | None = None
    """min or max; null: from the metric (max for acc, min otherwise)."""


@dataclass
class RegressionTaskConfig:
    """Real-valued targets (one value or a vector per sample): MSE; reports val/loss,
    val/rmse and val/mae."""

    _target_: str = "seedbed.task.Regression"
    _recursive_: bool = False
    loss: Any = field(default_factory=lambda: {"_target_": "torch.nn.MSELoss"})
    """The loss (a `_target_`), e.g. torch.nn.L1Loss or torch.nn.HuberLoss."""
    monitor: str = "val/loss"
    """The metric that picks best.pt, drives early stopping, is returned to Optuna and heads
    a sweep's summary: val/loss, val/rmse or val/mae."""
    mode: str | None = None
    """min or max; null: min (every regression metric is an error)."""
    normalize_targets: str = "standard"
    """standard: each target column is standardised with the mean and std of the training
    split for training (saved in every checkpoint, like the inputs'); the loss and metrics
    are still reported in the target's own units. none: the model learns the targets as
    stored. A target that does not vary on the training split cannot be standardised."""


@dataclass
class MLPConfig:
    """A multilayer perceptron; input size from the data, output size from the task."""

    _target_: str = "seedbed.models.MLP"
    hidden: list[int] = field(default_factory=lambda: [128, 128])
    """Width of each hidden layer."""
    dropout: float = 0.1
    """Dropout probability after each hidden layer (drawn from the `torch` stream)."""


@dataclass
class CNNConfig:
    """A small convolutional network; input shape from the data, output size from the task."""

    _target_: str = "seedbed.models.CNN"
    channels: list[int] = field(default_factory=lambda: [16, 32])
    """Output channels of each conv block (conv 3x3, ReLU, max-pool 2)."""
    dropout: float = 0.1
    """Dropout probability before the classifier."""


@dataclass
class ResNet18Config:
    """torchvision's ResNet-18 (`.[vision]` extra), sized to the data's channels and classes."""

    _target_: str = "seedbed.models.ResNet18"
    small_inputs: bool | None = None
    """A 3x3 stride-1 stem without max-pool, for small images (CIFAR); null: when the images
    are at most 64 pixels wide."""


@dataclass
class InitConfig:
    """How weights are initialised after the model is built."""

    scheme: str = "kaiming_uniform"
    """One of seedbed.init.SCHEMES: kaiming_uniform, kaiming_normal, xavier_uniform,
    xavier_normal, orthogonal, torch_default."""
    mode: str = "fan_in"
    """Kaiming fan mode: fan_in (preserves forward variance) or fan_out (backward)."""


@dataclass
class SGDConfig:
    """Stochastic gradient descent with momentum (`optim=sgd`; the default is AdamW). lr 0.05
    suits the synthetic default, not every model: on the digits as images it stays at chance."""

    _target_: str = "torch.optim.SGD"
    lr: float = 0.05
    """Learning rate (> 0)."""
    momentum: float = 0.9
    """Momentum factor."""
    weight_decay: float = 0.0
    """L2 penalty."""
    nesterov: bool = False
    """Nesterov momentum."""


@dataclass
class AdamWConfig:
    """Adam with decoupled weight decay: the default for every packaged model and task, chosen
    from runs on real data (README, "Real data at the defaults")."""

    _target_: str = "torch.optim.AdamW"
    lr: float = 1e-3
    """Learning rate (> 0)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """Coefficients of the running averages of the gradient and its square."""
    weight_decay: float = 0.01
    """Decoupled weight decay."""
    eps: float = 1e-8
    """Added to the denominator for numerical stability."""


@dataclass
class NoSchedConfig:
    """A constant learning rate."""

    _target_: str | None = None


@dataclass
class CosineSchedConfig:
    """Cosine decay over the whole run, stepped after every optimizer step."""

    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    T_max: int | None = None
    """Steps of one half cosine; null means every step of the run."""
    eta_min: float = 0.0
    """Final learning rate."""


@dataclass
class PlateauSchedConfig:
    """Lower the learning rate when `task.monitor` stops improving: stepped after each
    validation (each epoch, and every `trainer.val_every_steps`), never per step."""

    _target_: str = "torch.optim.lr_scheduler.ReduceLROnPlateau"
    mode: str | None = None
    """min or max; null: the task's (`task.mode`, from the monitored metric)."""
    factor: float = 0.1
    """Multiply the learning rate by this on a plateau, in (0, 1)."""
    patience: int = 2
    """Validations without improvement before the learning rate is lowered."""
    threshold: float = 1e-4
    """An improvement must beat the best by more than this (relative, see threshold_mode)."""
    threshold_mode: str = "rel"
    """rel: by a fraction of the best; abs: by an absolute amount."""
    cooldown: int = 0
    """Validations to wait after a reduction before counting again."""
    min_lr: float = 0.0
    """The learning rate never goes below this."""


@dataclass
class OneCycleSchedConfig:
    """The one-cycle policy: warm up to `max_lr`, then anneal far below the start, over the
    whole run, stepped after every optimizer step."""

    _target_: str = "torch.optim.lr_scheduler.OneCycleLR"
    max_lr: float | None = None
    """The peak learning rate; null: `optim.lr`."""
    total_steps: int | None = None
    """Optimizer steps of the cycle; null: every optimizer step of the run."""
    pct_start: float = 0.3
    """Fraction of the cycle spent warming up, in (0, 1)."""
    anneal_strategy: str = "cos"
    """cos or linear."""
    div_factor: float = 25.0
    """The starting learning rate is max_lr / div_factor."""
    final_div_factor: float = 1e4
    """The final learning rate is max_lr / (div_factor * final_div_factor)."""
    cycle_momentum: bool = False
    """Cycle the optimizer's momentum (or Adam's beta1) inversely to the learning rate."""


@dataclass
class WarmupCosineSchedConfig:
    """Linear warm-up from 0 to `optim.lr`, then cosine decay to `eta_min` at the run's last
    step, stepped after every optimizer step: the most common recipe."""

    _target_: str = "seedbed.optim.warmup_cosine"
    warmup_steps: int | None = None
    """Optimizer steps of the linear warm-up; null: `warmup_fraction` of the run."""
    warmup_fraction: float = 0.05
    """The warm-up's share of the run when `warmup_steps` is null, in [0, 1)."""
    total_steps: int | None = None
    """Optimizer steps of warm-up plus decay; null: every optimizer step of the run."""
    eta_min: float = 0.0
    """The learning rate at the end of the decay."""


@dataclass
class StepSchedConfig:
    """Multiply the learning rate by `gamma` every `step_size` epochs."""

    _target_: str = "torch.optim.lr_scheduler.StepLR"
    step_size: int = 5
    """Epochs between decays."""
    gamma: float = 0.1
    """Decay factor."""


@dataclass
class LoaderConfig:
    """How batches are served. None of these change the results, only the speed."""

    batch_size: int = 64
    """Samples per batch (> 0)."""
    shuffle: bool = True
    """Shuffle the training split each epoch (the order is a function of the data seed and
    the epoch)."""
    num_workers: int = 0
    """DataLoader worker processes; 0 serves in-memory data by direct batch indexing."""
    pin_memory: bool = False
    """Page-locked host memory for faster copies to the GPU."""
    persistent_workers: bool = False
    """Keep worker processes alive between epochs (needs num_workers > 0)."""
    prefetch_factor: int | None = None
    """Batches each worker loads ahead (needs num_workers > 0); null is PyTorch's default."""
    drop_last: bool = False
    """Drop the last incomplete training batch of each epoch."""
    on_device: bool = False
    """Keep in-memory data (without per-sample augmentation) on the training device and index
    batches there: no host-to-device copy per step, so small models are not host-bound.
    Needs num_workers=0."""


@dataclass
class EarlyStoppingConfig:
    """Stop when `task.monitor` has not improved for `patience` validations in a row."""

    patience: int | None = None
    """Validations without improvement before training stops; null: never stop early."""
    min_delta: float = 0.0
    """An improvement must beat the best so far by more than this."""


@dataclass
class TrainerConfig:
    """The training loop."""

    epochs: int = 10
    """Passes over the training split (>= 0)."""
    device: str = "auto"
    """auto (cuda when available, else cpu), cpu or cuda."""
    log_every: int = 20
    """Write the loss to metrics.jsonl every this many optimizer steps (> 0)."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value; null turns clipping off."""
    limit_train_batches: int | None = None
    """Stop each epoch after this many optimizer steps (debugging: with accumulation, this
    many times `accumulate_grad_batches` batches); null means the whole epoch."""
    precision: str = "32"
    """32 (float32), bf16-mixed (bfloat16 autocast; CPU and CUDA) or 16-mixed (float16
    autocast with a gradient scaler; CUDA only)."""
    accumulate_grad_batches: int = 1
    """Batches per optimizer step (>= 1): gradients of this many batches are averaged, so the
    step matches one batch this many times larger. Steps, logging, checkpoints, schedulers,
    `limit_train_batches` and `val_every_steps` count optimizer steps."""
    compile: bool = False
    """torch.compile the model (needs a C++ compiler on the CPU, triton on CUDA)."""
    compile_mode: str = "default"
    """torch.compile's mode: default, reduce-overhead, max-autotune or
    max-autotune-no-cudagraphs."""
    val_every_steps: int | None = None
    """Also validate every this many optimizer steps; null: once per epoch only. best.pt,
    early stopping and sched=plateau consider every validation."""
    threads: int | None = 1
    """torch intra-op threads. Some CPU kernels give other bits with another count, so the
    default is a fixed 1: the same weights alone, in any sweep and on any machine, and no
    collapse on a busy machine (see the README's "Threads"). null: a fair share of this
    machine's cores (cores // a joblib sweep's n_jobs), faster on an idle machine, written as
    a number into config.yaml so that a rerun of it uses the same count."""
    perturb_step: int | None = None
    """Debugging aid, never for real runs: after this optimizer step, add 1e-3 to the first
    weight (`python -m seedbed.tools.verify --vary trainer.perturb_step=5` must then fail)."""
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    """Stop when the monitored metric stalls (off by default)."""
    distributed: bool = False
    """Data-parallel training (DDP): one process per rank, started by torchrun or as the tasks
    of a submitit job; gloo on the CPU, nccl on CUDA. Only rank 0 writes the run directory."""


@dataclass
class DeterminismConfig:
    """How strictly PyTorch is made deterministic."""

    mode: str = "strict"
    """strict: deterministic algorithms or an error; warn: the same, warnings instead of errors;
    off: fastest (cuDNN benchmark), not reproducible."""


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


@dataclass
class CheckpointConfig:
    """When checkpoints are written to `<run dir>/checkpoints/`, and which are kept."""

    every_steps: int | None = 500
    """Write `step_<step>.pt` every this many optimizer steps; null: only at epoch ends, on an
    interrupt and at the end of training."""
    at_epoch_end: bool = True
    """Also write one after each epoch's validation."""
    keep_last: int | None = 3
    """Keep this many of the newest step files (best.pt's is kept as well); null keeps all."""
    save_best: bool = True
    """Keep best.pt: the checkpoint with the best `task.monitor` value so far."""


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
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig)
    allow_targets: list[str] = field(default_factory=list)
    """Module prefixes (e.g. `mypkg.models`) trusted as `_target_` in configs read from files
    (a checkpoint's, a run's config.yaml), beyond seedbed's own, torch.nn, torch.optim and
    torchvision's: read from this command's config, never from the file."""


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


def run_name() -> str:
    """`<YYYY-MM-DD_HH-MM-SS>_<6 hex>`: sortable by time, unique even within one second."""
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{secrets.token_hex(3)}"


def resumed_run_dir(resume_path: str | None, new_run_dir: str) -> str:
    """Hydra's run dir: the resumed run's own directory, else a new one."""
    from seedbed.runs.resume import run_dir_of

    return str(run_dir_of(resume_path)) if resume_path else new_run_dir


def hydra_output_subdir(resume_path: str | None) -> str:
    """Where Hydra keeps its record: a resume adds its own beside the original `.hydra/`."""
    return f".hydra/resume_{run_name()}" if resume_path else ".hydra"


def optuna_direction(monitor: str, mode: str | None) -> str:
    """`minimize` or `maximize`: what an Optuna search does with the monitored metric."""
    if mode is None:
        mode = "max" if monitor.endswith("/acc") else "min"
    return "maximize" if mode == "max" else "minimize"


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


DEVICES = ("auto", "cpu", "cuda")


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"optim": {"lr": 0.1}}` -> `{"optim.lr": 0.1}`; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def _check_seed(key: str, value: Any) -> None:
    _check(0 <= value <= SEED_MAX, key, value, f"an int in [0, {SEED_MAX}] (2**32-1)")


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    _check(value in choices, key, value, f"one of {', '.join(choices)}")


def _validate_sched(sched: DictConfig) -> None:
    target = sched.get("_target_")
    if target == PlateauSchedConfig._target_:
        _check(sched.mode in (None, "min", "max"), "sched.mode", sched.mode, "min, max or null")
        _check(0 < sched.factor < 1, "sched.factor", sched.factor, "a number in (0, 1)")
        _check(sched.patience >= 0, "sched.patience", sched.patience, "an int >= 0")
        _check_choice("sched.threshold_mode", sched.threshold_mode, ("rel", "abs"))
        _check(sched.threshold >= 0, "sched.threshold", sched.threshold, "a number >= 0")
        _check(sched.cooldown >= 0, "sched.cooldown", sched.cooldown, "an int >= 0")
        _check(sched.min_lr >= 0, "sched.min_lr", sched.min_lr, "a number >= 0")
    elif target == OneCycleSchedConfig._target_:
        _check(0 < sched.pct_start < 1, "sched.pct_start", sched.pct_start, "a number in (0, 1)")
        _check_choice("sched.anneal_strategy", sched.anneal_strategy, ("cos", "linear"))
        max_lr = sched.max_lr
        _check(max_lr is None or max_lr > 0, "sched.max_lr", max_lr, "a number > 0 or null")
        for key in ("div_factor", "final_div_factor"):
            _check(sched[key] > 0, f"sched.{key}", sched[key], "a number > 0")
    elif target == WarmupCosineSchedConfig._target_:
        warmup = sched.warmup_steps
        _check(warmup is None or warmup >= 0, "sched.warmup_steps", warmup, "an int >= 0 or null")
        fraction = sched.warmup_fraction
        _check(0 <= fraction < 1, "sched.warmup_fraction", fraction, "a number in [0, 1)")
        total = sched.total_steps
        _check(
            warmup is None or total is None or warmup <= total,
            "sched.warmup_steps",
            warmup,
            f"an int <= sched.total_steps ({total}): the warm-up is part of the schedule",
        )
    total = sched.get("total_steps")
    _check(total is None or total > 0, "sched.total_steps", total, "an int > 0 or null")


def validate(cfg: DictConfig) -> None:
    """Check every value types cannot; raise ConfigError for the first one that is wrong."""
    known = {f.name for f in fields(TrainConfig)}
    for key in cfg:
        _check(key in known, str(key), cfg[key], f"a key of the schema: {', '.join(sorted(known))}")
    plain = OmegaConf.to_container(cfg, resolve=True)
    check_group_keys(plain, TrainConfig, GROUP_SCHEMAS)  # keys added with + or ++ included
    check_finite(plain)
    _check_seed("seed", cfg.seed)
    for stream, value in cfg.seeds.items():
        if value is not None:
            _check_seed(f"seeds.{stream}", value)

    _check_choice("init.scheme", cfg.init.scheme, SCHEMES)
    _check_choice("init.mode", cfg.init.mode, FAN_MODES)
    _check_choice("determinism.mode", cfg.determinism.mode, DETERMINISM_MODES)
    _check_choice("trainer.device", cfg.trainer.device, DEVICES)

    lr = cfg.optim.get("lr")
    _check(lr is None or lr > 0, "optim.lr", lr, "a number > 0")
    _check(cfg.loader.batch_size > 0, "loader.batch_size", cfg.loader.batch_size, "an int > 0")
    workers = cfg.loader.num_workers
    _check(workers >= 0, "loader.num_workers", workers, "an int >= 0")
    _check(
        not (cfg.loader.on_device and workers > 0),
        "loader.on_device",
        True,
        "false when loader.num_workers > 0 (data on the device is indexed in this process)",
    )
    if workers == 0:
        _check(
            not cfg.loader.persistent_workers,
            "loader.persistent_workers",
            True,
            "false when loader.num_workers=0",
        )
        _check(
            cfg.loader.prefetch_factor is None,
            "loader.prefetch_factor",
            cfg.loader.prefetch_factor,
            "null when loader.num_workers=0",
        )
    elif cfg.loader.prefetch_factor is not None:
        _check(
            cfg.loader.prefetch_factor > 0,
            "loader.prefetch_factor",
            cfg.loader.prefetch_factor,
            "an int > 0 or null",
        )

    _check(cfg.trainer.epochs >= 0, "trainer.epochs", cfg.trainer.epochs, "an int >= 0")
    _check(cfg.trainer.log_every > 0, "trainer.log_every", cfg.trainer.log_every, "an int > 0")
    clip = cfg.trainer.grad_clip
    _check(clip is None or clip > 0, "trainer.grad_clip", clip, "a number > 0 or null")
    limit = cfg.trainer.limit_train_batches
    _check(limit is None or limit > 0, "trainer.limit_train_batches", limit, "an int > 0 or null")
    perturb = cfg.trainer.perturb_step
    _check(perturb is None or perturb > 0, "trainer.perturb_step", perturb, "an int > 0 or null")
    threads, cpus = cfg.trainer.threads, os.cpu_count() or 1
    _check(
        threads is None or 0 < threads <= cpus,
        "trainer.threads",
        threads,
        f"an int in [1, {cpus}] (this machine's logical CPUs) or null (a fair share of them)",
    )
    _check_choice("trainer.precision", cfg.trainer.precision, PRECISIONS)
    accumulate = cfg.trainer.accumulate_grad_batches
    _check(accumulate >= 1, "trainer.accumulate_grad_batches", accumulate, "an int >= 1")
    _check_choice("trainer.compile_mode", cfg.trainer.compile_mode, COMPILE_MODES)
    every = cfg.trainer.val_every_steps
    _check(every is None or every > 0, "trainer.val_every_steps", every, "an int > 0 or null")
    _validate_sched(cfg.sched)

    ckpt = cfg.checkpoint
    every = ckpt.every_steps
    _check(every is None or every > 0, "checkpoint.every_steps", every, "an int > 0 or null")
    keep = ckpt.keep_last
    _check(keep is None or keep > 0, "checkpoint.keep_last", keep, "an int > 0 or null")
    stopping = cfg.trainer.early_stopping
    patience = stopping.patience
    _check(
        patience is None or patience > 0,
        "trainer.early_stopping.patience",
        patience,
        "an int > 0 or null (off)",
    )
    delta = stopping.min_delta
    _check(delta >= 0, "trainer.early_stopping.min_delta", delta, "a number >= 0")

    val = cfg.data.get("val_fraction", 0.0)
    _check(0.0 < val < 1.0, "data.val_fraction", val, "a number in (0, 1)")
    test = cfg.data.get("test_fraction", 0.0)
    _check(0.0 <= test < 1.0, "data.test_fraction", test, "a number in [0, 1)")
    _check(
        val + test < 1.0,
        "data.test_fraction",
        test,
        f"a number below 1 - data.val_fraction ({1 - val:g}): training needs samples",
    )
    normalize = cfg.data.get("normalize")
    if normalize is not None:
        _check_choice("data.normalize", normalize, NORMALIZE_MODES)
    size = cfg.data.get("image_size")
    _check(size is None or size > 0, "data.image_size", size, "an int > 0")
    augment = cfg.data.get("augment")
    if augment is not None:
        _check(augment.noise_std >= 0, "data.augment.noise_std", augment.noise_std, "a number >= 0")
        _check(0 <= augment.drop_prob < 1, "data.augment.drop_prob", augment.drop_prob, "in [0, 1)")
    dropout = cfg.model.get("dropout", 0.0)
    _check(0 <= dropout < 1, "model.dropout", dropout, "a number in [0, 1)")
    check_components(plain)
    check_component_targets(plain, GROUP_SCHEMAS, _options())


def _options() -> dict[str, list[str]]:
    """The options of each group with a schema: what `model=<option>` can name."""
    return {
        group: sorted({*schemas, *(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))})
        for group, schemas in GROUP_SCHEMAS.items()
    }
