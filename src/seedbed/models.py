"""Models: nn.Modules that only construct. Initialisation is `seedbed.init`'s job.

A model takes `input_shape` from the data and `num_outputs` from the task (classes, or
the width of a regression target), and the rest from
its config group (`configs/model/<name>.yaml`, built by `_target_`). Layers are
declared in the order they run, so `seedbed.init` finds each layer's
nonlinearity in the module that follows it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from omegaconf import DictConfig
from torch import Tensor, nn

from seedbed.core.errors import ConfigError, require


class MLP(nn.Module):
    """Flatten, then Linear -> ReLU -> Dropout per hidden layer, then a Linear classifier."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        hidden: Sequence[int] = (128, 128),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, num_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CNN(nn.Module):
    """Conv 3x3 -> ReLU -> MaxPool 2 per block, then Dropout and a Linear classifier."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        channels: Sequence[int] = (16, 32),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError(
                "model",
                "CNN",
                f"image inputs shaped (channels, height, width); the data's inputs are "
                f"{tuple(input_shape)} (use model=mlp for vectors)",
            )
        in_channels, height, width = input_shape
        blocks: list[nn.Module] = []
        for out_channels in channels:
            blocks += [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            in_channels, height, width = out_channels, height // 2, width // 2
        if height < 1 or width < 1:
            raise ConfigError(
                "model.channels",
                list(channels),
                f"at most {_max_blocks(input_shape)} blocks for inputs {tuple(input_shape)}: "
                "each block halves the image",
            )
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_channels * height * width, num_outputs)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _max_blocks(input_shape: Sequence[int]) -> int:
    return max(min(input_shape[1:]).bit_length() - 1, 0)


class ResNet18(nn.Module):
    """torchvision's ResNet-18 with its first layer fitted to the data's channels and its last
    to `num_outputs`; `small_inputs` (default: images at most 64 wide) swaps the 7x7 stride-2
    stem and its max-pool for a 3x3 stride-1 conv, as is usual for CIFAR-sized images."""

    def __init__(
        self, input_shape: Sequence[int], num_outputs: int, small_inputs: bool | None = None
    ) -> None:
        super().__init__()
        from seedbed.data.vision import torchvision  # the optional `vision` extra

        if len(input_shape) != 3:
            raise ConfigError(
                "model",
                "ResNet18",
                f"image inputs shaped (channels, height, width); the data's inputs are "
                f"{tuple(input_shape)} (use model=mlp for vectors)",
            )
        channels, _, width = input_shape
        self.net = torchvision().models.resnet18(num_classes=num_outputs)
        if small_inputs is None:
            small_inputs = width <= 64
        if small_inputs:
            self.net.conv1 = nn.Conv2d(channels, 64, kernel_size=3, padding=1, bias=False)
            self.net.maxpool = nn.Identity()
        elif channels != 3:
            self.net.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@dataclass
class MLPConfig:
    """A multilayer perceptron; input size from the data, output size from the task."""

    _target_: str = "seedbed.models.MLP"
    hidden: list[int] = field(default_factory=lambda: [128, 128])
    """Width of each hidden layer."""
    dropout: float = 0.1
    """Dropout probability after each hidden layer (drawn from the `torch` stream)."""


@dataclass
class CNNConfig:
    """A small convolutional network; input shape from the data, output size from the task."""

    _target_: str = "seedbed.models.CNN"
    channels: list[int] = field(default_factory=lambda: [16, 32])
    """Output channels of each conv block (conv 3x3, ReLU, max-pool 2)."""
    dropout: float = 0.1
    """Dropout probability before the classifier."""


@dataclass
class ResNet18Config:
    """torchvision's ResNet-18 (`.[vision]` extra), sized to the data's channels and classes."""

    _target_: str = "seedbed.models.ResNet18"
    small_inputs: bool | None = None
    """A 3x3 stride-1 stem without max-pool, for small images (CIFAR); null: when the images
    are at most 64 pixels wide."""


def check_model(model: DictConfig) -> None:
    """Layer widths and dropout, where the model declares them."""
    for key in ("hidden", "channels"):  # layer widths: a layer of 0 units learns nothing
        widths = model.get(key)
        if widths is not None and not isinstance(widths, str | int | float):
            ok = all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths)
            require(ok, f"model.{key}", list(widths), "a list of ints > 0 (layer widths)")
    dropout = model.get("dropout", 0.0)
    require(dropout is None or 0 <= dropout < 1, "model.dropout", dropout, "a number in [0, 1)")
