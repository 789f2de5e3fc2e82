"""Evaluate a checkpoint: `python eval.py ckpt=outputs/train/<run>/checkpoints/best.pt`."""

from seedbed.evaluate import cli

if __name__ == "__main__":
    cli()
