r"""Leaky integrate-and-fire neurons (LIF), the baseline to compare AdEx against.

.. math::
    \begin{align*}
        \dot{v} &= \tau_{\text{mem}}^{-1} (v_{\text{leak}} - v + i) \\
        \dot{i} &= -\tau_{\text{syn}}^{-1} i
    \end{align*}

with a spike :math:`z = \Theta(v - v_{\text{th}})` that resets :math:`v \to v_{\text{reset}}`.
Defaults, update order and gradients follow norse 1.1.0's ``LIF``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch

from .equations import after_reset, leaky_subthreshold
from .module import NeuronModule, RecurrentNeuronModule, recurrent_current, run_time_loop
from .surrogate import spike


class LIFParameters(NamedTuple):
    """Parameters of a LIF neuron (norse's defaults); every field but ``method`` may be a tensor.

    The modules refuse a negative ``tau_syn_inv`` or ``tau_mem_inv`` (1/s) when they are built; the
    step functions take whatever they are given (they are the hot path)."""

    tau_syn_inv: torch.Tensor = torch.as_tensor(1.0 / 5e-3, dtype=torch.float64)
    tau_mem_inv: torch.Tensor = torch.as_tensor(1.0 / 1e-2, dtype=torch.float64)
    v_leak: torch.Tensor = torch.as_tensor(0.0, dtype=torch.float64)
    v_th: torch.Tensor = torch.as_tensor(1.0, dtype=torch.float64)
    v_reset: torch.Tensor = torch.as_tensor(0.0, dtype=torch.float64)
    method: str = "super"
    alpha: float = 100.0


class LIFFeedForwardState(NamedTuple):
    """State of a feed-forward LIF neuron: voltage ``v`` and synaptic current ``i``."""

    v: torch.Tensor
    i: torch.Tensor


class LIFState(NamedTuple):
    """State of a recurrent LIF neuron: last spikes ``z`` plus ``v`` and ``i``."""

    z: torch.Tensor
    v: torch.Tensor
    i: torch.Tensor


def lif_subthreshold(
    input_current: torch.Tensor,
    state: LIFFeedForwardState | LIFState,
    p: LIFParameters = LIFParameters(),
    dt: float = 0.001,
) -> LIFFeedForwardState:
    r"""The lines :math:`i_j, v_d, i'` of :func:`lif_feed_forward_step`: the state at the end of a
    step before the spike and reset. :math:`v_d` is the voltage that crosses threshold."""
    _, v_decayed, i_decayed = leaky_subthreshold(
        input_current, state.v, state.i, dt * p.tau_mem_inv, -dt * p.tau_syn_inv, p.v_leak)
    return LIFFeedForwardState(v_decayed, i_decayed)


def lif_feed_forward_step(
    input_current: torch.Tensor,
    state: LIFFeedForwardState,
    p: LIFParameters = LIFParameters(),
    dt: float = 0.001,
) -> tuple[torch.Tensor, LIFFeedForwardState]:
    r"""One explicit Euler step of the LIF neuron with input current :math:`x`:

    .. math::
        \begin{align*}
            i_j &= i + x \\
            v_d &= v + \Delta t\, \tau_{\text{mem}}^{-1} ((v_{\text{leak}} - v) + i_j) \\
            i' &= i_j - \Delta t\, \tau_{\text{syn}}^{-1} i_j \\
            z &= \Theta(v_d - v_{\text{th}}) \quad \text{(surrogate gradient backward)} \\
            v' &= (1 - z)\, v_d + z\, v_{\text{reset}}
        \end{align*}
    """
    v_decayed, i_decayed = lif_subthreshold(input_current, state, p, dt)
    z = spike(v_decayed - p.v_th, p.method, p.alpha)
    v_new = after_reset(z, v_decayed, p.v_reset)
    return z, LIFFeedForwardState(v_new, i_decayed)


def lif_step(
    input_tensor: torch.Tensor,
    state: LIFState,
    input_weights: torch.Tensor,
    recurrent_weights: torch.Tensor,
    p: LIFParameters = LIFParameters(),
    dt: float = 0.001,
) -> tuple[torch.Tensor, LIFState]:
    r""":func:`lif_feed_forward_step` with input current :math:`W_{\text{in}} x + W_{\text{rec}} z_{\text{prev}}`."""
    current = recurrent_current(input_tensor, state.z, input_weights, recurrent_weights)
    z, s = lif_feed_forward_step(current, LIFFeedForwardState(state.v, state.i), p, dt)
    return z, LIFState(z, s.v, s.i)


def lif_current_encoder(
    input_current: torch.Tensor,
    voltage: torch.Tensor,
    p: LIFParameters = LIFParameters(),
    dt: float = 0.001,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One step of a LIF neuron driven by ``input_current`` directly (no synaptic current), as
    norse's function of this name: :func:`lif_feed_forward_step` with :math:`i = 0`, so
    :math:`i_j = x`. Returns ``(z, v')``."""
    z, new = lif_feed_forward_step(input_current, LIFFeedForwardState(voltage, voltage.new_zeros(())), p, dt)
    return z, new.v


def lif_feed_forward_integral(
    input_tensor: torch.Tensor,
    state: LIFFeedForwardState,
    p: LIFParameters = LIFParameters(),
    dt: float = 0.001,
) -> tuple[torch.Tensor, LIFFeedForwardState]:
    """:func:`lif_feed_forward_step` over the first (time) dimension of ``input_tensor``, as
    norse's function of this name: ``(spikes [T, ...], final state)``."""
    return run_time_loop(lambda x, s: lif_feed_forward_step(x, s, p, dt), input_tensor, state)


def lif_step_integral(
    input_tensor: torch.Tensor,
    state: LIFState,
    input_weights: torch.Tensor,
    recurrent_weights: torch.Tensor,
    p: LIFParameters = LIFParameters(),
    dt: float = 0.001,
) -> tuple[torch.Tensor, LIFState]:
    """:func:`lif_step` over the first (time) dimension of ``input_tensor``, as norse's function of
    this name: ``(spikes [T, ...], final state)``."""
    return run_time_loop(lambda x, s: lif_step(x, s, input_weights, recurrent_weights, p, dt), input_tensor, state)


class LIFCell(NeuronModule):
    """One LIF step for input currents ``[B, ...]``: returns ``(z, LIFFeedForwardState)``.

    Parameters :class:`LIFParameters`, state :class:`LIFFeedForwardState`, the equations
    :func:`lif_feed_forward_step`'s; :class:`LIF` loops it over time.
    """

    parameters_class = LIFParameters
    state_class = LIFFeedForwardState
    step = staticmethod(lif_feed_forward_step)
    subthreshold = staticmethod(lif_subthreshold)
    fused_kind = "lif"

    def __init__(self, p: LIFParameters = LIFParameters(), dt: float = 0.001,
                 learnable: Iterable[str] = (), shape: Sequence[int] | None = None):
        super().__init__(p, dt, learnable, shape)


class LIF(LIFCell):
    """LIF layer: ``x [T, B, ...] -> (z [T, B, ...], final LIFFeedForwardState)``.

    Parameters :class:`LIFParameters`, state :class:`LIFFeedForwardState`; one step of it is
    :class:`LIFCell`, the equations are :func:`lif_feed_forward_step`'s.
    """

    time_major = True

    def __init__(self, p: LIFParameters = LIFParameters(), dt: float = 0.001, learnable: Iterable[str] = (),
                 shape: Sequence[int] | None = None, backend: str = "auto"):
        super().__init__(p, dt, learnable, shape)
        self.backend = backend  # checked by NeuronModule.backend


class LIFRecurrentCell(RecurrentNeuronModule):
    """One step of a recurrent LIF population ``[B, input_size] -> [B, hidden_size]``.

    Parameters :class:`LIFParameters`, state :class:`LIFState`, the equations
    :func:`lif_step`'s; :class:`LIFRecurrent` loops it over time.
    """

    parameters_class = LIFParameters
    state_class = LIFState
    step = staticmethod(lif_step)
    subthreshold = staticmethod(lif_subthreshold)

    def __init__(self, input_size: int, hidden_size: int, p: LIFParameters = LIFParameters(),
                 dt: float = 0.001, autapses: bool = False, learnable: Iterable[str] = (),
                 input_weights: torch.Tensor | None = None, recurrent_weights: torch.Tensor | None = None,
                 shape: Sequence[int] | None = None):
        super().__init__(input_size, hidden_size, p, dt, autapses, learnable, input_weights, recurrent_weights,
                         shape)


class LIFRecurrent(LIFRecurrentCell):
    """Recurrent LIF layer: ``[T, B, input_size] -> ([T, B, hidden_size] spikes, LIFState)``.

    Parameters :class:`LIFParameters`, state :class:`LIFState`; one step of it is
    :class:`LIFRecurrentCell`, the equations are :func:`lif_step`'s.

    ``backend`` runs the time loop: ``"cpp"``, ``"triton"`` or ``"python"`` (one autograd node per
    call, see :mod:`snn.neurons.fused.recurrent`), ``"eager"`` (the step function under autograd)
    or ``"auto"`` (``"cpp"`` on CPU, ``"triton"`` on CUDA, where they run; else ``"python"``).
    """

    time_major = True
    fused_kind = "lif"

    def __init__(self, input_size: int, hidden_size: int, p: LIFParameters = LIFParameters(),
                 dt: float = 0.001, autapses: bool = False, learnable: Iterable[str] = (),
                 input_weights: torch.Tensor | None = None, recurrent_weights: torch.Tensor | None = None,
                 backend: str = "auto", shape: Sequence[int] | None = None):
        super().__init__(input_size, hidden_size, p, dt, autapses, learnable, input_weights, recurrent_weights,
                         shape)
        self.backend = backend  # checked by NeuronModule.backend
