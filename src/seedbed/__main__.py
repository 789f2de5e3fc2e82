"""`python -m seedbed seed=1`: train, exactly as `python train.py seed=1` in a checkout.

Installed as a package (`pip install .`), seedbed trains from any directory with
its packaged configs; `--config-dir <yours>` adds your own groups on top.
"""

from seedbed.runs.cli import cli

if __name__ == "__main__":
    cli()
