"""Every packaged model, and a user's own with BatchNorm and integer buffers, trains to
`completed` with a fingerprint of every parameter and buffer, the same twice."""

from __future__ import annotations

import hashlib
import logging

import pytest
import torch
from helpers import train_in_process

from seedbed import evaluate
from seedbed.core.checkpoint import load_checkpoint
from seedbed.core.errors import SeedbedError
from seedbed.core.record import weights_sha256
from seedbed.tools.compare import weights_difference

# One epoch of three batches (67 training samples: no batch of one for BatchNorm).
SHORT = ["data.n_samples=96", "trainer.epochs=1", "loader.batch_size=32", "trainer.log_every=1"]
MODELS = {
    "mlp": ["model=mlp"],
    "cnn": ["model=cnn", "data=synthetic_images", "data.size=8"],
    "resnet18": ["model=resnet18", "data=synthetic_images", "data.size=8"],
    "user BatchNorm": ["model._target_=user_models.BatchNormNet", "model.hidden=[16]"],
}


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_trains_to_completed_with_the_same_hash_twice(name, tmp_path):
    if name == "resnet18":
        pytest.importorskip("torchvision")
    records = [train_in_process(tmp_path / run, *SHORT, *MODELS[name]) for run in ("a", "b")]
    for record in records:
        assert record["status"] == "completed", record["error"]
        assert len(record["weights_sha256"]) == 64
    assert records[0]["weights_sha256"] == records[1]["weights_sha256"]
    assert records[0]["loss_series_sha256"] == records[1]["loss_series_sha256"]
    # The fingerprint is of every entry of the saved weights, buffers included.
    saved = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    assert weights_sha256(saved) == records[0]["weights_sha256"]
    other = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    assert weights_difference(saved, other) == []  # what compare and verify report
    if name in ("resnet18", "user BatchNorm"):  # BatchNorm's num_batches_tracked
        assert any(t.dim() == 0 and not t.is_floating_point() for t in saved.values())
    if name == "user BatchNorm":
        assert int(saved["batches_seen"]) == 3 and saved["last_counts"].dtype == torch.int32


DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.complex64,
    torch.int8,
    torch.uint8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
    torch.float8_e4m3fn,
]


@pytest.mark.parametrize("shape", [(), (0,), (1,), (3, 2), (2, 0, 4)], ids=str)
def test_weights_sha256_takes_every_dtype_and_shape(shape):
    hashes = set()
    for dtype in DTYPES:
        tensor = torch.ones(shape).to(dtype)
        hashes.add(weights_sha256({"t": tensor}))
        hashes.add(weights_sha256({"t": tensor.clone().zero_() if tensor.numel() else tensor}))
    # dtype and shape are hashed: no two dtypes collide, even with no elements
    assert len(hashes) == len(DTYPES) * (2 if torch.Size(shape).numel() else 1)


def test_weights_sha256_is_unchanged_for_tensors_of_one_or_more_dims():
    # Run records made before 0-dim buffers were hashed keep their fingerprints.
    tensor = torch.arange(6, dtype=torch.float32).reshape(3, 2)
    digest = hashlib.sha256()
    digest.update(b"w|torch.float32|(3, 2)|")
    digest.update(tensor.view(torch.uint8).numpy().tobytes())
    assert weights_sha256({"w": tensor}) == digest.hexdigest()
    assert weights_sha256({"w": tensor.t()}) == weights_sha256({"w": tensor.t().contiguous()})


def test_a_run_of_a_users_own_model_says_what_reading_it_back_needs(tmp_path, caplog):
    run_dir = tmp_path / "run"
    user = ["model._target_=user_models.BatchNormNet", "model.hidden=[16]"]
    with caplog.at_level(logging.WARNING, logger="seedbed"):
        train_in_process(run_dir, *SHORT, *user)
    [warning] = [r.getMessage() for r in caplog.records if "allow_targets" in r.getMessage()]
    assert "model._target_='user_models.BatchNormNet'" in warning
    assert "allow_targets=[user_models]" in warning and "--allow-targets user_models" in warning

    checkpoint = run_dir / "checkpoints" / "last.pt"
    with pytest.raises(SeedbedError, match="model._target_='user_models.BatchNormNet' is refused"):
        evaluate.evaluate_checkpoint(checkpoint)
    options = evaluate.parse_args([f"ckpt={checkpoint}", "allow_targets=[user_models]"])
    allowed = evaluate.prefixes(options["allow_targets"])
    result = evaluate.evaluate_checkpoint(checkpoint, allow_targets=allowed)
    assert result["weights_sha256"] == weights_sha256(load_checkpoint(checkpoint)["model"])

    with pytest.raises(SeedbedError, match="is refused"):
        train_in_process(run_dir, f"resume={run_dir}", "trainer.epochs=2")
    resumed = [f"resume={run_dir}", "trainer.epochs=2", "allow_targets=[user_models]"]
    assert train_in_process(run_dir, *resumed)["status"] == "completed"
