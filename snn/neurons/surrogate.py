r"""Spike functions with surrogate gradients.

A spiking neuron emits :math:`z = \Theta(x)` with :math:`x = v - v_{th}` (Heaviside, ``x > 0``).
Its true derivative is zero almost everywhere, so training replaces it in the backward pass by a
smooth *surrogate* :math:`\sigma'(x; \alpha)` whose steepness is :math:`\alpha`.

Surrogates live in a registry that maps a name to the surrogate derivative
``derivative(x, alpha) -> tensor``. Forward is always the exact Heaviside step; only the backward
pass differs. The fused kernels of :mod:`snn.neurons` implement the built-in names natively;
user-registered surrogates run on the ``python`` backend (``auto`` chooses it for them; ``cpp``
refuses them and ``triton`` falls back to ``python`` with a warning).

Built-in surrogates (every one honours ``alpha``):

=============  =================================================================  ================
name           :math:`\sigma'(x; \alpha)`                                         peak at x = 0
=============  =================================================================  ================
``super``      :math:`1 / (\alpha |x| + 1)^2` (SuperSpike, Zenke & Ganguli 2018)  1
``triangle``   :math:`\alpha \max(0, 1 - \alpha |x|)`                             :math:`\alpha`
``sigmoid``    :math:`\alpha s (1 - s)`, :math:`s = \mathrm{sigmoid}(\alpha x)`   :math:`\alpha/4`
``atan``       :math:`\alpha / (2 (1 + (\pi \alpha x / 2)^2))`                    :math:`\alpha/2`
``tanh``       :math:`\alpha (1 - \tanh^2(\alpha x)) / 2`                         :math:`\alpha/2`
``heaviside``  0 (no gradient)                                                    0
=============  =================================================================  ================

Differences from norse 1.1.0 (the PyPI release): its ``super`` surrogate ignores ``alpha`` and
always computes :math:`1 / (|x| + 1)^2` -- ours with ``alpha=1`` -- and its ``tent`` is
:math:`\alpha \max(0, 1 - |x|)`, ours (``triangle``) only at ``alpha=1``. So at the default
``alpha=100`` our SuperSpike is the published one, 100 times narrower than what norse 1.1.0 uses; pass
``alpha=1.0`` to reproduce norse's gradients. norse's ``tanh`` returns :math:`1 - \tanh^2(\alpha x)`,
which is not the derivative of :math:`(1 + \tanh(\alpha x))/2`; ours is (they differ by
:math:`\alpha/2`). tests/neurons/test_norse_equivalence.py pins all of this against norse itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

SurrogateDerivative = Callable[[torch.Tensor, float], torch.Tensor]


def superspike(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return 1.0 / (alpha * x.abs() + 1.0).pow(2)


def triangle(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return alpha * torch.relu(1.0 - alpha * x.abs())


def sigmoid(x: torch.Tensor, alpha: float) -> torch.Tensor:
    s = torch.sigmoid(alpha * x)
    return alpha * s * (1.0 - s)


def atan(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return alpha / (2.0 * (1.0 + (0.5 * math.pi * alpha * x).pow(2)))


def tanh(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return 0.5 * alpha * (1.0 - torch.tanh(alpha * x).pow(2))


def no_gradient(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.zeros_like(x)


SURROGATES: dict[str, SurrogateDerivative] = {
    "super": superspike,
    "triangle": triangle,
    "sigmoid": sigmoid,
    "atan": atan,
    "tanh": tanh,
    "heaviside": no_gradient,
}


def register_surrogate(name: str, derivative: SurrogateDerivative, overwrite: bool = False) -> None:
    """Adds ``derivative(x, alpha)`` to the registry under ``name`` (then ``method=name`` works).

    >>> register_surrogate("gauss", lambda x, a: a / math.sqrt(math.pi) * torch.exp(-(a * x) ** 2))
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"A surrogate name must be a non-empty string, got {name!r}.")
    if not callable(derivative):
        raise ValueError(f"The surrogate {name!r} must be a callable derivative(x, alpha).")
    if name in SURROGATES and not overwrite:
        raise ValueError(f"A surrogate named {name!r} exists already; pass overwrite=True to replace it.")
    SURROGATES[name] = derivative


def surrogate_derivative(method: str) -> SurrogateDerivative:
    """The registered derivative for ``method``; a ValueError lists the known names otherwise."""
    try:
        return SURROGATES[method]
    except (KeyError, TypeError):
        known = ", ".join(sorted(SURROGATES))
        raise ValueError(
            f"Unknown surrogate method {method!r}. Known methods: {known}. "
            "Add your own with snn.neurons.register_surrogate(name, derivative)."
        ) from None


def check_alpha(alpha: float) -> None:
    if not isinstance(alpha, int | float) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"The surrogate steepness alpha must be a positive finite number, got {alpha!r}.")


class SpikeFunction(torch.autograd.Function):
    """Heaviside forward (``x > 0``), ``grad * derivative(x, alpha)`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float, derivative: SurrogateDerivative) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        ctx.derivative = derivative
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_output * ctx.derivative(x, ctx.alpha), None, None


def spike(x: torch.Tensor, method: str = "super", alpha: float = 100.0) -> torch.Tensor:
    """:math:`\\Theta(x)` forward with the surrogate ``method`` of steepness ``alpha`` backward."""
    derivative = surrogate_derivative(method)
    if derivative is no_gradient:
        return (x > 0).to(x.dtype)
    return SpikeFunction.apply(x, alpha, derivative)
