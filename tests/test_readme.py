"""The README and docs/, executed: every command block a reader is told to run is run as written.

sybil reads README.md and the pages of docs/ into examples, in the order a reader meets
them (the README's table of pages):
- a block of shell commands (indented, every line a command) runs line by line, in one
  scratch copy of this clone shared by all the pages, so a later `resume=` or `compare`
  finds the runs the earlier lines made; `make` runs in the clone's root, as the README
  says, every other command in the example project (`example/`, where train.py is);
- a code block whose first line names a file (`# make_prices.py: ...`,
  `# configs/task/multilabel.yaml`) is written there, for the commands after it.

"As written" means the line itself, with two conventions a reader applies too: a
placeholder (`outputs/train/<run>`, `<a>`, `<b>`, `<...>.pt`, `multirun/<sweep>`) stands
for the newest run (sweep) the lines before made, and `SEEDBED_DEBUG=smoke` is set, so every
new training run is `debug=smoke` (1 epoch of 5 batches, as documented) unless the line says
otherwise. seedbed's own entry points (`python <script>`, `python -m seedbed...`, the
`seedbed-*` console scripts) run in this process, without paying for a new interpreter
each time; everything else (`make`, `torchrun`, and whatever those start) in a fresh
process. Every line must exit 0 (`compare`: 0 or 1, documented). A line met a second time
(the same command in another section) is run once.

Every line not run here says why, and a test keeps each reason true: NOT_RUN (it cannot run
here; the line must still be in the README), SHARED (a test of the suite makes the same
run, checking more: the line's overrides must be in that test's source), GAPS (a known,
filed failure: the block is an expected failure until the fix lands, then the line runs).
The README documents the template's default experiment; in a project that made another
one its default, the README is the project's to rewrite, and these tests say so (a skip).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from helpers import PROJECT_CONFIGS, ROOT
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from sybil import Document, Region, Sybil
from sybil.parsers.markdown.lexers import FencedCodeBlockLexer

README = ROOT / "README.md"
# The pages in the order the README's table lists them (real-data.md makes the data the
# later pages train on).
PAGES = [
    README,
    *(
        ROOT / "docs" / f"{name}.md"
        for name in (
            "real-data",
            "seeding",
            "threads",
            "run-directory",
            "resume",
            "loop",
            "sweeps",
            "distributed",
            "data",
            "your-project",
            "bad-input",
            "safety",
            "checking",
            "callbacks",
            "debugging",
            "logging",
            "docker",
            "notebook",
            "performance",
            "config",
            "layers",
        )
    ),
]
VENV_BIN = Path(sys.executable).parent

# The first word of a command a reader is told to run; a block of only such lines is run.
COMMANDS = ("python", "make", "pip", ".venv/bin/", "docker", "torchrun", "bash", "seedbed-")

# Lines (by their start) that are not run here, and why.
NOT_RUN = {
    "make test": "runs this test suite (test-example: tests/test_generated_project.py runs a "
    "new project's make test)",
    "make example": "re-renders example/, which these tests run in (tests/test_project.py "
    "checks it equals a fresh render)",
    "make lint": "CI's own step (ruff, ruff format, mypy); the suite does not lint itself",
    "make clean": "deletes .venv, the environment these tests run in",
    "make clean-runs": "asks before deleting (no one to answer here)",
    "make lock": "rewrites requirements.lock from the installed packages",
    "make bench": "the benchmarks: minutes of timing, numbers to read, not tests",
    "python benchmarks/run.py": "the benchmarks: minutes of timing, numbers to read, not tests",
    "bash scripts/gpu_check.sh": "needs a CUDA GPU (tests/test_cuda.py runs where there is one)",
    ".venv/bin/pre-commit install": "installs git hooks into your clone",
    "pip install": "installs packages: the dev extra the tests run with has them all",
    ".venv/bin/pip install": "installs packages: the dev extra the tests run with has them all",
    "docker": "no container engine here: tests/test_tooling.py lints the project's Dockerfile",
    "python train.py data=mnist data.root=data data.download=true": (
        "downloads MNIST: tests/test_data_sources.py trains on files in its format"
    ),
    "python train.py data=cifar10 data.root=data data.download=true": (
        "downloads CIFAR-10: tests/test_data_sources.py trains on files in its format"
    ),
    "python train.py -m seed='range(0,32)' hydra/launcher=slurm": "needs a SLURM cluster",
    "python train.py trainer.precision=16-mixed": (
        "needs CUDA (on a CPU it is refused in one line: tests/test_trainer_precision.py)"
    ),
}


@dataclass(frozen=True)
class Shared:
    """A line whose run a test of the suite makes, at the test's small settings, checking
    more than an exit status: run there, not twice. The line's `words` are in that test's
    source, word for word (a test below checks it), so neither can change alone."""

    test: str  # <module>::<function>, in tests/
    words: tuple[str, ...]
    how: str


# Lines (as written, without their comment) run by another test; each starts processes of
# its own (ranks, workers, jobs) or runs many trials.
SHARED = {
    "torchrun --nproc_per_node=2 train.py trainer.distributed=true seed=42": Shared(
        "test_distributed::runs",
        ("trainer.distributed=true",),
        "twice under torchrun --nproc_per_node=2 (helpers.torchrun), compared bit for bit",
    ),
    "torchrun --nproc_per_node=2 train.py trainer.distributed=true loader.global_batch_size=64": (
        Shared(
            "test_distributed::runs",
            ("trainer.distributed=true",),
            "on 1, 2 and 4 ranks at a global batch of 32: each step's samples compared",
        )
    ),
    "torchrun --nproc_per_node=4 train.py trainer.distributed=true loader.global_batch_size=64 "
    "trainer.accumulate_grad_batches=2": Shared(
        "test_distributed::runs",
        ("trainer.distributed=true", "trainer.accumulate_grad_batches=2"),
        "on 4 ranks with accumulation 2 at a global batch of 32, against 1 and 2 ranks",
    ),
    "torchrun --nproc_per_node=2 train.py trainer.distributed=fsdp": Shared(
        "test_fsdp::runs",
        ("trainer.distributed=fsdp",),
        "on 2 ranks, against one process, twice, stopped and resumed, resumed on 1 rank",
    ),
    "python train.py -m seed=0,1,2,3 hydra/launcher=joblib hydra.launcher.n_jobs=2": Shared(
        "test_sweeps::test_joblib_parallel_jobs_give_the_sequential_weights",
        ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
        "on seeds 0 and 1, compared with the sequential sweep's runs",
    ),
    "python train.py -m seed=0,1 hydra/launcher=submitit_local": Shared(
        "test_sweeps::test_submitit_local_runs_every_job",
        ("seed=0,1", "hydra/launcher=submitit_local"),
        "every job completed, and the summary",
    ),
    "python train.py -m hparams_search=optuna": Shared(
        "test_sweeps::test_optuna_search_is_reproducible",
        ("hparams_search=optuna",),
        "twice with hydra.sweeper.n_trials=3 (as the README says, for a short search): the "
        "same trials",
    ),
}

# Lines whose documented outcome is another exit status too.
EXITS = {
    "python -m seedbed.tools.compare": (0, 1),  # 1: the two runs differ, as documented
    "seedbed-compare": (0, 1),
}


@dataclass(frozen=True)
class Gap:
    """A line that fails here for a known, filed reason, until `fixed()`: the block's other
    lines still run and its test is an expected failure; once fixed, the line runs like any
    other. Only a failure whose output shows `symptom` is taken for the gap."""

    contains: str
    symptom: str
    reason: str
    fixed: Callable[[], bool]


# None open: ResNet-18's run (BatchNorm's 0-dim buffer) was one until the records issue.
GAPS: tuple[Gap, ...] = ()

PLACEHOLDER = re.compile(r"<(run|a|b|sweep|\.\.\.)>")


def indented_command_blocks(document: Document) -> Iterable[Region]:
    """Regions of the README's indented code blocks whose every line is a command."""
    text = document.text
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    index = 0
    while index < len(lines):
        starts_block = lines[index].startswith("    ") and (
            index == 0 or not lines[index - 1].strip()
        )
        if not starts_block or lines[index].lstrip().startswith(("$", "```")):
            index += 1
            continue
        end = index
        while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
            end += 1
        block = "".join(line[4:] for line in lines[index:end])
        commands = logical_lines(block)
        if commands and all(command.startswith(COMMANDS) for command in commands):
            yield Region(offsets[index], offsets[end], commands, run_commands)
        index = end


