"""Evaluate a checkpoint: `python eval.py ckpt=outputs/train/<run>/checkpoints/best.pt`."""

from pathlib import Path

from seedbed.evaluate import cli

if __name__ == "__main__":
    cli(config_dir=Path(__file__).resolve().parent / "configs")
