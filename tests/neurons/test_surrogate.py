import math

import pytest
import torch

from snn.neurons import SURROGATES, LIFAdEx, LIFAdExParameters, register_surrogate, spike
from snn.neurons import surrogate as surrogate_module

BUILT_IN = ["super", "triangle", "sigmoid", "atan", "tanh", "heaviside"]


def surrogate_grad(x: torch.Tensor, method: str, alpha: float) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    z = spike(x, method, alpha)
    if not z.requires_grad:  # heaviside: no gradient path at all
        return torch.zeros_like(x)
    z.sum().backward()
    return x.grad


@pytest.mark.parametrize("method", BUILT_IN)
def test_forward_is_exact_heaviside(method):
    x = torch.tensor([-1.0, -1e-7, 0.0, 1e-7, 2.0])
    assert spike(x, method, 10.0).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_builtin_surrogates_are_registered():
    assert set(BUILT_IN) <= set(SURROGATES)


# Written-down derivative values at x = 0.05 for alpha = 10 and alpha = 2.
@pytest.mark.parametrize(
    "method, alpha, expected",
    [
        ("super", 10.0, 1 / (10 * 0.05 + 1) ** 2),           # 0.444...
        ("super", 2.0, 1 / (2 * 0.05 + 1) ** 2),
        ("triangle", 10.0, 10 * (1 - 10 * 0.05)),            # 5.0
        ("triangle", 2.0, 2 * (1 - 2 * 0.05)),
        ("sigmoid", 10.0, 10 * (1 / (1 + math.exp(-0.5))) * (1 - 1 / (1 + math.exp(-0.5)))),
        ("atan", 10.0, 10 / (2 * (1 + (math.pi / 2 * 10 * 0.05) ** 2))),
        ("tanh", 10.0, 0.5 * 10 * (1 - math.tanh(0.5) ** 2)),
        ("heaviside", 10.0, 0.0),
    ],
)
def test_surrogate_derivative_values(method, alpha, expected):
    grad = surrogate_grad(torch.tensor([0.05], dtype=torch.float64), method, alpha)
    assert grad.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("method", ["super", "triangle", "sigmoid", "atan", "tanh"])
def test_every_surrogate_honours_alpha(method):
    x = torch.tensor([0.02], dtype=torch.float64)
    assert surrogate_grad(x, method, 5.0).item() != pytest.approx(surrogate_grad(x, method, 50.0).item())


@pytest.mark.parametrize("method", ["triangle", "sigmoid", "atan", "tanh"])
def test_smooth_step_surrogates_integrate_to_one(method):
    # Derivatives of a smoothed step: the area under each is 1 for any alpha.
    x = torch.linspace(-200, 200, 2_000_001, dtype=torch.float64)
    area = torch.trapezoid(surrogate_module.SURROGATES[method](x, 7.0), x)
    assert area.item() == pytest.approx(1.0, abs=2e-3)


def test_heaviside_cuts_the_gradient_path():
    assert not spike(torch.zeros(3, requires_grad=True), "heaviside", 1.0).requires_grad


def test_unknown_surrogate_lists_known_ones():
    with pytest.raises(ValueError, match="Unknown surrogate method 'nope'.*atan.*super"):
        spike(torch.zeros(1), "nope", 1.0)
    with pytest.raises(ValueError, match="Unknown surrogate"):
        LIFAdEx(LIFAdExParameters(method="nope"))


def test_bad_alpha_is_rejected():
    with pytest.raises(ValueError, match="alpha must be a positive"):
        LIFAdEx(LIFAdExParameters(alpha=-1.0))


def test_register_custom_surrogate_is_used_by_neurons():
    name = "test_box"
    register_surrogate(name, lambda x, alpha: (x.abs() < 1 / alpha).to(x.dtype) * 123.0, overwrite=True)
    try:
        x = torch.full((1, 1, 1), 0.5, requires_grad=True)   # drives v close to threshold
        layer = LIFAdEx(LIFAdExParameters(method=name, alpha=1.0))
        z, state = layer(x)
        state.v.sum().backward()
        assert surrogate_grad(torch.tensor([0.1]), name, 1.0).item() == 123.0
        assert x.grad is not None
        with pytest.raises(ValueError, match="exists already"):
            register_surrogate(name, lambda x, alpha: x)
    finally:
        SURROGATES.pop(name)
