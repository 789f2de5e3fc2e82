"""Train: `python train.py seed=42` (`python train.py --help` lists the config groups).

The recipe is `configs/train.yaml`'s `recipe` (your package's train function); seedbed's
run session wraps it: the run directory, resume, seeding, devices, signals, errors.
"""

from pathlib import Path

from seedbed.runs.cli import cli

if __name__ == "__main__":
    cli(config_dir=Path(__file__).resolve().parent / "configs")
