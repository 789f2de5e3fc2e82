"""Each run records what it ran on and which code, and never a secret from the environment."""

from __future__ import annotations

import json
import secrets
from importlib import metadata

import pytest
import torch
from helpers import SMALL, read_run, run_git, run_train

from seedbed.core.environment import ENV_VARS, code_state


@pytest.fixture(scope="module")
def run_with_a_secret(tmp_path_factory):
    """A real run, started with a fake secret and a result-changing variable set."""
    run_dir = tmp_path_factory.mktemp("env") / "run"
    secret = f"fake-secret-{secrets.token_hex(16)}"
    run_train(
        run_dir,
        *SMALL,
        "logger=tensorboard",
        env={"AWS_SECRET_ACCESS_KEY": secret, "MY_API_TOKEN": secret, "OMP_NUM_THREADS": "2"},
    )
    return run_dir, secret


@pytest.mark.slow
def test_environment_json_has_every_field_and_is_referenced_from_run_json(run_with_a_secret):
    run_dir, _ = run_with_a_secret
    assert read_run(run_dir)["environment"] == "environment.json"
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["python"]["version"] and env["python"]["implementation"]
    assert env["os"]["system"] and env["os"]["kernel"]
    assert env["cpu"]["logical_cores"] >= 1 and "model" in env["cpu"]
    assert env["torch"]["version"] == torch.__version__
    for key in ("cuda", "cudnn", "num_threads", "num_interop_threads", "build_config"):
        assert key in env["torch"], key
    assert env["torch"]["num_threads"] == read_run(run_dir)["torch_threads"]
    assert isinstance(env["gpus"], list) and len(env["gpus"]) == torch.cuda.device_count()
    assert set(env["env"]) == set(ENV_VARS)
    assert env["env"]["OMP_NUM_THREADS"] == "2"
    git = env["git"]
    assert "available" in git
    if git["available"]:
        assert len(git["commit"]) == 40 and isinstance(git["dirty"], bool)
        assert (run_dir / "code.patch").is_file() == bool(git["patch"])
    assert env["packages"]["torch"] == metadata.version("torch")


@pytest.mark.slow
def test_requirements_txt_pins_every_installed_package(run_with_a_secret):
    run_dir, _ = run_with_a_secret
    lines = (run_dir / "requirements.txt").read_text().splitlines()
    pins = dict(line.split("==", 1) for line in lines if not line.startswith("#"))
    assert pins["torch"] == metadata.version("torch")
    assert pins["numpy"] == metadata.version("numpy")
    names = {name.lower() for name in pins} | {
        line.split()[1].split("==")[0].lower() for line in lines if line.startswith("#")
    }
    installed = {d.metadata["Name"].lower() for d in metadata.distributions()}
    assert names == installed


@pytest.mark.slow
def test_no_secret_from_the_environment_reaches_any_run_file(run_with_a_secret):
    run_dir, secret = run_with_a_secret
    files = [path for path in run_dir.rglob("*") if path.is_file()]
    assert any(path.parent.name == ".hydra" for path in files)
    assert any(path.parent.name == "tensorboard" for path in files)
    for path in files:
        assert secret.encode() not in path.read_bytes(), path


def test_outside_a_git_checkout_the_record_says_so(tmp_path):
    git, patch = code_state(tmp_path)
    assert git["available"] is False and "not in a git checkout" in git["reason"]
    assert patch == ""


def test_code_patch_recreates_the_code_that_ran_and_skips_untracked_secrets(tmp_path):
    repo, clone = tmp_path / "repo", tmp_path / "clone"
    repo.mkdir()
    run_git(repo, "init", "-q")
    (repo / "model.py").write_text("width = 1\n")
    (repo / "unchanged.py").write_text("x = 0\n")
    run_git(repo, "add", ".")
    run_git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    (repo / "model.py").write_text("width = 2\n")
    (repo / "new_layer.py").write_text("layers = 3\n")
    (repo / ".env").write_text("AWS_SECRET_ACCESS_KEY=do-not-record\n")

    git, patch = code_state(repo)
    assert git["available"] and git["dirty"] is True
    assert git["untracked_in_patch"] == ["new_layer.py"]
    assert git["untracked_not_in_patch"] == [".env"]
    assert "do-not-record" not in patch

    run_git(tmp_path, "clone", "-q", str(repo), str(clone))
    run_git(clone, "checkout", "-q", git["commit"])
    (tmp_path / "code.patch").write_text(patch)
    run_git(clone, "apply", str(tmp_path / "code.patch"))
    for name in ("model.py", "new_layer.py", "unchanged.py"):
        assert (clone / name).read_text() == (repo / name).read_text(), name
    run_git(repo, "diff", "--quiet", "--cached")  # the real index was not touched


def test_a_clean_checkout_is_not_dirty_and_has_no_patch(tmp_path):
    run_git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("a = 1\n")
    run_git(tmp_path, "add", ".")
    run_git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    git, patch = code_state(tmp_path)
    assert git["dirty"] is False and git["patch"] is None and patch == ""
