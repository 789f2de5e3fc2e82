"""`seedbed new`, `seedbed update`, `seedbed cp`: the project side of the library.

The clone's example project is what `seedbed new example` renders; a template change
arrives in a project by `seedbed update` with the user's edits kept; bad input is one
line, exit 2, nothing written.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import PROJECT, run_git

from seedbed import __version__
from seedbed.project import cli, new, update
from seedbed.project.new import TEMPLATE_DIR, render, rendered_files

pytest.importorskip("copier")


def _files(root: Path) -> set[str]:
    return {path.as_posix() for path in rendered_files(root)}


def test_the_example_is_exactly_what_seedbed_new_renders(tmp_path):
    render({"name": "example"}, tmp_path / "example")
    rendered, example = _files(tmp_path / "example"), _files(PROJECT)
    assert rendered == example, rendered ^ example
    differ = [
        f
        for f in sorted(rendered)
        if not filecmp.cmp(tmp_path / "example" / f, PROJECT / f, shallow=False)
    ]
    assert differ == [], f"example/ differs from a fresh render in {differ}: re-render it"


def _seedbed(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_refusal(capsys, *argv: str) -> str:
    code, _, err = _seedbed(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, (code, err)
    return lines[0]


@pytest.fixture
def project(tmp_path, capsys) -> Path:
    """A project made by `seedbed new mypaper`, committed."""
    code, out, _ = _seedbed(capsys, "new", "mypaper", str(tmp_path / "mypaper"))
    assert code == 0, out
    return tmp_path / "mypaper"


def test_seedbed_new_renders_a_committed_project_of_your_own_package(project):
    assert (project / "src" / "mypaper" / "train.py").is_file()
    train_yaml = (project / "configs" / "train.yaml").read_text()
    assert "recipe: mypaper.train.train" in train_yaml
    assert f"seedbed>={__version__}" in (project / "pyproject.toml").read_text()
    log = subprocess.run(
        ["git", "-C", str(project), "log", "--format=%B"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"Seedbed-Template: {__version__}" in log
    status = subprocess.run(
        ["git", "-C", str(project), "status", "--porcelain"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert status == ""  # everything rendered is committed: no file ignored by mistake
    # The project holds only what a user edits: no copy of the machinery.
    python = [p for p in (project / "src").rglob("*.py")]
    assert sum(len(p.read_text().splitlines()) for p in python) < 1200


@pytest.mark.parametrize(
    "name,expected",
    [
        ("My-Paper", "a Python package name"),
        ("2paper", "a Python package name"),
        ("class", "a Python package name"),
        ("seedbed", "it is taken"),
        ("json", "it is taken"),
        ("torch", "an installed package is named so"),
    ],
)
def test_seedbed_new_refuses_a_name_that_is_not_a_package_name(name, expected, tmp_path, capsys):
    line = _one_line_refusal(capsys, "new", name, str(tmp_path / "p"))
    assert f"project name {name!r} is not allowed" in line and expected in line
    assert not (tmp_path / "p").exists()


def test_seedbed_new_refuses_a_directory_that_is_not_empty(tmp_path, capsys):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    line = _one_line_refusal(capsys, "new", "mypaper", str(target))
    assert str(target) in line and "new or empty directory" in line
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert (target / "notes.txt").read_text() == "mine"


def test_seedbed_cp_copies_a_part_to_own_and_never_replaces_one(project, capsys, monkeypatch):
    monkeypatch.chdir(project)
    code, out, _ = _seedbed(capsys, "cp", "loop")
    assert code == 0 and "copied" in out
    copy = project / "src" / "mypaper" / "loop.py"
    assert copy.read_text() == (TEMPLATE_DIR.parents[1] / "loop.py").read_text()
    copy.write_text("# mine now\n")
    line = _one_line_refusal(capsys, "cp", "loop")
    assert "never replaces a file of yours" in line
    assert copy.read_text() == "# mine now\n"
    code, out, _ = _seedbed(capsys, "cp", "configs/optim")
    assert code == 0 and (project / "configs" / "optim" / "adamw.yaml").is_file()


def test_seedbed_cp_of_an_unknown_part_lists_the_parts(project, capsys, monkeypatch):
    monkeypatch.chdir(project)
    before = _files(project)
    line = _one_line_refusal(capsys, "cp", "trainer_loop")
    assert "part='trainer_loop' is not allowed" in line and "loop, optim" in line
    assert "configs/model" in line
    assert _files(project) == before


def test_seedbed_update_refuses_uncommitted_changes(project, capsys):
    models = project / "src" / "mypaper" / "models.py"
    models.write_text(models.read_text() + "\n# my change, not committed\n")
    line = _one_line_refusal(capsys, "update", str(project))
    assert "uncommitted changes: commit or stash them first" in line
    assert models.read_text().endswith("# my change, not committed\n")


def _next_template(tmp_path: Path, monkeypatch) -> str:
    """A later seedbed's template: a Makefile target and a CI step more, version bumped."""
    template = tmp_path / "template-next"
    shutil.copytree(TEMPLATE_DIR, template)
    makefile = template / "files" / "Makefile"
    makefile.write_text(
        makefile.read_text() + "\nhello:  ## a target of the next template\n\t@echo hello\n"
    )
    ci = template / "files" / ".ci" / "run"
    ci.write_text(ci.read_text() + "\n# the next template's CI step\n")
    version = "0.2.99"
    monkeypatch.setattr(new, "TEMPLATE_DIR", template)
    monkeypatch.setattr(new, "__version__", version)
    monkeypatch.setattr(update, "__version__", version)
    return version


def test_seedbed_update_brings_template_changes_and_keeps_your_edits(
    project, tmp_path, monkeypatch, capsys
):
    # The user's own work, committed: a model and a config edited, a file of their own.
    models = project / "src" / "mypaper" / "models.py"
    models.write_text(models.read_text() + "\n\nclass MyNet:  # mine\n    pass\n")
    config = project / "configs" / "model" / "residual_mlp.yaml"
    config.write_text(config.read_text().replace("blocks: 2", "blocks: 3"))
    assert "blocks: 3" in config.read_text()
    (project / "notes.md").write_text("my notes\n")
    run_git(project, "add", "-A")
    run_git(project, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "my work")
    mine = {
        p: (project / p).read_text()
        for p in ("src/mypaper/models.py", "configs/model/residual_mlp.yaml", "notes.md")
    }

    version = _next_template(tmp_path, monkeypatch)
    code, out, err = _seedbed(capsys, "update", str(project))
    assert code == 0, err
    assert f"-> {version} merged" in out

    assert "a target of the next template" in (project / "Makefile").read_text()
    assert "the next template's CI step" in (project / ".ci" / "run").read_text()
    assert f"_commit: {version}" in (project / ".copier-answers.yml").read_text()
    for path, text in mine.items():
        assert (project / path).read_text() == text, path
    # A second update with nothing new changes nothing.
    head = subprocess.run(
        ["git", "-C", str(project), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout
    code, out, _ = _seedbed(capsys, "update", str(project))
    assert code == 0 and "has not changed" in out
    assert (
        subprocess.run(
            ["git", "-C", str(project), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        == head
    )


def test_seedbed_update_stops_at_a_conflict_and_leaves_the_merge_to_you(
    project, tmp_path, monkeypatch, capsys
):
    makefile = project / "Makefile"
    makefile.write_text(makefile.read_text() + "\nhello:  ## my own hello\n\t@echo mine\n")
    run_git(project, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "mine")
    _next_template(tmp_path, monkeypatch)
    code, _, err = _seedbed(capsys, "update", str(project))
    assert code == 1 and "conflicts in Makefile" in err and "git merge --abort" in err
    assert "<<<<<<<" in makefile.read_text()


@pytest.mark.parametrize(
    "recipe,why",
    [
        ("os.path", "it is a module"),
        ("example.models.ResidualMLP", "it is a type"),
        ("example.train.nowhere", "cannot be imported"),
        ("notinstalled.train.train", "no package 'notinstalled' is installed"),
        ("train", "importable by its name"),
    ],
)
def test_a_recipe_that_is_not_a_function_is_one_line_and_writes_nothing(recipe, why, tmp_path):
    from helpers import run_cli

    code, _, err = run_cli(tmp_path / "run", f"recipe={recipe}")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert f"recipe={recipe!r} is not allowed" in lines[0]
    assert why in lines[0] or why == "cannot be imported" and "nowhere" in lines[0], lines[0]
    assert not (tmp_path / "run").exists()


def test_your_own_package_is_trusted_by_eval_resume_and_verify_with_no_extra_step(tmp_path, capsys):
    """The example's own model and dataset (package `example`, the recipe's) in a run read back:
    eval, a forced resume and verify --against build them; no allow_targets anywhere."""
    from helpers import IN_PROJECT, SMALL, run_cli

    from seedbed import evaluate
    from seedbed.tools import verify

    own = ["model=residual_mlp", "data=my_dataset", "data.n_samples=256", "trainer.epochs=2"]
    run = tmp_path / "run"
    code, _, err = run_cli(run, *SMALL[1:], *own)
    assert code == 0, err
    assert "allow_targets" not in (PROJECT / "configs" / "train.yaml").read_text().split("#")[0]
    assert "example.models.ResidualMLP" in (run / "config.yaml").read_text()

    evaluated = evaluate.evaluate_checkpoint(run / "checkpoints" / "last.pt", "val")
    assert evaluated["metrics"]
    code, _, err = run_cli(None, f"resume={run}", "trainer.epochs=3")
    assert code == 0, err
    assert verify.main(["--against", str(run), "--out", str(tmp_path / "v"), *IN_PROJECT]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("identical")
