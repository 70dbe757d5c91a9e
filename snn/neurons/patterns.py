r"""AdEx firing patterns of Naud, Marcille, Clopath & Gerstner (2008) in snn's units.

The published model (Brette & Gerstner 2005; Naud et al. 2008, Table 1) in physical units:

.. math::
    \begin{align*}
        C \dot{V} &= -g_L (V - E_L) + g_L \Delta_T \exp\left(\frac{V - V_T}{\Delta_T}\right) + I - w \\
        \tau_w \dot{w} &= a (V - E_L) - w, \qquad V \to V_r,\ w \to w + b \text{ at a spike}
    \end{align*}

Dividing the voltage equation by :math:`g_L U` with :math:`U = V_T - E_L` gives
:func:`~snn.neurons.adex.lif_adex_feed_forward_step` term by term, with

======================  ========================  ================================
snn parameter           value                     why
======================  ========================  ================================
``v``                   :math:`(V - E_L) / U`     so ``v_leak = 0``, ``v_th = 1``
``v_reset``             :math:`(V_r - E_L) / U`
``delta_T``             :math:`\Delta_T / U`
``tau_mem_inv``         :math:`g_L / C` (1/s)
``tau_ada_inv``         :math:`1 / \tau_w` (1/s)
``adaptation_current``  :math:`a / g_L`           ``a`` is :math:`w / (g_L U)`
``adaptation_spike``    :math:`b / (g_L U)`       the jump is applied as is: no dt
input ``x`` per step    :math:`I / (g_L U)`       with ``tau_syn_inv = 1 / dt``
======================  ========================  ================================

The input current enters the membrane as ``i_j = i + x`` and then decays by the factor
``1 - dt * tau_syn_inv``; with ``tau_syn_inv = 1 / dt`` that factor is 0, the synaptic filter is a
pass-through and the membrane sees exactly ``x`` at every step. (With a slower filter a constant
``x`` would settle at ``x / (dt * tau_syn_inv)``.)

One difference is structural: snn (like norse) emits the spike as soon as ``v`` crosses
``v_th``, the *centre* of the exponential (:math:`V_T`), while the published model lets the
exponential run away to a peak (0 mV) first. Two consequences, and what we changed for them:

- A reset at or above :math:`V_T` fires again on the very next step. Initial bursting is kept with
  :math:`V_r` moved 2 mV below :math:`V_T` (the burst spikes are then ms apart, as in the paper).
  Regular bursting needs the reset right of the v-nullcline's minimum, which is at ``v_th`` here,
  so :math:`V_r` is set 0.1 mV *above* :math:`V_T`: each burst is then a run of spikes on
  consecutive steps (intra-burst ISI = ``dt``), ended when the adaptation jumps make ``dv``
  negative enough; the burst length therefore depends on ``dt``.
- The delayed-accelerating cell fires almost at once at the published 300 pA (there is no time
  spent between :math:`V_T` and the peak); at 180 pA the slow negative adaptation (a < 0) that
  produces the delay shows clearly.

:data:`NAUD_2008` holds the published values, :data:`PATTERNS` the five patterns in snn's units,
:func:`simulate` runs one, :func:`isi_signature` and :func:`classify` read the spike train.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .adex import LIFAdExFeedForwardState, LIFAdExParameters, lif_adex_feed_forward_step


class AdExNeuron(NamedTuple):
    """The published AdEx parameters in physical units and the current step that shows a pattern."""

    C: float  # membrane capacitance (pF)
    g_L: float  # leak conductance (nS)
    E_L: float  # leak reversal (mV)
    V_T: float  # threshold: centre of the exponential (mV)
    Delta_T: float  # slope factor (mV)
    a: float  # sub-threshold adaptation (nS)
    tau_w: float  # adaptation time constant (ms)
    b: float  # spike-triggered adaptation (pA)
    V_r: float  # reset potential (mV)
    I_step: float  # amplitude of the current step (pA)


# Naud et al. (2008), Table 1 (the values Brian2's example of the paper uses).
NAUD_2008: dict[str, AdExNeuron] = {
    "tonic": AdExNeuron(200, 10, -70, -50, 2, 2, 30, 0, -58, 500),
    "adapting": AdExNeuron(200, 12, -70, -50, 2, 2, 300, 60, -58, 500),
    "initial_burst": AdExNeuron(130, 18, -58, -50, 2, 4, 150, 120, -50, 400),
    "regular_bursting": AdExNeuron(200, 10, -58, -50, 2, 2, 120, 100, -46, 210),
    "delayed_accelerating": AdExNeuron(200, 12, -70, -50, 2, -10, 300, 0, -58, 300),
    "delayed_regular_bursting": AdExNeuron(100, 10, -65, -50, 2, -10, 90, 30, -47, 110),
    "transient": AdExNeuron(100, 10, -65, -50, 2, 10, 90, 100, -47, 180),
    "irregular": AdExNeuron(100, 12, -60, -50, 2, -11, 130, 30, -48, 160),
}


class FiringPattern(NamedTuple):
    """A pattern in snn's units: parameters, the input per step, the time step and the duration (s)."""

    p: LIFAdExParameters
    current: float
    dt: float
    duration: float


