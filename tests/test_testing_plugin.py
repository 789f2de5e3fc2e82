"""seedbed.testing's checks fail where the promise does not hold: a project whose model draws
from an unseeded generator is caught by the same-weights check, and two runs that part are
reported where they part."""

from __future__ import annotations

import os
import shutil

import pytest
from helpers import PROJECT

from seedbed.testing import SMALL, Project, assert_identical

pytestmark = pytest.mark.slow


@pytest.fixture
def unseeded_project(tmp_path):
    """The example project with a model that adds noise from a generator seeded by the OS."""
    copy = tmp_path / "project"
    shutil.copytree(PROJECT, copy, ignore=shutil.ignore_patterns(".venv", "outputs", "*.egg-info"))
    models = copy / "src" / "example" / "models.py"
    text = models.read_text()
    forward = "        return self.head(self.blocks(self.stem(x)))"
    assert forward in text
    models.write_text(
        text.replace(
            forward,
            "        noise = torch.Generator()\n"
            "        noise.seed()  # seeded by the OS: a run that cannot be repeated\n"
            "        x = x + 1e-3 * torch.rand(x.shape, generator=noise)\n" + forward,
        ).replace("from torch import", "import torch\nfrom torch import", 1)
    )
    # The copy's package comes before the installed example.
    path = os.pathsep.join(p for p in (str(copy / "src"), os.environ.get("PYTHONPATH")) if p)
    return Project(copy, tmp_path / "runs", SMALL, env={"PYTHONPATH": path})


def test_the_same_weights_check_fails_on_a_model_that_ignores_its_seed(unseeded_project):
    with pytest.raises(AssertionError, match="the same config and seed, run twice"):
        unseeded_project.assert_same_weights_twice("model=residual_mlp")


def test_two_runs_that_part_are_reported_where_they_part(tmp_path):
    project = Project(PROJECT, tmp_path, SMALL)
    one, two = project.train("seed=1"), project.train("seed=2")
    with pytest.raises(AssertionError, match="the loss series part at step 1"):
        assert_identical(one, two, "seeds 1 and 2")
    assert_identical(one, one, "a run and itself")  # and passes where they do not
