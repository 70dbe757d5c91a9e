"""Watching spikes without the model knowing: forward hooks on its spiking layers.

A model lists its spiking layers with ``spiking_layers() -> {name: module}``; each such layer returns
``(spikes [T, B, ...], state)``. ``SpikeRecorder`` hooks them and keeps the spikes of the latest
forward pass per layer, from which callbacks derive rates, rasters or counts to reduce across
processes. Nothing is copied: the recorder holds references to tensors the forward pass made anyway.
With ``inputs=True`` it also keeps each layer's input current, from which
``snn.neurons.trajectory`` replays the layer's voltages and states step by step.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class SpikeRecorder:
    """Records the spikes of every layer in ``layers`` on each forward pass.

    ``detach=False`` keeps the autograd graph so a loss (e.g. a firing-rate penalty) can depend on
    ``rates()``; call ``clear()`` after the step so the graph is not held longer than needed.
    ``inputs=True`` also records every layer's input ``[T, B, ...]`` in ``self.inputs``.

    >>> recorder = SpikeRecorder(model.spiking_layers())  # doctest: +SKIP
    >>> logits = model(images); recorder.rates()           # {"hidden1": tensor(0.07), ...}
    """

    def __init__(self, layers: Mapping[str, nn.Module], detach: bool = True, inputs: bool = False):
        if not layers:
            raise ValueError("SpikeRecorder needs at least one spiking layer, got none.")
        self.detach = detach
        self.spikes: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, torch.Tensor] = {}
        self.enabled = True
        self._handles = [layer.register_forward_hook(self._hook(name))
                         for name, layer in layers.items()]
        if inputs:
            self._handles += [layer.register_forward_pre_hook(self._input_hook(name))
                              for name, layer in layers.items()]
        self.names = list(layers)

    def _input_hook(self, name: str):
        def record(module: nn.Module, args) -> None:
            if self.enabled:
                self.inputs[name] = args[0].detach() if self.detach else args[0]

        return record

    def _hook(self, name: str):
        def record(module: nn.Module, inputs, output) -> None:
            if not self.enabled:
                return
            spikes = output[0] if isinstance(output, tuple) else output  # (z [T, B, ...], state)
            self.spikes[name] = spikes.detach() if self.detach else spikes

        return record

    def rates(self) -> dict[str, torch.Tensor]:
        """Mean spikes per neuron and time step of the latest forward pass, per layer (scalars)."""
        return {name: z.float().mean() for name, z in self.spikes.items()}

    def counts(self) -> dict[str, tuple[torch.Tensor, int]]:
        """``(total spikes, neuron-steps)`` per layer: sums that add up exactly across processes."""
        return {name: (z.float().sum(), z.numel()) for name, z in self.spikes.items()}

    def neurons(self) -> dict[str, int]:
        """Neurons per layer, from the shape of the recorded spikes ``[T, B, ...]``."""
        return {name: z[0, 0].numel() for name, z in self.spikes.items()}

    def clear(self) -> None:
        self.spikes.clear()
        self.inputs.clear()

    def remove(self) -> None:
        """Detaches the hooks; the recorder records nothing afterwards."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear()

    def __enter__(self) -> SpikeRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
