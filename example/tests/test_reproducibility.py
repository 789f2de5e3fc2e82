"""The promise, for this project's own recipe, models and data: seedbed.testing runs each
check with `python train.py` in fresh processes and compares the runs bit for bit.

Add a case when you add a model, a dataset or a recipe step: a parameter below is enough.
"""

import pytest

# The project's default experiment, and its own model and dataset (BatchNorm and a Dataset
# that draws from random, np.random and torch in __getitem__).
CONFIGS = [(), ("model=residual_mlp",), ("data=my_dataset",)]


@pytest.mark.parametrize("overrides", CONFIGS, ids=lambda o: " ".join(o) or "default")
def test_same_seed_gives_identical_weights(seedbed, overrides):
    seedbed.assert_same_weights_twice(*overrides)


def test_num_workers_does_not_change_results(seedbed):
    seedbed.assert_num_workers_does_not_change_results("data=my_dataset")


def test_a_run_killed_and_resumed_ends_as_if_never_stopped(seedbed):
    # With seedbed's EMA and your own callback: their states are checkpointed too.
    seedbed.assert_resume_is_exact("model=residual_mlp", "callbacks=[ema,weight_norm]")


def test_eval_reproduces_the_recorded_validation(seedbed):
    seedbed.assert_eval_reproduces()


def test_another_seed_gives_other_weights(seedbed):
    # The checks above would pass for a run that ignores its seed: this one would not.
    assert seedbed.train("seed=1").weights_sha256 != seedbed.train("seed=2").weights_sha256
