"""`seedbed cp PART`: a copy of one library part in your project, yours to edit.

As torchtune's `tune cp`: the library keeps its part (and its fixes); the copy
is yours, and your recipe uses it once you import it from your package. A
config group is copied into your `configs/`, where it overrides the library's
options of the same name (your configs come first on Hydra's search path).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from seedbed.core.errors import SeedbedError
from seedbed.project.new import read_answers

LIBRARY = Path(__file__).resolve().parents[1]
# The modules a project may want to own, by the name `seedbed cp` takes.
MODULES = {
    "loop": "loop.py",
    "optim": "optim.py",
    "init": "init.py",
    "task": "task.py",
    "models": "models.py",
    "precision": "precision.py",
    "compile": "compile.py",
    "evaluate": "evaluate.py",
    "loader": "data/loader.py",
    "datasets": "data/datasets.py",
    "arrays": "data/arrays.py",
    "npz": "data/npz.py",
    "vision": "data/vision.py",
    "normalize": "data/normalize.py",
}
CONFIGS = LIBRARY / "configs"


def config_groups() -> list[str]:
    """The library's config groups, as `seedbed cp` names them (`configs/optim`)."""
    return sorted(
        f"configs/{path.relative_to(CONFIGS).as_posix()}"
        for path in CONFIGS.rglob("*")
        if path.is_dir() and any(child.suffix == ".yaml" for child in path.iterdir())
    )


def parts() -> list[str]:
    """Everything `seedbed cp` can copy."""
    return [*MODULES, *config_groups()]


def copy_part(part: str, directory: str | Path = ".") -> list[Path]:
    """Copy `part` into the project at `directory`; returns the files written. Nothing is
    overwritten: a file of the project's own is never replaced."""
    root = Path(directory)
    package = read_answers(root)["name"]
    if part in MODULES:
        source = LIBRARY / MODULES[part]
        pairs = [(source, root / "src" / package / source.name)]
    elif part.rstrip("/") in config_groups():
        group = CONFIGS / part.rstrip("/").removeprefix("configs/")
        pairs = [
            (path, root / "configs" / path.relative_to(CONFIGS))
            for path in sorted(group.glob("*.yaml"))
        ]
    else:
        raise SeedbedError(f"part={part!r} is not allowed: one of {', '.join(parts())}")
    taken = [str(target.relative_to(root)) for _, target in pairs if target.exists()]
    if taken:
        raise SeedbedError(
            f"{', '.join(taken)} exists: seedbed cp never replaces a file of yours "
            "(move it aside first)"
        )
    for source, target in pairs:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return [target for _, target in pairs]


def how_to_use(part: str, package: str) -> str:
    """What a user does next with the copy."""
    if part in MODULES:
        module = Path(MODULES[part]).stem
        return (
            f"import it in src/{package}/train.py (from {package}.{module} import ...) instead "
            f"of seedbed.{MODULES[part].removesuffix('.py').replace('/', '.')}; seedbed's "
            "own stays as it is"
        )
    return "your copies now come first: edit them, or add options beside them"
