"""Every packaged model learns real data of its kind at the defaults, and says when it does not.

The data are scikit-learn's bundled sets (`seedbed.data.sklearn_data`: nothing is
downloaded), written as a user's files: .npz vectors for the MLP (classification; one and
26 regression targets) and the digits as a PNG class-folder tree for the CNN and ResNet-18.
Each case (`sklearn_data.CASES`, where its margin is stated) trains at the defaults, only
the data named, and beats a constant prediction (the most frequent class, the training
mean) by the margin; every case but ResNet-18 trains twice, with the same weights and loss
series. ResNet-18 at the defaults is 2 minutes a run on 2 cores, the slowest test of the
suite: it trains once here, and its runs' identity is proven by
test_every_model.py::...[resnet18] (same hash twice, BatchNorm buffers included) and the
PNG folder's by the CNN case, twice, on the same files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers import train_in_process

from seedbed.data.sklearn_data import CASES, PNG_FOLDER, VECTOR_SETS, write_digits_png, write_npz
from seedbed.data.sklearn_data import vector_set as load_vector_set
from seedbed.task import build_task, constant_baseline

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def real_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real")
    for name in VECTOR_SETS:
        write_npz(root / f"{name}.npz", *load_vector_set(name))
    write_digits_png(root / PNG_FOLDER)
    return root


def constant_prediction(case, root: Path) -> float:
    from helpers import compose_config
    from hydra.utils import instantiate

    cfg = compose_config(*case.arguments(root))
    task = build_task(cfg.task)
    return constant_baseline(task, task.prepare(instantiate(cfg.data)))[case.metric]


def _params(cases):
    """ResNet-18's case is marked slow (a minute or two on 2 cores): the whole suite
    (`make test-all`, CI) runs it, the everyday `make test` does not."""
    for case in cases:
        marks = [pytest.mark.slow] if "model=resnet18" in case.overrides else []
        yield pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", list(_params(CASES)))
def test_packaged_model_learns_real_data_at_the_defaults(
    case, real_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    arguments = case.arguments(real_root)
    with caplog.at_level(logging.WARNING, logger="seedbed"):
        first = train_in_process(tmp_path / "first", *arguments)
    assert not [r for r in caplog.records if "not learning" in r.getMessage()]
    assert first["status"] == "completed", first.get("error")
    if "model=resnet18" not in case.overrides:  # see the module's docstring
        second = train_in_process(tmp_path / "second", *arguments)
        assert second["status"] == "completed", second.get("error")
        assert first["weights_sha256"] == second["weights_sha256"]
        assert first["loss_series_sha256"] == second["loss_series_sha256"]

    constant = constant_prediction(case, real_root)
    value = first["final_metrics"][case.metric]
    assert case.reached(value, constant), (
        f"{case.name}: {case.metric} {value:.4f}, constant prediction {constant:.4f}, "
        f"needed {case.target(constant):.4f} (margin {case.margin})"
    )


def test_a_run_that_does_not_learn_says_so_once_in_one_line_naming_the_knobs(
    real_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SGD at lr 0.05 (the old default) on the digits as 32x32 images stays at chance. Its
    epochs have 23 steps: it is judged after the first epoch that ends 50 steps or more into
    the run, or after its last, here the second."""
    case = next(c for c in CASES if c.name.startswith("cnn"))
    overrides = [*case.arguments(real_root), "data.image_size=32", "optim=sgd"]
    with caplog.at_level(logging.WARNING, logger="seedbed"):
        record = train_in_process(tmp_path / "run", *overrides, "trainer.epochs=2")
    warnings = [r.getMessage() for r in caplog.records if "not learning" in r.getMessage()]
    assert record["status"] == "completed"  # a warning, never an error
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "after epoch 2 (46 steps)" in warnings[0]
    for knob in ("optim.lr (now 0.05)", "optim=adamw", "trainer.grad_clip"):
        assert knob in warnings[0]

    caplog.clear()
    digits = next(c for c in CASES if c.name == "mlp, digits")
    with caplog.at_level(logging.WARNING, logger="seedbed"):
        train_in_process(tmp_path / "learns", *digits.arguments(real_root), "trainer.epochs=1")
    assert not [r for r in caplog.records if "not learning" in r.getMessage()]


def test_the_bundled_files_are_the_same_bytes_every_time(tmp_path: Path) -> None:
    a = write_npz(tmp_path / "a.npz", *load_vector_set("wine"))
    b = write_npz(tmp_path / "b.npz", *load_vector_set("wine"))
    assert a.read_bytes() == b.read_bytes()
    one = write_digits_png(tmp_path / "one", limit=20)
    two = write_digits_png(tmp_path / "two", limit=20)
    files = sorted(p.relative_to(one) for p in one.rglob("*.png"))
    assert len(files) == 20
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
