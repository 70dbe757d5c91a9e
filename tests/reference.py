"""Independent references for the neuron tests: the equations of the issue, written out again
with plain torch ops and a surrogate written from its formula (not through snn.neurons)."""

import math

import torch


def reference_surrogate(x: torch.Tensor, method: str, alpha: float) -> torch.Tensor:
    if method == "super":
        return 1 / (alpha * x.abs() + 1) ** 2
    if method == "triangle":
        return alpha * torch.clamp(1 - alpha * x.abs(), min=0)
    if method == "sigmoid":
        e = torch.exp(-alpha * x)
        return alpha * e / (1 + e) ** 2
    if method == "atan":
        return alpha / 2 / (1 + (math.pi / 2 * alpha * x) ** 2)
    if method == "tanh":
        return alpha / 2 / torch.cosh(alpha * x) ** 2
    if method == "heaviside":
        return torch.zeros_like(x)
    raise KeyError(method)


class ReferenceSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, method, alpha):
        ctx.save_for_backward(x)
        ctx.method, ctx.alpha = method, alpha
        return torch.heaviside(x, torch.zeros_like(x))

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * reference_surrogate(x, ctx.method, ctx.alpha), None, None


def reference_adex(x, p: dict, dt: float, method: str, alpha: float, integrator: str = "euler", state=None):
    """The AdEx equations (snn/neurons/adex.py), step by step: returns spikes [T, ...] and final (v, i, a).

    ``integrator="euler"``: every right-hand side reads the old state. ``"symplectic"``
    (SE-adLIF): v first, spike and reset, then a from the new (post-reset) v. ``state``: the initial
    (v, i, a), else rest."""
    if state is None:
        state = (torch.zeros_like(x[0]) + p["v_leak"], torch.zeros_like(x[0]), torch.zeros_like(x[0]))
    v, i, a = state
    spikes = []
    for x_t in x:
        i_j = i + x_t
        v_d = v + dt * p["tau_mem_inv"] * (
            (p["v_leak"] - v) + p["delta_T"] * torch.exp((v - p["v_th"]) / p["delta_T"]) + i_j - a
        )
        i_new = i_j - dt * p["tau_syn_inv"] * i_j
        z = ReferenceSpike.apply(v_d - p["v_th"], method, alpha)
        v_new = (1 - z) * v_d + z * p["v_reset"]
        if integrator == "euler":
            a_d = a + dt * p["tau_ada_inv"] * (p["adaptation_current"] * (v - p["v_leak"]) - a)
        elif integrator == "symplectic":
            a_d = a + dt * p["tau_ada_inv"] * (p["adaptation_current"] * (v_new - p["v_leak"]) - a)
        else:
            raise KeyError(integrator)
        a = a_d + z * p["adaptation_spike"]
        v, i = v_new, i_new
        spikes.append(z)
    return torch.stack(spikes), (v, i, a)


def reference_lif(x, p: dict, dt: float, method: str, alpha: float):
    v = torch.zeros_like(x[0]) + p["v_leak"]
    i = torch.zeros_like(x[0])
    spikes = []
    for x_t in x:
        i_j = i + x_t
        v_d = v + dt * p["tau_mem_inv"] * ((p["v_leak"] - v) + i_j)
        i = i_j - dt * p["tau_syn_inv"] * i_j
        z = ReferenceSpike.apply(v_d - p["v_th"], method, alpha)
        v = (1 - z) * v_d + z * p["v_reset"]
        spikes.append(z)
    return torch.stack(spikes), (v, i)


def reference_li(x, p: dict, dt: float):
    v = torch.zeros_like(x[0]) + p["v_leak"]
    i = torch.zeros_like(x[0])
    voltages = []
    for x_t in x:
        i_j = i + x_t
        v = v + dt * p["tau_mem_inv"] * ((p["v_leak"] - v) + i_j)
        i = i_j - dt * p["tau_syn_inv"] * i_j
        voltages.append(v)
    return torch.stack(voltages), (v, i)
