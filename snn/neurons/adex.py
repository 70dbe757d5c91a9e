r"""Adaptive exponential integrate-and-fire neurons (AdEx, ``LIFAdEx`` after norse's ``LIFAdExCell``).

The model (Brette & Gerstner 2005, in norse's dimensionless units): membrane voltage :math:`v`,
synaptic current :math:`i` and adaptation current :math:`a` obey

.. math::
    \begin{align*}
        \dot{v} &= \tau_{\text{mem}}^{-1} \left(v_{\text{leak}} - v
                   + \Delta_T \exp\left(\frac{v - v_{\text{th}}}{\Delta_T}\right) + i - a\right) \\
        \dot{i} &= -\tau_{\text{syn}}^{-1} i \\
        \dot{a} &= \tau_{\text{ada}}^{-1} \left(a_{\text{current}} (v - v_{\text{leak}}) - a\right)
    \end{align*}

with a spike :math:`z = \Theta(v - v_{\text{th}})` that resets :math:`v \to v_{\text{reset}}` and
kicks :math:`a \to a + a_{\text{spike}}`. :func:`lif_adex_feed_forward_step` is the one place the
discretised equations are written down, for both time-stepping schemes (``integrator``: forward
Euler as in norse, or symplectic Euler as in SE-adLIF); everything else (cells, layers, fused
kernels) follows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch

from .constants import check_integrator
from .equations import adex_adaptation, adex_membrane, after_reset
from .module import NeuronModule, RecurrentNeuronModule, recurrent_current
from .surrogate import spike


class LIFAdExParameters(NamedTuple):
    """Parameters of an AdEx neuron; every field but ``method``, ``alpha`` and ``integrator`` may be
    a scalar or a tensor.

    Parameters:
        adaptation_current: :math:`a_{\\text{current}}`, sub-threshold coupling of a to v
        adaptation_spike: :math:`a_{\\text{spike}}`, jump of a at every spike
        delta_T: :math:`\\Delta_T`, sharpness of the exponential upswing (> 0)
        tau_ada_inv: inverse adaptation time constant (1/s, >= 0)
        tau_syn_inv: inverse synaptic time constant (1/s, >= 0)
        tau_mem_inv: inverse membrane time constant (1/s, >= 0)
        v_leak: leak (resting) potential
        v_th: threshold potential
        v_reset: reset potential
        method: surrogate gradient name (see :mod:`snn.neurons.surrogate`)
        alpha: steepness of the surrogate
        integrator: the time-stepping scheme, ``"euler"`` (norse's) or ``"symplectic"`` (the
            adaptation driven by the voltage after the step's reset; see
            :func:`lif_adex_feed_forward_step`)

    The modules refuse values outside these ranges when they are built; the step functions take
    whatever they are given (they are the hot path).
    """

    adaptation_current: torch.Tensor = torch.as_tensor(4.0, dtype=torch.float64)
    adaptation_spike: torch.Tensor = torch.as_tensor(0.02, dtype=torch.float64)
    delta_T: torch.Tensor = torch.as_tensor(0.5, dtype=torch.float64)
    tau_ada_inv: torch.Tensor = torch.as_tensor(2.0, dtype=torch.float64)
    tau_syn_inv: torch.Tensor = torch.as_tensor(1.0 / 5e-3, dtype=torch.float64)
    tau_mem_inv: torch.Tensor = torch.as_tensor(1.0 / 1e-2, dtype=torch.float64)
    v_leak: torch.Tensor = torch.as_tensor(0.0, dtype=torch.float64)
    v_th: torch.Tensor = torch.as_tensor(1.0, dtype=torch.float64)
    v_reset: torch.Tensor = torch.as_tensor(0.0, dtype=torch.float64)
    method: str = "super"
    alpha: float = 100.0
    integrator: str = "euler"


class LIFAdExFeedForwardState(NamedTuple):
    """State of a feed-forward AdEx neuron: voltage ``v``, synaptic current ``i``, adaptation ``a``."""

    v: torch.Tensor
    i: torch.Tensor
    a: torch.Tensor


class LIFAdExState(NamedTuple):
    """State of a recurrent AdEx neuron: last spikes ``z`` plus ``v``, ``i``, ``a``."""

    z: torch.Tensor
    v: torch.Tensor
    i: torch.Tensor
    a: torch.Tensor


def _membrane(input_current, state, p, dt):
    """:math:`v_d` and :math:`i'` of a step (:func:`snn.neurons.equations.adex_membrane`)."""
    _, v_decayed, i_decayed = adex_membrane(
        input_current, state.v, state.i, state.a, dt * p.tau_mem_inv, -dt * p.tau_syn_inv, p.delta_T,
        p.v_leak, p.v_th)
    return v_decayed, i_decayed


def adaptation_voltage(integrator: str, v: torch.Tensor, v_new: torch.Tensor) -> torch.Tensor:
    """The voltage that drives the adaptation in a step: the entering ``v`` (``"euler"``) or the
    voltage ``v_new`` after the step (``"symplectic"``); a ValueError for any other name."""
    if integrator == "symplectic":
        return v_new
    if integrator != "euler":
        check_integrator(integrator)
    return v


def lif_adex_subthreshold(
    input_current: torch.Tensor,
    state: LIFAdExFeedForwardState | LIFAdExState,
    p: LIFAdExParameters = LIFAdExParameters(),
    dt: float = 0.001,
) -> LIFAdExFeedForwardState:
    r"""The state at the end of a step of :func:`lif_adex_feed_forward_step` without its spike:
    :math:`v_d, i'` and :math:`a_d`, the adaptation the step gives where :math:`z = 0` (from
    :math:`v` with ``euler``, from :math:`v' = v_d` with ``symplectic``). :math:`v_d` is the
    voltage that crosses threshold. Written in :mod:`snn.neurons.equations`, which the ``compile``
    backend runs too."""
    v_decayed, i_decayed = _membrane(input_current, state, p, dt)
    v_drive = adaptation_voltage(p.integrator, state.v, v_decayed)
    a_decayed = adex_adaptation(v_drive, state.a, dt * p.tau_ada_inv, p.adaptation_current, p.v_leak)
    return LIFAdExFeedForwardState(v_decayed, i_decayed, a_decayed)


def lif_adex_feed_forward_step(
    input_current: torch.Tensor,
    state: LIFAdExFeedForwardState,
    p: LIFAdExParameters = LIFAdExParameters(),
    dt: float = 0.001,
) -> tuple[torch.Tensor, LIFAdExFeedForwardState]:
    r"""One step of the AdEx neuron with input current :math:`x`, integrated as ``p.integrator``
    says.

    The membrane, the synapse and the spike use the old :math:`v, i, a`:

    .. math::
        \begin{align*}
            i_j &= i + x \\
            v_d &= v + \Delta t\, \tau_{\text{mem}}^{-1} \left((v_{\text{leak}} - v)
                   + \Delta_T \exp\left(\min\left(\frac{v - v_{\text{th}}}{\Delta_T}, 20\right)\right)
                   + i_j - a\right) \\
            i' &= i_j - \Delta t\, \tau_{\text{syn}}^{-1} i_j \\
            z &= \Theta(v_d - v_{\text{th}}) \quad \text{(surrogate gradient backward)} \\
            v' &= (1 - z)\, v_d + z\, v_{\text{reset}} \\
            a_d &= a + \Delta t\, \tau_{\text{ada}}^{-1} \left(a_{\text{current}} (u - v_{\text{leak}}) - a\right) \\
            a' &= a_d + z\, a_{\text{spike}}
        \end{align*}

    where :math:`u`, the voltage that drives the adaptation, is

    - ``integrator="euler"`` (the default; norse's model, explicit forward Euler):
      :math:`u = v`, the voltage entering the step; every right-hand side uses the old state.
    - ``integrator="symplectic"`` (symplectic Euler, SE-adLIF of Baronig et al. 2025):
      :math:`u = v'`, the voltage after this step's membrane update *and reset*. With the
      forward step the coupled :math:`(v, a)` system is stable over a much smaller range of
      :math:`\Delta t, \tau_{\text{mem}}, \tau_{\text{ada}}, a_{\text{current}}` than the
      continuous one (its oscillating modes grow); updating :math:`v` first and :math:`a` from the
      new :math:`v` has provably better stability (Baronig et al.'s eigenvalue analysis), which is
      why adaptive neurons train reliably with it.

    Why :math:`v'` (after the reset) and not the pre-reset :math:`v_d`: SE-adLIF's own update
    resets the voltage before it computes the adaptation from it ("symplectic formulation with
    early reset" in its reference code, ``models/alif.py``), and the reset is part of the voltage's
    step, so :math:`v'` is the new voltage the symplectic scheme asks for. With :math:`v_d` a
    spike would also push :math:`a` by :math:`\Delta t\, \tau_{\text{ada}}^{-1} a_{\text{current}}
    (v_d - v_{\text{leak}})`, an amount set by how far the voltage overshot the threshold (large
    on the exponential upswing): spike-triggered adaptation counted twice, once through
    :math:`a_{\text{spike}}` and once through the overshoot. With :math:`v'` a spike acts on
    :math:`a` through :math:`a_{\text{spike}}` and the reset voltage only. The spike jump
    :math:`z\, a_{\text{spike}}` is the same in both schemes.

    The gradient flows through :math:`z` in the reset and the adaptation jump, as in norse (and,
    with ``symplectic``, through the reset into the adaptation's drive). The exponent is clamped
    at 20 (``EXP_ARGUMENT_MAX``) so that no finite input gives inf or NaN.

    Returns:
        spikes ``z`` and the new :class:`LIFAdExFeedForwardState`.
    """
    v_decayed, i_decayed = _membrane(input_current, state, p, dt)
    z = spike(v_decayed - p.v_th, p.method, p.alpha)
    v_new = after_reset(z, v_decayed, p.v_reset)
    v_drive = adaptation_voltage(p.integrator, state.v, v_new)
    a_decayed = adex_adaptation(v_drive, state.a, dt * p.tau_ada_inv, p.adaptation_current, p.v_leak)
    a_new = a_decayed + z * p.adaptation_spike
    return z, LIFAdExFeedForwardState(v_new, i_decayed, a_new)


def lif_adex_current_encoder(
    input_current: torch.Tensor,
    voltage: torch.Tensor,
    adaptation: torch.Tensor,
    p: LIFAdExParameters = LIFAdExParameters(),
    dt: float = 0.001,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""One step of an AdEx neuron driven by ``input_current`` directly (no synaptic current), as
    norse's function of this name: :func:`lif_adex_feed_forward_step` with :math:`i = 0`, so
    :math:`i_j = x`. Returns ``(z, v', a')``.

    norse 1.1.0's sets :math:`a' = \tau_{\text{ada}}^{-1} (a_{\text{current}} (v' - v_{\text{leak}}) - a)
    + z\, a_{\text{spike}}` (no :math:`a +`, no :math:`\Delta t`): not an Euler step of the
    adaptation. Ours is the step above; ``z`` and ``v'`` agree with norse's."""
    state = LIFAdExFeedForwardState(voltage, voltage.new_zeros(()), adaptation)
    z, new = lif_adex_feed_forward_step(input_current, state, p, dt)
    return z, new.v, new.a


def lif_adex_step(
    input_tensor: torch.Tensor,
    state: LIFAdExState,
    input_weights: torch.Tensor,
    recurrent_weights: torch.Tensor,
    p: LIFAdExParameters = LIFAdExParameters(),
    dt: float = 0.001,
) -> tuple[torch.Tensor, LIFAdExState]:
    r"""One step of a recurrent AdEx population: :func:`lif_adex_feed_forward_step` with input
    current :math:`x = W_{\text{in}} x_{\text{in}} + W_{\text{rec}} z_{\text{prev}}`."""
    current = recurrent_current(input_tensor, state.z, input_weights, recurrent_weights)
    z, s = lif_adex_feed_forward_step(current, LIFAdExFeedForwardState(state.v, state.i, state.a), p, dt)
    return z, LIFAdExState(z, s.v, s.i, s.a)


class LIFAdExCell(NeuronModule):
    """One AdEx step for input currents ``[B, ...]``: returns ``(z, LIFAdExFeedForwardState)``.

    Parameters :class:`LIFAdExParameters`, state :class:`LIFAdExFeedForwardState`, the equations
    :func:`lif_adex_feed_forward_step`'s; :class:`LIFAdEx` loops it over time.

    Example:
        >>> cell = LIFAdExCell()
        >>> z, state = cell(torch.randn(16, 20, 30))
        >>> z, state = cell(torch.randn(16, 20, 30), state)
    """

    parameters_class = LIFAdExParameters
    state_class = LIFAdExFeedForwardState
    step = staticmethod(lif_adex_feed_forward_step)
    subthreshold = staticmethod(lif_adex_subthreshold)
    fused_kind = "adex"

    def __init__(self, p: LIFAdExParameters = LIFAdExParameters(), dt: float = 0.001,
                 learnable: Iterable[str] = (), shape: Sequence[int] | None = None):
        super().__init__(p, dt, learnable, shape)


class LIFAdEx(LIFAdExCell):
    """AdEx layer looping :func:`lif_adex_feed_forward_step` over the outer (time) dimension.

    Parameters :class:`LIFAdExParameters`, state :class:`LIFAdExFeedForwardState`; one step of
    it is :class:`LIFAdExCell`, the equations are :func:`lif_adex_feed_forward_step`'s.

    ``x [T, B, ...] -> (z [T, B, ...], final LIFAdExFeedForwardState)``.

    Example:
        >>> layer = LIFAdEx(LIFAdExParameters(tau_mem_inv=50.0), learnable=("tau_mem_inv",), shape=(30,))
        >>> z, state = layer(torch.rand(100, 16, 30) * 4)
    """

    time_major = True

    def __init__(self, p: LIFAdExParameters = LIFAdExParameters(), dt: float = 0.001, learnable: Iterable[str] = (),
                 shape: Sequence[int] | None = None, backend: str = "auto"):
        super().__init__(p, dt, learnable, shape)
        self.backend = backend  # checked by NeuronModule.backend


class LIFAdExRecurrentCell(RecurrentNeuronModule):
    """One step of a recurrent AdEx population ``[B, input_size] -> [B, hidden_size]`` with input
    current ``W_in x + W_rec z_prev`` (no self-connections unless ``autapses=True``).

    Parameters :class:`LIFAdExParameters`, state :class:`LIFAdExState`, the equations
    :func:`lif_adex_step`'s; :class:`LIFAdExRecurrent` loops it over time.
    """

    parameters_class = LIFAdExParameters
    state_class = LIFAdExState
    step = staticmethod(lif_adex_step)
    subthreshold = staticmethod(lif_adex_subthreshold)

    def __init__(self, input_size: int, hidden_size: int, p: LIFAdExParameters = LIFAdExParameters(),
                 dt: float = 0.001, autapses: bool = False, learnable: Iterable[str] = (),
                 input_weights: torch.Tensor | None = None, recurrent_weights: torch.Tensor | None = None,
                 shape: Sequence[int] | None = None):
        super().__init__(input_size, hidden_size, p, dt, autapses, learnable, input_weights, recurrent_weights,
                         shape)


class LIFAdExRecurrent(LIFAdExRecurrentCell):
    """Recurrent AdEx layer: ``[T, B, input_size] -> ([T, B, hidden_size] spikes, LIFAdExState)``.

    Parameters :class:`LIFAdExParameters`, state :class:`LIFAdExState`; one step of it is
    :class:`LIFAdExRecurrentCell`, the equations are :func:`lif_adex_step`'s.

    ``backend`` runs the time loop: ``"cpp"``, ``"triton"`` or ``"python"`` (one autograd node per
    call, see :mod:`snn.neurons.fused.recurrent`), ``"eager"`` (the step function under autograd)
    or ``"auto"`` (``"cpp"`` on CPU, ``"triton"`` on CUDA, where they run; else ``"python"``).
    """

    time_major = True
    fused_kind = "adex"

    def __init__(self, input_size: int, hidden_size: int, p: LIFAdExParameters = LIFAdExParameters(),
                 dt: float = 0.001, autapses: bool = False, learnable: Iterable[str] = (),
                 input_weights: torch.Tensor | None = None, recurrent_weights: torch.Tensor | None = None,
                 backend: str = "auto", shape: Sequence[int] | None = None):
        super().__init__(input_size, hidden_size, p, dt, autapses, learnable, input_weights, recurrent_weights,
                         shape)
        self.backend = backend  # checked by NeuronModule.backend
