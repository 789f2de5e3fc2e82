"""Every option of every group composes and builds; every bad input fails early, in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_files import make_cifar10, make_image_folder, make_mnist
from helpers import (
    MACHINERY,
    PROJECT_CONFIGS,
    compose_config,
    read_run,
    run_cli,
    run_train,
    train_in_process,
)
from hydra.utils import instantiate
from omegaconf import OmegaConf

from seedbed.core.errors import ConfigError
from seedbed.core.paths import LIBRARY_CONFIGS
from seedbed.init import init_weights
from seedbed.optim import build_optimizer, build_scheduler
from seedbed.runs.cli import with_debug_from_env
from seedbed.runs.hydra import validate
from seedbed.task import build_task

GROUPS = [
    "task",
    "data",
    "model",
    "init",
    "optim",
    "sched",
    "loader",
    "trainer",
    "determinism",
    "checkpoint",
]


def options(group: str) -> list[str]:
    """The group's options: seedbed's and the example project's own."""
    found = {p.stem for d in (LIBRARY_CONFIGS, PROJECT_CONFIGS) for p in (d / group).glob("*.yaml")}
    return sorted(found)


@pytest.fixture
def npz_file(tmp_path):
    path = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.standard_normal((40, 5)).astype(np.float32), y=rng.integers(0, 3, 40))
    return path


def vision_usable() -> bool:
    try:
        from seedbed.data.vision import torchvision

        torchvision()
        return True
    except Exception:  # noqa: BLE001
        return False


def _cifar10(tmp_path, monkeypatch) -> list[str]:
    import torchvision

    # Generated files cannot match the published archive's MD5s; only that check is skipped.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *_: True)
    return [f"data.root={make_cifar10(tmp_path / 'data')}"]


# Each torchvision data option with small files in its real format.
VISION = {
    ("data", "mnist"): lambda tmp, _: [f"data.root={make_mnist(tmp / 'data')}"],
    ("data", "cifar10"): _cifar10,
    ("data", "image_folder"): lambda tmp, _: [
        f"data.root={make_image_folder(tmp / 'images')}",
        "data.image_size=16",
    ],
}


def build_everything(cfg) -> None:
    validate(cfg)
    task = build_task(cfg.task)
    data = task.prepare(instantiate(cfg.data))
    model = instantiate(cfg.model, input_shape=data.input_shape, num_outputs=data.num_outputs)
    init_weights(model, cfg.init.scheme, torch.Generator().manual_seed(0), mode=cfg.init.mode)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    build_scheduler(optimizer, cfg.sched, total_steps=10, steps_per_epoch=2, monitor=task.monitor)
    x = torch.stack([data.train.unaugmented()[(0, i)][0] for i in range(2)])
    assert model(x).shape == (2, data.num_outputs)


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in options(g)], ids=lambda v: str(v)
)
def test_every_option_composes_and_builds(group, option, npz_file, tmp_path, monkeypatch):
    extra = ["task=classification", "data=synthetic", "data.n_samples=64"]
    if group == "model" and option == "cnn" or group == "data" and option == "synthetic_images":
        extra = ["data=synthetic_images", "model=cnn", "data.n_samples=64"]
    if group == "data" and option == "npz":
        extra = ["task=classification", f"data.path={npz_file}"]
    if (group, option) in VISION or group == "model" and option == "resnet18":
        if not vision_usable():
            pytest.skip("the vision extra (torchvision) is not usable here")
        if group == "model":
            extra = ["task=classification", "data=synthetic_images", "data.n_samples=64"]
        else:
            extra = VISION[(group, option)](tmp_path, monkeypatch)
    if (group, option) == ("task", "multilabel"):  # the example project's own task
        path = tmp_path / "tags.npz"
        rng = np.random.default_rng(0)
        np.savez(
            path, x=rng.standard_normal((40, 5)).astype(np.float32), y=rng.random((40, 3)) > 0.5
        )
        extra = ["data=npz", f"data.path={path}", "data.normalize=none"]
    if (group, option) in (("task", "regression"), ("data", "synthetic_regression")):
        extra = ["task=regression", "data=synthetic_regression", "data.n_samples=64"]
    cfg = compose_config(f"{group}={option}", *extra)
    build_everything(cfg)


@pytest.mark.parametrize("group", ["experiment", "debug"])
def test_every_experiment_and_debug_file_composes_and_builds(group):
    for option in options(group):
        cfg = compose_config(f"{group}={option}")
        build_everything(cfg)


