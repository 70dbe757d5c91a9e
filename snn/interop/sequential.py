"""A chain of layers over time-major input: what :func:`snn.import_nir` builds. Torch only.

``nn.Sequential`` cannot chain our neuron layers: they return ``(outputs, state)``. In
:class:`SpikingSequential` a neuron layer (any :class:`~snn.neurons.module.NeuronModule`) gets the
whole ``[T, B, ...]`` sequence and its final state is dropped; every other layer (Linear, Conv2d,
Flatten, pooling, :class:`Scale`) acts on each time step, as in a NIR graph.
"""

from __future__ import annotations

import torch
from torch import nn

from snn.neurons.module import NeuronModule


class Scale(nn.Module):
    """Elementwise scaling ``x * scale`` (NIR's ``Scale`` node); ``scale`` broadcasts over a step."""

    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale).detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype)


class SpikingSequential(nn.Sequential):
    """Layers applied in order to ``x [T, B, ...]``; returns the last layer's ``[T, B, ...]`` output.

    Neuron layers start from rest on every call. Example::

        net = SpikingSequential(nn.Linear(4, 8), LIF(), nn.Linear(8, 2), LI())
        v = net(torch.rand(10, 3, 4))   # [T=10, B=3, 2] readout voltages
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"SpikingSequential expects input [T, B, ...] (time first), got {got}.")
        for layer in self:
            if isinstance(layer, NeuronModule):
                x, _ = layer(x)  # [T, B, ...] -> [T, B, ...'] and a final state we drop
            else:
                T, B = x.shape[:2]
                x = layer(x.flatten(0, 1)).unflatten(0, (T, B))  # one step at a time, batched
        return x
