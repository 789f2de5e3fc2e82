"""The promise with real transforms: torchvision v2 on an image folder, and a user's own
Dataset drawing from `random`, `np.random` and torch, give the same bits for any
`loader.num_workers`, across runs and after a SIGKILL and resume, and a new sample each epoch."""

from __future__ import annotations

import multiprocessing
import signal
from pathlib import Path

import pytest
import torch
from data_files import make_image_folder
from helpers import compose_config, read_run, run_cli, run_train, train_in_process
from hydra.utils import instantiate

from seedbed.core.interrupts import TEST_SIGNAL_ENV
from seedbed.data.arrays import split_indices

try:  # torchvision is an optional extra; an unusable install skips these tests
    from seedbed.data.vision import torchvision

    torchvision()
except Exception as error:  # noqa: BLE001
    pytest.skip(f"torchvision unusable here: {error}", allow_module_level=True)

V2 = "torchvision.transforms.v2"
# RandomResizedCrop + RandomHorizontalFlip + ColorJitter: they draw from torch's global RNG.
TRANSFORMS = (
    f"data.train_transform=[{{_target_:{V2}.ToImage}},"
    f"{{_target_:{V2}.RandomResizedCrop,size:12}},{{_target_:{V2}.RandomHorizontalFlip}},"
    f"{{_target_:{V2}.ColorJitter,brightness:0.4,hue:0.1}},"
    "{_target_:seedbed.data.vision.to_float}]"
)
# 24 images, 19 for training in batches of 4: 5 steps an epoch, 10 in all.
RUN = [
    "model=cnn",
    "data.image_size=12",
    "trainer.epochs=2",
    "loader.batch_size=4",
    "trainer.log_every=2",
    "checkpoint.every_steps=3",
    "checkpoint.keep_last=null",
    TRANSFORMS,
]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "images")


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory) -> dict:
    """The run every other one must equal: num_workers=0."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    return train_in_process(run_dir, "data=image_folder", f"data.root={images}", *RUN)


@pytest.mark.slow
def test_num_workers_and_a_second_run_do_not_change_the_weights(images, reference, tmp_path):
    again = train_in_process(tmp_path / "again", "data=image_folder", f"data.root={images}", *RUN)
    workers = train_in_process(
        tmp_path / "workers",
        "data=image_folder",
        f"data.root={images}",
        *RUN,
        "loader.num_workers=2",
    )
    assert again["weights_sha256"] == reference["weights_sha256"]
    assert workers["weights_sha256"] == reference["weights_sha256"]
    assert workers["loss_series_sha256"] == reference["loss_series_sha256"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(images, reference, tmp_path):
    run_dir = tmp_path / "run"
    overrides = ["data=image_folder", f"data.root={images}", *RUN, "loader.num_workers=2"]
    log = tmp_path / "killed.log"  # step 4: mid-epoch, after a checkpoint
    env = {TEST_SIGNAL_ENV: "SIGKILL:4"}
    killed = run_train(run_dir, *overrides, check=False, env=env, log=log)
    assert killed.returncode == -signal.SIGKILL
    run_train(run_dir, f"resume={run_dir}")
    resumed = read_run(run_dir)
    assert resumed["resumes"][0]["step"] == 3
    assert resumed["weights_sha256"] == reference["weights_sha256"]
    assert resumed["loss_series_sha256"] == reference["loss_series_sha256"]


def test_each_epoch_augments_a_sample_anew_and_repeats_it_exactly(images):
    cfg = compose_config("data=image_folder", f"data.root={images}", *RUN)
    train = instantiate(cfg.data).train.with_augment_seed(7)
    first, again, next_epoch = train[(0, 3)][0], train[(0, 3)][0], train[(1, 3)][0]
    assert torch.equal(first, again)
    assert not torch.equal(first, next_epoch)
    other = instantiate(cfg.data).train.with_augment_seed(8)
    assert not torch.equal(first, other[(0, 3)][0])


def test_loading_a_sample_leaves_the_global_rngs_as_they_were(images):
    """In the main process the global RNGs also drive dropout: a sample must not move them."""
    cfg = compose_config("data=image_folder", f"data.root={images}", *RUN)
    train = instantiate(cfg.data).train.with_augment_seed(7)
    torch.manual_seed(5)
    train[(0, 1)]
    after_sample = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), after_sample)


@pytest.mark.slow
def test_own_dataset_drawing_from_random_numpy_and_torch_is_the_same_for_any_workers(tmp_path):
    small = ["data=my_dataset", "data.n_samples=300", "trainer.epochs=2", "loader.batch_size=32"]
    direct = train_in_process(tmp_path / "w0", *small)
    workers = train_in_process(tmp_path / "w2", *small, "loader.num_workers=2")
    assert direct["weights_sha256"] == workers["weights_sha256"]
    assert direct["loss_series_sha256"] == workers["loss_series_sha256"]


def test_own_dataset_samples_differ_between_epochs():
    cfg = compose_config("data=my_dataset", "data.n_samples=100")
    train = instantiate(cfg.data).train.with_augment_seed(1)
    assert torch.equal(train[(0, 5)][0], train[(0, 5)][0])
    assert not torch.equal(train[(0, 5)][0], train[(1, 5)][0])


# -- bad input: one line, exit 2, no traceback, no hang ---------------------------------------


def test_a_corrupt_image_is_named_in_one_line_even_from_a_worker(tmp_path):
    root = make_image_folder(tmp_path / "images")
    files = sorted(root.glob("*/*.png"))  # ImageFolder's order: by class, then by name
    train, _, _ = split_indices(len(files), 0.2, seed=0)
    corrupt = files[int(train[-1])]  # loaded in a worker, not in the first-sample check
    corrupt.write_bytes(b"not a png at all")
    code, _, err = run_cli(
        tmp_path / "run", "data=image_folder", f"data.root={root}", *RUN, "loader.num_workers=2"
    )
    assert code == 2
    assert str(corrupt) in err.splitlines()[-1] and "Traceback" not in err
    assert multiprocessing.active_children() == []  # the workers are stopped, not left waiting


@pytest.mark.parametrize(
    "override,expected",
    [
        (
            f"data.train_transform=[{{_target_:{V2}.NoSuchTransform}}]",
            "data.train_transform[0]='torchvision.transforms.v2.NoSuchTransform' is not allowed",
        ),
        (
            f"data.train_transform=[{{_target_:{V2}.ToImage}},{{_target_:{V2}.Normalize,"
            "mean:[0.5],std:[0.5]}]",
            "data.train_transform[1] (Normalize) fails on the first",
        ),
    ],
    ids=["unknown-target", "fails-on-first-sample"],
)
def test_a_bad_transform_is_named(images, tmp_path, override, expected):
    code, _, err = run_cli(
        tmp_path / "run", "data=image_folder", f"data.root={images}", "model=cnn", override
    )
    assert code == 2 and expected in err.splitlines()[-1], err


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_missing_or_empty_root_is_one_line(tmp_path, make):
    root = tmp_path / "images"
    if make == "empty":
        root.mkdir()
    code, _, err = run_cli(tmp_path / "run", "data=image_folder", f"data.root={root}")
    assert code == 2
    assert err.splitlines()[-1].startswith(f"error: data.root='{root}' is not allowed")
