"""Received runs are inert: nothing in a checkpoint, run directory or data folder from elsewhere
runs code, reaches the network, writes outside its place or reads without bound.

A table of attacks on a copy of one small finished run, each tried through every entry that
reads received files (eval.py, a resume with and without resume.force, verify --against,
compare, summarize), each with a control that shows the payload acts when built or read
outside seedbed. For every entry: one that refuses exits 2 with one line naming the file or
key; none creates a marker or a folder outside, reads past a limit (/proc/self/io's rchar),
contacts a host (a local listening socket counts connections) or writes a planted secret
anywhere; a refused resume leaves the run directory byte for byte as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import socket
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from helpers import IN_PROJECT, read_run, run_cli
from hydra.utils import instantiate
from omegaconf import OmegaConf
from test_bad_inputs import TINY, _in_process
from test_hardening import _eval

from seedbed.core.checkpoint import CHECKSUM_TAG, TRAILER_SIZE, load_checkpoint, save_checkpoint
from seedbed.core.files import READ_LIMITS
from seedbed.tools import compare, summarize, verify

ENTRIES = ("eval", "resume", "resume force", "verify", "compare", "summarize")
# Far below any read limit (the smallest is 16 MiB), far above what the entries read here.
READ_BUDGET = 15 * 2**20


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One small finished run, as the command line makes it (Hydra's .hydra/ record too)."""
    run_dir = tmp_path_factory.mktemp("received") / "run"
    code, _, err = run_cli(run_dir, *TINY)
    assert code == 0 and read_run(run_dir)["status"] == "completed", err
    return run_dir


class Listener:
    """A local TCP socket that counts the connections made to it."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                connection, _ = self.socket.accept()
                self.connections += 1
                connection.close()  # no answer: the client fails, as without a network

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


@dataclass
class Env:
    """What a payload aims at, and what must stay untouched."""

    tmp: Path
    url: str
    secret: str
    marker: Path = field(init=False)
    outside: Path = field(init=False)

    def __post_init__(self) -> None:
        self.marker = self.tmp / "pwned.npy"
        self.outside = self.tmp / "outside"


@pytest.fixture
def env(tmp_path, monkeypatch) -> Iterator[Env]:
    listener = Listener()
    secret = f"s3cr3t-{os.getpid()}-{id(tmp_path)}"
    monkeypatch.setenv("SEEDBED_TEST_SECRET", secret)
    try:
        yield Env(tmp_path, listener.url, secret)
    finally:
        listener.close()
        assert listener.connections == 0, f"{listener.connections} connection(s) to {listener.url}"


def rchar() -> int | None:
    """Bytes this process has read so far (Linux), or None where that is not known."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def tree_hash(root: Path) -> str:
    """Every entry under `root` (links not followed): names, kinds, link targets, contents
    (a large sparse file by its size and ends)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        digest.update(f"{path.relative_to(root)}|{info.st_mode:o}|".encode())
        if path.is_symlink():
            digest.update(os.readlink(path).encode())
        elif path.is_file() and not path.is_fifo():
            if info.st_size > 16 * 2**20:
                with path.open("rb") as file:
                    digest.update(f"{info.st_size}".encode() + file.read(4096))
            else:
                digest.update(path.read_bytes())
    return digest.hexdigest()


# -- the payloads ----------------------------------------------------------------------------


def oc_create(marker: Path) -> str:
    """A resolver call that builds numpy.save when the config is resolved and instantiated
    (planted as task.loss, which is built with its own arguments only)."""
    return f"${{oc.create:{{_target_: numpy.save, file: '{marker}', arr: [1]}}}}"


def plant_config(run: Path, change: Callable[[dict], None]) -> None:
    """Apply `change` to every checkpoint's stored config and to config.yaml."""
    for path in (run / "checkpoints").glob("*.pt"):
        if not path.is_symlink():
            checkpoint = load_checkpoint(path)
            change(checkpoint["config"])
            save_checkpoint(path, checkpoint)
    config = yaml.safe_load((run / "config.yaml").read_text())
    change(config)
    (run / "config.yaml").write_text(yaml.safe_dump(config))


def plant_hydra(run: Path, name: str, change: Callable[[object], object]) -> None:
    path = run / ".hydra" / name
    path.write_text(yaml.safe_dump(change(yaml.safe_load(path.read_text()))))