def from_physical(neuron: AdExNeuron, dt: float = 1e-4, duration: float = 0.6) -> FiringPattern:
    """Maps published AdEx parameters to snn's dimensionless ones (see the module's table)."""
    if not neuron.V_T > neuron.E_L:
        raise ValueError(f"The mapping needs V_T > E_L, got V_T={neuron.V_T}, E_L={neuron.E_L}.")
    if dt <= 0 or duration <= 0:
        raise ValueError(f"dt and duration must be positive, got dt={dt}, duration={duration}.")
    unit = neuron.V_T - neuron.E_L  # mV; g_L * unit is the current unit (nS * mV = pA)

    def value(x: float) -> torch.Tensor:
        return torch.tensor(float(x), dtype=torch.float64)

    p = LIFAdExParameters(
        adaptation_current=value(neuron.a / neuron.g_L),
        adaptation_spike=value(neuron.b / (neuron.g_L * unit)),
        delta_T=value(neuron.Delta_T / unit),
        tau_ada_inv=value(1e3 / neuron.tau_w),  # 1/ms -> 1/s
        tau_syn_inv=value(1.0 / dt),  # no synaptic filter: the membrane sees the input as is
        tau_mem_inv=value(1e3 * neuron.g_L / neuron.C),  # nS/pF = 1/ms -> 1/s
        v_leak=value(0.0),
        v_th=value(1.0),
        v_reset=value((neuron.V_r - neuron.E_L) / unit),
    )
    return FiringPattern(p, neuron.I_step / (neuron.g_L * unit), dt, duration)


PATTERNS: dict[str, FiringPattern] = {
    "tonic": from_physical(NAUD_2008["tonic"]),
    "adapting": from_physical(NAUD_2008["adapting"]),
    "initial_burst": from_physical(NAUD_2008["initial_burst"]._replace(V_r=-52.0)),
    "regular_bursting": from_physical(NAUD_2008["regular_bursting"]._replace(V_r=-49.9), duration=1.0),
    "delayed": from_physical(NAUD_2008["delayed_accelerating"]._replace(I_step=180.0)),
}


class Simulation(NamedTuple):
    """Traces of a simulated current step: time (s, end of each step), v, a and spikes ``[T, ...]``."""

    t: torch.Tensor
    v: torch.Tensor
    a: torch.Tensor
    spikes: torch.Tensor

    @property
    def spike_times(self) -> torch.Tensor:
        """Spike times (s) of a single neuron (``current`` was a number)."""
        if self.spikes.dim() != 1:
            raise ValueError("spike_times is defined for one neuron; "
                             "index the batch: spike_times_of(sim.spikes[:, k], ...)")
        return spike_times_of(self.spikes, self.t)


