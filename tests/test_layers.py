"""The layers are real in the imports: the order declared in pyproject.toml holds, there are
no import circles, and docs/layers.md shows the declared order."""

from __future__ import annotations

import re
import tomllib

import pytest
from helpers import ROOT

pytest.importorskip("importlinter")
import grimp  # noqa: E402  (import-linter's own graph library)
from importlinter.application.use_cases import lint_imports  # noqa: E402
from importlinter.configuration import configure  # noqa: E402

configure()  # what the lint-imports command does first

PYPROJECT = ROOT / "pyproject.toml"


def _declared_layers() -> list[str]:
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    return layers


def test_the_declared_layers_hold(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(PYPROJECT), cache_dir=None, no_logo=True) is True


def test_the_layer_check_fails_on_an_upward_import(tmp_path, monkeypatch):
    """The same check with two layers swapped (core above runs) must report the imports
    that now run upward: the contract is not vacuous."""
    layers = _declared_layers()
    swapped = [layers[-1], *layers[1:-1], layers[0]]
    config = tmp_path / "pyproject.toml"
    quoted = ", ".join(f'"{layer}"' for layer in swapped)
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["seedbed"]\n\n'
        f'[[tool.importlinter.contracts]]\nname = "swapped"\ntype = "layers"\nlayers = [{quoted}]\n'
    )
    monkeypatch.chdir(tmp_path)
    assert lint_imports(config_filename=str(config), cache_dir=None, no_logo=True) is False


def _circles(imports: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in imports[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == module:
                    break
            if len(component) > 1 or module in imports[module]:
                found.append(sorted(component))

    for module in imports:
        if module not in index:
            visit(module)
    return found


def test_no_import_circles():
    graph = grimp.build_graph("seedbed")
    imports = {
        module: {m for m in graph.find_modules_directly_imported_by(module) if m in graph.modules}
        for module in graph.modules
    }
    assert _circles(imports) == []
    # The finder finds one where there is one.
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_the_docs_show_the_declared_layers():
    text = (ROOT / "docs" / "layers.md").read_text()
    (block,) = re.findall(r"```text\n(.*?)```", text, re.S)
    assert block.strip().splitlines() == _declared_layers()