def set_key(key: str, value: object) -> Callable[[dict], None]:
    def change(config: dict) -> None:
        *parents, last = key.split(".")
        for part in parents:
            config = config[part]
        config[last] = value

    return change


def with_cwd(value: str) -> Callable[[object], object]:
    def change(record: object) -> object:
        record["hydra"]["runtime"]["cwd"] = value  # type: ignore[index]
        return record

    return change


def plant_archive(run: Path, env: Env) -> None:
    member = env.tmp / "pwned.txt"
    member.write_text("written by the archive\n")
    with tarfile.open(run / "payload.tar", "w") as archive:
        archive.add(member, arcname="pwned.txt")
    member.unlink()


def plant_extract(run: Path, env: Env) -> None:
    plant_archive(run, env)
    plant_config(run, set_key("task.loss", extract_archive(run, env)))


def special_file(name: str, how: str) -> Callable[[Path, Path, Env], None]:
    """`name` in the run made a link to /dev/zero, a FIFO, or a sparse file past its limit."""

    def plant(tmp: Path, run: Path, env: Env) -> None:
        path = run / name
        path.unlink(missing_ok=True)
        if how == "zero":
            path.symlink_to("/dev/zero")
        elif how == "fifo":
            os.mkfifo(path)
        else:  # one byte more than a file of its kind may hold; sparse: no disk, nothing read
            with path.open("wb") as file:
                file.truncate(READ_LIMITS[how] + 1)

    return plant


