"""One function sets every determinism flag and reports what it applied."""

from __future__ import annotations

import os

import pytest
import torch

from seedbed.core.determinism import set_determinism


@pytest.fixture(autouse=True)
def restore_flags(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    yield
    set_determinism("strict")


def test_strict_sets_every_flag_and_reports_them():
    applied = set_determinism("strict")
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert applied == {
        **applied,
        "mode": "strict",
        "use_deterministic_algorithms": True,
        "cudnn_benchmark": False,
        "matmul_allow_tf32": False,
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "fill_uninitialized_memory": True,
    }


def test_strict_keeps_a_cublas_setting_the_user_chose(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    assert set_determinism("strict")["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_warn_is_strict_with_warnings():
    applied = set_determinism("warn")
    assert applied["use_deterministic_algorithms"] and applied["warn_only"]


def test_off_forces_nothing_and_turns_on_cudnn_benchmark():
    applied = set_determinism("off")
    assert applied["use_deterministic_algorithms"] is False
    assert applied["cudnn_benchmark"] is True and applied["cudnn_deterministic"] is False
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_missing_pythonhashseed_is_noted_in_strict_mode(monkeypatch):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    assert any("PYTHONHASHSEED" in note for note in set_determinism("strict")["notes"])
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    assert set_determinism("strict")["notes"] == []
