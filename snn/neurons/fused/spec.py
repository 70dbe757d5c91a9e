"""What the fused loops need to know about each neuron type: state fields, kernel parameters."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["NEURON_SPECS", "NeuronSpec", "kernel_parameters", "saved_tensors"]


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
