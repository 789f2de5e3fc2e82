"""torch.compile (`trainer.compile=true`): it compiles and trains, and where it cannot run the
refusal says what is missing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from helpers import SMALL, TRAIN, read_run, train_in_process
from test_resume import assert_same_run
from trainer_support import stopped_by_sigterm_at_step

from seedbed.compile import compiler_missing

MISSING = compiler_missing("cuda" if torch.cuda.is_available() else "cpu")
COMPILED = [*SMALL, "trainer.epochs=1", "trainer.compile=true", "data.augment=null"]


@pytest.mark.slow
@pytest.mark.skipif(MISSING is not None, reason=f"torch.compile cannot run here: {MISSING}")
def test_compiled_runs_train_are_identical_and_resume_exactly(tmp_path, monkeypatch):
    first = train_in_process(tmp_path / "a", *COMPILED)
    second = train_in_process(tmp_path / "b", *COMPILED)
    stopped_by_sigterm_at_step(tmp_path / "c", monkeypatch, 7, *COMPILED)
    train_in_process(tmp_path / "c", f"resume={tmp_path / 'c'}")
    assert_same_run(tmp_path / "a", tmp_path / "c")
    assert first["trainer"]["compile"] is True
    assert first["final_metrics"]["steps"] == 13
    assert first["final_metrics"]["val/loss"] < 2.0  # it learned (chance is ln 10 = 2.30)
    # Measured on the CPU (inductor's C++ kernels, dropout included): bit-identical, as the
    # README says. (Not identical to the eager run: inductor draws dropout its own way.)
    assert first["weights_sha256"] == second["weights_sha256"]
    assert first["loss_series_sha256"] == second["loss_series_sha256"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU compiler")
def test_compile_without_a_cpp_compiler_is_refused_naming_it(tmp_path):
    # inductor reads CXX when it is imported: a fresh process with none that works.
    result = subprocess.run(
        [sys.executable, TRAIN, f"hydra.run.dir={tmp_path / 'run'}", *COMPILED],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "CXX": str(tmp_path / "no-such-compiler")},
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "trainer.compile=True is not allowed: false here: no C++ compiler found for inductor "
            "(install g++ or point CXX at one)"
        )
    ), result.stderr[-2000:]
    assert read_run(tmp_path / "run")["status"] == "failed"
