"""The cases of the Triton kernels' first-use check (:mod:`~snn.neurons.fused.triton.trust`): a tiny layer of each kind,
its eager loop against the backend being checked, on the device being checked.

Registered by ``snn.neurons`` when it loads (this module imports the layers, which import the
backends: :mod:`~snn.neurons.fused.triton.trust` cannot import it). Inputs and weights are multiples of 1/64, so that a
recurrent current is exact whatever order a GEMM sums in (the triton loops' input GEMM over all
steps rounds apart from the eager loop's per-step products otherwise, :mod:`~snn.neurons.fused.triton.recurrent`)
and the check compares the kernels alone.
"""

from __future__ import annotations

import torch

from ...adex import LIFAdEx, LIFAdExParameters, LIFAdExRecurrent
from ...li import LI
from ...lif import LIF, LIFParameters, LIFRecurrent
from ..feed_forward import FusedTimeLoop
from ..recurrent import FusedRecurrentLoop
from ..spec import kernel_parameters
from .trust import DELTA_T, GRADIENT_BOUND, STATE_BOUND, register


def _fused(layer, backend, x: torch.Tensor):
    """``layer(x)`` from rest with its time loop on ``backend`` (no registry, no resolver)."""
    kind, options = layer.fused_kind, layer.kernel_options
    if hasattr(layer, "recurrent_weights"):
        shape = (x.shape[1], layer.hidden_size)
        z0, *rest = layer.rest_state(x.new_zeros(shape))
        P = kernel_parameters(kind, layer.neuron_parameters(x), layer.dt)
        out, *final = FusedRecurrentLoop.apply(kind, backend, options, x, layer.input_weights,
                                               layer.effective_recurrent_weights(), z0, *rest, *P)
    else:
        state = layer.rest_state(x.new_zeros(x.shape[1:]))
        P = kernel_parameters(kind, layer.neuron_parameters(x), layer.dt)
        out, *final = FusedTimeLoop.apply(kind, backend, options, x, *state, *P)
    return out, final


def _compare(layer, backend, x: torch.Tensor) -> str | None:
    """Spikes (LI: voltages), final states and input gradients of ``layer``'s eager loop and of
    ``backend`` on ``x``."""
    results = []
    for run in (lambda xl: layer(xl), lambda xl: _fused(layer, backend, xl)):
        xl = x.clone().requires_grad_()
        out, final = run(xl)
        final = list(final)
        weights = torch.linspace(-1.0, 1.0, out.numel(), device=x.device).view(out.shape)
        loss = (out * weights).sum() + sum((s * (k + 1)).sum() for k, s in enumerate(final))
        loss.backward()
        results.append((out.detach(), [s.detach() for s in final], xl.grad))
    (ref, ref_final, ref_grad), (out, final, grad) = results
    if layer.fused_kind != "li" and not torch.equal(out, ref):
        differ = int((out != ref).sum())
        return f"{differ} of {out.numel()} spikes differ from the eager loop's"
    for name, s, r in zip(layer.state_class._fields, final, ref_final, strict=True):  # recurrent: z first
        bound = STATE_BOUND * float(r.abs().max().clamp_min(1.0))
        error = float((s - r).abs().max())
        if not error <= bound:  # NaN fails too
            return f"the final state {name} differs from the eager loop's by {error:.3g} (bound {bound:.3g})"
    if layer.fused_kind == "li":
        bound = STATE_BOUND * float(ref.abs().max().clamp_min(1.0))
        error = float((out - ref).abs().max())
        if not error <= bound:
            return f"the voltages differ from the eager loop's by {error:.3g} (bound {bound:.3g})"
    bound = GRADIENT_BOUND * float(ref_grad.abs().max())
    error = float((grad - ref_grad).abs().max())
    if not error <= bound:
        return (f"the input gradient differs from autograd through the eager loop by {error:.3g} "
                f"(bound {bound:.3g})")
    return None


def _inputs(device: torch.device, *shape: int, scale: float) -> torch.Tensor:
    """Seeded inputs in multiples of 1/64 (see the module docstring)."""
    g = torch.Generator().manual_seed(7)
    return (torch.round(torch.rand(shape, generator=g) * scale * 64) / 64).to(device)


def _layer(make, device):
    """``make()`` (an eager layer) with seeded weights in multiples of 1/64 on ``device``; the
    user's random stream is not advanced."""
    torch_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(11)
        layer = make()
    finally:
        torch.random.set_rng_state(torch_state)
    with torch.no_grad():
        for w in layer.parameters():
            w.copy_(torch.round(w * 64) / 64)
    return layer.to(device)


def _adex(device, backend):
    p = LIFAdExParameters(delta_T=DELTA_T, adaptation_spike=0.3, method="super", alpha=30.0)
    return _compare(_layer(lambda: LIFAdEx(p, backend="eager"), device), backend,
                    _inputs(device, 7, 2, 33, scale=3.0))


def _lif(device, backend):
    p = LIFParameters(method="atan", alpha=20.0)
    return _compare(_layer(lambda: LIF(p, backend="eager"), device), backend,
                    _inputs(device, 7, 2, 33, scale=3.0))


def _li(device, backend):
    return _compare(_layer(lambda: LI(backend="eager"), device), backend, _inputs(device, 7, 2, 33, scale=3.0))


def _adex_recurrent(device, backend):
    p = LIFAdExParameters(delta_T=DELTA_T, method="super", alpha=30.0)
    return _compare(_layer(lambda: LIFAdExRecurrent(3, 19, p, backend="eager"), device), backend,
                    _inputs(device, 5, 2, 3, scale=12.0))


def _lif_recurrent(device, backend):
    p = LIFParameters(method="super", alpha=30.0)
    return _compare(_layer(lambda: LIFRecurrent(3, 19, p, backend="eager"), device), backend,
                    _inputs(device, 5, 2, 3, scale=12.0))


for _name, _case in {"adex": _adex, "lif": _lif, "li": _li, "recurrent adex": _adex_recurrent,
                     "recurrent lif": _lif_recurrent}.items():
    register(_name, _case)
