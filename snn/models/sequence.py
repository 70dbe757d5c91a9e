r"""Recurrent spiking sequence classifiers: ``[B, T, ...] -> [recurrent AdEx/LIF] x L -> Linear ->
LI readout -> logits``.

Sequences arrive batch-first, as data loaders give them (``input_shape = (T, *frame)``; a frame
is flattened to its features) and run time-major through the layers. Each recurrent layer
(:class:`~snn.neurons.LIFAdExRecurrent`, :class:`~snn.neurons.LIFRecurrent`) is one fused autograd
node per call on its ``python`` backend. Decoders read logits from the readout voltages
:math:`v_t \in \mathbb{R}^{B \times K}`:

- ``last``: :math:`v_T`, the voltage at the last step;
- ``mean_last``: :math:`\frac{1}{k} \sum_{t > T - k} v_t`, the mean over the last ``k`` steps;
- ``softmax_sum``: :math:`\log \frac{1}{T} \sum_t \mathrm{softmax}(v_t)`: the per-step softmax
  outputs summed over time (Yin et al. 2021), as log-probabilities, so cross-entropy is the
  negative log of the averaged prediction and the argmax is that of the sum.

Memory tasks need a spread of adaptation time scales: ``tau_ada_range = (low, high)`` (seconds)
draws each AdEx neuron's :math:`\tau_{\text{ada}}` log-uniformly from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .layers import NEURONS, hidden_sizes, make_neurons, make_readout, readout_settings


def _softmax_sum(v: torch.Tensor, k: int) -> torch.Tensor:
    # log((1/T) sum_t softmax(v_t)) = logsumexp_t(log_softmax(v_t)) - log T, stably.
    return torch.logsumexp(torch.log_softmax(v, dim=-1), dim=0) - math.log(v.shape[0])


SEQUENCE_DECODERS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "last": lambda v, k: v[-1],  # [T, B, K] -> [B, K]
    "mean_last": lambda v, k: v[-k:].mean(dim=0),
    "softmax_sum": _softmax_sum,
}


def log_uniform(n: int, low: float, high: float) -> torch.Tensor:
    """``n`` values drawn log-uniformly from ``[low, high]`` (float64, the global generator)."""
    return torch.exp(torch.empty(n, dtype=torch.float64).uniform_(math.log(low), math.log(high)))


class SpikingSequenceClassifier(nn.Module):
    """Recurrent spiking layers over a sequence, an LI readout, logits from its voltages.

    Args:
        input_shape: one sequence, ``(T, *frame)``: T steps of ``prod(frame)`` features.
        num_classes: readout neurons.
        dt: step size (s).
        hidden: recurrent population size(s), one layer each.
        neuron: ``{"kind": "adex" | "lif", "learnable": [...], "backend": ..., **parameters}``.
        autapses: self-connections in the recurrent weights.
        tau_ada_range: ``(low, high)`` in seconds: per-neuron adaptation time constants drawn
            log-uniformly (AdEx only); None keeps ``neuron.tau_ada_inv`` for every neuron.
        feedforward: a Linear between consecutive recurrent layers (else the next layer's input
            weights read the spikes directly).
        dropout: on the spikes leaving each recurrent layer.
        readout: LI parameters plus optional ``learnable`` and ``backend`` (default: the neuron's).
        decoder: ``last``, ``mean_last`` or ``softmax_sum`` (see the module docstring).
        decoder_steps: k of ``mean_last``.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        dt: float = 0.001,
        hidden: int | Sequence[int] = 128,
        neuron: Mapping[str, Any] | None = None,
        autapses: bool = False,
        tau_ada_range: Sequence[float] | None = None,
        feedforward: bool = False,
        dropout: float = 0.0,
        readout: Mapping[str, Any] | None = None,
        decoder: str = "last",
        decoder_steps: int = 10,
    ):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        if len(self.input_shape) < 2 or any(s <= 0 for s in self.input_shape):
            raise ValueError(
                f"input_shape must be (T, features...) of positive sizes, got {list(input_shape)}."
            )
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}.")
        if not isinstance(dt, int | float) or not dt > 0:
            raise ValueError(f"The time step dt must be a positive number (seconds), got {dt!r}.")
        if decoder not in SEQUENCE_DECODERS:
            raise ValueError(
                f"Unknown decoder {decoder!r}; choose one of {sorted(SEQUENCE_DECODERS)}."
            )
        self.T, self.dt, self.decoder, self.num_classes = (
            self.input_shape[0],
            float(dt),
            decoder,
            num_classes,
        )
        if (
            not isinstance(decoder_steps, int)
            or decoder_steps < 1
            or (decoder == "mean_last" and decoder_steps > self.T)
        ):
            raise ValueError(
                f"decoder_steps (k of mean_last) must be an int in [1, T = {self.T}], "
                f"got {decoder_steps!r}."
            )
        self.decoder_steps = decoder_steps
        self.features = math.prod(self.input_shape[1:])
        sizes = hidden_sizes(hidden)
        self.dropout = nn.Dropout(dropout)
        self.spiking = nn.ModuleDict()
        self.between = nn.ModuleList()
        in_size = self.features
        for n, size in enumerate(sizes):
            if feedforward and n > 0:
                self.between.append(nn.Linear(in_size, size))
                in_size = size
            self.spiking[f"recurrent{n + 1}"] = self._recurrent(
                in_size, size, dict(neuron or {}), autapses, tau_ada_range
            )
            in_size = size
        settings = readout_settings(readout, dict(neuron or {}).get("backend", "auto"))
        self.output = nn.Linear(in_size, num_classes)
        self.readout = make_readout(settings, num_classes, self.dt)

    def _recurrent(
        self,
        input_size: int,
        hidden_size: int,
        neuron: dict[str, Any],
        autapses: bool,
        tau_ada_range: Sequence[float] | None,
    ) -> nn.Module:
        kind = neuron.get("kind", "adex")
        if kind not in NEURONS:
            raise ValueError(f"Unknown neuron kind {kind!r}; choose one of {sorted(NEURONS)}.")
        if tau_ada_range is not None:
            if kind != "adex":
                raise ValueError(
                    f"tau_ada_range sets AdEx adaptation time constants; neuron kind {kind!r} "
                    "has none (set tau_ada_range: null)."
                )
            low, high = (float(t) for t in tau_ada_range)
            if not 0 < low <= high:
                raise ValueError(
                    "tau_ada_range must be (low, high) seconds with 0 < low <= high, "
                    f"got {tau_ada_range}."
                )
            neuron["tau_ada_inv"] = 1.0 / log_uniform(hidden_size, low, high)
        return make_neurons(
            dt=self.dt, shape=(hidden_size,), recurrent_inputs=input_size, autapses=autapses, **neuron
        )

    def spiking_layers(self) -> dict[str, nn.Module]:
        """Every recurrent layer by name (in forward order): what ``SpikeRecorder`` hooks."""
        return dict(self.spiking.items())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, T, *frame]`` -> logits ``[B, num_classes]``."""
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != self.input_shape:
            got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"{type(self).__name__} expects input [B, {', '.join(map(str, self.input_shape))}] "
                f"(batch first, then time), got {got}."
            )
        z = x.flatten(2).transpose(0, 1)  # [B, T, *frame] -> [T, B, F]
        for n, layer in enumerate(self.spiking.values()):
            if n > 0 and len(self.between):
                z = self.between[n - 1](z)  # [T, B, h_n-1] -> [T, B, h_n]
            z, _ = layer(z)  # -> [T, B, h_n] spikes
            z = self.dropout(z)
        v, _ = self.readout(self.output(z))  # [T, B, K] readout voltages
        return SEQUENCE_DECODERS[self.decoder](v, self.decoder_steps)  # -> [B, K]
