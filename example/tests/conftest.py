"""seedbed.testing's fixture `seedbed`: your project, trained in fresh processes."""

pytest_plugins = ["seedbed.testing"]
