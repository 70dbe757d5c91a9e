"""What a model config would allocate, found before anything is allocated.

A config's sizes (``T``, the hidden sizes, conv channels, the input shape, the batch size) set the
size of every weight and of every ``[T, B, neurons]`` array a training step makes; a typo
(``model.T=1000000000``, ``model.hidden=100000000``) must end in a sentence naming the keys, not
in a traceback from the first allocation or the out-of-memory killer.

Both estimates come from the model itself rather than from a formula per model class, so they hold
for any :class:`~snn.models.contract.SpikingModel`, the user's included:

- **weights**: the model is built on the ``meta`` device, where tensors have shapes and no storage:
  every parameter and buffer, exactly, at no cost (:func:`build_on_meta`);
- **activations**: one forward on a ``meta`` input of batch 1 with each spiking layer replaced by a
  stand-in that records how many neurons it has and returns spikes of its shape (the layers' own
  time loops would take ``T`` Python steps even on ``meta``). A spiking layer keeps, per neuron, step
  and sample, its state (``v``, ``i``, ``a``...), its spikes and its input current for the backward
  pass; each is one ``[T, B, neurons]`` array (the fused loops' buffers), :func:`step_arrays`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

BYTES = 4  # float32: the dtype a training step computes in


@dataclass
class Footprint:
    """Bytes a model config asks for: ``weights`` (name -> shape of every parameter and buffer) and,
    per spiking layer, ``neurons`` per sample and ``arrays`` (``[T, B, neurons]`` arrays kept for the
    backward pass); ``T`` steps."""

    weights: dict[str, tuple[int, ...]]
    T: int
    neurons: dict[str, int] = field(default_factory=dict)
    arrays: dict[str, int] = field(default_factory=dict)

    def weight_bytes(self) -> int:
        return sum(math.prod(s) for s in self.weights.values()) * BYTES

    def largest_weight(self) -> tuple[str, tuple[int, ...]] | None:
        return max(self.weights.items(), key=lambda kv: math.prod(kv[1]), default=None)

    def layer_array_bytes(self, batch_size: int) -> dict[str, int]:
        """Bytes of one ``[T, batch_size, neurons]`` array of each spiking layer."""
        return {name: self.T * batch_size * n * BYTES for name, n in self.neurons.items()}

    def activation_bytes(self, batch_size: int) -> int:
        """Bytes of everything the spiking layers keep for one batch's backward pass."""
        per_layer = self.layer_array_bytes(batch_size)
        return sum(per_layer[name] * self.arrays[name] for name in per_layer)


def step_arrays(layer: nn.Module) -> int:
    """``[T, B, neurons]`` arrays a spiking layer keeps for the backward pass: its state's fields,
    its spikes and its input current (a layer without a ``state_class``: 4, as AdEx's v, i, a, z)."""
    state = getattr(layer, "state_class", None)
    fields = getattr(state, "_fields", None)
    return len(fields) + 2 if fields else 4


def build_on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with every tensor it creates on the ``meta`` device (shapes only, no memory)."""
    with torch.device("meta"):
        return build()


class _StandIn(nn.Module):
    """Replaces a spiking layer in a ``meta`` forward: records the neurons per sample of its input
    ``[T, B, ...]`` (or its ``hidden_size`` when it projects) and returns meta spikes of that shape."""

    def __init__(self, layer: nn.Module, record: Callable[[int], None]):
        super().__init__()
        self.hidden_size = getattr(layer, "hidden_size", None)
        self.record = record

    def forward(self, x: torch.Tensor, state=None):
        shape = tuple(x.shape[:2]) + ((self.hidden_size,) if self.hidden_size else tuple(x.shape[2:]))
        self.record(math.prod(shape[2:]))
        return torch.empty(shape, device="meta", dtype=x.dtype), None


def _replace(model: nn.Module, originals: Mapping[str, nn.Module], record_for) -> None:
    by_id = {id(layer): name for name, layer in originals.items()}
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if id(child) in by_id:
                setattr(parent, child_name, _StandIn(child, record_for(by_id[id(child)])))


def model_footprint(meta_model: nn.Module) -> Footprint:
    """The :class:`Footprint` of a model built with :func:`build_on_meta` (a
    :class:`~snn.models.contract.SpikingModel`). Its spiking layers are replaced in place: the model
    is for this estimate only. Without a forward that runs on ``meta`` (a model whose code needs
    values), only the weights are counted and ``neurons`` stays empty."""
    weights = {name: tuple(t.shape) for name, t in
               [*meta_model.named_parameters(), *meta_model.named_buffers()]}
    footprint = Footprint(weights, int(getattr(meta_model, "T", 1)))
    layers = dict(meta_model.spiking_layers()) if hasattr(meta_model, "spiking_layers") else {}
    readout = getattr(meta_model, "readout", None)
    if isinstance(readout, nn.Module) and all(readout is not layer for layer in layers.values()):
        layers["readout"] = readout
    footprint.arrays = {name: step_arrays(layer) for name, layer in layers.items()}

    def record_for(name: str) -> Callable[[int], None]:
        return lambda n: footprint.neurons.__setitem__(name, n)

    _replace(meta_model, layers, record_for)
    try:
        with torch.no_grad():
            meta_model(torch.zeros((1, *meta_model.input_shape), device="meta"))
    except Exception:  # a forward that needs values: the weights alone are still an estimate
        footprint.neurons.clear()
    return footprint
