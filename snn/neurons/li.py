r"""Leaky integrators (LI): non-spiking readout neurons whose voltage is the network's output.

.. math::
    \begin{align*}
        \dot{v} &= \tau_{\text{mem}}^{-1} (v_{\text{leak}} - v + i) \\
        \dot{i} &= -\tau_{\text{syn}}^{-1} i
    \end{align*}
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .equations import leaky_subthreshold
from .module import NeuronModule, Projection, compute_dtype, float32_state, without_autocast


class LIParameters(NamedTuple):
    """Parameters of a leaky integrator (norse's defaults); each may be a scalar or a tensor.

    The modules refuse a negative ``tau_syn_inv`` or ``tau_mem_inv`` (1/s) when they are built; the
    step functions take whatever they are given (they are the hot path)."""

    tau_syn_inv: torch.Tensor = torch.as_tensor(1.0 / 5e-3, dtype=torch.float64)
    tau_mem_inv: torch.Tensor = torch.as_tensor(1.0 / 1e-2, dtype=torch.float64)
    v_leak: torch.Tensor = torch.as_tensor(0.0, dtype=torch.float64)


class LIState(NamedTuple):
    """State of a leaky integrator: voltage ``v`` and synaptic current ``i``."""

    v: torch.Tensor
    i: torch.Tensor


def li_feed_forward_step(
    input_current: torch.Tensor,
    state: LIState,
    p: LIParameters = LIParameters(),
    dt: float = 0.001,
) -> tuple[torch.Tensor, LIState]:
    r"""One explicit Euler step of the leaky integrator with input current :math:`x`:

    .. math::
        \begin{align*}
            i_j &= i + x \\
            v' &= v + \Delta t\, \tau_{\text{mem}}^{-1} ((v_{\text{leak}} - v) + i_j) \\
            i' &= i_j - \Delta t\, \tau_{\text{syn}}^{-1} i_j
        \end{align*}

    Returns the new voltage :math:`v'` (the output) and the new :class:`LIState`.
    """
    _, v_new, i_decayed = leaky_subthreshold(
        input_current, state.v, state.i, dt * p.tau_mem_inv, -dt * p.tau_syn_inv, p.v_leak)
    return v_new, LIState(v_new, i_decayed)


def li_step(
    input_tensor: torch.Tensor,
    state: LIState,
    input_weights: torch.Tensor,
    p: LIParameters = LIParameters(),
    dt: float = 0.001,
) -> tuple[torch.Tensor, LIState]:
    r""":func:`li_feed_forward_step` with input current :math:`W x`."""
    return li_feed_forward_step(F.linear(input_tensor, input_weights), state, p, dt)


class LICell(NeuronModule):
    """One leaky-integrator step for input currents ``[B, ...]``: returns ``(v, LIState)``.

    Parameters :class:`LIParameters`, state :class:`LIState`, the equations
    :func:`li_feed_forward_step`'s; :class:`LI` loops it over time.
    """

    parameters_class = LIParameters
    state_class = LIState
    step = staticmethod(li_feed_forward_step)
    fused_kind = "li"

    def __init__(self, p: LIParameters = LIParameters(), dt: float = 0.001,
                 learnable: Iterable[str] = (), shape: Sequence[int] | None = None):
        super().__init__(p, dt, learnable, shape)


class LI(LICell):
    """Leaky-integrator layer: ``x [T, B, ...] -> (v [T, B, ...], final LIState)``.

    Parameters :class:`LIParameters`, state :class:`LIState`; one step of it is :class:`LICell`,
    the equations are :func:`li_feed_forward_step`'s.

    Example:
        >>> v, state = LI()(torch.zeros(10, 2))   # 10 time steps, 2 neurons
    """

    time_major = True

    def __init__(self, p: LIParameters = LIParameters(), dt: float = 0.001, learnable: Iterable[str] = (),
                 shape: Sequence[int] | None = None, backend: str = "auto"):
        super().__init__(p, dt, learnable, shape)
        self.backend = backend  # checked by NeuronModule.backend


class LILinearCell(Projection, LICell):
    """One leaky-integrator step with a weight matrix: ``[B, input_size] -> (v [B, hidden_size], LIState)``.

    Parameters :class:`LIParameters`, state :class:`LIState`, the equations :func:`li_step`'s.

    The input current is ``W x`` with ``W`` of shape ``[hidden_size, input_size]``, initialised as in
    norse: ``randn / sqrt(input_size)``. ``W`` sets the dtype, as in ``nn.Linear`` (``.double()``
    for float64 input).
    """

    def __init__(self, input_size: int, hidden_size: int, p: LIParameters = LIParameters(),
                 dt: float = 0.001, learnable: Iterable[str] = ()):
        self.check_sizes(input_size, hidden_size)
        super().__init__(p, dt, learnable, shape=(hidden_size,) if learnable else None)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.input_weights = nn.Parameter(torch.randn(hidden_size, input_size) / input_size**0.5)

    def forward(self, input_tensor: torch.Tensor, state: LIState | None = None):
        hidden_shape = self.check_input(input_tensor, time_major=False)  # [B, input_size] -> [B, hidden_size]
        self.check_weights(input_tensor)
        given = input_tensor.dtype
        with without_autocast(input_tensor):  # half precision: computed in float32 (snn.neurons.module)
            x = input_tensor.to(compute_dtype(given))
            state = float32_state(state, given)
            if state is None:
                state = self.rest_state(x.new_zeros(hidden_shape))
            state = self.check_state(state, hidden_shape, LIState, like=x, given=given)
            v, final = li_step(x, state, self.input_weights.to(x.dtype), self.neuron_parameters(x), self.dt)
        return v.to(given), final
