"""Input encoders: a static batch ``[B, ...]`` becomes a time series ``[T, B, ...]``
(``events``: a batch that already has a time axis, ``[B, T, ...]``, becomes time-major).

``static`` says whether every time step carries the same tensor; a classifier can then run its
(non-spiking) front end once on ``[B, ...]`` and broadcast the result over time instead of T times.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn


def check_steps(T: Any) -> int:
    """``T`` must be a positive integer: the number of simulation steps."""
    if isinstance(T, bool) or not isinstance(T, int) or T <= 0:
        raise ValueError(f"The number of time steps T must be a positive integer, got {T!r}.")
    return T


def _check_batch(encoder: nn.Module, x: Any) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ValueError(f"{type(encoder).__name__} expects a tensor [B, ...], got {x!r:.80}.")


class ConstantCurrentEncoder(nn.Module):
    """The input repeated at every step (an expanded view, no copy): ``x_t = scale * x``."""

    static = True

    def __init__(self, T: int, scale: float = 1.0):
        super().__init__()
        self.T = check_steps(T)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(self, x)
        x = x * self.scale if self.scale != 1.0 else x
        return x.unsqueeze(0).expand(self.T, *x.shape)  # [B, ...] -> [T, B, ...]


class PoissonEncoder(nn.Module):
    """Rate coding: at every step each input in ``[0, 1]`` spikes with probability ``x * f_max * dt``.

    ``f_max`` (Hz) is the rate of an input of 1; probabilities above 1 are clipped.
    """

    static = False

    def __init__(self, T: int, dt: float = 0.001, f_max: float = 500.0):
        super().__init__()
        self.T = check_steps(T)
        if not dt > 0 or not f_max > 0:
            raise ValueError(f"PoissonEncoder needs dt > 0 and f_max > 0, got dt={dt!r}, f_max={f_max!r}.")
        self.dt, self.f_max = float(dt), float(f_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(self, x)
        p = (x * (self.f_max * self.dt)).clamp(0.0, 1.0)
        noise = torch.rand((self.T, *x.shape), device=x.device, dtype=p.dtype)
        return (noise < p).to(p.dtype)  # [T, B, ...]


class LatencyEncoder(nn.Module):
    """Latency coding: one spike per input, the brighter the earlier.

    An input ``x`` in ``[0, 1]`` spikes once at step ``round((1 - x) * (T - 1))``, so 1 fires at the
    first step and ``threshold`` near the last; inputs below ``threshold`` never fire.
    """

    static = False

    def __init__(self, T: int, threshold: float = 0.1):
        super().__init__()
        self.T = check_steps(T)
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"LatencyEncoder's threshold must be in [0, 1), got {threshold!r}.")
        self.threshold = float(threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(self, x)
        x = x.clamp(0.0, 1.0)
        step = torch.round((1.0 - x) * (self.T - 1)).long()  # [B, ...]
        step = torch.where(x >= self.threshold, step, torch.full_like(step, self.T))  # T: no spike
        t = torch.arange(self.T, device=x.device).view(self.T, *([1] * x.dim()))
        return (t == step.unsqueeze(0)).to(x.dtype)  # [T, B, ...]


class EventFramesEncoder(nn.Module):
    """Inputs that already have a time axis (event frames, ``snn.data``): ``[B, T, ...]`` ->
    ``[T, B, ...]`` (a view), times ``scale``. ``T`` must be the data's number of time bins.

    Such a model's ``input_shape`` is one sample's, ``[T, ...]``: ``steps_in_input`` tells the
    classifiers that the shape of one step is ``input_shape[1:]``.
    """

    static = False
    steps_in_input = True

    def __init__(self, T: int, scale: float = 1.0):
        super().__init__()
        self.T = check_steps(T)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[1] != self.T:
            got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"EventFramesEncoder expects [B, T={self.T}, ...] (model.T time bins), got {got}.")
        x = x * self.scale if self.scale != 1.0 else x
        return x.transpose(0, 1)  # [B, T, ...] -> [T, B, ...]


ENCODERS: dict[str, type[nn.Module]] = {
    "constant": ConstantCurrentEncoder,
    "poisson": PoissonEncoder,
    "latency": LatencyEncoder,
    "events": EventFramesEncoder,
}


def make_encoder(kind: str, T: int, dt: float = 0.001, **options: Any) -> nn.Module:
    """The encoder called ``kind`` (a key of ``ENCODERS``) with ``T`` steps.

    ``dt`` and ``options`` go to the encoders that take them (``scale``: constant, ``f_max``:
    poisson, ``threshold``: latency) and are ignored by the others, so one config can hold them all.
    """
    if kind not in ENCODERS:
        raise ValueError(f"Unknown encoder {kind!r}; choose one of {sorted(ENCODERS)}.")
    known = {name for cls in ENCODERS.values() for name in inspect.signature(cls).parameters} - {"T", "dt"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"Unknown encoder options {unknown}; the encoders take {sorted(known)}.")
    accepted = inspect.signature(ENCODERS[kind]).parameters
    kwargs = {name: value for name, value in {"dt": dt, **options}.items() if name in accepted}
    return ENCODERS[kind](T, **kwargs)
