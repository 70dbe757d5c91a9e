r"""The time loops of recurrent AdEx and LIF populations on the ``triton`` backend.

The loops of :mod:`snn.neurons.fused.cpp.recurrent` with the Triton kernels of
:mod:`~snn.neurons.fused.triton.kernels` in place
of the C++ ones. The forward computes the input product of every step in one GEMM,
``W_in x [T, B, N]``, then per step adds the recurrent product in place,

.. math::
    c_t = W_{\text{in}} x_t + W_{\text{rec}} z_{t-1}

(``addmm_``: one launch), and launches the feed-forward kernel for that one step on the
population's state, which writes the spikes and the pre-reset voltage of the step into row ``t``
of the ``[T, B, N]`` outputs: two launches per step. The backward runs reverse time, one launch of
the feed-forward backward kernel per step (``T = t + 1, T_STOP = t``: it reads the saved voltage of
steps ``t`` and ``t - 1`` in place and adds the step's parameter gradients to ``G``) and one
``addmm`` for the next ``g_z = g_{\text{out}, t-1} + g_{c_t} W_{\text{rec}}``: two launches per step;
the weight and input gradients are then one GEMM each over all steps, as on the other backends.
Nothing asks the device for a value between the steps (no host sync); the kernels' arguments but
the tensors are bound once per call (:meth:`~snn.neurons.fused.triton.feed_forward.TritonLoops.bind`).

Rounding: the currents are the eager loop's products, but from one GEMM over all steps and an
``addmm`` (the sum rounded once), where the eager loop rounds each step's two products and their
sum: BLAS and cuBLAS may round the two differently in the last bit. The spikes are the eager
loop's unless a voltage lies within that rounding of the threshold; the states agree within it
(``tests/neurons/fused/test_triton_recurrent.py``: 1e-6 of the largest value in float32, 1e-14 in
float64); gradients within the tolerances of the other backends.

Dtypes as on the feed-forward ``triton`` backend (:mod:`~snn.neurons.fused.triton.feed_forward`): float16/bfloat16
inputs keep the state, the saved voltages, ``g_c`` and its products with ``W_rec`` in float32 (the
compute dtype) from step to step; the currents, the spikes, the final state and the gradients
returned are in the input's dtype (the layers hand half inputs over in float32 already:
:mod:`snn.neurons.module`). A kernel that kept the state in registers across steps (persistent)
would have to compute the ``W_rec`` product itself.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..spec import NATIVE_SURROGATES, NEURON_SPECS, KernelOptions
from .feed_forward import TritonLoops, compute_dtype, parameters, surrogate_constants


def _check_inputs(x: torch.Tensor, w_in: torch.Tensor, w_rec: torch.Tensor, z0: torch.Tensor) -> None:
    """``x [T, B, F]``, ``W_in [N, F]``, ``W_rec [N, N]`` and ``z0 [B, N]`` of one dtype on one device."""
    if x.dim() != 3 or w_in.dim() != 2 or w_rec.dim() != 2 or z0.dim() != 2:
        raise ValueError(f"snn's Triton recurrent loops take x [T, B, F], W_in [N, F], W_rec [N, N] and z0 [B, N], "
                         f"got {list(x.shape)}, {list(w_in.shape)}, {list(w_rec.shape)} and {list(z0.shape)}.")
    for what, t in (("input_weights", w_in), ("recurrent_weights", w_rec), ("state.z", z0)):
        if t.dtype != x.dtype or t.device != x.device:
            raise ValueError(f"snn's Triton recurrent loops need {what} of the input's dtype and device "
                             f"({x.dtype} on {x.device}), got {t.dtype} on {t.device}.")


def forward(loops: TritonLoops, kind, x, w_in, w_rec, z0, state, P, save, save_extra, options: KernelOptions):
    """All steps of a recurrent population: ``(spikes [T, B, N], final (v, i[, a]), saved)``, as
    :func:`snn.neurons.fused.python.recurrent.forward` returns them (the saved tensors in the compute dtype)."""
    spec = NEURON_SPECS[kind]
    _check_inputs(x, w_in, w_rec, z0)
    T, B, N = x.shape[0], z0.shape[0], w_rec.shape[0]
    M, cdt, device = B * N, compute_dtype(x.dtype), x.device
    out = torch.empty((T, B, N), dtype=x.dtype, device=device)
    vd = torch.empty((T, B, N), dtype=cdt, device=device) if save else None
    extra = [torch.empty((T, B, N), dtype=cdt, device=device) for _ in range(spec.extra if save_extra else 0)]
    # The state in the compute dtype, updated in place by each launch (read first, written last).
    s = tuple(torch.empty((B, N), dtype=cdt, device=device).copy_(v) for v in state)
    params, P_ks, P_ns = parameters(P, torch.Size((B, N)), cdt, device)
    step = loops.bind("forward", kind, x, M, symplectic=options.symplectic, CDT=cdt, SAVE_VD=vd is not None,
                      SAVE_EXTRA=bool(extra)) if M else None
    # W_in x of every step in one product; each step then adds W_rec z_{t-1} to its row in place.
    currents = F.linear(x, w_in)  # [T, B, N]
    w_rec_t = w_rec.t()
    z = z0
    for t in range(T):
        current = currents[t].addmm_(z, w_rec_t)
        if step is not None:
            # One step of x = current [1, M] (strides M, 1) into row t of the outputs and saved tensors
            # (out[t] where SAVE_VD or SAVE_EXTRA is off: never written).
            step(current, M, 1, s, s, out[t], out[t] if vd is None else vd[t],
                 tuple(e[t] for e in extra) or (out[t],) * spec.extra, params, P_ks, P_ns, 1, M)
        z = out[t]
    final = tuple(v.to(x.dtype) for v in s)
    return out, final, ([] if vd is None else [vd]) + extra


def backward(loops: TritonLoops, kind, gout, gz, gstate, saved, v0, w_rec, P, options: KernelOptions, param_grads):
    """Reverse time: ``(g_c [T, B, N], g_z0, gradients of the initial (v, i[, a]), per-neuron
    parameter gradients or None)``, as :func:`snn.neurons.fused.python.recurrent.backward` returns them (the first
    three in ``v0``'s dtype, the parameter gradients in the compute dtype)."""
    spec = NEURON_SPECS[kind]
    method = options.method
    if method not in NATIVE_SURROGATES:
        raise ValueError(f"snn's Triton kernels have no surrogate {method!r}.")
    vd, extra = saved[0], saved[1:]
    T, B, N = vd.shape
    M, dtype, cdt, device = B * N, v0.dtype, vd.dtype, vd.device
    expected = 1 + (spec.extra if param_grads else 0)
    if len(saved) != expected or tuple(v0.shape) != (B, N) or cdt != compute_dtype(dtype):
        raise ValueError(f"snn's Triton recurrent loops: saved {[list(t.shape) for t in saved]} {cdt} tensors and "
                         f"v0 {list(v0.shape)} {dtype} do not match a forward of recurrent {kind!r}.")
    w = w_rec if w_rec.dtype == cdt else w_rec.to(cdt)  # g_c W_rec in the compute dtype
    g = tuple(torch.empty((B, N), dtype=cdt, device=device).copy_(gs) for gs in gstate)  # updated in place per step
    v0 = v0.detach().contiguous()
    gc = torch.empty((T, B, N), dtype=cdt, device=device)
    G = torch.zeros((len(P), M), dtype=cdt, device=device) if param_grads else None  # the kernel adds each step's
    if gout is not None and gout.dtype != cdt:
        gout = gout.to(cdt)
    # g_z of the step the kernel runs next: that of its output plus, through W_rec, that of the
    # next step's current (the final spikes' gradient gz for the last step).
    g_step = torch.zeros((B, N), dtype=cdt, device=device)
    if gz is not None:
        g_step.copy_(gz)
    if gout is not None:
        g_step.add_(gout[T - 1])
    params, P_ks, P_ns = parameters(P, torch.Size((B, N)), cdt, device)
    consts = surrogate_constants(options.alpha, cdt, device)
    extra = tuple(extra) if param_grads else (vd,) * spec.extra  # never read without PARAMS
    step = loops.bind("backward", kind, vd, M, symplectic=options.symplectic, CDT=cdt, HAS_GOUT=True,
                      PARAMS=param_grads, METHOD=NATIVE_SURROGATES[method]) if M else None
    for t in range(T - 1, -1, -1):
        if step is not None:
            # (g_z [1, M] at strides 0, 1, the state gradients in place, steps t + 1, stop at t)
            step(g_step, 0, 1, g, g, vd, v0, extra, params, P_ks, P_ns, consts, gc, gc if G is None else G, t + 1, t, M)
        if t > 0:  # g_z of step t - 1: its output's, plus g_c W_rec through step t's current (one launch)
            if gout is not None:
                torch.addmm(gout[t - 1], gc[t], w, out=g_step)
            else:
                torch.mm(gc[t], w, out=g_step)
    g_z0 = gc[0] @ w
    Gs = None if G is None else [p.view(B, N) for p in G]
    return gc.to(dtype), g_z0.to(dtype), [s.to(dtype) for s in g], Gs
