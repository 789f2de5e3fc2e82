"""The rules behind inert received runs, one by one: the allow-list names what builds, a
received config is plain data, eval.py's out= never replaces a run file, a refused resume
changes nothing however it is spelled, a resume logs where its own command says, data folders
and files are read with bounds."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import read_run, run_cli
from test_bad_inputs import TINY
from test_hardening import _eval
from test_received import Listener, oc_create, plant_config, set_key, tree_hash

from seedbed.core.checkpoint import load_checkpoint
from seedbed.core.errors import ConfigError, SeedbedError
from seedbed.core.lock import RunLock
from seedbed.core.received import MAX_VALUES, NotPlainData, check_plain_data, without_downloads
from seedbed.core.record import read_json, read_yaml
from seedbed.core.targets import (
    COMPONENT_CLASSES,
    UntrustedTarget,
    check_targets,
    configured_builders,
    is_allowed,
)
from seedbed.data.fingerprint import folder_fingerprint
from seedbed.runs.hydra import register_configs
from seedbed.tools import verify

# Functions of the packages the allow-list draws on, and the usual suspects: none builds a
# component, each acts (downloads, extracts, writes, reads, runs, decodes).
UTILITIES = [
    "torchvision.datasets.utils.download_url",
    "torchvision.datasets.utils.download_and_extract_archive",
    "torchvision.datasets.utils.extract_archive",
    "torchvision.datasets.utils.download_file_from_google_drive",
    "torchvision.datasets.MNIST",  # a dataset class: download=True reaches the network
    "torchvision.models.resnet18",  # a builder: weights= downloads
    "torchvision.models.get_weight",
    "torchvision.io.write_file",
    "torchvision.io.read_file",
    "torchvision.utils.save_image",
    "torchvision.transforms.v2.functional.to_pil_image",
    "torchvision.transforms.InterpolationMode",
    "torch.save",
    "torch.load",
    "torch.hub.load",
    "torch.hub.download_url_to_file",
    "torch.nn.functional.np.save",  # numpy, reached through torch
    "torch.nn.modules.module.torch.save",
    "torch.nn.init.kaiming_uniform_",
    "torch.nn.utils.clip_grad_norm_",
    "numpy.save",
    "numpy.load",
    "io.open",
    "builtins.eval",
    "builtins.exec",
    "builtins.open",
    "os.system",
    "subprocess.Popen",
    "pickle.loads",
    "base64.b64decode",
    "shutil.rmtree",
    "seedbed.core.files.atomic_write",
    "seedbed.tools.summarize.SweepSummary",
    "seedbed.data.fingerprint.file_sha256",
    "seedbed.data.vision.torchvision",
]


@pytest.mark.parametrize("name", UTILITIES)
def test_utility_functions_of_allowed_packages_are_refused(name):
    assert not is_allowed(name)
    with pytest.raises(UntrustedTarget, match=rf"data._target_='{name}' is refused"):
        check_targets({"data": {"_target_": name}}, "config.yaml")


def _public_names(package: str) -> list[str]:
    """Every public name of `package` and of its public submodules."""
    root = importlib.import_module(package)
    modules = [root]
    for info in pkgutil.walk_packages(getattr(root, "__path__", []), f"{package}."):
        if "._" in info.name or ".tests" in info.name:
            continue
        try:
            modules.append(importlib.import_module(info.name))
        except Exception:  # noqa: BLE001, S112 - an optional part that does not import here
            continue
    return [f"{m.__name__}.{n}" for m in modules for n in dir(m) if not n.startswith("_")]


def test_every_allowed_name_of_the_installed_packages_is_a_component_class_or_a_builder():
    """Against the installed torch and torchvision: what the allow-list admits is a class of
    the declared kinds (defined where the kind says), or a builder a packaged config names."""
    pytest.importorskip("torchvision.transforms.v2")
    names = [n for p in ("torchvision", "torch.nn", "torch.optim") for n in _public_names(p)]
    allowed = [name for name in names if is_allowed(name)]
    assert len(names) > 3000 and len(allowed) > 500  # the walk saw the packages
    for name in allowed:
        module, _, attribute = name.rpartition(".")
        found = getattr(importlib.import_module(module), attribute)
        assert name in configured_builders() or inspect.isclass(found), name
        if inspect.isclass(found):
            module = found.__module__
            assert any(module.startswith(where) for where, _ in COMPONENT_CLASSES), name
    assert not any(name.startswith("torchvision.datasets.") for name in allowed)
    assert "torchvision.transforms.v2.RandomCrop" in allowed
    assert "torchvision.transforms.ToTensor" in allowed  # a transform that is a plain class
    assert "torchvision.models.ResNet" in allowed


def test_you_trust_a_package_of_yours_or_one_name_in_it():
    config = {"model": {"_target_": "collections.OrderedDict"}}
    with pytest.raises(UntrustedTarget):
        check_targets(config, "config.yaml")
    check_targets(config, "config.yaml", ["collections"])
    check_targets(config, "config.yaml", ["collections.OrderedDict"])
    with pytest.raises(UntrustedTarget):  # one name trusts that name only
        check_targets(config, "config.yaml", ["collections.Counter"])


def test_the_builders_are_what_your_configs_name_and_never_hydras_own():
    register_configs()  # the schemas' defaults: alone, no earlier test has registered them
    builders = configured_builders()
    assert {
        "seedbed.data.arrays.synthetic_classification",
        "seedbed.data.vision.image_folder",
        "seedbed.optim.warmup_cosine",
        "seedbed.data.vision.to_float",  # the README's transform example
    } <= builders
    # Hydra's settings name a callback and a launcher: machinery, never a component.
    assert not any(b.startswith(("seedbed.tools.", "hydra_plugins.")) for b in builders)
    for builder in builders:
        assert is_allowed(builder)
        module, _, name = builder.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name)), builder


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"model": oc_create(Path("m.npy"))}, 'model="${oc.create'),
        ({"a": {"b": ["ok", "${oc.env:HOME}"]}}, "a.b[1]='${oc.env:HOME}'"),
        ({"a": {"${x}": 1}}, "key '${x}' is refused"),
        ({"a": "\\${escaped}"}, "a='\\\\${escaped}'"),  # escaped: resolved, it would be live
        ({"a": np.zeros(2)}, "a=ndarray is refused"),
    ],
)
def test_a_received_config_holding_anything_but_plain_values_is_refused(config, named):
    with pytest.raises(NotPlainData, match="is refused: a config read from a file is plain data"):
        check_plain_data(config, "checkpoint x.pt")
    with pytest.raises(NotPlainData) as error:
        check_plain_data(config, "checkpoint x.pt")
    assert named in str(error.value) and len(str(error.value).splitlines()) == 1


def test_a_received_config_is_walked_within_a_bound():
    shared = list(range(1000))
    bomb = {"a": [shared] * 1000}  # a million values behind a few references
    started = time.perf_counter()
    with pytest.raises(NotPlainData, match=f"more than {MAX_VALUES} values"):
        check_plain_data(bomb, "checkpoint x.pt")
    assert time.perf_counter() - started < 2
    deep: dict = {}
    node = deep
    for _ in range(200):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(NotPlainData, match="nesting"):
        check_plain_data(deep, "checkpoint x.pt")


def test_a_received_config_never_downloads():
    config = {"data": {"download": True, "root": "data"}, "other": [{"download": True}]}
    assert without_downloads(config) == {
        "data": {"download": False, "root": "data"},
        "other": [{"download": False}],
    }
    assert config["data"]["download"] is True  # a copy


def test_yaml_aliases_and_nesting_past_belief_are_one_line(tmp_path):
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    (tmp_path / "config.yaml").write_text(laughs)
    with pytest.raises(SeedbedError, match=r"config.yaml is damaged .* alias \(\*a\) on line 2"):
        read_yaml(tmp_path / "config.yaml")
    (tmp_path / "run.json").write_text("[" * 100_000)
    with pytest.raises(SeedbedError, match="run.json is damaged or unreadable"):
        read_json(tmp_path / "run.json")


# -- eval.py's output ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("rules") / "run"
    code, _, err = run_cli(run_dir, *TINY)
    assert code == 0, err
    return run_dir


RUN_FILES = [
    "run.json",
    "metrics.jsonl",
    "config.yaml",
    "environment.json",
    "requirements.txt",
    "code.patch",
    "train.log",
    ".lock",
    "checkpoints/last.pt",
    "checkpoints/step_000004.pt",
    "checkpoints/new.json",
    ".hydra/config.yaml",
    "tensorboard/x",
    "./run.json",
    "checkpoints/../metrics.jsonl",
    "../elsewhere.json",
    "sub/../../elsewhere.json",
    ".",
    "",
]


def test_eval_out_never_replaces_a_run_file_nor_leaves_the_run(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    before = tree_hash(run)
    for out in [*RUN_FILES, str(run / "run.json"), str(run / "checkpoints" / "x")]:
        code, _, err = _eval(["eval.py", f"ckpt={run / 'checkpoints' / 'last.pt'}", f"out={out}"])
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, (out, err)
        assert f"out={out!r} is not allowed: a file that is none of the run's own" in lines[0]
    assert tree_hash(run) == before
    assert not (tmp_path / "elsewhere.json").exists()


def test_eval_writes_one_file_per_split_and_where_an_absolute_out_says(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    ckpt = f"ckpt={run / 'checkpoints' / 'last.pt'}"
    for split in ("val", "test"):
        code, out, err = _eval(["eval.py", ckpt, f"split={split}"])
        assert code == 0, err
        assert f"wrote {run / f'eval_{split}.json'}" in out
    val, test = (json.loads((run / f"eval_{s}.json").read_text()) for s in ("val", "test"))
    assert (val["split"], set(val["metrics"])) == ("val", {"val/loss", "val/acc"})
    assert (test["split"], set(test["metrics"])) == ("test", {"test/loss", "test/acc"})
    elsewhere = tmp_path / "reports" / "eval.json"
    assert _eval(["eval.py", ckpt, f"out={elsewhere}"])[0] == 0
    assert json.loads(elsewhere.read_text()) == val


# -- a refused resume, however spelled, changes nothing ---------------------------------------


def _untrusted(tmp: Path, run: Path) -> None:
    plant_config(run, set_key("model._target_", "numpy.save"))


def _interpolated(tmp: Path, run: Path) -> None:
    plant_config(run, set_key("model", oc_create(tmp / "pwned.npy")))


def _linked_log(tmp: Path, run: Path) -> None:
    (run / "train.log").unlink()
    (run / "train.log").symlink_to(tmp / "victim.txt")


def _fifo_log(tmp: Path, run: Path) -> None:
    (run / "train.log").unlink()
    os.mkfifo(run / "train.log")


def _hard_linked_log(tmp: Path, run: Path) -> None:
    os.link(run / "train.log", tmp / "a_users_log.txt")


def _leftovers(tmp: Path, run: Path) -> None:
    """A killed write's temporary file and no .lock: a refused resume removes or makes none."""
    (run / "checkpoints" / ".step_000006.pt.x1y2.tmp").write_bytes(b"half")
    (run / ".lock").unlink(missing_ok=True)
    _untrusted(tmp, run)


