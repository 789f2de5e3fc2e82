"""Data sources: MNIST and CIFAR-10 files in their real formats through torchvision's own
loaders, .npz normalisation from the training split only, and the data fingerprint that
lets `compare` name a changed file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from data_files import make_cifar10, make_mnist
from helpers import (
    EVAL,
    MACHINERY,
    compose_config,
    read_run,
    run_cli,
    run_python,
    run_train,
    train_in_process,
)
from hydra.utils import instantiate

from seedbed.core.errors import ConfigError
from seedbed.data.arrays import split_indices
from seedbed.data.npz import npz_dataset
from seedbed.tools.compare import compare_runs


def _vision():
    try:
        from seedbed.data.vision import torchvision

        return torchvision()
    except Exception as error:  # noqa: BLE001
        pytest.skip(f"torchvision unusable here: {error}")


def test_mnist_files_load_through_torchvision_and_train(tmp_path):
    _vision()
    root = make_mnist(tmp_path / "data")
    data = instantiate(
        compose_config("data=mnist", f"data.root={root}", "data.val_fraction=0.25").data
    )
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 10)
    assert data.input_shape == (1, 28, 28)
    x, y = data.val[(0, 0)]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    run = train_in_process(
        tmp_path / "run",
        "data=mnist",
        f"data.root={root}",
        "model=cnn",
        "trainer.epochs=1",
        "loader.batch_size=8",
    )
    assert run["status"] == "completed" and run["data"]["source"] == "mnist"
    assert run["data"]["fingerprint_of"]["files"] == 4


def test_cifar10_batches_load_through_torchvision(tmp_path, monkeypatch):
    tv = _vision()
    # The real loader checks each file's MD5 against the published archive; generated files
    # cannot match it, so that check (only) is passed over.
    monkeypatch.setattr(tv.datasets.cifar, "check_integrity", lambda path, md5=None: True)
    root = make_cifar10(tmp_path / "data")
    data = instantiate(compose_config("data=cifar10", f"data.root={root}").data)
    assert (len(data.train) + len(data.val), len(data.test)) == (30, 6)
    assert data.input_shape == (3, 32, 32)
    train = data.train.with_augment_seed(3)
    assert not torch.equal(train[(0, 0)][0], train[(1, 0)][0])  # crop and flip by default


@pytest.mark.parametrize("download", ["false", "true"])
def test_absent_files_say_where_they_are_expected(tmp_path, download):
    _vision()
    (tmp_path / "data").mkdir()
    code, _, err = run_cli(
        tmp_path / "run",
        "data=mnist",
        f"data.root={tmp_path / 'data'}",
        f"data.download={download}",
    )
    assert code == 2
    line = err.splitlines()[-1]
    assert str(tmp_path / "data" / "MNIST" / "raw") in line and "Traceback" not in err


def test_resnet18_fits_the_datas_channels_and_classes():
    _vision()
    from seedbed.models import ResNet18

    model = ResNet18((1, 28, 28), 7)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 7)
    with pytest.raises(ConfigError, match="ResNet18.*\\(16,\\)"):
        ResNet18((16,), 3)


def test_normalisation_statistics_come_from_the_training_split_only(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    x, x_val = rng.normal(3.0, 2.0, (400, 5)), rng.normal(1000.0, 50.0, (100, 5))
    np.savez(path, x=x, y=rng.integers(0, 2, 400), x_val=x_val, y_val=rng.integers(0, 2, 100))
    data = npz_dataset(str(path), 0.2, seed=0)
    expected_mean = torch.as_tensor(x, dtype=torch.float64).mean(0).float()
    assert torch.allclose(data.normalization.mean, expected_mean)
    assert data.train.x.mean(0).abs().max() < 1e-4  # training split: mean 0, std 1
    assert data.val.x.mean() > 100  # val is scaled with train's statistics, not its own


def test_a_drawn_validation_split_does_not_inform_the_statistics(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, (200, 3))
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=rng.integers(0, 2, 200))
    train_idx, val_idx, _ = split_indices(200, 0.25, seed=4)
    x[val_idx.numpy()] += 500.0  # only the validation rows move
    np.savez(path, x=x, y=rng.integers(0, 2, 200))
    data = npz_dataset(str(path), 0.25, seed=4)
    expected = torch.as_tensor(x[train_idx.numpy()], dtype=torch.float64).mean(0).float()
    assert torch.allclose(data.normalization.mean, expected, atol=1e-5)


def test_uint8_inputs_are_scaled_to_unit_range(tmp_path):
    path = tmp_path / "u8.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (50, 4, 4), dtype=np.uint8), y=rng.integers(0, 2, 50))
    data = npz_dataset(str(path), 0.2, seed=0, normalize="none")
    assert float(data.train.x.min()) >= 0.0 and float(data.train.x.max()) <= 1.0


def test_compare_names_the_data_change_after_one_value_is_edited(tmp_path):
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(120, 6)).astype(np.float32), rng.integers(0, 3, 120)
    np.savez(path, x=x, y=y)
    small = ["data=npz", f"data.path={path}", "trainer.epochs=1", "loader.batch_size=16"]
    train_in_process(tmp_path / "a", *small)
    x[7, 2] += 0.5
    np.savez(path, x=x, y=y)
    train_in_process(tmp_path / "b", *small)
    report = compare_runs(tmp_path / "a", tmp_path / "b")
    assert not report["identical"]
    assert report["config"] == {}
    assert report["likely_causes"][0].startswith("data changed")
    assert "data changed" in report["verdict"]
    assert read_run(tmp_path / "a")["data"]["paths"]["path"] == str(path.resolve())


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.cuda,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
            ],
        ),
    ],
)
def test_data_kept_on_the_device_gives_the_same_weights(tmp_path, device):
    small = [
        "data=synthetic",
        "data.n_samples=256",
        "data.augment=null",
        "trainer.epochs=1",
        f"trainer.device={device}",
    ]
    host = train_in_process(tmp_path / "host", *small)
    on_device = train_in_process(tmp_path / "device", *small, "loader.on_device=true")
    assert on_device["weights_sha256"] == host["weights_sha256"]


def test_data_on_the_device_with_augmentation_is_refused_in_one_line(tmp_path):
    # MACHINERY's data, synthetic, is augmented by default.
    code, _, err = run_cli(
        tmp_path / "run", *MACHINERY, "loader.on_device=true", "trainer.epochs=1"
    )
    assert code == 2
    assert err.splitlines()[-1].startswith("error: loader.on_device=True is not allowed")


def test_eval_finds_a_relative_data_path_from_any_directory(tmp_path):
    """run.json records the absolute path: eval.py started elsewhere still finds the file."""
    work = tmp_path / "project"
    work.mkdir()
    rng = np.random.default_rng(0)
    np.savez(work / "d.npz", x=rng.normal(size=(80, 4)), y=rng.integers(0, 2, 80))
    run_train(work / "run", "data=npz", "data.path=d.npz", "trainer.epochs=1")  # cwd: work
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    checkpoint = work / "run" / "checkpoints" / "last.pt"
    result = run_python(EVAL, f"ckpt={checkpoint}", cwd=elsewhere, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((work / "run" / "eval_val.json").read_text())["samples"] == 16
