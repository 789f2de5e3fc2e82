"""seedbed: a Hydra-configured PyTorch experiment template whose promise is reproducibility."""

__version__ = "0.1.0"
