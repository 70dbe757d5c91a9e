r"""The time loops of recurrent AdEx and LIF populations on the ``cpp`` backend.

The loops of :mod:`snn.neurons.fused.python.recurrent` with the neuron update of each step in C++: step ``t`` of the
forward computes the current

.. math::
    c_t = W_{\text{in}} x_t + W_{\text{rec}} z_{t-1}

with the step function's own torch operations (so with the BLAS products the eager loop runs, and
bit-identical to it where both run them on the same number of threads: see
:mod:`snn.neurons.fused.python.recurrent`), then runs the feed-forward kernel of ``cpu_kernels.cpp`` for that one step
on the population's state, writing the spikes and the pre-reset voltage of the step into the
``[T, B, N]`` outputs. The backward runs reverse time, one step of the feed-forward backward kernel
at a time (``t_stop = t``: it reads the saved voltage of steps ``t`` and ``t - 1`` in place), with
``g_z = g_{\text{out}, t} + g_{c_{t+1}} W_{\text{rec}}`` fed in per step; the weight and input
gradients are then one GEMM each over all steps, as on the ``python`` backend.

The products with ``W_rec`` are dense: spikes are 0/1 and sparse, but a sum over the spikes that
fired adds in another order than BLAS and would not be bit-identical to the eager loop. They bound
the time (``benchmarks/bench_recurrent.py`` measures the floor they set). Arguments are checked
as for the feed-forward loops (:mod:`.arguments`); the per-step arguments are offsets into buffers made here.
"""

from __future__ import annotations

import ctypes

import torch
from torch.nn import functional as F

from ..spec import NATIVE_SURROGATES, NEURON_SPECS, KernelOptions
from .arguments import BUFFERS, WHAT, block, dense, integrator_argument, kernel_dtype, parameters
from .build import KERNEL_DTYPES, load_library


def _kernel(kind: str, direction: str, dtype: torch.dtype):
    return getattr(load_library(), f"{kind}_{direction}_{KERNEL_DTYPES[dtype]}")


