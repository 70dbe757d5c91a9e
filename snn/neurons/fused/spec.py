"""What every backend of the fused loops shares: one row per neuron type (state fields, kernel
parameters), the kernel options as one checked value, and the interface a backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch

from snn.errors import BackendUnavailable  # noqa: F401 (re-exported)

from ..constants import check_integrator
from ..surrogate import SURROGATES, check_alpha, surrogate_derivative

__all__ = ["NATIVE_SURROGATES", "NEURON_SPECS", "Backend", "BackendUnavailable", "KernelOptions", "NeuronSpec",
           "is_native", "kernel_parameters", "saved_tensors"]


class NeuronSpec(NamedTuple):
    state: tuple[str, ...]  # state fields, in the order of the NamedTuple
    params: tuple[str, ...]  # kernel parameters, in the order of the kernels' argument lists
    spiking: bool  # saves v_d (pre-reset voltage) per step; output z
    extra: int  # tensors per step saved in addition when parameters need gradients


NEURON_SPECS = {
    "adex": NeuronSpec(("v", "i", "a"), ("c_mem", "c_syn", "c_ada", "adaptation_current",
                                         "adaptation_spike", "delta_T", "v_leak", "v_th", "v_reset"),
                       spiking=True, extra=2),  # i + x and a
    "lif": NeuronSpec(("v", "i"), ("c_mem", "c_syn", "v_leak", "v_th", "v_reset"), spiking=True, extra=1),
    "li": NeuronSpec(("v", "i"), ("c_mem", "c_syn", "v_leak"), spiking=False, extra=1),  # + outputs
}


def kernel_parameters(kind: str, p: NamedTuple, dt: float) -> tuple:
    """The kernels' parameter tensors from a parameter NamedTuple, with autograd.

    The time-constant products are the step functions' own: ``dt * tau_mem_inv``,
    ``-dt * tau_syn_inv`` and ``dt * tau_ada_inv`` round exactly as there.
    """
    derived = {"c_mem": dt * p.tau_mem_inv, "c_syn": -dt * p.tau_syn_inv}
    if kind == "adex":
        derived["c_ada"] = dt * p.tau_ada_inv
    names = NEURON_SPECS[kind].params
    return tuple(derived[name] if name in derived else getattr(p, name) for name in names)


def saved_tensors(kind: str, out, vd, extra: list, save_extra: bool) -> list:
    """What a forward keeps for backward, in the order every backend's backward reads it: the
    pre-reset voltages ``vd`` (spiking neurons, None when nothing needs gradients), the per-step
    extras when parameters need gradients, and for LI then also its outputs (the voltage entering
    each step)."""
    saved = ([] if vd is None else [vd]) + list(extra)
    if kind == "li" and save_extra:
        saved.append(out)
    return saved


# The surrogates the native kernels (C++ and Triton) implement, by their index in both.
NATIVE_SURROGATES = {"super": 0, "triangle": 1, "sigmoid": 2, "atan": 3, "tanh": 4, "heaviside": 5}
_BUILTIN = {name: SURROGATES[name] for name in NATIVE_SURROGATES}  # as shipped: an overwritten name is not native


def is_native(method: str | None) -> bool:
    """Whether the native kernels implement ``method`` (None: LI, no spikes): a built-in surrogate,
    not a user-registered one nor a built-in name registered again with another function."""
    return method is None or method in _BUILTIN and SURROGATES.get(method) is _BUILTIN[method]


@dataclass(frozen=True)
class KernelOptions:
    """What a fused loop takes besides tensors, checked once, where it is built: the surrogate
    (``method``, None for LI, which has no spikes, and its steepness ``alpha``) and AdEx's
    ``integrator`` (see :func:`~snn.neurons.adex.lif_adex_feed_forward_step`)."""

    method: str | None = None
    alpha: float = 100.0  # the parameters' default
    integrator: str = "euler"

    def __post_init__(self):
        if self.method is not None:
            surrogate_derivative(self.method)  # a ValueError naming the known methods
            check_alpha(self.alpha)
            object.__setattr__(self, "alpha", float(self.alpha))
        check_integrator(self.integrator)

    @classmethod
    def of(cls, p: NamedTuple) -> KernelOptions:
        """The options of a parameter NamedTuple (``method``, ``alpha``, ``integrator`` where it has them)."""
        method = getattr(p, "method", None)
        return cls(method, p.alpha if method is not None else 100.0, getattr(p, "integrator", "euler"))

    @property
    def symplectic(self) -> bool:
        return self.integrator == "symplectic"



class Backend(Protocol):
    """What a backend of the fused loops implements (the package docstring says how to add one).

    ``P`` are the kernel parameters (:func:`kernel_parameters`), ``state`` the neuron's state
    tensors in the order of its spec row; ``save`` asks forward for what backward needs (the
    pre-reset voltage of each step), ``save_extra`` also for what parameter gradients need, in the
    order of :func:`saved_tensors`.
    """

    name: str
    recurrent: bool  # whether it has recurrent loops (the recurrent_* methods)

    def why_not(self, kind: str, tensors: tuple[torch.Tensor, ...], options: KernelOptions) -> str | None:
        """The one answer to whether this backend runs a case: None when it does, else why not
        (completing "cannot run this layer: ..."). ``tensors``: the input, then the weights of a
        recurrent layer. Raises :class:`BackendUnavailable` when it covers the case but cannot
        run here."""

    def forward(self, kind: str, x: torch.Tensor, state: tuple, P: tuple, save: bool, save_extra: bool,
                options: KernelOptions) -> tuple[torch.Tensor, tuple, list]:
        """All steps: ``(outputs [T, ...], final state, saved [T, ...] tensors)``."""

    def backward(self, kind: str, gout: torch.Tensor | None, gstate: tuple, saved: list, v0: torch.Tensor,
                 P: tuple, options: KernelOptions, param_grads: bool) -> tuple[torch.Tensor, tuple, list | None]:
        """Reverse time: ``(input gradient [T, ...], initial-state gradients, per-neuron parameter
        gradients or None)``; ``gout`` None: no gradient reached the outputs."""

    def recurrent_forward(self, kind: str, x: torch.Tensor, w_in: torch.Tensor, w_rec: torch.Tensor,
                          z0: torch.Tensor, state: tuple, P: tuple, save: bool, save_extra: bool,
                          options: KernelOptions) -> tuple[torch.Tensor, tuple, list]:
        """All steps of a population driven by ``W_in x[t] + W_rec z[t - 1]``: ``(spikes [T, B, N],
        final (v, i[, a]), saved)``."""

    def recurrent_backward(self, kind: str, gout: torch.Tensor | None, gz: torch.Tensor | None, gstate: list,
                           saved: list, v0: torch.Tensor, w_rec: torch.Tensor, P: tuple, options: KernelOptions,
                           param_grads: bool, z0: torch.Tensor | None = None, w_rec_grad: bool = False
                           ) -> tuple[torch.Tensor, torch.Tensor, list, list | None, torch.Tensor | None]:
        """Reverse time: ``(g_c [T, B, N] of the currents, g_z0, initial-state gradients,
        per-neuron parameter gradients or None, W_rec's gradient or None)``. The last is the
        backend's answer to ``w_rec_grad`` (``z0``: the initial spikes, None for zero) where it has a
        faster way than the node's dense ``g_c^T z_{t-1}`` (``cpp``: summed over the spikes inside
        the loop); None: the node multiplies densely."""
