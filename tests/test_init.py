"""Every init scheme draws the distribution it names, with the layer's own gain; biases are zero."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from seedbed.init import init_weights, layer_nonlinearities

FAN_IN, FAN_OUT = 400, 300


def model() -> nn.Sequential:
    # hidden layer followed by ReLU, then a linear output layer (gain 1)
    return nn.Sequential(nn.Linear(FAN_IN, FAN_OUT), nn.ReLU(), nn.Linear(FAN_OUT, 200))


def initialised(scheme: str, mode: str = "fan_in") -> nn.Sequential:
    net = model()
    init_weights(net, scheme, torch.Generator().manual_seed(0), mode=mode)
    return net


def std(t: torch.Tensor) -> float:
    return t.double().std().item()


def test_nonlinearity_is_found_from_the_following_activation():
    net = nn.Sequential(
        nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4), nn.LeakyReLU(0.2), nn.Linear(4, 2)
    )
    found = list(layer_nonlinearities(net).values())
    assert found == [("tanh", 0.0), ("leaky_relu", 0.2), ("linear", 0.0)]


def test_kaiming_uniform_bound_is_sqrt_6_over_fan_in_for_relu():
    net = initialised("kaiming_uniform")
    hidden, out = net[0].weight, net[2].weight
    bound = math.sqrt(6 / FAN_IN)
    assert hidden.abs().max() <= bound
    assert hidden.abs().max() > 0.99 * bound
    assert std(hidden) == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert out.abs().max() <= math.sqrt(3 / FAN_OUT)  # linear output layer: gain 1
    assert out.abs().max() > 0.99 * math.sqrt(3 / FAN_OUT)


def test_kaiming_normal_std_follows_fan_mode():
    assert std(initialised("kaiming_normal").get_submodule("0").weight) == pytest.approx(
        math.sqrt(2 / FAN_IN), rel=0.02
    )
    assert std(initialised("kaiming_normal", "fan_out").get_submodule("0").weight) == pytest.approx(
        math.sqrt(2 / FAN_OUT), rel=0.02
    )


def test_kaiming_uses_conv_fan_in():
    net = nn.Sequential(nn.Conv2d(8, 64, kernel_size=3), nn.ReLU())
    init_weights(net, "kaiming_normal", torch.Generator().manual_seed(0))
    assert std(net[0].weight) == pytest.approx(math.sqrt(2 / (8 * 9)), rel=0.03)


def test_xavier_uniform_bound_uses_gain_and_both_fans():
    net = initialised("xavier_uniform")
    bound = math.sqrt(2) * math.sqrt(6 / (FAN_IN + FAN_OUT))
    assert net[0].weight.abs().max() <= bound
    assert net[0].weight.abs().max() > 0.99 * bound


def test_xavier_normal_std_uses_gain_and_both_fans():
    expected = math.sqrt(2) * math.sqrt(2 / (FAN_IN + FAN_OUT))
    assert std(initialised("xavier_normal")[0].weight) == pytest.approx(expected, rel=0.02)


def test_orthogonal_rows_are_orthonormal_times_gain():
    w = initialised("orthogonal")[0].weight.double()  # (300, 400): orthonormal rows
    assert torch.allclose(w @ w.T, 2.0 * torch.eye(FAN_OUT, dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize(
    "scheme", ["kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal", "orthogonal"]
)
def test_biases_are_zero_and_same_generator_gives_same_weights(scheme):
    a, b = initialised(scheme), initialised(scheme)
    for layer in (a[0], a[2]):
        assert torch.count_nonzero(layer.bias) == 0
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_torch_default_is_pytorchs_init_seeded_from_the_generator():
    a, b = initialised("torch_default"), initialised("torch_default")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    bound = 1 / math.sqrt(FAN_IN)  # kaiming_uniform(a=sqrt(5)) as in nn.Linear.reset_parameters
    assert a[0].weight.abs().max() <= bound
    assert a[0].weight.abs().max() > 0.99 * bound
    assert torch.count_nonzero(a[0].bias) > 0  # torch's own bias init is kept
    net = model()  # constructing draws from the global RNG; initialising must not
    state = torch.random.get_rng_state()
    init_weights(net, "torch_default", torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched
