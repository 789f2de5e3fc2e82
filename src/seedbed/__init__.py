"""seedbed: reproducible PyTorch experiments with Hydra, as a library; `seedbed new` makes your
project."""

__version__ = "0.2.0"
