"""On a CUDA device, strict determinism gives bit-identical runs (skipped without one)."""

from __future__ import annotations

import pytest
import torch
from helpers import compose_config, read_run

from seedbed.runs.session import run_training as train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CNN = ["experiment=cnn_images", "data.n_samples=1024", "trainer.epochs=2", "trainer.device=cuda"]


def test_cnn_on_cuda_is_bit_identical_twice(tmp_path):
    for name in ("a", "b"):
        train(compose_config(*CNN, "seed=3"), tmp_path / name)
    a, b = read_run(tmp_path / "a"), read_run(tmp_path / "b")
    assert a["device"].startswith("cuda")
    assert a["weights_sha256"] == b["weights_sha256"]
    assert a["loss_series_sha256"] == b["loss_series_sha256"]


def test_cuda_seed_changes_the_result(tmp_path):
    train(compose_config(*CNN, "seed=3"), tmp_path / "a")
    train(compose_config(*CNN, "seed=4"), tmp_path / "b")
    assert read_run(tmp_path / "a")["weights_sha256"] != read_run(tmp_path / "b")["weights_sha256"]
