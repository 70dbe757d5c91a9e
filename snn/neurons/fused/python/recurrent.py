r"""The time loops of recurrent AdEx and LIF populations in plain PyTorch (the ``python`` backend).

A recurrent population is the feed-forward neuron driven by the input current

.. math::
    c_t = W_{\text{in}} x_t + W_{\text{rec}} z_{t-1}

(:func:`~snn.neurons.adex.lif_adex_step`, :func:`~snn.neurons.lif.lif_step`). The forward runs the
feed-forward loops of :mod:`~snn.neurons.fused.python.feed_forward` with :class:`RecurrentCurrent`
in place of their input: it computes ``c_t`` when the loop reaches step ``t``, from the spikes the
loop wrote at ``t - 1``, with the step function's own expression, so outputs and states are
bit-identical to the eager loop where both run the products on the same number of threads. (One GEMM
for ``W_in x`` over all steps is not: BLAS rounds ``[T B, F] x [F, N]`` differently from ``[B, F] x
[F, N]`` for some shapes.) The thread counts differ for small steps: the loop runs them, products
included, on one thread (:func:`~snn.neurons.fused.threads.serial_steps`,
:func:`~snn.neurons.fused.cpp.step_threads`: an OpenMP region per step costs more than the step on a
busy machine), the eager loop its products on all, and BLAS may round a product differently by
thread count (MKL on AVX-512: ``[4, 300] x [300, 300]``, one ulp). There the states agree within
that rounding (``tests/neurons/fused/test_fused_recurrent.py``, ``blas_bound``).

The backward runs reverse time. The spike ``z_t`` reaches the loss through the outputs, its own
reset and adaptation jump, and the next step's current, so with :math:`g_c` the gradient of
:math:`c`:

.. math::
    g_{z_t} = g_{\text{out}, t} + g_{c_{t+1}} W_{\text{rec}}, \qquad
    g_{W_\text{rec}} = \sum_t g_{c_t}^\top z_{t-1}, \qquad
    g_{W_\text{in}} = \sum_t g_{c_t}^\top x_t, \qquad g_{x_t} = g_{c_t} W_{\text{in}}

The per-step recursion is that of the feed-forward backward with ``g_z`` fed in step by step; the
weight and input gradients are one GEMM each over all steps, the same for every backend
(:func:`snn.neurons.fused.recurrent.weight_gradients`).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ...surrogate import surrogate_derivative
from ..spec import NEURON_SPECS, KernelOptions
from .feed_forward import (
    adex_backward_step,
    adex_forward_loop,
    backward_loop,
    lif_backward_step,
    lif_forward_loop,
    reset_voltage,
)


class RecurrentCurrent:
    """Stands in for the input ``x [T, ...]`` of the feed-forward loops, which read ``x[t]`` once at
    the start of step ``t``: ``current[t]`` is ``W_in x[t] + W_rec z[t - 1]``, with ``z[t - 1]``
    the spikes the loop wrote into ``out[t - 1]`` (``z0`` for ``t = 0``)."""

    def __init__(self, x, w_in, w_rec, z0, out):
        self.x, self.w_in, self.w_rec, self.z0, self.out = x, w_in, w_rec, z0, out
        self.shape = (x.shape[0],)
        # z_{t-1} in a tensor of its own: BLAS rounds a product differently by where its rows start
        # in memory, and the eager loop multiplies a freshly allocated z (out[t - 1] starts anywhere).
        self.z_prev = out.new_empty(out.shape[1:])

    def __getitem__(self, t: int) -> torch.Tensor:
        z = self.z0 if t == 0 else self.z_prev.copy_(self.out[t - 1])
        # The expression of snn.neurons.module.recurrent_current, which the step functions use.
        return F.linear(self.x[t], self.w_in) + F.linear(z, self.w_rec)


FORWARD_LOOPS = {"adex": adex_forward_loop, "lif": lif_forward_loop}


def forward(kind, x, w_in, w_rec, z0, state, P, save, save_extra, options: KernelOptions):
    """All steps of a recurrent population: ``(spikes [T, B, N], final (v, i[, a]), saved)``.

    ``saved`` is the pre-reset voltage per step when ``save`` (plus ``i + c`` and ``a`` per step
    when ``save_extra``: parameter gradients need them), in the order :func:`backward` reads it.
    ``options.integrator``: AdEx's (see :func:`~snn.neurons.adex.lif_adex_feed_forward_step`)."""
    T, B, N = x.shape[0], z0.shape[0], w_rec.shape[0]
    out = x.new_empty((T, B, N))
    vd = torch.empty_like(out) if save else None
    extra = [torch.empty_like(out) for _ in range(NEURON_SPECS[kind].extra if save_extra else 0)]
    final = FORWARD_LOOPS[kind](
        RecurrentCurrent(x, w_in, w_rec, z0, out),
        state,
        P,
        out,
        vd,
        *(extra or [None] * NEURON_SPECS[kind].extra),
        **_flags(kind, options),
    )
    return out, final, ([] if vd is None else [vd]) + extra


def backward(kind, gout, gz, gstate, saved, v0, w_rec, P, options: KernelOptions, param_grads):
    """Reverse time: ``(g_c [T, B, N], g_z0, gradients of the initial (v, i[, a]), per-neuron
    parameter gradients or None)``. ``gout`` (of the spikes) and ``gz`` (of the final spikes) may
    be None: no gradient reached them."""
    derivative, alpha = surrogate_derivative(options.method), options.alpha
    vd = saved[0]
    if gz is None:
        gz = torch.zeros_like(vd[0])
    if param_grads:
        gstate = [g.clone(memory_format=torch.contiguous_format) for g in gstate]
        gc, gstate, G = _stepwise(kind, gout, gz, gstate, saved, v0, w_rec, P, derivative, alpha, options)
    else:  # the feed-forward loop with g_z fed back through W_rec
        gc, gstate = backward_loop(kind, gout, gstate, vd, v0, P, derivative, alpha, w_rec, gz,
                                   **_flags(kind, options))
        G = None
    return gc, gc[0] @ w_rec, list(gstate), G


def _flags(kind, options):
    """The keyword AdEx's loops take for the integrator (LIF's take none)."""
    return {"symplectic": options.symplectic} if kind == "adex" else {}


def _stepwise(kind, gout, gz, gstate, saved, v0, w_rec, P, derivative, alpha, options):
    """The backward with per-neuron parameter gradients: the feed-forward step backward
    (:func:`~.feed_forward.adex_backward_step`) with ``g_z`` fed in step by step."""
    vd, extra = saved[0], saved[1:]
    T = vd.shape[0]
    step = adex_backward_step if kind == "adex" else lif_backward_step
    gc = torch.empty_like(vd)
    G = [torch.zeros_like(vd[0]) for _ in P]
    grec = gz
    for t in range(T - 1, -1, -1):
        v = reset_voltage(vd[t - 1], P[-2], P[-1]) if t > 0 else v0
        g_z = grec if gout is None else grec + gout[t]
        gstate = step(
            g_z, *gstate, vd[t], v, P, derivative, alpha, gc[t], *(e[t] for e in extra), G,
            **_flags(kind, options),
        )
        grec = gc[t] @ w_rec
    return gc, list(gstate), G
