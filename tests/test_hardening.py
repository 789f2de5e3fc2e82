"""Files from elsewhere cannot run code, one process writes a run, a sweep survives a bad job,
a full disk is one line, and code.patch never copies a secret."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import IN_PROJECT, TRAIN, read_run, run_cli, run_git, train_in_process
from hydra.utils import instantiate
from test_bad_inputs import TINY, _in_process, _only_checkpoint

from seedbed import evaluate
from seedbed.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from seedbed.core.environment import code_state
from seedbed.core.errors import ConfigError, SeedbedError
from seedbed.core.interrupts import ImmediateStop, TrainingInterrupted
from seedbed.core.lock import RunLock, RunLocked
from seedbed.core.record import RunRecord
from seedbed.core.targets import UntrustedTarget, check_targets
from seedbed.loop import NonFiniteLoss
from seedbed.tools import verify


def payloads(marker: Path) -> dict[str, tuple[str, dict]]:
    """{name: (config key it replaces, the payload)}: each would write `marker`."""
    save = {"_target_": "numpy.save", "file": str(marker), "arr": [1]}
    return {
        "a file-writing target": ("model", save),
        "a target nested in a list": (
            "model",
            {"_target_": "seedbed.models.MLP", "hidden": [save]},
        ),
        "an _args_ chain": (
            "model",
            {
                "_target_": "seedbed.models.MLP",
                "_args_": [{"_target_": "numpy.save", "_args_": [str(marker), [1]]}],
            },
        ),
        # torch.nn.functional imports numpy as np: the name starts with an allowed prefix.
        "an allowed prefix leading elsewhere": (
            "task",
            {"_target_": "torch.nn.functional.np.save", "file": str(marker), "arr": [1]},
        ),
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("hardening") / "run"
    assert train_in_process(run_dir, *TINY)["status"] == "completed"
    return run_dir


def test_the_payloads_would_run_without_the_allow_list(tmp_path):
    marker = tmp_path / "pwned.npy"
    for name, (_, payload) in payloads(marker).items():
        with contextlib.suppress(Exception):  # the payload runs before its target fails
            instantiate(payload)
        assert marker.exists(), name
        marker.unlink()


@pytest.mark.parametrize("payload", list(payloads(Path("m"))))
def test_a_received_checkpoint_or_config_cannot_run_code(payload, finished, tmp_path):
    marker = tmp_path / "pwned.npy"
    key, node = payloads(marker)[payload]
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    last = _only_checkpoint(run)
    checkpoint = load_checkpoint(last)
    checkpoint["config"][key] = node
    save_checkpoint(last, checkpoint)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config[key] = node
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    record = (run / "run.json").read_bytes()

    attempts = {
        "eval": lambda: _eval(["eval.py", f"ckpt={last}"]),
        "resume": lambda: run_cli(run, f"resume={run}"),
        "verify --against": lambda: _in_process(
            lambda: verify.main(["--against", str(run), "--out", str(tmp_path / "v"), *IN_PROJECT])
        ),
    }
    for command, attempt in attempts.items():
        code, _, err = attempt()
        assert code == 2, (command, err)
        assert f"{key}" in err and "is refused" in err, (command, err)
        assert not marker.exists(), command
    assert (run / "run.json").read_bytes() == record  # the refused resume changed nothing
    assert not (tmp_path / "v" / "rerun").exists()


def _eval(argv: list[str]):
    saved = sys.argv

    def call() -> None:
        sys.argv = argv
        try:
            evaluate.cli()
        finally:
            sys.argv = saved

    return _in_process(call)


def test_a_user_extends_the_allow_list_with_a_prefix():
    config = {"model": {"_target_": "collections.OrderedDict"}}
    with pytest.raises(UntrustedTarget, match=r"model._target_='collections.OrderedDict'"):
        check_targets(config, "config.yaml")
    check_targets(config, "config.yaml", extra=["collections"])
    with pytest.raises(UntrustedTarget):  # a prefix is a module path, not a string prefix
        check_targets(config, "config.yaml", extra=["coll"])


def test_every_seedbed_error_pickles_with_its_message():
    errors = [
        SeedbedError("plain"),
        ConfigError("optim.lr", -1.0, "a number > 0"),
        TrainingInterrupted(signal.SIGTERM, "interrupted by SIGTERM\nresume with: ..."),
        ImmediateStop(signal.SIGINT),
        CheckpointError("checkpoint x is corrupt"),
        UntrustedTarget("refused"),
        RunLocked("busy"),
        NonFiniteLoss("loss is nan"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert copy.__dict__ == error.__dict__


def test_a_second_writer_is_refused_naming_the_first_and_a_dead_ones_lock_is_taken(tmp_path):
    with RunLock(tmp_path), pytest.raises(RunLocked, match=rf"process {os.getpid()} on "):
        RunLock(tmp_path).acquire()
    # A process killed while it holds the lock leaves the file, not the lock.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from seedbed.core.lock import RunLock; "
            f"RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunLocked, match=rf"process {holder.pid} on "):
        RunLock(tmp_path).acquire()
    holder.kill()
    holder.wait()
    with RunLock(tmp_path) as lock:
        assert f"process {os.getpid()} " in lock.path.read_text()


def test_resume_removes_temporary_files_and_takes_over_a_stale_lock(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    leftover = run / "checkpoints" / ".step_000004.pt.x1y2.tmp"
    leftover.write_bytes(b"half a checkpoint")
    (run / ".lock").write_text("process 999999 on elsewhere\n")  # its process is gone
    record = train_in_process(run, f"resume={run}", "trainer.epochs=2")
    assert record["status"] == "completed"
    assert not leftover.exists()


def test_a_run_killed_before_its_first_checkpoint_starts_again_in_place(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    shutil.rmtree(run / "checkpoints")
    record = read_run(run)
    record["status"] = "running"
    (run / "run.json").write_text(json.dumps(record))
    code, _, err = run_cli(run, *TINY)
    assert code == 0, err
    again = read_run(run)
    assert again["status"] == "completed"
    assert again["weights_sha256"] == read_run(finished)["weights_sha256"]
    assert again["loss_series_sha256"] == read_run(finished)["loss_series_sha256"]


def test_a_full_disk_is_one_line_naming_the_file_and_the_last_checkpoint_survives(
    tmp_path, monkeypatch
):
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp") and "step_000004" in os.readlink(
            f"/proc/self/fd/{fd}"
        ):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    run = tmp_path / "run"
    code, _, err = run_cli(run, *TINY)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "step_000004.pt cannot be written: No space left on device" in lines[0]
    record = read_run(run)
    assert record["status"] == "failed" and record["error"] in lines[0]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["loop"]["step"] == 2
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_json_files_hold_null_for_nan_and_infinity(tmp_path):
    RunRecord(tmp_path).update(final_metrics={"val/loss": float("nan"), "x": [float("inf")]})

    def refuse(constant: str) -> None:
        raise AssertionError(f"bare {constant} in run.json")

    data = json.loads((tmp_path / "run.json").read_text(), parse_constant=refuse)
    assert data["final_metrics"] == {"val/loss": None, "x": [None]}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_code_patch_copies_untracked_source_but_never_a_secret(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    run_git(repo, "init", "-q")
    run_git(repo, "config", "user.email", "t@example.org")
    run_git(repo, "config", "user.name", "t")
    (repo / ".gitignore").write_text("ignored.py\n")
    run_git(repo, "add", ".gitignore")
    run_git(repo, "commit", "-qm", "start")
    files = {
        "model_v2.py": "print('new code')\n",
        "secrets.yaml": "password: hunter2\n",
        "deploy/env.sh": "export API_KEY=hunter2\n",
        "server.pem": "-----BEGIN hunter2\n",
        "tls.key": "hunter2\n",
        ".env": "TOKEN=hunter2\n",
        "api_token.py": "TOKEN = 'hunter2'\n",
        "aws_credentials.toml": "key = 'hunter2'\n",
        "id_ed25519": "hunter2\n",
        "ignored.py": "print('hunter2')\n",
        "data.bin": "hunter2",
    }
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    info, patch = code_state(repo)
    assert info["untracked_in_patch"] == ["model_v2.py"]
    assert "new code" in patch and "hunter2" not in patch
    listed = set(info["untracked_not_in_patch"])
    assert listed == set(files) - {"model_v2.py", "ignored.py"}  # .gitignore is honoured


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local"])
def test_a_sweep_survives_a_bad_job(launcher, tmp_path):
    if launcher != "basic":
        pytest.importorskip(f"hydra_plugins.hydra_{launcher.split('_')[0]}_launcher")
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [
            sys.executable,
            TRAIN,
            "-m",
            f"hydra.sweep.dir={sweep}",
            f"hydra/launcher={launcher}",
            "optim.lr=0.1,-1,0.05",
            *TINY,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert lines == ["error: optim.lr=-1.0 is not allowed: a number > 0"]
    records = {d.name: read_run(d) for d in sweep.iterdir() if (d / "run.json").exists()}
    assert {name: r["status"] for name, r in records.items()} == {
        "0": "completed",
        "1": "failed",
        "2": "completed",
    }
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["completed"] == 2 and summary["unfinished"] == []
    assert summary["failed"] == [
        {"run_dir": "1", "seed": 0, "error": "optim.lr=-1.0 is not allowed: a number > 0"}
    ]
    assert "optim.lr=-1.0 is not allowed" in (sweep / "summary.md").read_text()


def test_resume_trims_a_metrics_file_cut_mid_line_and_completes(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    metrics = run / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes()[:-10])  # a copy cut in the middle of a record
    record = train_in_process(run, f"resume={run}", "trainer.epochs=2")
    assert record["status"] == "completed"
    assert "earlier records are missing" in record["resumes"][-1]["metrics_note"]
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    # Epoch 0's validation record was the line cut; the resumed epoch 1 follows whole records.
    assert [r["epoch"] for r in records if r["kind"] == "val"] == [1]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6, 7, 8]


def test_a_forked_worker_does_not_keep_a_dead_runs_lock(tmp_path):
    lock = RunLock(tmp_path)
    lock.acquire()
    started, tell = os.pipe()
    child = os.fork()  # a DataLoader worker inherits the descriptor
    if child == 0:
        os.write(tell, b"1")
        signal.pause()
        os._exit(0)
    try:
        assert os.read(started, 1) == b"1"  # the worker runs
        lock.release()  # as when the run's process dies while its worker lives on
        with RunLock(tmp_path):
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
