"""Spiking image classifiers: encoder -> (conv) -> spiking layers -> LI readout -> logits.

Two architectures, both with AdEx (``neuron.kind="adex"``) or LIF (``"lif"``) neurons (any kind of
:data:`snn.models.layers.NEURONS`):

- ``SpikingClassifier``: a conventional conv encoder, then Linear -> spiking layer(s) -> Linear ->
  LI readout of ``num_classes`` neurons.
- ``SpikingConvClassifier``: spiking neurons after every conv block (conv -> norm -> neurons ->
  pool), then Linear -> spiking layer -> Linear -> LI readout.

Logits are decoded from the readout voltages ``[T, B, num_classes]`` by ``decoder`` (max or mean
over time). With constant-current coding the non-spiking front end sees the same image at every
step, so it runs once on ``[B, ...]`` and its output is broadcast over T.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .conv import ConvEncoder
from .encoders import check_steps, make_encoder
from .layers import hidden_sizes, make_neurons, make_readout, readout_settings

DECODERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "max": lambda v: v.amax(dim=0),  # [T, B, K] -> [B, K]
    "mean": lambda v: v.mean(dim=0),
}


class _SpikingNet(nn.Module):
    """What both classifiers share: input encoding, the hidden spiking stack, readout, decoding."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        T: int,
        dt: float,
        encoder: Mapping[str, Any] | None,
        neuron: Mapping[str, Any] | None,
        readout: Mapping[str, Any] | None,
        decoder: str,
    ):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        if not self.input_shape or any(s <= 0 for s in self.input_shape):
            raise ValueError(f"input_shape must be a non-empty list of positive sizes, got {list(input_shape)}.")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}.")
        if decoder not in DECODERS:
            raise ValueError(f"Unknown decoder {decoder!r}; choose one of {sorted(DECODERS)}.")
        if not isinstance(dt, int | float) or not dt > 0:
            raise ValueError(f"The time step dt must be a positive number (seconds), got {dt!r}.")
        self.T, self.dt, self.decoder = check_steps(T), float(dt), decoder
        self.num_classes = num_classes
        self.encoder = make_encoder(T=self.T, dt=self.dt, **dict(encoder or {"kind": "constant"}))
        # The shape of one time step: event data (encoder kind events) has T in input_shape[0].
        self.step_shape = self.input_shape
        if getattr(self.encoder, "steps_in_input", False):
            if len(self.input_shape) < 2 or self.input_shape[0] != self.T:
                raise ValueError(
                    f"With encoder kind 'events' input_shape is [T, ...] with T = model.T = {self.T}, "
                    f"got {list(self.input_shape)}; set model.T to the data's time bins "
                    "(dataset.input_shape[0])."
                )
            self.step_shape = self.input_shape[1:]
        self.neuron = dict(neuron or {})
        self._readout = readout_settings(readout, self.neuron.get("backend", "auto"))

    def add_spiking(self, name: str, shape: Sequence[int]) -> nn.Module:
        """A spiking layer ``name`` of ``self.neuron``'s kind; learnable constants per ``shape``."""
        layer = make_neurons(dt=self.dt, shape=tuple(shape), **self.neuron)
        if "spiking" not in self._modules:  # created here so that it follows the layers before it
            self.spiking = nn.ModuleDict()
        self.spiking[name] = layer
        return layer

    def make_readout(self, in_features: int) -> None:
        """Linear projection into ``num_classes`` LI neurons."""
        self.output = nn.Linear(in_features, self.num_classes)
        self.readout = make_readout(self._readout, self.num_classes, self.dt)

    def spiking_layers(self) -> dict[str, nn.Module]:
        """Every spiking layer by name (in forward order): what ``SpikeRecorder`` hooks."""
        return dict(self.spiking.items())

    def check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != self.input_shape:
            got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            shape = ", ".join(map(str, self.input_shape))
            raise ValueError(f"{type(self).__name__} expects input [B, {shape}], got {got}.")

    def front_end(self, x: torch.Tensor, module: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Encodes ``x [B, ...]`` and applies the non-spiking ``module`` to every step: ``[T, B, ...]``.

        Static (constant-current) coding runs ``module`` once and broadcasts its output over T.
        """
        if self.encoder.static:
            out = module(self.encoder(x)[0])  # one step [B, ...] -> [B, ...']
            return out.unsqueeze(0).expand(self.T, *out.shape)  # -> [T, B, ...'] (a view)
        steps = self.encoder(x)  # [T, B, ...]
        out = module(steps.flatten(0, 1))  # [T*B, ...] -> [T*B, ...']
        return out.unflatten(0, (self.T, x.shape[0]))  # -> [T, B, ...']

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Spikes ``[T, B, F]`` -> readout voltages ``[T, B, K]`` -> logits ``[B, K]``."""
        v, _ = self.readout(self.output(z))
        return DECODERS[self.decoder](v)


class SpikingClassifier(_SpikingNet):
    """Conv encoder (or none) -> [Linear -> spiking layer] per ``hidden`` size -> Linear -> LI.

    Args:
        input_shape: shape of one input, e.g. ``(1, 28, 28)``.
        num_classes: readout neurons.
        T, dt: simulation steps and step size (s).
        encoder: ``{"kind": "constant" | "poisson" | "latency", **options}`` (see ``make_encoder``).
        conv: ``ConvEncoder`` arguments (channels, kernel_size, norm, activation, pool) or None.
        hidden: spiking population size(s).
        neuron: ``{"kind": "adex" | "lif", "learnable": [...], "backend": ..., **parameters}``.
        readout: LI parameters plus optional ``learnable`` and ``backend`` (default: the neuron's).
        decoder: how logits are read from the readout voltages (``DECODERS``).
        dropout: dropout on the features entering the first spiking layer.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        T: int = 32,
        dt: float = 0.001,
        encoder: Mapping[str, Any] | None = None,
        conv: Mapping[str, Any] | None = None,
        hidden: int | Sequence[int] = 128,
        neuron: Mapping[str, Any] | None = None,
        readout: Mapping[str, Any] | None = None,
        decoder: str = "max",
        dropout: float = 0.0,
    ):
        super().__init__(input_shape, num_classes, T, dt, encoder, neuron, readout, decoder)
        if conv:
            if len(self.step_shape) != 3:
                raise ValueError("A conv encoder needs image inputs (C, H, W), "
                                 f"got input_shape {list(self.input_shape)}.")
            self.conv = ConvEncoder(self.step_shape[0], **conv)
            features = math.prod(self.conv.output_shape(self.step_shape))
        else:
            self.conv = nn.Identity()
            features = math.prod(self.step_shape)
        self.dropout = nn.Dropout(dropout)
        sizes = [features, *hidden_sizes(hidden)]
        self.linear = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        for i, size in enumerate(sizes[1:]):
            self.add_spiking(f"hidden{i + 1}", (size,))
        self.make_readout(sizes[-1])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[N, C, H, W]`` -> currents into the first spiking layer ``[N, hidden]``."""
        return self.linear[0](self.dropout(self.conv(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        layers = list(self.spiking.values())
        z, _ = layers[0](self.front_end(x, self.features))  # [B, C, H, W] -> [T, B, hidden1]
        for linear, layer in zip(self.linear[1:], layers[1:], strict=True):
            z, _ = layer(linear(z))  # [T, B, hidden_i] -> [T, B, hidden_i+1]
        return self.decode(z)  # [B, num_classes]


class SpikingConvClassifier(_SpikingNet):
    """[conv -> norm -> spiking neurons -> pool] per conv block -> Linear -> spiking -> Linear -> LI.

    ``conv`` takes ``channels``, ``kernel_size``, ``norm`` and ``pool`` (one value or one per block);
    the neurons replace the activation. The first conv sees the encoded input; with constant-current
    coding it runs once and its output is broadcast over T. Later convs see spikes, ``[T*B, ...]``.
    Other arguments as in ``SpikingClassifier``.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        T: int = 32,
        dt: float = 0.001,
        encoder: Mapping[str, Any] | None = None,
        conv: Mapping[str, Any] | None = None,
        hidden: int = 128,
        neuron: Mapping[str, Any] | None = None,
        readout: Mapping[str, Any] | None = None,
        decoder: str = "max",
        dropout: float = 0.0,
    ):
        super().__init__(input_shape, num_classes, T, dt, encoder, neuron, readout, decoder)
        if len(self.step_shape) != 3:
            raise ValueError("SpikingConvClassifier needs image inputs (C, H, W), "
                             f"got input_shape {list(self.input_shape)}.")
        conv = dict(conv or {"channels": [16, 32]})
        unknown = sorted(set(conv) - {"channels", "kernel_size", "norm", "pool"})
        if unknown:
            raise ValueError("SpikingConvClassifier's conv takes channels, kernel_size, norm, pool; "
                             f"got unknown {unknown}.")
        # Reuse ConvEncoder's argument checks and shape arithmetic; its activations are not used.
        layout = ConvEncoder(self.step_shape[0], activation="none", **conv)
        self.convs, self.pools = nn.ModuleList(), nn.ModuleList()
        for i, block in enumerate(layout):
            conv_layer, norm = block[0], block[1]
            self.convs.append(nn.Sequential(conv_layer, norm))
            self.add_spiking(f"conv{i + 1}", (conv_layer.out_channels, 1, 1))  # per-channel constants when learnable
            self.pools.append(block[3])
        c, h, w = layout.output_shape(self.step_shape)
        hidden = hidden_sizes(hidden)
        if len(hidden) != 1:
            raise ValueError("SpikingConvClassifier has one hidden spiking layer; "
                             f"hidden must be an int, got {hidden}.")
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(c * h * w, hidden[0])
        self.add_spiking("hidden1", (hidden[0],))
        self.make_readout(hidden[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        T, B = self.T, x.shape[0]
        layers = list(self.spiking.values())
        current = self.front_end(x, self.convs[0])  # [B, C, H, W] -> [T, B, C1, H, W]
        for i, (layer, pool) in enumerate(zip(layers[:-1], self.pools, strict=True)):
            z, _ = layer(current)
            z = pool(z.flatten(0, 1))  # [T, B, C, H, W] -> [T*B, C, H', W']
            if i + 1 < len(self.convs):
                current = self.convs[i + 1](z).unflatten(0, (T, B))  # -> [T, B, C', H', W']
        current = self.linear(self.dropout(z.flatten(1))).unflatten(0, (T, B))  # -> [T, B, hidden]
        z, _ = layers[-1](current)
        return self.decode(z)
