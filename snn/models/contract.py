"""The model contract: what the training stack and the monitoring callbacks expect of a network.

``snn.training.SpikingClassifierModule`` trains, and the TensorBoard callbacks watch, any
``nn.Module`` that satisfies :class:`SpikingModel`; ``check_model`` is called when the
LightningModule builds its network, so a new model (a sequence model, say) learns at construction,
not in the middle of a run, what it lacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class SpikingModel(Protocol):
    """A spiking network ``x [B, *input_shape] -> logits [B, num_classes]``.

    Attributes:
        input_shape: the shape of one input without the batch dimension (an example input and the
            checks are built from it).
        num_classes: outputs per sample (accuracy metrics are sized by it).
        T: simulation steps per sample.
        dt: the step in seconds (rates x 1/dt = Hz).
        decoder: how the readout's voltages become logits (a name, e.g. ``"max"``, logged).
        readout: the output layer; an ``LI`` layer's voltages are plotted by the monitoring.
    """

    input_shape: tuple[int, ...]
    num_classes: int
    T: int
    dt: float
    decoder: str
    readout: nn.Module

    def spiking_layers(self) -> Mapping[str, nn.Module]:
        """Every spiking layer by name, in forward order; each is time-major and returns
        ``(spikes [T, B, ...], state)`` (what ``SpikeRecorder`` hooks and the plots trace)."""
        ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


CONTRACT_MEMBERS = ("input_shape", "num_classes", "T", "dt", "decoder", "readout", "spiking_layers")


def check_model(net: object) -> None:
    """Raises a ValueError naming every member of :class:`SpikingModel` that ``net`` lacks or has
    in an unusable form (wrong type, no spiking layers)."""
    name = type(net).__name__
    missing = [member for member in CONTRACT_MEMBERS if not hasattr(net, member)]
    if missing or not isinstance(net, nn.Module):
        raise ValueError(
            f"{name} does not satisfy snn.models.SpikingModel: "
            + (f"missing {missing}" if missing else "not an nn.Module")
            + ". A network for SpikingClassifierModule needs input_shape, num_classes, T, dt, "
            "decoder, readout and spiking_layers() (see snn/models/contract.py)."
        )
    problems = []
    shape = net.input_shape
    if not isinstance(shape, tuple) or not all(isinstance(s, int) for s in shape):
        problems.append(f"input_shape must be a tuple of ints, got {net.input_shape!r}")
    for member, kind in (("num_classes", int), ("T", int), ("dt", float)):
        value = getattr(net, member)
        if not isinstance(value, kind) or isinstance(value, bool) or not value > 0:
            problems.append(f"{member} must be a positive {kind.__name__}, got {value!r}")
    if not isinstance(net.decoder, str):
        problems.append(f"decoder must be a name (str), got {type(net.decoder).__name__}")
    if not isinstance(net.readout, nn.Module):
        problems.append(f"readout must be an nn.Module, got {type(net.readout).__name__}")
    layers = net.spiking_layers()
    if not isinstance(layers, Mapping) or not layers:
        problems.append(f"spiking_layers() must return a non-empty {{name: module}}, got {layers}")
    elif not all(isinstance(layer, nn.Module) for layer in layers.values()):
        problems.append("spiking_layers() must map names to nn.Modules")
    if problems:
        raise ValueError(f"{name} does not satisfy snn.models.SpikingModel: {'; '.join(problems)}.")