def spike_times_of(spikes: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The times ``t[k]`` of the steps ``k`` with a spike."""
    return t[spikes.bool()]


def simulate(pattern: FiringPattern, current: float | torch.Tensor | None = None,
             duration: float | None = None) -> Simulation:
    """Runs a current step from rest through :func:`lif_adex_feed_forward_step` (float64).

    ``current`` overrides the pattern's input; a 1-D tensor simulates one neuron per value
    (traces ``[T, len(current)]``), e.g. for an f-I curve.
    """
    dt = pattern.dt
    duration = pattern.duration if duration is None else duration
    steps = round(duration / dt)
    if steps < 1:
        raise ValueError(f"duration {duration} s is shorter than one step of {dt} s.")
    x = torch.as_tensor(pattern.current if current is None else current, dtype=torch.float64)
    if x.dim() > 1:
        raise ValueError(f"current must be a number or a 1-D tensor, got shape {list(x.shape)}.")
    state = LIFAdExFeedForwardState(torch.zeros_like(x) + pattern.p.v_leak, torch.zeros_like(x), torch.zeros_like(x))
    vs, as_, zs = [], [], []
    with torch.no_grad():
        for _ in range(steps):
            z, state = lif_adex_feed_forward_step(x, state, pattern.p, dt)
            vs.append(state.v)
            as_.append(state.a)
            zs.append(z)
    t = torch.arange(1, steps + 1, dtype=torch.float64) * dt
    return Simulation(t, torch.stack(vs), torch.stack(as_), torch.stack(zs))


def rheobase(p: LIFAdExParameters) -> float:
    r"""The smallest constant input (per step, no synaptic filter) that makes the neuron fire forever.

    With ``a`` at its steady state :math:`\kappa (v - v_{\text{leak}})`, the right-hand side of
    :math:`\dot v` is strictly decreasing below ``v_th`` (for :math:`\kappa \ge 0`), so a resting
    state below threshold exists exactly when it is negative at ``v_th``:
    :math:`x_{\text{rh}} = (1 + \kappa)(v_{\text{th}} - v_{\text{leak}}) - \Delta_T`.
    (The published model's rheobase, :math:`(1 + \kappa)(1 - \Delta_T + \Delta_T \ln(1 + \kappa))` in
    these units, differs by :math:`O(\Delta_T \kappa^2)` because it fires at the nullcline's minimum.)
    """
    kappa = float(p.adaptation_current)
    if kappa < 0:
        raise ValueError(f"The closed-form rheobase needs adaptation_current >= 0, got {kappa}.")
    return (1 + kappa) * float(p.v_th - p.v_leak) - float(p.delta_T)


def fi_curve(pattern: FiringPattern, currents: torch.Tensor, duration: float = 2.0) -> torch.Tensor:
    """Steady firing rate (Hz) for each input in ``currents`` (1-D): 1 / the last ISI when the
    neuron still fires in the second half of ``duration``, else 0 (adaptation has settled by then)."""
    sim = simulate(pattern, torch.as_tensor(currents, dtype=torch.float64), duration)
    rates = torch.zeros(sim.spikes.shape[1], dtype=torch.float64)
    for k in range(sim.spikes.shape[1]):
        times = spike_times_of(sim.spikes[:, k], sim.t)
        if len(times) >= 2 and times[-1] > duration / 2:
            rates[k] = 1.0 / (times[-1] - times[-2])
    return rates


# --- reading a spike train -----------------------------------------------------------------------

# Two ISI groups count as distinct (bursts) when the largest jump between sorted ISIs is this big.
BIMODAL_RATIO = 3.0
# A first spike this many typical (median) ISIs after the onset is "delayed".
DELAY_FACTOR = 4.0
# Steady ISI / first ISI beyond which the train adapts (or accelerates, below the inverse).
ADAPTATION_RATIO = 1.5


class ISISignature(NamedTuple):
    """What the spike train of a current step looks like.

    Attributes:
        latency: time of the first spike (s; inf without spikes)
        isi: inter-spike intervals (s)
        split: ISI separating short (in-burst) from long ones when the ISIs are bimodal, else None
        growth: mean of the last quarter of ISIs over the first ISI (> 1: adaptation)
        steady_cv: coefficient of variation of the last quarter of ISIs
    """

    latency: float
    isi: torch.Tensor
    split: float | None
    growth: float
    steady_cv: float


def isi_signature(spike_times: torch.Tensor) -> ISISignature:
    """Summarises a 1-D tensor of spike times (s, the step starting at 0)."""
    times = torch.as_tensor(spike_times, dtype=torch.float64)
    if times.dim() != 1:
        raise ValueError(f"spike_times must be 1-D, got shape {list(times.shape)}.")
    latency = float(times[0]) if len(times) else math.inf
    isi = times.diff()
    if len(isi) < 2:
        return ISISignature(latency, isi, None, math.nan, math.nan)
    ordered = isi.sort().values
    jumps = ordered[1:] / ordered[:-1]
    k = int(jumps.argmax())
    split = math.sqrt(float(ordered[k] * ordered[k + 1])) if jumps[k] >= BIMODAL_RATIO else None
    steady = isi[-max(1, len(isi) // 4):]
    cv = float(steady.std(unbiased=False) / steady.mean())
    return ISISignature(latency, isi, split, float(steady.mean() / isi[0]), cv)


def classify(spike_times: torch.Tensor) -> str:
    """Names the firing pattern of a current step's spike train.

    ``"silent"`` (fewer than 3 spikes), ``"initial_burst"`` (short ISIs only before the first long
    one), ``"bursting"`` (short ISIs recur after long ones), ``"delayed"`` (first spike later than
    ``DELAY_FACTOR`` median ISIs), ``"adapting"``/``"accelerating"`` (ISIs grow/shrink by more than
    ``ADAPTATION_RATIO``), else ``"tonic"``.
    """
    s = isi_signature(spike_times)
    if len(s.isi) < 2:
        return "silent"
    if s.split is not None:
        short = s.isi < s.split
        first_long = int((~short).nonzero()[0])
        return "bursting" if short[first_long:].any() else "initial_burst"
    if s.latency > DELAY_FACTOR * float(s.isi.median()):
        return "delayed"
    if s.growth > ADAPTATION_RATIO:
        return "adapting"
    if s.growth < 1 / ADAPTATION_RATIO:
        return "accelerating"
    return "tonic"
