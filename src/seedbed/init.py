"""Weight initialisation, applied after the model is built, from the init stream's generator.

Every Linear and Conv weight gets the configured scheme with the gain of the
layer's own nonlinearity (the activation module that follows it, or a
`nonlinearity` attribute on the layer); biases are zeroed. Because the draws
come from one generator and walk the layers in order, the initial weights do
not depend on what else was constructed, or drawn, before.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn

from seedbed.core.errors import require_choice

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

# Activation module -> the name torch.nn.init.calculate_gain knows. GELU and SiLU have no
# closed-form gain; ReLU's is the usual stand-in.
_ACTIVATIONS: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.SELU: "selu",
    nn.GELU: "relu",
    nn.SiLU: "relu",
}


SCHEMES = (
    "kaiming_uniform",
    "kaiming_normal",
    "xavier_uniform",
    "xavier_normal",
    "orthogonal",
    "torch_default",
)
FAN_MODES = ("fan_in", "fan_out")


def layer_nonlinearities(model: nn.Module) -> dict[nn.Module, tuple[str, float]]:
    """Each weight layer's (nonlinearity, negative slope), from the activation that follows it."""
    found: dict[nn.Module, tuple[str, float]] = {}
    pending: nn.Module | None = None
    for module in model.modules():
        if isinstance(module, WEIGHT_LAYERS):
            if pending is not None:
                found.setdefault(pending, ("linear", 0.0))
            declared = getattr(module, "nonlinearity", None)
            if declared is not None:
                found[module] = (declared, 0.0)
            pending = module
        elif pending is not None and type(module) in _ACTIVATIONS:
            slope = module.negative_slope if isinstance(module, nn.LeakyReLU) else 0.0
            found.setdefault(pending, (_ACTIVATIONS[type(module)], slope))
            pending = None
    if pending is not None:
        found.setdefault(pending, ("linear", 0.0))  # the output layer
    return found


def init_weights(
    model: nn.Module, scheme: str, generator: torch.Generator, mode: str = "fan_in"
) -> None:
    """Initialise every weight layer of `model` in place with `scheme`, drawing from `generator`."""
    if scheme == "torch_default":
        _torch_default(model, generator)
        return
    for layer, (nonlinearity, slope) in layer_nonlinearities(model).items():
        weight = layer.weight
        gain = nn.init.calculate_gain(nonlinearity, slope if nonlinearity == "leaky_relu" else None)
        with torch.no_grad():
            if scheme == "kaiming_uniform":
                nn.init.kaiming_uniform_(
                    weight, a=slope, mode=mode, nonlinearity=nonlinearity, generator=generator
                )
            elif scheme == "kaiming_normal":
                nn.init.kaiming_normal_(
                    weight, a=slope, mode=mode, nonlinearity=nonlinearity, generator=generator
                )
            elif scheme == "xavier_uniform":
                nn.init.xavier_uniform_(weight, gain=gain, generator=generator)
            elif scheme == "xavier_normal":
                nn.init.xavier_normal_(weight, gain=gain, generator=generator)
            elif scheme == "orthogonal":
                nn.init.orthogonal_(weight, gain=gain, generator=generator)
            else:
                raise ValueError(f"unknown init scheme {scheme!r}")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def _torch_default(model: nn.Module, generator: torch.Generator) -> None:
    # PyTorch's own reset_parameters() draws from the global RNG; seed a private copy of it
    # from our generator so the result depends on the init stream only.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            if isinstance(module, WEIGHT_LAYERS):
                module.reset_parameters()


@dataclass
class InitConfig:
    """How weights are initialised after the model is built."""

    scheme: str = "kaiming_uniform"
    """One of seedbed.init.SCHEMES: kaiming_uniform, kaiming_normal, xavier_uniform,
    xavier_normal, orthogonal, torch_default."""
    mode: str = "fan_in"
    """Kaiming fan mode: fan_in (preserves forward variance) or fan_out (backward)."""


def check_init(init: DictConfig) -> None:
    require_choice("init.scheme", init.scheme, SCHEMES)
    require_choice("init.mode", init.mode, FAN_MODES)
