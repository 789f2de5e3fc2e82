"""Every bad input is one line: exit status 2, one line on stderr naming the key or the file,
no traceback, and a run directory that says `failed` with that line (or, for a run that was
refused, is left exactly as it was).

The table covers overrides, data files, checkpoints, run directories and the arguments of
eval, verify, compare and summarize. Each case runs in this process (as `helpers.run_cli`
does for train.py) against a fresh copy of one small finished run.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import hydra.core.utils as hydra_utils
import numpy as np
import pytest
from data_files import make_image_folder
from helpers import PROJECT, read_run, run_cli, train_in_process

from seedbed import evaluate
from seedbed.core.checkpoint import load_checkpoint, save_checkpoint
from seedbed.core.lock import RunLock
from seedbed.core.record import read_metrics
from seedbed.tools import compare, summarize, verify

TINY = [
    "data.n_samples=160",
    "trainer.epochs=1",
    "trainer.log_every=1",
    "loader.batch_size=32",
    "checkpoint.every_steps=2",
]
NPZ = [*(o for o in TINY if not o.startswith("data.n_samples")), "data=npz"]  # no n_samples


@dataclass
class Case:
    """`tool` run with `args` ({run}, {ckpt}, {tmp} filled in) must fail naming `names`."""

    tool: str
    args: list[str]
    names: str
    prepare: Callable[[Path, Path], None] | None = None  # (tmp, run copy)
    run_dir: str = "{tmp}/new"  # train.py only: its hydra.run.dir
    tags: list[str] = field(default_factory=list)


def _write(path: Path, text: str | bytes) -> None:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


def _npz(name: str, **arrays: np.ndarray) -> Callable[[Path, Path], None]:
    def prepare(tmp: Path, run: Path) -> None:
        np.savez(tmp / name, **arrays)

    return prepare


def _npy_as_npz(tmp: Path, run: Path) -> None:
    np.save(tmp / "array.npy", np.zeros((10, 3)))
    os.replace(tmp / "array.npy", tmp / "renamed.npz")


def _pickled_npz(tmp: Path, run: Path) -> None:
    np.savez(tmp / "pickled.npz", x=np.array([{"a": 1}] * 10, dtype=object), y=np.zeros(10))


IMAGES = [
    "data=image_folder",
    "data.root={tmp}/images",
    "data.image_size=8",
    "model=cnn",
    "trainer.epochs=1",
]


def _images(tmp: Path, run: Path) -> None:
    make_image_folder(tmp / "images", classes=2, per_class=4, size=8)


def _images_with_a_dangling_link(tmp: Path, run: Path) -> None:
    _images(tmp, run)
    (tmp / "images" / "class1" / "zz_moved.png").symlink_to(tmp / "gone.png")


def _only_checkpoint(run: Path) -> Path:
    """Leave last.pt as the one checkpoint file (a regular file), so nothing falls back."""
    directory = run / "checkpoints"
    data = (directory / "last.pt").read_bytes()
    for path in directory.iterdir():
        path.unlink()
    (directory / "last.pt").write_bytes(data)
    return directory / "last.pt"


def _damage(name: str, text: str | bytes) -> Callable[[Path, Path], None]:
    return lambda tmp, run: _write(run / name, text)


def _link(name: str, target: str) -> Callable[[Path, Path], None]:
    def prepare(tmp: Path, run: Path) -> None:
        (tmp / "victim.txt").write_text("a user's file\n")
        path = run / name
        path.unlink(missing_ok=True)
        path.symlink_to(target.format(tmp=tmp))

    return prepare


def _last_pt(how: str) -> Callable[[Path, Path], None]:
    def prepare(tmp: Path, run: Path) -> None:
        last = _only_checkpoint(run)
        if how == "truncated":
            last.write_bytes(last.read_bytes()[:100])
        elif how == "zero":
            last.unlink()
            last.symlink_to("/dev/zero")
        elif how == "fifo":
            last.unlink()
            os.mkfifo(last)
        elif how == "outside":
            shutil.copy(last, tmp / "elsewhere.pt")
            last.unlink()
            last.symlink_to(tmp / "elsewhere.pt")
        elif how == "empty":
            last.write_bytes(b"")

    return prepare


def _payload(tmp: Path, run: Path) -> None:
    """A checkpoint whose config builds a file-writing function (numpy.save)."""
    last = _only_checkpoint(run)
    checkpoint = load_checkpoint(last)
    checkpoint["config"]["model"] = {
        "_target_": "numpy.save",
        "file": str(tmp / "pwned.npy"),
        "arr": [1],
    }
    save_checkpoint(last, checkpoint)
    text = (run / "config.yaml").read_text()
    _write(run / "config.yaml", text.replace("seedbed.models.MLP", "numpy.save"))


def _hold_lock(tmp: Path, run: Path) -> None:
    lock = RunLock(run)
    lock.acquire()
    HELD.append(lock)


HELD: list[RunLock] = []


def _other_run(tmp: Path, run: Path) -> None:
    shutil.copytree(run, tmp / "other")


OVERRIDES = [
    (["seed=-1"], "seed"),
    ([f"seed={2**32}"], "seed"),
    (["seed=abc"], "seed"),
    (["seeds.init=-3"], "seeds.init"),
    (["seeds.data=-1"], "seeds.data"),
    (["optim.lr=0"], "optim.lr"),
    (["optim.lr=-1"], "optim.lr"),
    (["optim.lr=inf"], "optim.lr"),
    (["optim.lr=nan"], "optim.lr"),
    (["optim=sgd", "optim.momentum=-1"], "optim.momentum"),
    (["optim.weight_decay=-0.1"], "optim.weight_decay"),
    (["optim=adamw", "optim.betas=[1.5,0.9]"], "optim.betas"),
    (["optim=adamw", "optim.betas=[0.9]"], "optim.betas"),
    (["optim=adamw", "optim.eps=0"], "optim.eps"),
    (
        ["optim=sgd", "+optim.momentun=0.5"],
        "optim.momentun=0.5 is not allowed: a key of optim: did you mean",
    ),
    (["++trainer.epoch=2"], "did you mean trainer.epochs"),
    (["+loader.batchsize=8"], "did you mean loader.batch_size"),
    (["++trainer.fast_dev_run=true"], "trainer.fast_dev_run"),
    (["+model.hiden=[8]"], "did you mean model.hidden"),
    (["++data.n_sample=10"], "did you mean data.n_samples"),
    (["++trainer.early_stopping.patiense=2"], "did you mean trainer.early_stopping.patience"),
    (["+checkpoint.every=3"], "checkpoint.every"),
    (["++init.schema=x"], "did you mean init.scheme"),
    (["++data.augment.noise=1"], "did you mean data.augment.noise_std"),
    (["sched=cosine", "sched.T_max=0"], "sched.T_max"),
    (["sched=step", "sched.step_size=0"], "sched.step_size"),
    (["sched=step", "sched.gamma=-1"], "sched.gamma"),
    (["sched=cosine", "sched.eta_min=-1"], "sched.eta_min"),
    (["data.n_classes=0"], "data.n_classes"),
    (["data.n_classes=1"], "data.n_classes"),
    (["data.n_features=0"], "data.n_features"),
    (["data.n_samples=1"], "data.n_samples"),
    (["data.val_fraction=0"], "data.val_fraction"),
    (["data.val_fraction=1.5"], "data.val_fraction"),
    (["data.test_fraction=-0.1"], "data.test_fraction"),
    (["data.class_sep=-1"], "data.class_sep"),
    (["data.augment.noise_std=-1"], "data.augment.noise_std"),
    (["data.augment.drop_prob=1"], "data.augment.drop_prob"),
    (["model.dropout=1"], "model.dropout"),
    (["model=cnn"], "model"),
    (["model=transformer"], "model"),
    (["optim=lbfgs"], "optim"),
    (["init.scheme=he"], "init.scheme"),
    (["init.mode=both"], "init.mode"),
    (["determinism.mode=maybe"], "determinism.mode"),
    (["trainer.device=tpu"], "trainer.device"),
    (["trainer.epochs=-1"], "trainer.epochs"),
    (["trainer.log_every=0"], "trainer.log_every"),
    (["trainer.grad_clip=0"], "trainer.grad_clip"),
    (["trainer.limit_train_batches=0"], "trainer.limit_train_batches"),
    (["trainer.threads=0"], "trainer.threads"),
    (["trainer.perturb_step=0"], "trainer.perturb_step"),
    (["trainer.early_stopping.patience=0"], "trainer.early_stopping.patience"),
    (["trainer.early_stopping.min_delta=-1"], "trainer.early_stopping.min_delta"),
    (["loader.batch_size=0"], "loader.batch_size"),
    (["loader.global_batch_size=0"], "loader.global_batch_size"),
    (
        ["loader.global_batch_size=30", "trainer.accumulate_grad_batches=4"],
        "loader.global_batch_size=28 or 32",
    ),
    (["loader.num_workers=-1"], "loader.num_workers"),
    (["loader.persistent_workers=true"], "loader.persistent_workers"),
    (["loader.prefetch_factor=2"], "loader.prefetch_factor"),
    (["checkpoint.every_steps=0"], "checkpoint.every_steps"),
    (["checkpoint.keep_last=0"], "checkpoint.keep_last"),
    (["no_such_key=1"], "no_such_key"),
    (["+no_such_key=1"], "no_such_key"),
    (["task.label_smoothing=1.5"], "task.label_smoothing"),
    (["task.monitor=val/f1"], "task.monitor"),
    (["task.loss._target_=torch.nn.NoSuchLoss"], "task.loss"),
    (
        ["task=regression", "data=synthetic_regression", "task.loss._target_=torch.nn.HuberLoss"]
        + ["++task.loss.delta=-1"],
        "task.loss='HuberLoss' is not allowed: settings its loss accepts",
    ),
    (["model.hidden=[-1]"], "model.hidden"),
    (["model.hidden=[0]"], "model.hidden"),
    (["model=cnn", "data=synthetic_images", "model.channels=[0]"], "model.channels"),
    (["model._target_=os.system"], "model._target_='os.system' is not allowed: a known component"),
    (["optim._target_=os.system"], "optim._target_='os.system' is not allowed: a known component"),
    (["model._target_=seedbed.models.Nope"], "(model=cnn|mlp|resnet18)"),
    (["model._target_=subprocess.run"], "model._target_: Target 'subprocess.run' is blocklisted"),
    (["sched=onecycle", "sched.total_steps=2"], "sched.total_steps=2 is not allowed: an int >= 4"),
    (["sched=onecycle", "sched.div_factor=0"], "sched.div_factor"),
    (["sched=onecycle", "sched.final_div_factor=-1"], "sched.final_div_factor"),
    (["sched=plateau", "sched.threshold=-1"], "sched.threshold"),
    (["sched=plateau", "sched.min_lr=-1"], "sched.min_lr"),
    (["sched=plateau", "sched.cooldown=-1"], "sched.cooldown"),
    (["sched=warmup_cosine", "sched.warmup_steps=100", "sched.total_steps=10"], "warmup_steps"),
    (["trainer.threads=100000"], "trainer.threads=100000 is not allowed: an int in [1, "),
    (
        ["trainer.distributed=fdsp"],
        "trainer.distributed='fdsp' is not allowed: false, true (the same as ddp), ddp or fsdp",
    ),
    (["trainer.distributed=1"], "trainer.distributed=1 is not allowed: false, true"),
    (
        ["trainer.distributed=fsdp", "trainer.perturb_step=2"],
        "trainer.perturb_step=2 is not allowed: null with trainer.distributed=fsdp",
    ),
    (["logger=mlflow", "logger.mlflow.tracking_uri=bogus://x/y"], "logger.mlflow.tracking_uri"),
]

CASES: dict[str, Case] = {
    f"train {' '.join(args)}": Case("train", [*TINY, *args], names) for args, names in OVERRIDES
}
CASES.update(
    {
        "npz without path": Case("train", [*NPZ], "data.path"),
        "npz missing": Case("train", [*NPZ, "data.path={tmp}/no.npz"], "data.path"),
        "npy renamed npz": Case(
            "train", [*NPZ, "data.path={tmp}/renamed.npz"], "data.path", _npy_as_npz
        ),
        "npz with NaN": Case(
            "train",
            [*NPZ, "data.path={tmp}/nan.npz"],
            "finite values in x",
            _npz("nan.npz", x=np.array([[np.nan, 1.0]] * 10), y=np.zeros(10, dtype=np.int64)),
        ),
        "npz with inf targets": Case(
            "train",
            [*NPZ, "task=regression", "data.path={tmp}/inf.npz"],
            "finite values in y",
            _npz("inf.npz", x=np.ones((10, 2)), y=np.array([np.inf] * 10)),
        ),
        "npz without y": Case(
            "train",
            [*NPZ, "data.path={tmp}/noy.npz"],
            "data.path",
            _npz("noy.npz", x=np.ones((10, 2))),
        ),
        "npz lengths differ": Case(
            "train",
            [*NPZ, "data.path={tmp}/len.npz"],
            "data.path",
            _npz("len.npz", x=np.ones((10, 2)), y=np.zeros(9, dtype=np.int64)),
        ),
        "npz of objects": Case(
            "train", [*NPZ, "data.path={tmp}/pickled.npz"], "data.path", _pickled_npz
        ),
        "npz is text": Case(
            "train",
            [*NPZ, "data.path={tmp}/text.npz"],
            "data.path",
            lambda tmp, run: _write(tmp / "text.npz", "x,y\n1,2\n"),
        ),
        "npz complex x": Case(
            "train",
            [*NPZ, "data.path={tmp}/complex.npz"],
            "data.path",
            _npz("complex.npz", x=np.ones((10, 2)) + 1j, y=np.zeros(10, dtype=np.int64)),
        ),
        "tensorboard log_dir a file": Case(
            "train",
            [*TINY, "logger=tensorboard", "logger.tensorboard.log_dir={tmp}/a_file"],
            "logger.tensorboard.log_dir",
            lambda tmp, run: _write(tmp / "a_file", "notes\n"),
        ),
        "image folder train_transform without float": Case(
            "train",
            [*IMAGES, "data.train_transform=[{{_target_:torchvision.transforms.v2.ToImage}}]"],
            "data.train_transform",
            _images,
        ),
        "image folder with a dangling link": Case(
            "train", IMAGES, "is a link to nothing", _images_with_a_dangling_link
        ),
        # Run directories: a resume of a damaged, linked or busy run is refused, the run kept.
        "resume empty": Case("train", ["resume="], "resume.path"),
        "resume missing": Case("train", ["resume={tmp}/nowhere"], "resume.path"),
        # Another split of the global batch is allowed; another global batch is another run.
        "resume with another global batch": Case(
            "train",
            ["resume={run}", "trainer.accumulate_grad_batches=2"],
            "loader.global_batch_size",
            run_dir="{run}",
        ),
        # FSDP2 resumes a sharded checkpoint only (a sharded one resumes anywhere).
        "resume a one-file checkpoint with fsdp": Case(
            "train",
            ["resume={run}", "trainer.distributed=fsdp"],
            "trainer.distributed='fsdp' is not allowed: False to resume",
            run_dir="{run}",
        ),
        "resume run.json garbage": Case(
            "train", ["resume={run}"], "run.json", _damage("run.json", "{not json"), "{run}"
        ),
        "resume run.json a list": Case(
            "train", ["resume={run}"], "run.json", _damage("run.json", "[1, 2]"), "{run}"
        ),
        "resume environment.json garbage": Case(
            "train",
            ["resume={run}"],
            "environment.json",
            _damage("environment.json", b"\x00\xff"),
            "{run}",
        ),
        "resume metrics.jsonl garbage": Case(
            "train",
            ["resume={run}"],
            "metrics.jsonl line 1",
            _damage("metrics.jsonl", "garbage\n" * 400),
            "{run}",
        ),
        "resume metrics.jsonl a link": Case(
            "train",
            ["resume={run}"],
            "metrics.jsonl is a symbolic link",
            _link("metrics.jsonl", "{tmp}/victim.txt"),
            "{run}",
        ),
        "resume train.log a link": Case(
            "train",
            ["resume={run}"],
            "train.log is a symbolic link",
            _link("train.log", "{tmp}/victim.txt"),
            "{run}",
        ),
        "resume run.json a link": Case(
            "train",
            ["resume={run}"],
            "run.json is a symbolic link",
            _link("run.json", "{tmp}/victim.txt"),
            "{run}",
        ),
        "resume last.pt truncated": Case(
            "train", ["resume={run}"], "last.pt", _last_pt("truncated"), "{run}"
        ),
        "resume last.pt empty": Case(
            "train", ["resume={run}"], "last.pt", _last_pt("empty"), "{run}"
        ),
        "resume last.pt to /dev/zero": Case(
            "train", ["resume={run}"], "last.pt", _last_pt("zero"), "{run}"
        ),
        "resume last.pt a fifo": Case(
            "train", ["resume={run}"], "last.pt", _last_pt("fifo"), "{run}"
        ),
        "resume last.pt outside": Case(
            "train", ["resume={run}"], "outside", _last_pt("outside"), "{run}"
        ),
        "resume payload target": Case(
            "train", ["resume={run}"], "model._target_='numpy.save'", _payload, "{run}"
        ),
        "resume locked": Case(
            "train", ["resume={run}"], "is being written by process", _hold_lock, "{run}"
        ),
        "resume unsafe change": Case(
            "train", ["resume={run}", "optim.lr=0.5"], "optim.lr", None, "{run}"
        ),
        "resume too few epochs": Case(
            "train", ["resume={run}", "trainer.epochs=0"], "trainer.epochs", None, "{run}"
        ),
        "resume another run": Case(
            "train", ["resume={tmp}/other"], "resume.path", _other_run, "{run}"
        ),
        "new run over an old one": Case("train", TINY, "already holds a run", None, "{run}"),
        # eval.py
        "eval no ckpt": Case("eval", [], "ckpt is missing"),
        "eval not key=value": Case("eval", ["{ckpt}", "split"], "is not key=value"),
        "eval unknown key": Case("eval", ["ckpt={ckpt}", "bogus=1"], "bogus"),
        "eval missing ckpt": Case("eval", ["ckpt={tmp}/missing.pt"], "missing.pt"),
        "eval split": Case("eval", ["ckpt={ckpt}", "split=holdout"], "split"),
        "eval device": Case("eval", ["ckpt={ckpt}", "device=tpu"], "device"),
        "eval out unwritable": Case(
            "eval", ["ckpt={ckpt}", "out=/proc/no/such/eval.json"], "eval.json cannot be written"
        ),
        "eval ckpt truncated": Case("eval", ["ckpt={ckpt}"], "last.pt", _last_pt("truncated")),
        "eval ckpt /dev/zero": Case("eval", ["ckpt={ckpt}"], "last.pt", _last_pt("zero")),
        "eval ckpt fifo": Case("eval", ["ckpt={ckpt}"], "last.pt", _last_pt("fifo")),
        "eval ckpt payload": Case("eval", ["ckpt={ckpt}"], "model._target_='numpy.save'", _payload),
        "eval ckpt a directory": Case("eval", ["ckpt={run}"], "checkpoint"),
        "eval ckpt text": Case(
            "eval",
            ["ckpt={tmp}/notes.pt"],
            "notes.pt",
            lambda tmp, run: _write(tmp / "notes.pt", "hello"),
        ),
        # verify --against
        "verify against missing": Case("verify", ["--against", "{tmp}/nowhere"], "nowhere"),
        "verify against garbage config": Case(
            "verify", ["--against", "{run}"], "config.yaml", _damage("config.yaml", ": : [\n")
        ),
        "verify against payload": Case(
            "verify", ["--against", "{run}", "--out", "{tmp}/v"], "numpy.save", _payload
        ),
        "verify against hydra key": Case(
            "verify",
            ["--against", "{run}", "--out", "{tmp}/v"],
            "'hydra'",
            lambda tmp, run: _write(
                run / "config.yaml", (run / "config.yaml").read_text() + "hydra:\n  job: {}\n"
            ),
        ),
        "verify into a used --out": Case(
            "verify",
            ["--out", "{tmp}/v", *TINY],
            "already holds a run",
            lambda tmp, run: shutil.copytree(run, tmp / "v" / "first", symlinks=True),
        ),
        "verify against with overrides": Case(
            "verify", ["--against", "{run}", "seed=3"], "overrides seed=3"
        ),
        # compare
        "compare missing": Case("compare", ["{tmp}/nowhere", "{run}"], "nowhere"),
        "compare run.json garbage": Case(
            "compare", ["{run}", "{run}"], "run.json", _damage("run.json", "{")
        ),
        "compare environment.json garbage": Case(
            "compare", ["{run}", "{run}"], "environment.json", _damage("environment.json", "[")
        ),
        "compare metrics.jsonl garbage": Case(
            "compare", ["{run}", "{run}"], "metrics.jsonl", _damage("metrics.jsonl", "{\n")
        ),
        "compare config.yaml garbage": Case(
            "compare", ["{run}", "{run}"], "config.yaml", _damage("config.yaml", "a: [\n")
        ),
        "compare last.pt truncated": Case(
            "compare", ["{run}", "{run}"], "last.pt", _last_pt("truncated")
        ),
        "verify --out a run directory": Case(
            "verify", ["--out", "{run}", *TINY], "/run is a run directory: verify writes"
        ),
        "verify unknown flag": Case("verify", ["--bogus"], "unrecognized arguments: --bogus"),
        "verify --against without a value": Case("verify", ["--against"], "expected one argument"),
        "compare one run": Case("compare", ["{run}"], "the following arguments are required: b"),
        "compare unknown flag": Case("compare", ["{run}", "{run}", "--csv"], "--csv"),
        # summarize
        "summarize missing": Case("summarize", ["{tmp}/nowhere"], "sweep_dir"),
        "summarize a file": Case("summarize", ["{run}/run.json"], "sweep_dir"),
        "summarize two dirs": Case("summarize", ["{run}", "{run}"], "sweep_dir"),
        "summarize a run directory": Case("summarize", ["{run}"], "it is a run directory"),
        "summarize an empty directory": Case(
            "summarize",
            ["{tmp}/empty"],
            "it holds no job directories",
            lambda tmp, run: (tmp / "empty").mkdir(),
        ),
        "summarize a data directory": Case(
            "summarize", ["{tmp}/images"], "it holds no job directories", _images
        ),
    }
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One small finished run, copied for each case."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    record = train_in_process(run_dir, *TINY)
    assert record["status"] == "completed"
    return run_dir


def _in_process(call: Callable[[], int | None]) -> tuple[int, str, str]:
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
    try:
        code = call()
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    finally:
        out, err = sys.stdout.getvalue(), sys.stderr.getvalue()
        sys.stdout, sys.stderr = stdout, stderr
    return code or 0, out, err


def _run(tool: str, args: list[str], run_dir: Path) -> tuple[int, str, str]:
    if tool == "train":
        return run_cli(run_dir, *args)
    if tool == "eval":
        argv = sys.argv

        def call() -> None:
            sys.argv = ["eval.py", *args]
            try:
                evaluate.cli()
            finally:
                sys.argv = argv

        return _in_process(call)
    if tool == "verify":  # run, as a user does, for the project (the example) it belongs to
        args = [*args, "--project", str(PROJECT)]
    main = {"verify": verify.main, "compare": compare.main, "summarize": summarize.main}[tool]
    return _in_process(lambda: main(args))


def test_the_table_is_large_enough():
    assert len(CASES) >= 80


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_exit_2(name, finished, tmp_path):
    case = CASES[name]
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    if case.prepare is not None:
        case.prepare(tmp_path, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and not p.is_symlink()}
    names = sorted(p.name for p in run.iterdir())
    fill = {"tmp": tmp_path, "run": run, "ckpt": run / "checkpoints" / "last.pt"}
    args = [arg.format(**fill) for arg in case.args]
    run_dir = Path(case.run_dir.format(**fill))
    try:
        code, out, err = _run(case.tool, args, run_dir)
    finally:
        while HELD:
            HELD.pop().release()

    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1, err
    assert "Traceback" not in out + err
    assert case.names in lines[0], lines[0]
    assert not (tmp_path / "pwned.npy").exists()  # no payload ever ran
    if (tmp_path / "victim.txt").exists():
        assert (tmp_path / "victim.txt").read_text() == "a user's file\n"
    # Nothing is added to the finished run, or changed in it, status included (a refused
    # resume of it may add its own lines to train.log, never remove any).
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.name in before}
    log = "train.log"
    assert after.pop(log, b"").startswith(before.pop(log, b""))
    assert after == before
    if run_dir != run:
        assert sorted(p.name for p in run.iterdir()) == names
    if run_dir != run and case.tool == "train" and (run_dir / "run.json").exists():
        record = read_run(run_dir)
        assert record["status"] == "failed"
        assert record["error"] in lines[0]


def test_a_summary_lists_an_unreadable_job_instead_of_failing(finished, tmp_path):
    sweep = tmp_path / "sweep"
    for job in ("0", "1"):
        shutil.copytree(finished, sweep / job, symlinks=True)
    (sweep / "1" / "run.json").write_text("{cut")
    summary = summarize.write_summary(sweep)
    assert summary["completed"] == 1
    [failed] = summary["failed"]
    assert failed["run_dir"] == "1" and "run.json" in failed["error"]
    assert json.loads((sweep / "summary.json").read_text())["jobs"] == 2


def test_a_resume_without_metrics_jsonl_continues_and_says_so(finished, tmp_path):
    run = Path(shutil.copytree(finished, tmp_path / "run", symlinks=True))
    (run / "metrics.jsonl").unlink()
    record = train_in_process(run, f"resume={run}", "trainer.epochs=2")
    assert record["status"] == "completed"
    assert record["resumes"][-1]["metrics_note"].startswith("metrics.jsonl is missing: lost")
    assert [r["epoch"] for r in read_metrics(run / "metrics.jsonl")][-1] == 1  # epoch 2's


def test_a_full_disk_while_hydra_writes_its_record_is_one_line(tmp_path, monkeypatch):
    def full(cfg: object, filename: str, output_dir: Path) -> None:  # Hydra's signature
        raise OSError(errno.ENOSPC, "No space left on device", str(output_dir / filename))

    monkeypatch.setattr(hydra_utils, "_save_config", full)
    code, _, err = run_cli(tmp_path / "run", *TINY)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: ") and "config.yaml cannot be written: No space left" in err


def test_a_slurm_sweep_where_slurm_is_not_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no srun here, nor on a cluster
    sweep = tmp_path / "sweep"
    code, _, err = run_cli(tmp_path / "x", "-m", f"hydra.sweep.dir={sweep}", "hydra/launcher=slurm")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: hydra/launcher=slurm needs a SLURM cluster: srun and sbatch")
    assert not sweep.exists()
