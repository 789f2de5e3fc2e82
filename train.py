"""Train a model: `python train.py seed=42` (see README.md, or `python train.py --help`)."""

from seedbed.runs.cli import cli

if __name__ == "__main__":
    cli()