def _own_logger_option(tmp: Path, run: Path) -> None:
    """A logger option of the user's own (not this command line) whose log_dir leaves the run."""
    (tmp / "conf" / "logger").mkdir(parents=True)
    (tmp / "conf" / "logger" / "outside.yaml").write_text(
        "tensorboard:\n  _target_: seedbed.core.loggers.TensorBoardLogger\n  log_dir: ../tb\n"
    )


REFUSED_RESUMES = {
    "a target off the allow-list": (_untrusted, [], "numpy.save"),
    "an interpolation": (_interpolated, [], "plain data"),
    "an unsafe change": (None, ["optim.lr=0.5"], "optim.lr"),
    "too few epochs": (None, ["trainer.epochs=0"], "trainer.epochs"),
    "a bad value": (None, ["trainer.log_every=0", "resume.force=true"], "trainer.log_every"),
    "a linked train.log": (_linked_log, [], "train.log is a symbolic link"),
    "a FIFO train.log": (_fifo_log, [], "train.log is refused: it is a FIFO"),
    "a hard-linked train.log": (_hard_linked_log, [], "train.log is refused: it is hard-linked"),
    "leftovers and no lock": (_leftovers, [], "numpy.save"),
    "a tensorboard log_dir leaving the run, from a config file": (
        _own_logger_option,
        ["--config-dir", "{tmp}/conf", "logger=outside"],
        "logger.tensorboard.log_dir='../tb' is not allowed: a path inside the run directory",
    ),
}
SPELLINGS = ["resume={}", "resume.path={}", "++resume.path={}", "+resume={}", "++resume={}"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(REFUSED_RESUMES))
def test_a_refused_resume_leaves_the_run_byte_for_byte(kind, finished, tmp_path):
    prepare, overrides, named = REFUSED_RESUMES[kind]
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    (tmp_path / "victim.txt").write_text("a user's file\n")
    if prepare is not None:
        prepare(tmp_path, run)
    before, parent = tree_hash(run), sorted(p.name for p in tmp_path.iterdir())
    args = [o.format(tmp=tmp_path) for o in overrides]
    flags = args[:2] if args and args[0].startswith("--") else []  # Hydra's flags come first
    code, _, err = run_cli(None, *flags, f"resume={run}", *args[len(flags) :])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err[-3000:]
    assert named in lines[0], lines[0]
    assert tree_hash(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == parent
    assert (tmp_path / "victim.txt").read_text() == "a user's file\n"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_of_the_resume_path_is_checked_before_anything_is_written(
    spelling, finished, tmp_path
):
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    _linked_log(tmp_path, run)
    (tmp_path / "victim.txt").write_text("a user's file\n")
    folder = tmp_path / "notes"  # a folder that is not a run
    folder.mkdir()
    (folder / "a.txt").write_text("mine\n")
    cases = {run: "train.log is a symbolic link", folder: "no usable checkpoint"}
    cases[tmp_path / "missing"] = "does not exist"
    for path, named in cases.items():
        before = tree_hash(tmp_path)
        code, _, err = run_cli(None, spelling.format(path))  # as a user resumes
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1, (path, err[-3000:])
        assert named in lines[0], lines[0]
        assert tree_hash(tmp_path) == before, path  # no .hydra/, train.log, folder made
    assert not (tmp_path / "missing").exists()


def test_a_busy_run_is_refused_before_anything_is_written(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    with RunLock(run):
        before = tree_hash(run)
        code, _, err = run_cli(run, f"++resume.path={run}")
        assert tree_hash(run) == before
    assert code == 2 and "is being written by process" in err


# -- a resume logs where its own command says -------------------------------------------------


def test_a_resume_logs_where_its_command_says_never_where_the_run_directory_says(
    finished, tmp_path, monkeypatch
):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the control fails at once
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    from mlflow.tracking import MlflowClient

    listener = Listener()
    try:
        run = tmp_path / "run"
        shutil.copytree(finished, run, symlinks=True)
        received = {
            "tensorboard": {"log_dir": "../outside"},
            "mlflow": {
                "tracking_uri": listener.url,
                "artifact_location": str(tmp_path / "artifacts"),
                "experiment": "the sender's",
                "log_artifacts": True,
                "telemetry": True,
            },
        }
        plant_config(run, set_key("logger", received))
        for extra in ([], ["resume.force=true"]):
            code, out, err = run_cli(run, f"resume={run}", "trainer.epochs=2", *extra)
            assert code == 0, err[-3000:]
            assert yaml.safe_load((run / "config.yaml").read_text())["logger"] == {}
            assert "the run logged to tensorboard, mlflow; this resume does not" in out + err
            assert read_run(run)["status"] == "completed"
            plant_config(run, set_key("logger", received))
        assert listener.connections == 0
        assert not (tmp_path / "outside").exists() and not (tmp_path / "artifacts").exists()
        # The control: a client of that store contacts the host the file names.
        with pytest.raises(Exception):  # noqa: B017, PT011 - the listener never answers
            MlflowClient(tracking_uri=listener.url).search_experiments()
        assert listener.connections >= 1
    finally:
        listener.close()


def test_a_resume_takes_its_loggers_and_their_destinations_from_its_own_command(finished, tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    plant_config(run, set_key("logger", {"tensorboard": {"log_dir": "../outside"}}))
    code, _, err = run_cli(run, f"resume={run}", "trainer.epochs=2", "logger=tensorboard")
    assert code == 0, err[-3000:]
    assert any((run / "tensorboard").iterdir()) and not (tmp_path / "outside").exists()
    # Outside the run directory only when this command line says so.
    again = tmp_path / "again"
    shutil.copytree(finished, again, symlinks=True)
    mine = tmp_path / "my_tensorboard"
    resume = [f"resume={again}", "trainer.epochs=2", "logger=tensorboard"]
    code, _, err = run_cli(again, *resume, f"logger.tensorboard.log_dir={mine}")
    assert code == 0, err[-3000:]
    assert any(mine.iterdir())


def test_verify_reruns_without_the_recorded_loggers_or_downloads(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    plant_config(
        run,
        set_key("logger", {"tensorboard": None, "mlflow": {"tracking_uri": "http://x"}}),
    )
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["download"] = True
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    verify.rerun_config(run, tmp_path / "config")
    rerun = yaml.safe_load((tmp_path / "config" / "rerun.yaml").read_text())
    assert rerun["logger"] == {}
    assert rerun["data"]["download"] is False


def test_a_received_mnist_config_never_downloads(finished, tmp_path, monkeypatch):
    """eval.py of a checkpoint whose data says download: true, from a mirror the test runs:
    nothing is contacted, and the missing files are named. The control: torchvision's own
    MNIST with download=True contacts that mirror."""
    datasets = pytest.importorskip("torchvision.datasets")
    listener = Listener()
    try:
        monkeypatch.setattr(datasets.MNIST, "mirrors", [f"{listener.url}/"])
        run = tmp_path / "run"
        shutil.copytree(finished, run, symlinks=True)
        root = tmp_path / "mnist"
        root.mkdir()  # there, but without MNIST's files: a download would fetch them
        data = {
            "_target_": "seedbed.data.vision.mnist",
            "_recursive_": False,
            "root": str(root),
            "download": True,
            "val_fraction": 0.1,
            "seed": 0,
            "train_transform": None,
            "eval_transform": None,
        }
        plant_config(run, set_key("data", data))
        code, _, err = _eval(["eval.py", f"ckpt={run / 'checkpoints' / 'last.pt'}"])
        assert code == 2 and "data.root" in err and "are not there" in err, err
        assert listener.connections == 0
        with pytest.raises(Exception):  # noqa: B017, PT011 - the mirror never answers
            datasets.MNIST(str(tmp_path / "control"), download=True)
        assert listener.connections >= 1
    finally:
        listener.close()


def test_a_last_pt_that_is_a_file_of_its_own_survives_a_resume(finished, tmp_path):
    """A copy that followed the links (scp -r, a zip) holds last.pt as a regular file: a resume
    used to make it a link to itself, losing the checkpoint."""
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=False)
    assert not (run / "checkpoints" / "last.pt").is_symlink()
    code, _, err = run_cli(run, f"resume={run}", "trainer.epochs=2")
    assert code == 0, err[-3000:]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["loop"]["epoch"] == 2


# -- data folders and files --------------------------------------------------------------------


def _image_folder(root: Path) -> None:
    from PIL import Image

    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for index in range(4):
            pixels = np.full((8, 8, 3), 40 * index, dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{index}.png")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["fifo", "zero", "oversized"])
def test_an_image_folder_with_a_fifo_a_device_or_a_huge_image_is_one_line(how, tmp_path):
    pytest.importorskip("torchvision.transforms.v2")
    from seedbed.data.vision import MAX_IMAGE_BYTES, image_folder

    root = tmp_path / "images"
    _image_folder(root)
    planted = root / "b" / "9.png"
    if how == "fifo":
        os.mkfifo(planted)
    elif how == "zero":
        planted.symlink_to("/dev/zero")
    else:
        with planted.open("wb") as file:
            file.truncate(MAX_IMAGE_BYTES + 1)
    with pytest.raises(SeedbedError, match=re.escape(f"data file {planted} is refused")) as error:
        image_folder(str(root), image_size=8, val_fraction=0.25, seed=0)
    assert len(str(error.value).splitlines()) == 1


def test_the_fingerprint_budget_holds_within_one_huge_file(tmp_path):
    big = tmp_path / "data" / "huge.bin"
    big.parent.mkdir()
    with big.open("wb") as file:
        file.truncate(64 * 2**30)  # sparse: no disk used, a minute or more to hash
    started = time.perf_counter()
    found = folder_fingerprint(big.parent, budget_s=0.2)
    assert time.perf_counter() - started < 5
    assert found["content_hashed"] == 0 and found["bytes"] == 64 * 2**30


def test_an_npz_declaring_more_than_memory_is_refused_before_it_is_read(tmp_path):
    import zipfile

    from seedbed.data.npz import npz_dataset

    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            header = {"descr": "<f8", "fortran_order": False, "shape": (10**7, 10**6)}
            np.lib.format.write_array_header_1_0(member, header)
            member.write(b"\0" * 2**20)  # a few KB once compressed
        with archive.open("y.npy", "w") as member:
            np.lib.format.write_array(member, np.zeros(10))
    assert path.stat().st_size < 2**20
    with pytest.raises(ConfigError, match="arrays fit in memory"):
        npz_dataset(str(path), val_fraction=0.2, seed=0)