def test_experiment_holds_only_what_differs():
    cfg = compose_config("experiment=cnn_images")
    assert cfg.model._target_ == "seedbed.models.CNN"
    assert cfg.data._target_ == "seedbed.data.arrays.synthetic_images"
    assert cfg.seed == compose_config().seed


def write_npz(path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


BAD_INPUTS = [
    (["foo=1"], "foo"),
    (["+foo=1"], "foo=1 is not allowed"),
    (["seed=abc"], "seed: Value 'abc'"),
    (["seed=-1"], "seed=-1 is not allowed: an int in [0, 4294967295]"),
    ([f"seed={2**32}"], "seed=4294967296 is not allowed"),
    (["seeds.init=-3"], "seeds.init=-3 is not allowed"),
    (["loader.batch_size=0"], "loader.batch_size=0 is not allowed: an int > 0"),
    (["optim.lr=0"], "optim.lr=0.0 is not allowed: a number > 0"),
    (["optim=adamw", "optim.lr=-1e-3"], "optim.lr=-0.001 is not allowed"),
    (["trainer.epochs=-1"], "trainer.epochs=-1 is not allowed: an int >= 0"),
    (["loader.num_workers=-1"], "loader.num_workers=-1 is not allowed: an int >= 0"),
    (["init.scheme=he"], "init.scheme='he' is not allowed: one of kaiming_uniform"),
    (["init=he"], "Could not find 'init/he'; Available options in 'init': kaiming_normal"),
    (["determinism.mode=exact"], "determinism.mode='exact' is not allowed: one of strict, warn"),
    (["determinism=exact"], "Could not find 'determinism/exact'"),
    (["trainer.device=tpu"], "trainer.device='tpu' is not allowed: one of auto, cpu, cuda"),
    (["data=npz"], "data.path: Missing mandatory value"),
    (
        ["task=classification", "task.monitor=val/rmse"],
        "task.monitor='val/rmse' is not allowed: a metric this task reports: val/loss, val/acc",
    ),
    (["task.mode=lowest"], "task.mode='lowest' is not allowed: min, max"),
    (
        ["task=classification", "task.label_smoothing=1.5"],
        "task.label_smoothing=1.5 is not allowed: a number in [0, 1)",
    ),
    (
        ["task.loss._target_=torch.nn.NoSuchLoss"],
        "task.loss._target_='torch.nn.NoSuchLoss' is not allowed",
    ),
    (["trainer.early_stopping.patience=0"], "trainer.early_stopping.patience=0 is not allowed"),
    (
        ["data.test_fraction=0.8"],
        "data.test_fraction=0.8 is not allowed: a number below 1 - data.val_fraction",
    ),
]


@pytest.mark.parametrize("overrides,message", BAD_INPUTS, ids=lambda v: str(v))
def test_bad_input_fails_with_one_line_naming_the_key(tmp_path, overrides, message):
    run_dir = tmp_path / "run"
    code, out, err = run_cli(run_dir, *overrides)
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ")
    assert message in last
    record = read_run(run_dir)
    assert record["status"] == "failed"
    assert message in record["error"]
    assert "Traceback" in (run_dir / "train.log").read_text()
    assert "Traceback" not in out + err
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.slow
def test_bad_input_exits_the_process_with_status_2(tmp_path):
    result = run_train(tmp_path / "run", "seed=abc", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: seed: Value 'abc'")
    assert read_run(tmp_path / "run")["status"] == "failed"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused(tmp_path):
    result = run_train(tmp_path / "run", "trainer.device=cuda", check=False)
    assert result.returncode == 2
    assert (
        "trainer.device='cuda' is not allowed: auto or cpu: CUDA is not available" in result.stderr
    )


def bad_npz_cases(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 3))
    unreadable = tmp_path / "unreadable.npz"
    unreadable.write_bytes(b"this is not a zip file")
    return [
        (str(tmp_path / "missing.npz"), "an existing .npz file"),
        (str(unreadable), "a readable .npz file"),
        (write_npz(tmp_path / "no_y.npz", x=x), "missing y"),
        (write_npz(tmp_path / "no_x.npz", y=np.zeros(10, dtype=int)), "missing x"),
        (
            write_npz(tmp_path / "mismatch.npz", x=x, y=np.zeros(9, dtype=int)),
            "x and y have the same length (x: 10, y: 9)",
        ),
    ]


def test_bad_npz_files_fail_with_the_reason(tmp_path):
    for i, (path, message) in enumerate(bad_npz_cases(tmp_path)):
        run_dir = tmp_path / f"run{i}"
        code, _, err = run_cli(run_dir, "data=npz", f"data.path={path}")
        assert code == 2, path
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"error: data.path='{path}' is not allowed")
        assert message in last
        assert read_run(run_dir)["status"] == "failed"