def logical_lines(block: str) -> list[str]:
    """The commands of a block: continuation lines joined; blank lines and lines that are
    only a comment (one continuing the comment above) dropped."""
    lines = (line.strip() for line in block.replace("\\\n", " ").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def file_blocks(document: Document) -> Iterable[Region]:
    """Fenced python/yaml blocks whose first line is `# <path>`: files a reader creates."""
    for region in FencedCodeBlockLexer(language=r"python|yaml")(document):
        source = str(region.lexemes["source"])
        first = source.splitlines()[0] if source else ""
        match = re.match(r"# ([\w./-]+\.(py|yaml))\b", first)
        if match:
            yield Region(region.start, region.end, (match.group(1), source), write_file)


def not_run_reason(command: str) -> str | None:
    return next((why for start, why in NOT_RUN.items() if command.startswith(start)), None)


# --- running a line --------------------------------------------------------------------------


class Scratch:
    """The reader's clone: a copy of this checkout, and the runs made in its example project
    so far (`path`: the project, where the commands run; `clone`: the clone's root)."""

    def __init__(self, clone: Path) -> None:
        self.clone = clone
        self.path = clone / "example"
        self.runs: list[Path] = []
        self.sweeps: list[Path] = []
        self.ran: dict[str, Gap | None] = {}  # each command run, and the gap it showed

    def new_dirs(self, parent: str, before: set[Path]) -> list[Path]:
        """The directories under `parent` made since `before`, oldest first; not a DDP run's
        (a reader picks a run of their own for `<run>`, not one that needs torchrun)."""
        found = set((self.path / parent).glob("*")) if (self.path / parent).is_dir() else set()
        made = [d for d in found - before if d.is_dir() and not distributed(d)]
        return sorted(made, key=lambda d: d.stat().st_mtime)

    def expand(self, command: str) -> str:
        """The placeholders in `command` (a line, or one of its words) replaced by the runs
        they stand for."""

        def run(back: int) -> str:
            if len(self.runs) < back:
                raise AssertionError(f"{command!r}: no run made before it for its placeholder")
            return str(self.runs[-back].relative_to(self.path))

        if "<...>.pt" in command:
            command = command.replace("<...>.pt", f"{run(1)}/checkpoints/best.pt")
        if "<a>" in command:
            command = command.replace("outputs/train/<a>", run(2))
        if "<b>" in command:
            command = command.replace("outputs/train/<b>", run(1))
        if "<run>" in command:
            command = command.replace("outputs/train/<run>", run(1))
        if "<sweep>" in command:
            if not self.sweeps:
                raise AssertionError(f"{command!r}: no sweep made before it")
            command = command.replace(
                "multirun/<sweep>", str(self.sweeps[-1].relative_to(self.path))
            )
        assert not PLACEHOLDER.search(command), f"a placeholder left in {command!r}"
        return command


def distributed(run_dir: Path) -> bool:
    record = run_dir / "run.json"
    return record.is_file() and "distributed" in json.loads(record.read_text())


def make_scratch(path: Path) -> Scratch:
    """A copy of the clone (the library's sources, the example project, the Makefile) whose
    .venv is the test environment's, seen through links, with install stamps of its own
    made after the copies: `make train` finds it installed, as after a first `make`, and
    never installs into the environment the tests run in (a copy's `pip install -e .` would
    point that environment's seedbed at the copy)."""
    common = shutil.ignore_patterns("__pycache__", "*.egg-info", "outputs", "multirun", ".*_cache")

    def ignore(directory: str, names: list[str]) -> set[str]:
        ignored = set(common(directory, names))
        if Path(directory) == ROOT / "example":  # the project's installs and data, not its code
            ignored |= {".venv", "data"} & set(names)
        return ignored

    for name in ("Makefile", "pyproject.toml", "requirements.lock"):
        shutil.copy2(ROOT / name, path / name)  # copy2: make compares the times
    for name in ("src", "benchmarks", "scripts", "example"):
        shutil.copytree(ROOT / name, path / name, ignore=ignore)
    venv = path / ".venv"
    venv.mkdir()
    for entry in VENV_BIN.parent.iterdir():
        if not entry.name.startswith(".installed"):
            (venv / entry.name).symlink_to(entry)
    for stamp in (".installed", ".installed-dev"):
        (venv / stamp).touch()
    return Scratch(path)


@contextlib.contextmanager
def project_package(scratch: Scratch) -> Iterator[None]:
    """The scratch project's package first: a file a page writes into `src/example/` is
    imported from there by an in-process run (the installed `example` is this clone's)."""
    import example

    copy = str(scratch.path / "src" / "example")
    example.__path__.insert(0, copy)
    importlib.invalidate_caches()
    try:
        yield
    finally:
        example.__path__.remove(copy)


@contextlib.contextmanager
def in_directory(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def console_script(name: str) -> Callable[[], object] | None:
    """The function a console script of seedbed's (`seedbed-train`, ...) calls, as installed."""
    found = entry_points(group="console_scripts", name=name)
    return next((entry.load() for entry in found if entry.value.startswith("seedbed")), None)


def run_in_process(words: list[str]) -> tuple[int, str]:
    """`python <script> ...`, `python -m <module> ...` or `seedbed-<tool> ...` in this process."""
    saved = sys.argv, sys.stdout, sys.stderr
    out = io.StringIO()
    sys.stdout = sys.stderr = out
    code = 0
    try:
        if (function := console_script(words[0])) is not None:
            sys.argv = list(words)
            function()
        elif words[1] == "-m":
            sys.argv = [words[2], *words[3:]]
            runpy.run_module(words[2], run_name="__main__", alter_sys=True)
        else:
            sys.argv = words[1:]
            runpy.run_path(words[1], run_name="__main__")
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    except Exception:  # what a fresh interpreter does with it: the traceback, exit 1
        traceback.print_exc(file=out)
        code = 1
    finally:
        sys.argv, sys.stdout, sys.stderr = saved
        GlobalHydra.instance().clear()
    return code, out.getvalue()


def runs_in_process(words: list[str]) -> bool:
    """`python <script>.py ...`, `python -m seedbed...` and seedbed's console scripts: its
    own entry points."""
    if console_script(words[0]) is not None:
        return True
    if words[0] != "python" or len(words) < 2:
        return False
    return words[1].endswith(".py") or (words[1] == "-m" and words[2].startswith("seedbed"))


def run_in_shell(command: str, scratch: Scratch) -> tuple[int, str]:
    cwd = scratch.clone if command.startswith("make") else scratch.path
    sources = [scratch.path / "src", scratch.clone / "src"]
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # The reader's clone is the code that runs (and tests/site's torchvision shim).
        "PYTHONPATH": os.pathsep.join([*map(str, sources), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    return result.returncode, result.stdout


def known_gap(written: str, output: str) -> Gap | None:
    """The gap this failure is, if it is one not fixed yet."""
    return next(
        (
            gap
            for gap in GAPS
            if gap.contains in written and gap.symptom in output and not gap.fixed()
        ),
        None,
    )


def run_commands(example) -> str | None:
    scratch: Scratch = example.namespace["scratch"]
    gaps: list[str] = []
    for written in example.parsed:
        if (why := not_run_reason(written)) is not None:
            print(f"not run: {written}  ({why})")
            continue
        if (shared := SHARED.get(shlex.join(shlex.split(written, comments=True)))) is not None:
            print(f"run by {shared.test}: {written}  ({shared.how})")
            continue
        # The placeholders of the command, not of its comment (`# writes <run>/eval.json`).
        words = [scratch.expand(word) for word in shlex.split(written, comments=True)]
        command = shlex.join(words)
        if command in scratch.ran and not PLACEHOLDER.search(written):
            print(f"run above already: {command}")  # the same line, in another section
            if (gap := scratch.ran[command]) is not None:
                gaps.append(f"{command}: {gap.reason}")
            continue
        runs = set((scratch.path / "outputs" / "train").glob("*"))
        sweeps = set((scratch.path / "multirun").glob("*"))
        started = time.perf_counter()
        with in_directory(scratch.path), project_package(scratch):
            if runs_in_process(words):
                code, output = run_in_process(words)
            else:
                code, output = run_in_shell(command, scratch)
        print(f"{time.perf_counter() - started:6.1f} s, exit {code}: {command}")
        scratch.runs += scratch.new_dirs("outputs/train", runs)
        scratch.sweeps += scratch.new_dirs("multirun", sweeps)
        allowed = next((c for start, c in EXITS.items() if written.startswith(start)), (0,))
        gap = None if code in allowed else known_gap(written, output)
        scratch.ran[command] = gap
        if code in allowed:
            continue
        if gap is not None:
            gaps.append(f"{command}: {gap.reason}")
            continue
        return f"{written}\n  ran as: {command}\n  exit {code}:\n{output[-3000:]}"
    if gaps:
        pytest.xfail("; ".join(gaps))
    return None


def write_file(example) -> None:
    scratch: Scratch = example.namespace["scratch"]
    relative, source = example.parsed
    path = scratch.path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)


DOCUMENTS = [Sybil(parsers=[indented_command_blocks, file_blocks]).parse(p) for p in PAGES]
EXAMPLES = [example for document in DOCUMENTS for example in document]


# The default experiment the README's commands are about ("MLP on a synthetic dataset"):
# `python train.py task.label_smoothing=0.1` needs its classification task, and so on.
README_DEFAULT = {"task": "classification", "data": "synthetic", "model": "mlp"}


def default_choices() -> dict[str, str]:
    """The option configs/train.yaml chooses for each group, by default."""
    defaults = OmegaConf.to_container(OmegaConf.load(PROJECT_CONFIGS / "train.yaml"))["defaults"]
    return {
        group: option
        for entry in defaults
        if isinstance(entry, dict)
        for group, option in entry.items()
    }


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scratch]:
    chosen = {group: default_choices().get(group) for group in README_DEFAULT}
    if chosen != README_DEFAULT:
        pytest.skip(
            f"this README documents the template's default experiment ({README_DEFAULT}); "
            f"configs/train.yaml now chooses {chosen}: the README is the project's to rewrite"
        )
    made = make_scratch(tmp_path_factory.mktemp("clone"))
    for document in DOCUMENTS:
        document.namespace["scratch"] = made
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEEDBED_DEBUG", "smoke")
        yield made


@pytest.mark.parametrize(
    "example", EXAMPLES, ids=[f"{Path(e.path).name} line {e.line}" for e in EXAMPLES]
)
def test_readme_block_runs_as_written(example, scratch: Scratch) -> None:
    example.evaluate()


def test_every_line_not_run_is_still_in_the_readme_and_the_rest_are_run() -> None:
    commands = [c for e in EXAMPLES if e.region.evaluator is run_commands for c in e.parsed]
    for start in NOT_RUN:
        assert any(c.startswith(start) for c in commands), f"NOT_RUN names {start!r}: gone"
    assert sum(not_run_reason(c) is None for c in commands) > 50


@pytest.mark.parametrize("line", list(SHARED))
def test_a_line_run_by_another_test_is_in_the_readme_and_in_that_test(line: str) -> None:
    shared = SHARED[line]
    commands = [shlex.join(shlex.split(c, comments=True)) for e in EXAMPLES for c in e.parsed]
    assert line in commands, f"SHARED names {line!r}: no longer in the README"
    assert set(shared.words) <= set(shlex.split(line))
    module, function = shared.test.split("::")
    source = inspect.getsource(getattr(importlib.import_module(module), function))
    for word in shared.words:
        assert f'"{word}"' in source, f"{shared.test} does not run {word}"