def _check_shape(what: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    """The buffers the kernels read are sized from these shapes: a ValueError for any other."""
    if tuple(t.shape) != shape:
        raise ValueError(f"snn's C++ recurrent loops need {what} of shape {list(shape)}, got {list(t.shape)}.")


def _check_inputs(x: torch.Tensor, w_in: torch.Tensor, w_rec: torch.Tensor, z0: torch.Tensor) -> torch.dtype:
    """``x [T, B, F]``, ``W_in [N, F]``, ``W_rec [N, N]`` and ``z0 [B, N]``: dense CPU tensors of one
    kernel dtype (the torch products then write exactly the ``[B, N]`` current the kernel reads)."""
    dtype = kernel_dtype(x, "the input")
    for what, t in (("the input", x), ("input_weights", w_in), ("recurrent_weights", w_rec), ("state.z", z0)):
        dense(t, what, dtype)
    if x.dim() != 3 or w_rec.dim() != 2 or z0.dim() != 2:
        raise ValueError(f"snn's C++ recurrent loops take x [T, B, F], W_rec [N, N] and z0 [B, N], got "
                         f"{list(x.shape)}, {list(w_rec.shape)} and {list(z0.shape)}.")
    N = w_rec.shape[0]
    _check_shape("recurrent_weights", w_rec, (N, N))
    _check_shape("input_weights", w_in, (N, x.shape[2]))
    _check_shape("state.z", z0, (x.shape[1], N))
    return dtype


def forward(kind, x, w_in, w_rec, z0, state, P, save, save_extra, options: KernelOptions):
    """All steps of a recurrent population: ``(spikes [T, B, N], final (v, i[, a]), saved)``, as
    :func:`snn.neurons.fused.python.recurrent.forward` returns them."""
    spec = NEURON_SPECS[kind]
    dtype = _check_inputs(x, w_in, w_rec, z0)
    T, B, N = x.shape[0], z0.shape[0], w_rec.shape[0]
    M = B * N
    state = [block(s.detach(), what, dtype, M).clone() for what, s in zip(WHAT[kind][0], state, strict=True)]
    keep, ptrs, flags = parameters(P, (B, N), dtype)
    out = BUFFERS.empty((T, B, N), dtype, x.device)
    rows = [out]  # written one step (row of B N values) at a time: spikes, v_d, then i + c and a
    if save:
        rows.append(BUFFERS.empty((T, B, N), dtype, x.device))
    if save_extra:
        rows += [BUFFERS.empty((T, B, N), dtype, x.device) for _ in range(spec.extra)]
    current = torch.empty((B, N), dtype=dtype)
    step = _kernel(kind, "forward", dtype)
    bases = [r.data_ptr() for r in rows]
    row_bytes = M * out.element_size()
    # adex: (steps, M, x, x_ts, x_ns, v, i, a, params, flags, integrator, z, v_d, i + c, a, threads);
    # lif: no a, no integrator.
    head = [ctypes.c_int64(1), ctypes.c_int64(M), ctypes.c_void_p(current.data_ptr()), ctypes.c_int64(0),
            ctypes.c_int64(1), *(ctypes.c_void_p(s.data_ptr()) for s in state), ptrs, flags,
            *integrator_argument(kind, options)]
    missing = [None] * (1 + spec.extra - (len(rows) - 1))  # v_d and the extras not saved
    threads = ctypes.c_int(torch.get_num_threads())
    # z_{t-1} in a tensor of its own: BLAS rounds a product differently by where its rows start in
    # memory, and the eager loop multiplies a freshly allocated z (out[t] starts anywhere).
    z_prev = torch.empty((B, N), dtype=dtype)
    z = z0
    for t in range(T):
        # The expression of snn.neurons.module.recurrent_current (its rounding, bit for bit).
        torch.add(F.linear(x[t], w_in), F.linear(z, w_rec), out=current)
        step(*head, *(ctypes.c_void_p(b + t * row_bytes) for b in bases), *missing, threads)
        z = z_prev.copy_(out[t])
    del keep
    return out, tuple(state), rows[1:]


def backward(kind, gout, gz, gstate, saved, v0, w_rec, P, options: KernelOptions, param_grads):
    """Reverse time: ``(g_c [T, B, N], g_z0, gradients of the initial (v, i[, a]), per-neuron
    parameter gradients or None)``, as :func:`snn.neurons.fused.python.recurrent.backward` returns them."""
    spec = NEURON_SPECS[kind]
    method = options.method
    if method not in NATIVE_SURROGATES:
        raise ValueError(f"snn's C++ kernels have no surrogate {method!r}.")
    dtype = kernel_dtype(v0, "the initial voltage")
    expected = 1 + (spec.extra if param_grads else 0)
    if len(saved) != expected:
        raise ValueError(f"snn's C++ kernels: {len(saved)} saved tensors for recurrent {kind!r}, expected {expected}.")
    vd = dense(saved[0], "saved tensor 0", dtype)
    if v0.dim() != 2 or vd.dim() != 3:
        raise ValueError(f"snn's C++ recurrent loops take v0 [B, N] and saved voltages [T, B, N], got "
                         f"{list(v0.shape)} and {list(vd.shape)}.")
    T, B, N = vd.shape
    M = B * N
    _check_shape("the initial voltage", v0, (B, N))
    _check_shape("recurrent_weights", dense(w_rec, "recurrent_weights", dtype), (N, N))
    if gout is not None:
        _check_shape("the output gradient", dense(gout, "the output gradient", dtype), (T, B, N))
    if gz is not None:
        _check_shape("the final spikes' gradient", gz, (B, N))
    saved = [block(s, f"saved tensor {k}", dtype, T * M) for k, s in enumerate(saved)]
    gstate = [block(g, what, dtype, M).clone() for what, g in zip(WHAT[kind][1], gstate, strict=True)]
    v0 = block(v0.detach(), "the initial voltage", dtype, M)
    keep, ptrs, flags = parameters(P, (B, N), dtype)
    gc = BUFFERS.empty((T, B, N), dtype, v0.device)
    gp = v0.new_zeros((len(P), M)) if param_grads else None  # the kernel adds each step's share
    grec = torch.zeros((B, N), dtype=dtype)  # contiguous: g_step below is read by the kernel
    if gz is not None:
        grec.copy_(dense(gz, "the final spikes' gradient", dtype))
    g_step = torch.empty((B, N), dtype=dtype) if gout is not None else grec
    step = _kernel(kind, "backward", dtype)
    extra = saved[1:] if param_grads else [None] * spec.extra
    # (steps, t_stop, M, g_z, ts, ns, gv, gi[, ga], v_d, v0[, i + c, a | i + c], params, flags,
    #  [integrator (adex),] method, alpha, g_x, g_params, threads)
    ptr = ctypes.c_void_p
    tail = [ptr(g_step.data_ptr()), ctypes.c_int64(0), ctypes.c_int64(1), *(ptr(g.data_ptr()) for g in gstate),
            ptr(saved[0].data_ptr()), ptr(v0.data_ptr()), *(None if e is None else ptr(e.data_ptr()) for e in extra),
            ptrs, flags, *integrator_argument(kind, options), ctypes.c_int(NATIVE_SURROGATES[method]),
            ctypes.c_double(options.alpha), ptr(gc.data_ptr()),
            None if gp is None else ptr(gp.data_ptr()), ctypes.c_int(torch.get_num_threads())]
    size = ctypes.c_int64(M)
    for t in range(T - 1, -1, -1):
        if gout is not None:
            torch.add(gout[t], grec, out=g_step)
        step(ctypes.c_int64(t + 1), ctypes.c_int64(t), size, *tail)
        torch.mm(gc[t], w_rec, out=grec)  # g_z of step t - 1 through the recurrent weights
    del keep
    G = None if gp is None else [g.view(B, N) for g in gp]
    return gc, grec, list(gstate), G