@pytest.mark.slow
def test_npz_data_trains(tmp_path, npz_file):
    run_train(tmp_path / "run", "data=npz", f"data.path={npz_file}", "trainer.epochs=1")
    assert read_run(tmp_path / "run")["status"] == "completed"


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    from seedbed.core.errors import SeedbedError
    from seedbed.runs.session import run_training as train

    cfg = compose_config("data.n_samples=256", "optim.lr=1e30", "trainer.log_every=2")
    with pytest.raises(SeedbedError, match=r"training loss is (nan|inf) at step \d+ \(epoch 1\)"):
        train(cfg, tmp_path / "run")
    record = read_run(tmp_path / "run")
    assert record["status"] == "failed"
    assert "lower optim.lr" in record["error"]


@pytest.mark.parametrize("override", ["sweep=seeds", "hparams_search=optuna"])
def test_sweep_groups_without_m_are_refused_in_one_line(tmp_path, override):
    code, _, err = run_cli(tmp_path / "run", override, "trainer.epochs=1")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"error: {override} is not allowed without -m")
    assert f"python train.py -m {override}" in err
    assert not (tmp_path / "run").exists()  # refused before any run started


def test_help_lists_the_groups_a_user_chooses_not_the_schemas(tmp_path):
    code, out, _ = run_cli(tmp_path / "run", "--help")
    assert code == 0
    groups_section = out.split("== Configuration groups ==")[1].split("== Config ==")[0]
    groups = {line.split(":")[0] for line in groups_section.splitlines() if ": " in line}
    assert {"data", "model", "optim", "sched", "task", "sweep", "hparams_search"} <= groups
    assert not [g for g in groups if g.startswith("schema")]
    assert not (tmp_path / "run").exists()


def test_console_names_pinned_seed_streams(tmp_path, caplog):
    caplog.set_level("INFO", logger="seedbed")
    train_in_process(tmp_path / "run", "data.n_samples=256", "trainer.epochs=1", "seeds.init=7")
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("run dir ")]
    assert "  seed 0 (pinned: seeds.init=7)  " in line


def test_a_dataset_of_your_own_is_asked_only_about_the_keys_it_declares():
    """A dataset YAML without val_fraction (it splits by itself) validates, and keys that
    mean something for the synthetic data (noise, n_classes) are not checked on another."""
    from omegaconf import open_dict

    cfg = compose_config("data=my_dataset")
    with open_dict(cfg):
        del cfg.data.val_fraction
        del cfg.data.test_fraction
        cfg.data.noise = -1.0  # this dataset's own meaning
        cfg.data.n_classes = 1
    validate(cfg)
    # The synthetic data still is: its noise is a standard deviation.
    with pytest.raises(ConfigError, match=r"data.noise=-1.0 is not allowed"):
        validate(compose_config("task=regression", "data=synthetic_regression", "data.noise=-1.0"))
    # Where a dataset declares a split, the split is checked.
    with pytest.raises(ConfigError, match=r"data.val_fraction=0.0 is not allowed"):
        validate(compose_config("data=my_dataset", "data.val_fraction=0.0"))


def test_seedbed_debug_in_the_environment_makes_a_new_run_a_debug_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SEEDBED_DEBUG", "smoke")
    assert with_debug_from_env(["seed=1"]) == ["seed=1", "debug=smoke"]
    assert with_debug_from_env(["-m", "seed=0,1"]) == ["-m", "seed=0,1", "debug=smoke"]
    # A debug= of the command wins; a resume keeps its saved config, a rerun its own.
    for kept in (["debug=smoke"], ["resume.path=outputs/train/x"], ["--config-name", "c"]):
        assert with_debug_from_env(kept) == kept
    code, _, err = run_cli(tmp_path / "run", *MACHINERY)
    assert code == 0, err
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert (saved.trainer.epochs, saved.trainer.limit_train_batches) == (1, 5)
    assert "debug=smoke" in read_run(tmp_path / "run")["command"]

    monkeypatch.delenv("SEEDBED_DEBUG")
    assert with_debug_from_env(["seed=1"]) == ["seed=1"]