def deflated(payload: bytes) -> bytes:
    """torch.save's zip with every record compressed (torch.load inflates them)."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(payload)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as packed,
    ):
        for member in source.infolist():
            packed.writestr(member.filename, source.read(member.filename))
    return out.getvalue()


def compress_checkpoints(tmp: Path, run: Path, env: Env) -> None:
    """Every checkpoint rewritten with compressed records, its checksum trailer made anew."""
    for path in (run / "checkpoints").glob("*.pt"):
        if not path.is_symlink():
            payload = deflated(path.read_bytes()[:-TRAILER_SIZE])
            digest = hashlib.sha256(payload).hexdigest().encode()
            path.write_bytes(payload + CHECKSUM_TAG + digest + b"\n")


def hard_link(tmp: Path, run: Path, env: Env) -> None:
    outside = tmp / "victim.txt"
    outside.write_bytes((run / "metrics.jsonl").read_bytes())
    (run / "metrics.jsonl").unlink()
    os.link(outside, run / "metrics.jsonl")


# -- the controls: each payload acts when built or read outside seedbed -----------------------


def control_oc_create(env: Env) -> None:
    instantiate(OmegaConf.create({"model": oc_create(env.marker)}).model)
    assert env.marker.exists()


def control_oc_env(env: Env) -> None:
    config = OmegaConf.create({"log_dir": "${oc.env:SEEDBED_TEST_SECRET}"})
    assert config.log_dir == env.secret


def control_extract(env: Env) -> None:
    run = env.tmp / "control"
    run.mkdir()
    plant_archive(run, env)
    instantiate(extract_archive(run, env))
    assert (env.outside / "pwned.txt").exists()


def control_zero(env: Env) -> None:
    with open("/dev/zero", "rb") as file:  # noqa: PTH123 - a device, read as any file is
        assert len(file.read(2**20)) == 2**20 and file.read(1)  # no end to it


def control_fifo(env: Env) -> None:
    fifo = env.tmp / "control.fifo"
    os.mkfifo(fifo)
    opened = threading.Event()

    def read() -> None:
        with open(fifo, "rb"):  # noqa: PTH123 - waits for a writer that never comes
            opened.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert not opened.wait(0.3)  # a plain open hangs
    os.close(os.open(fifo, os.O_WRONLY))  # let it go
    reader.join()


def control_oversized(env: Env) -> None:
    path = env.tmp / "big"
    special_file("big", "metrics log")(env.tmp, env.tmp, env)
    assert path.stat().st_size > READ_LIMITS["metrics log"]  # reading it whole would take that


def control_compressed(env: Env) -> None:
    """A compressed record is inflated to whatever size it declares: 64 MiB of zeros here
    from a file of a few hundred KB."""
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(16 * 2**20)}, buffer)
    payload = deflated(buffer.getvalue())
    assert len(payload) < 2**20
    assert torch.load(io.BytesIO(payload), weights_only=True)["w"].numel() == 16 * 2**20


def control_hard_link(env: Env) -> None:
    outside = env.tmp / "victim.txt"
    outside.write_text("a user's file\n")
    os.link(outside, env.tmp / "metrics.jsonl")
    os.truncate(env.tmp / "metrics.jsonl", 0)  # what a resume's rewind does to metrics.jsonl
    assert outside.read_text() == ""


def download_url(env: Env) -> dict:
    return {
        "_target_": "torchvision.datasets.utils.download_url",
        "url": f"{env.url}/weights.tar",
        "root": str(env.outside),
    }


def extract_archive(run: Path, env: Env) -> dict:
    return {
        "_target_": "torchvision.datasets.utils.extract_archive",
        "from_path": str(run / "payload.tar"),
        "to_path": str(env.outside),
    }


# -- the table -------------------------------------------------------------------------------


@dataclass
class Attack:
    plant: Callable[[Path, Path, Env], None]  # (tmp, run, env)
    refused: dict[str, str]  # entry -> what its one line names
    read_only: tuple[str, ...] = ()  # entries that read it without building: nothing may act
    control: Callable[[Env], None] | None = None


SPECIAL = {"zero": control_zero, "fifo": control_fifo}
ATTACKS: dict[str, Attack] = {
    "oc.create in the stored config and config.yaml": Attack(
        lambda tmp, run, env: plant_config(run, set_key("task.loss", oc_create(env.marker))),
        {e: "task.loss=" for e in ("eval", "resume", "resume force", "verify")},
        ("compare", "summarize"),
        control_oc_create,
    ),
    "oc.env in a logger's log_dir": Attack(
        lambda tmp, run, env: plant_config(
            run,
            set_key("logger", {"tensorboard": {"log_dir": "${oc.env:SEEDBED_TEST_SECRET}"}}),
        ),
        {e: "logger.tensorboard.log_dir=" for e in ("eval", "resume", "resume force", "verify")},
        ("compare", "summarize"),
        control_oc_env,
    ),
    "oc.env for the working directory in .hydra/hydra.yaml": Attack(
        lambda tmp, run, env: plant_hydra(
            run, "hydra.yaml", with_cwd("${oc.env:SEEDBED_TEST_SECRET}")
        ),
        {"verify": "hydra.runtime.cwd="},
        ("compare", "summarize"),
        control_oc_env,
    ),
    "oc.create in .hydra/overrides.yaml": Attack(
        lambda tmp, run, env: plant_hydra(
            run, "overrides.yaml", lambda o: [*o, f"+x={oc_create(env.marker)}"]
        ),
        {},
        ("summarize", "compare"),
        control_oc_create,
    ),
    "download_url, a utility of an allowed package": Attack(
        lambda tmp, run, env: plant_config(run, set_key("task.loss", download_url(env))),
        {e: "download_url" for e in ("eval", "resume", "resume force", "verify")},
        ("compare", "summarize"),
        None,  # test_the_download_payload_contacts_a_host_when_built: its own listener
    ),
    "extract_archive, a utility of an allowed package": Attack(
        lambda tmp, run, env: plant_extract(run, env),
        {e: "extract_archive" for e in ("eval", "resume", "resume force", "verify")},
        ("compare", "summarize"),
        control_extract,
    ),
    "checkpoints whose records are compressed (a zip bomb)": Attack(
        compress_checkpoints,
        {e: "compressed record" for e in ("eval", "resume", "resume force", "compare")},
        (),
        control_compressed,
    ),
    "metrics.jsonl hard-linked to a file outside": Attack(
        hard_link,
        {e: "metrics.jsonl is refused: it is hard-linked" for e in ("resume", "resume force")},
        ("compare", "summarize"),
        control_hard_link,
    ),
}
# Files that are not what they seem, by the entries that read them (resume.force changes
# which config changes a resume takes, not how it reads files: one resume stands for both).
READERS = {
    "run.json": ("eval", "resume", "verify", "compare", "summarize"),
    "environment.json": ("resume", "compare"),
    "metrics.jsonl": ("resume", "compare", "summarize"),
    "config.yaml": ("resume", "verify", "compare"),
    ".hydra/hydra.yaml": ("verify",),
    ".hydra/overrides.yaml": ("summarize",),
}
for name, readers in READERS.items():
    for how, control in SPECIAL.items():
        ATTACKS[f"{name}: {'a link to /dev/zero' if how == 'zero' else 'a FIFO'}"] = Attack(
            special_file(name, how), dict.fromkeys(readers, name), (), control
        )
# One past the limit of each kind, through one entry that reads it.
for name, kind, entry in (
    ("run.json", "JSON record", "compare"),
    ("config.yaml", "YAML config", "verify"),
    ("metrics.jsonl", "metrics log", "resume"),
    (".hydra/overrides.yaml", "YAML config", "summarize"),
):
    ATTACKS[f"{name}: past the {kind} limit"] = Attack(
        special_file(name, kind), {entry: f"{name} is refused"}, (), control_oversized
    )

CASES = [
    (attack, entry)
    for attack, case in ATTACKS.items()
    for entry in ENTRIES
    if entry in case.refused or entry in case.read_only
]


def run_entry(entry: str, run: Path, reference: Path, env: Env) -> tuple[int, str, str]:
    if entry == "eval":
        return _eval(["eval.py", f"ckpt={run / 'checkpoints' / 'last.pt'}"])
    if entry == "resume":
        return run_cli(run, f"resume={run}")
    if entry == "resume force":
        return run_cli(run, f"resume={run}", "resume.force=true")
    if entry == "verify":
        out = env.tmp / "verify"
        return _in_process(
            lambda: verify.main(["--against", str(run), "--out", str(out), *IN_PROJECT])
        )
    if entry == "compare":
        return _in_process(lambda: compare.main([str(reference), str(run)]))
    return _in_process(lambda: summarize.main([str(run.parent)]))


def test_the_table_covers_every_entry_and_kind_of_payload():
    assert {entry for _, entry in CASES} == set(ENTRIES)
    assert len(CASES) >= 60
    assert all(case.control is not None for name, case in ATTACKS.items() if "download" not in name)


@pytest.mark.timeout(60)  # a read that hangs (a FIFO) fails here, not after ten minutes
@pytest.mark.parametrize(("attack", "entry"), CASES, ids=[f"{a} | {e}" for a, e in CASES])
def test_a_received_run_is_inert(attack, entry, finished, env):
    case = ATTACKS[attack]
    # summarize reads a sweep: the run is its job 0.
    run = env.tmp / ("sweep/0" if entry == "summarize" else "run")
    shutil.copytree(finished, run, symlinks=True)
    case.plant(env.tmp, run, env)
    before = tree_hash(run)
    if entry == "summarize":
        pytest.importorskip("matplotlib.pyplot")  # imported before the reads are counted
    read_before = rchar()

    code, out, err = run_entry(entry, run, finished, env)

    read = rchar()
    if read is not None and read_before is not None:
        assert read - read_before < READ_BUDGET, f"read {read - read_before} bytes"
    assert "Traceback" not in out + err, err[-3000:]
    assert not env.marker.exists() and not env.outside.exists()
    found = [p for p in env.tmp.rglob("*") if p.is_file() and not p.is_fifo()]
    assert not any(env.secret.encode() in p.read_bytes() for p in found if p.stat().st_size < 2**24)
    if entry in case.refused:
        expected = case.refused[entry]
        if entry == "summarize":  # an unreadable job (or its curve) is named in the summary
            assert code == 0, err[-3000:]
            named = (run.parent / "summary.md").read_text()
            assert expected in named and " is refused: " in named, named
        else:
            lines = [line for line in err.splitlines() if line.strip()]
            assert code == 2 and len(lines) == 1, err[-3000:]
            assert expected in lines[0], lines[0]
            assert not (env.tmp / "verify" / "rerun").exists()
    else:
        assert code in (0, 1), err[-3000:]  # read as data: compared, summarised
    if entry.startswith("resume"):
        assert tree_hash(run) == before  # refused: the run is byte for byte as it was
    if (env.tmp / "victim.txt").exists():
        assert (env.tmp / "victim.txt").read_bytes() == (finished / "metrics.jsonl").read_bytes()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("attack", [a for a, c in ATTACKS.items() if c.control is not None])
def test_each_payload_acts_when_built_or_read_outside_seedbed(attack, tmp_path, monkeypatch):
    monkeypatch.setenv("SEEDBED_TEST_SECRET", "the secret")
    env = Env(tmp_path, "http://127.0.0.1:9", "the secret")
    ATTACKS[attack].control(env)


def test_the_download_payload_contacts_a_host_when_built(tmp_path):
    listener = Listener()
    try:
        env = Env(tmp_path, listener.url, "")
        with contextlib.suppress(Exception):  # the listener never answers
            instantiate(download_url(env))
        assert listener.connections >= 1
    finally:
        listener.close()
