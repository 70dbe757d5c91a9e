r"""The time loops of recurrent AdEx and LIF populations on the ``cpp`` backend.

The loops of :mod:`snn.neurons.fused.python.recurrent` in C++. :func:`forward` and :func:`backward`
are the native loops: the whole time loop in one call into ``cpu_kernels.cpp``
(``recurrent_forward_*``, ``recurrent_backward_*``). Step ``t`` of the forward computes the current

.. math::
    c_t = W_{\text{in}} x_t + W_{\text{rec}} z_{t-1}

as the step function does (``torch.add(F.linear(x_t, W_in), F.linear(z, W_rec))``): two products
through BLAS's GEMM (``sgemm_``/``dgemm_``, the functions torch's CPU products call, found in the
libraries torch loads), each with the very arguments torch's ``mm`` would hand it for the eager
step's operands (:func:`gemm_plan`, ATen's ``addmm_impl_cpu_`` and ``cpublas::gemm`` written down:
transposes, leading dimensions, the operand order, the operands it copies first), into 64-byte
aligned buffers as torch's fresh tensors are (BLAS's rounding can depend on where rows start), then
their sum, then the neuron update of the feed-forward kernel for that one step on the population's
state, writing the spikes and the pre-reset voltage of the step into the ``[T, B, N]`` outputs. On
the dense path (see the spike-sparse products below) and one thread the spikes and states are
therefore bit-identical to the eager loop's; on several, BLAS may split a product's sums otherwise
than torch's call on another thread count (within rounding).
The backward runs reverse time, one step of the feed-forward backward kernel at a time (``t_stop =
t``: it reads the saved voltage of steps ``t`` and ``t - 1`` in place), with ``g_z = g_{\text{out},
t} + g_{c_{t+1}} W_{\text{rec}}`` (``torch.mm(g_c[t], W_rec)``'s GEMM) fed in per step; the weight
and input gradients are then one GEMM each over all steps (:mod:`~snn.neurons.fused.recurrent`), as on the
``python`` backend. What is saved is unchanged: the pre-reset voltage, 4 bytes per neuron and step
in float32.

:func:`forward_per_step` and :func:`backward_per_step` are the same loops with one C++ call per
step and the products by torch between them. They run where the library found no GEMM (a torch
built without a BLAS that exports it), where torch would not hand a product to GEMM (an empty
product, sizes beyond 32 bits) and for ``T = 0``; ``benchmarks/bench_recurrent.py --floor-table``
measures them beside the native loops.

Spike-sparse products. ``z_{t-1}`` is binary and sparse (about 10 % ones in the project's recipes),
so two of the three recurrent products can skip the zeros:

* forward, step ``t >= 1``: the spikes of each sample are listed (vector compares and
  compress-stores) and :math:`(W_{\text{rec}} z_{t-1})_{b,n} = \sum_{m \in A_b} W_{nm}` is a
  gather-add of the rows of ``W_rec^T`` of the active neurons ``A_b``, in ascending ``m`` from +0;
* weight gradient: :math:`\partial L / \partial W_{\text{rec}} = \sum_t g_{c_t}^\top z_{t-1}`
  adds, for every pre-synaptic neuron ``m``, the rows ``g_c[t, b]`` of the samples ``b`` where it
  spiked at ``t - 1``, inside the backward loop right after step ``t``'s ``g_c`` is computed (still
  in cache, as are the voltages the spikes come from): descending ``t``, ascending ``b``. The
  per-step loops sum the same way after theirs (:func:`weight_gradient`).

The backward's ``g_c W_rec`` stays dense (``g_c`` is). Each forward step and each step of the
weight gradient takes the sparse sum when its spike rate is at most the crossover
(:data:`FORWARD_MAX_RATE`, :data:`WEIGHT_GRADIENT_MAX_RATE`: where the sparse sum beat BLAS in
``benchmarks/bench_recurrent.py --crossover``), else BLAS's GEMM as before. Step 0 multiplies ``z0``
densely (a state handed in may hold any values). ``SNN_SPIKE_PRODUCTS`` chooses: ``auto`` (the
default) by rate, and only where a step's dense product has at least :data:`SPARSE_MIN_MACS`
multiply-adds; ``dense`` never (the exact path); ``sparse`` at every rate and size.

Bound. A sparse sum adds the same nonzero terms as the dense product, in another order (zero terms
are exact), so both lie within :math:`\gamma_K \sum_k |a_k|` of the exact sum and within
:math:`2 \gamma_K \sum_k |a_k|` of each other, :math:`\gamma_K = K u / (1 - K u)`, ``u`` the unit
roundoff, ``K`` the terms of the sum (``N`` forward, ``T B`` for the weight gradient). Spikes can
differ only where a pre-reset voltage lies within that distance of the threshold. The sparse sums'
order does not depend on the thread count. Non-finite weights differ: ``0 * inf`` is NaN in GEMM and
skipped by the gather. **The bit-identity with the eager loop claimed above holds on the dense
path**: with ``SNN_SPIKE_PRODUCTS=dense``, and under ``auto`` for products below
:data:`SPARSE_MIN_MACS` (the steps above the crossover rate take BLAS's products too, but
a call's other steps may not). The per-step loops' products are dense; the weight gradient of both
loops is :func:`weight_gradient`'s. Every tensor is checked as for the feed-forward
loops (:mod:`~snn.neurons.fused.cpp.arguments`), and every GEMM's reach (its plan's extents) against the storage of the
operands it reads, before an address goes to C++.
"""

from __future__ import annotations

import ctypes
import os
from typing import NamedTuple

import torch
from torch.nn import functional as F

from ..spec import NATIVE_SURROGATES, NEURON_SPECS, KernelOptions
from .arguments import (
    BUFFERS,
    WHAT,
    block,
    dense,
    integrator_argument,
    kernel_dtype,
    parameters,
    pointer,
    refuse,
    rows,
)
from .build import KERNEL_DTYPES, load_library

KINDS = {"adex": 0, "lif": 1}  # the native entry points' kind argument


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


def forward_per_step(kind, x, w_in, w_rec, z0, state, P, save, save_extra, options: KernelOptions):
    """:func:`forward` one C++ call per step, the products by torch between them."""
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
            ctypes.c_int64(1), *map(pointer, state), ptrs, flags,
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


def _check_backward(kind, gstate, saved, v0, P, options: KernelOptions, param_grads):
    """What both backward loops check before touching memory: ``(spec, method, dtype, saved voltages)``."""
    spec = NEURON_SPECS[kind]
    method = options.method
    if method not in NATIVE_SURROGATES:
        raise ValueError(f"snn's C++ kernels have no surrogate {method!r}.")
    dtype = kernel_dtype(v0, "the initial voltage")
    expected = 1 + (spec.extra if param_grads else 0)
    if len(saved) != expected:
        raise ValueError(f"snn's C++ kernels: {len(saved)} saved tensors for recurrent {kind!r}, expected {expected}.")
    if len(gstate) != len(spec.state) or len(P) != len(spec.params):
        raise ValueError(f"snn's C++ kernels for {kind!r} take {len(spec.state)} state gradients and "
                         f"{len(spec.params)} parameters, got {len(gstate)} and {len(P)}.")
    vd = dense(saved[0], "saved tensor 0", dtype)
    if v0.dim() != 2 or vd.dim() != 3:
        raise ValueError(f"snn's C++ recurrent loops take v0 [B, N] and saved voltages [T, B, N], got "
                         f"{list(v0.shape)} and {list(vd.shape)}.")
    return spec, method, dtype, vd


def backward_per_step(kind, gout, gz, gstate, saved, v0, w_rec, P, options: KernelOptions, param_grads,
                      z0=None, w_rec_grad=False):
    """:func:`backward` one C++ call per step, the products by torch between them (W_rec's gradient
    by :func:`weight_gradient` after the loop)."""
    spec, method, dtype, vd = _check_backward(kind, gstate, saved, v0, P, options, param_grads)
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
    # pointer(): a tensor without memory (an efficient zero tensor handed back as a saved one) is refused.
    tail = [pointer(g_step), ctypes.c_int64(0), ctypes.c_int64(1), *map(pointer, gstate),
            pointer(saved[0]), pointer(v0), *map(pointer, extra),
            ptrs, flags, *integrator_argument(kind, options), ctypes.c_int(NATIVE_SURROGATES[method]),
            ctypes.c_double(options.alpha), pointer(gc), pointer(gp), ctypes.c_int(torch.get_num_threads())]
    size = ctypes.c_int64(M)
    for t in range(T - 1, -1, -1):
        if gout is not None:
            torch.add(gout[t], grec, out=g_step)
        step(ctypes.c_int64(t + 1), ctypes.c_int64(t), size, *tail)
        torch.mm(gc[t], w_rec, out=grec)  # g_z of step t - 1 through the recurrent weights
    del keep
    G = None if gp is None else [g.view(B, N) for g in gp]
    gw_rec = weight_gradient(gc, vd, z0, P[-2]) if w_rec_grad else None
    return gc, grec, list(gstate), G, gw_rec


# ---------------------------------------------------------------- the native loops

INT_MAX = 2**31 - 1  # BLAS's Fortran interface takes 32-bit sizes and leading dimensions


class GemmPlan(NamedTuple):
    """The arguments torch's ``mm(m1, m2)`` hands BLAS's GEMM for a fresh contiguous result
    (ATen's ``addmm_impl_cpu_`` and ``cpublas::gemm``): the C++ loops call GEMM with them, so a
    product rounds as the eager step's. ``swap``: GEMM's A is ``m2`` and B is ``m1``."""

    transa: int
    transb: int
    m: int
    n: int
    k: int
    lda: int
    ldb: int
    ldc: int
    swap: int

    def extents(self) -> tuple[int, int]:
        """The last element GEMM reads in ``m1`` and in ``m2``, counted from each one's first."""
        a = (self.k - 1) + (self.m - 1) * self.lda if self.transa else (self.m - 1) + (self.k - 1) * self.lda
        b = (self.n - 1) + (self.k - 1) * self.ldb if self.transb else (self.k - 1) + (self.n - 1) * self.ldb
        return (b, a) if self.swap else (a, b)


def _standard_strides(shape) -> tuple[int, int]:
    return (shape[1], 1)


def gemm_plan(m1_shape, m1_strides, m2_shape, m2_strides) -> tuple[GemmPlan, bool, bool] | None:
    """``(plan, copy m1, copy m2)`` of ``mm(m1, m2)`` into a fresh contiguous ``[rows, cols]``
    result, from the operands' shapes and strides: what ATen does, step by step, including the
    operands it copies to fresh contiguous tensors first (a copied operand's plan reads the copy).
    None where torch would not call GEMM (an empty product, sizes beyond 32 bits)."""
    rows, cols = m1_shape[0], m2_shape[1]
    if min(rows, cols, m1_shape[1]) == 0:  # torch fills an empty product itself
        return None
    result = _standard_strides((rows, cols))
    if result[0] == 1 and (cols == 1 or result[1] >= max(1, rows)):
        transpose_c = False
    elif result[1] == 1 and (rows == 1 or result[0] >= max(1, cols)):
        transpose_c = True
    else:  # unreachable for a contiguous result
        return None
    shapes, strides = [tuple(m1_shape), tuple(m2_shape)], [tuple(m1_strides), tuple(m2_strides)]
    if transpose_c:
        shapes.reverse()
        strides.reverse()
    first, second = (1, 0) if transpose_c else (0, 1)
    m = cols if transpose_c else rows
    n = rows if transpose_c else cols
    k = shapes[0][second]
    copies = [False, False]  # in GEMM's order (A, B)
    transposes = [False, False]
    for j, need_leading in ((0, (m, k)), (1, (k, n))):
        st = strides[j]
        if st[first] == 1 and st[second] >= max(1, need_leading[0]):
            transposes[j] = False
        elif st[second] == 1 and st[first] >= max(1, need_leading[1]):
            transposes[j] = True
        else:  # torch copies the operand to a fresh contiguous tensor
            transposes[j] = not transpose_c
            copies[j] = True
            strides[j] = _standard_strides(shapes[j])
    transpose_a, transpose_b = transposes
    lda = strides[0][1 if transpose_a == transpose_c else 0]
    ldb = strides[1][1 if transpose_b == transpose_c else 0]
    ldc = result[0 if transpose_c else 1]
    # cpublas::gemm's normalize_last_dims: leading dimensions of size-1 operands made valid.
    if n == 1:
        ldc = m
    if transpose_a:
        lda = k if m == 1 else lda
    elif k == 1:
        lda = m
    if transpose_b:
        ldb = n if k == 1 else ldb
    elif n == 1:
        ldb = k
    # cpublas's use_blas_gemm: else torch runs its own kernel.
    if not (max(m, n, k, lda, ldb, ldc) <= INT_MAX and lda >= max(1, k if transpose_a else m)
            and ldb >= max(1, n if transpose_b else k) and ldc >= max(1, m)):
        return None
    if transpose_c:
        copies.reverse()
    plan = GemmPlan(int(transpose_a), int(transpose_b), m, n, k, lda, ldb, ldc, int(transpose_c))
    return plan, copies[0], copies[1]


def _available(t: torch.Tensor) -> int:
    """Elements of ``t``'s storage from its first element on."""
    return t.untyped_storage().nbytes() // t.element_size() - t.storage_offset()


def _within(plan: GemmPlan, m1: torch.Tensor, m2: torch.Tensor, steps: int = 1, step: int = 0) -> bool:
    """Whether GEMM stays inside both operands' storage (``m1`` advanced by ``step`` elements for
    each of ``steps`` steps)."""
    a, b = plan.extents()
    return step >= 0 and a + (steps - 1) * step < _available(m1) and b < _available(m2)


def _plan_array(plan: GemmPlan):
    return (ctypes.c_int64 * len(plan))(*plan)


def _standard(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` with the strides of a fresh contiguous tensor (what torch's clone makes)."""
    return torch.empty(t.shape, dtype=t.dtype).copy_(t)


def _weight_operand(m1, m1_shape, m1_strides, w):
    """``(plan, m2)`` of ``m1 @ w`` with ``w`` copied where torch copies it; None: not through GEMM."""
    planned = gemm_plan(m1_shape, m1_strides, tuple(w.shape), w.stride())
    if planned is None:
        return None
    plan, copy_m1, copy_w = planned
    if copy_m1:  # not for the loops' own buffers, which are contiguous
        return None
    return plan, (_standard(w) if copy_w else w)


# ---------------------------------------------------------------- spike-sparse products

ENV = "SNN_SPIKE_PRODUCTS"
MODES = ("auto", "dense", "sparse")
# The crossovers (benchmarks/bench_recurrent.py --crossover, benchmarks/RESULTS.md): the highest
# spike rate at which the sparse forward product of a step, and the sparse weight gradient of a
# step, beat BLAS's dense product on this development machine.
FORWARD_MAX_RATE = 0.4
WEIGHT_GRADIENT_MAX_RATE = 0.4
# ``auto`` takes the sparse products only from this many multiply-adds per step's dense product
# (B N^2): below it the product is microseconds either way, and the dense one is bit-identical to
# the eager loop's.
SPARSE_MIN_MACS = 1 << 20
# What the sparse products did since the process started (diagnostics for tests and benchmarks):
# forward steps that took the gather-add, forward steps whose spikes were counted, spikes counted in
# them; weight-gradient steps that took the scatter-add, steps whose spikes were counted.
STATS = {"forward_sparse_steps": 0, "forward_steps": 0, "forward_spikes": 0,
         "weight_sparse_steps": 0, "weight_steps": 0}


def spike_products() -> str:
    """``SNN_SPIKE_PRODUCTS``: ``auto`` (unset), ``dense`` or ``sparse``; a ValueError for anything else."""
    value = os.environ.get(ENV, "").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{ENV}={value!r}: set it to one of {', '.join(MODES)} (or unset it for auto).")
    return value


def sparse_max_rate(B: int, N: int, crossover: float) -> float | None:
    """The spike rate up to which a call's products go sparse (``crossover`` in ``auto``, 1 when
    ``sparse`` is forced), or None: dense only (``dense``, or ``auto`` below :data:`SPARSE_MIN_MACS`)."""
    mode = spike_products()
    if mode == "dense" or mode == "auto" and B * N * N < SPARSE_MIN_MACS:
        return None
    return 1.0 if mode == "sparse" else crossover


def weight_gradient(gc: torch.Tensor, vd: torch.Tensor, z0: torch.Tensor | None, v_th) -> torch.Tensor | None:
    r"""The recurrent weight gradient :math:`\sum_t g_{c_t}^\top z_{t-1}` (``[N, N]``) with sums over
    the active pre-synaptic neurons only (``spike_weight_gradient_*``), or None where the products
    are dense (:func:`sparse_max_rate`): the autograd node then multiplies densely. ``z_{t-1}`` is
    ``z0`` (None: zero) at ``t = 0``, then ``[v_d[t-1] > v_th]``."""
    dtype = kernel_dtype(gc, "the current gradient")
    gc = dense(gc, "the current gradient", dtype)
    if gc.dim() != 3:
        raise ValueError(f"snn's C++ weight gradient takes g_c [T, B, N], got {list(gc.shape)}.")
    T, B, N = gc.shape
    rate = _spike_sum_rate(B, N)
    if rate is None or T == 0:
        return None
    M = B * N
    gc = block(gc, "the current gradient", dtype, T * M)
    vd = block(vd, "saved tensor 0", dtype, T * M)
    z0 = _initial_spikes(z0, B, N, dtype)
    keep, ptrs, flags = parameters([v_th], (B, N), dtype)
    gwt = torch.zeros((N, N), dtype=dtype)
    stats = (ctypes.c_int64 * 2)()
    getattr(load_library(), f"spike_weight_gradient_{KERNEL_DTYPES[dtype]}")(
        ctypes.c_int64(T), ctypes.c_int64(B), ctypes.c_int64(N), pointer(gc), pointer(vd), pointer(z0),
        ctypes.c_void_p(ptrs[0]), ctypes.c_int64(flags[0]), ctypes.c_double(rate), pointer(gwt), stats,
        ctypes.c_int(torch.get_num_threads()))
    del keep
    return _summed_weight_gradient(gwt, stats)


def _spike_sum_rate(B: int, N: int) -> float | None:
    """The spike rate up to which the weight gradient's steps are summed over the spikes
    (:func:`sparse_max_rate`), or None: the node's dense product (also where a dense step's GEMM
    would not fit BLAS's 32-bit sizes)."""
    rate = sparse_max_rate(B, N, WEIGHT_GRADIENT_MAX_RATE)
    return None if rate is None or max(N, 8 * B) > INT_MAX else rate


def _initial_spikes(z0: torch.Tensor | None, B: int, N: int, dtype: torch.dtype) -> torch.Tensor | None:
    """``z0`` as the ``B N`` contiguous values the weight gradient reads (None stays None: zero)."""
    if z0 is None:
        return None
    _check_shape("state.z", z0, (B, N))
    return block(z0.detach(), "state.z", dtype, B * N)


def _summed_weight_gradient(gwt: torch.Tensor, stats) -> torch.Tensor:
    """W_rec's gradient from the C++ sum's ``gwt = dL/dW_rec^T``; its counts go to :data:`STATS`."""
    STATS["weight_sparse_steps"] += stats[0]
    STATS["weight_steps"] += stats[1]
    return gwt.t().contiguous()


def native_available() -> bool:
    """Whether the library found BLAS's GEMM (the native loops call it)."""
    return bool(load_library().blas_available())


def forward(kind, x, w_in, w_rec, z0, state, P, save, save_extra, options: KernelOptions):
    """All steps of a recurrent population in one C++ call: ``(spikes [T, B, N], final (v, i[, a]),
    saved)``, as :func:`snn.neurons.fused.python.recurrent.forward` returns them."""
    spec = NEURON_SPECS[kind]
    dtype = _check_inputs(x, w_in, w_rec, z0)
    if len(state) != len(spec.state) or len(P) != len(spec.params):
        raise ValueError(f"snn's C++ kernels for {kind!r} take {len(spec.state)} state tensors and "
                         f"{len(spec.params)} parameters, got {len(state)} and {len(P)}.")
    x, w_in, w_rec = (dense(t, what, dtype) for t, what in ((x, "the input"), (w_in, "input_weights"),
                                                           (w_rec, "recurrent_weights")))
    T, B, F_ = x.shape
    N = w_rec.shape[0]
    M = B * N
    zbuf = torch.empty((B, N), dtype=dtype)  # z[t - 1], where the eager step's fresh z would be
    # The operands as the eager step's F.linear hands them to mm: x[t] [B, F] and W^T.
    planned = gemm_plan((B, F_), x.stride()[1:], (F_, N), w_in.t().stride())
    recurrent = _weight_operand(zbuf, (B, N), zbuf.stride(), w_rec.t())
    if planned is None or recurrent is None or T == 0:
        return forward_per_step(kind, x, w_in, w_rec, z0, state, P, save, save_extra, options)
    plan_in, copy_x, copy_w_in = planned
    plan_rec, w_rec_t = recurrent
    w_in_t = _standard(w_in.t()) if copy_w_in else w_in.t()
    # torch copies x[t] to a fresh tensor where GEMM cannot take it: the loop copies each step's
    # rows of a contiguous x to an aligned buffer of its own.
    xbuf = torch.empty((B, F_), dtype=dtype) if copy_x else None
    if copy_x:
        x = _standard(x)
    if not (_within(plan_in, xbuf if copy_x else x, w_in_t, 1 if copy_x else T, x.stride(0))
            and _within(plan_rec, zbuf, w_rec_t) and (not copy_x or x.is_contiguous())):
        raise refuse("the input", x, f"[{T}, {B}, {F_}] values GEMM can read within its storage")
    # One input feature: the C++ loop multiplies x[t, b] w_in[n] itself (one rounding, as GEMM's
    # product of one term is, whatever the BLAS); (x's batch stride, W_in^T's neuron stride), else (-1, 0).
    k1 = (-1, 0)
    if F_ == 1:
        xbuf, k1 = None, (x.stride(1), w_in_t.stride(1))
        if (T - 1) * x.stride(0) + (B - 1) * k1[0] >= _available(x) or (N - 1) * k1[1] >= _available(w_in_t):
            raise refuse("the input", x, f"[{T}, {B}, 1] values within its storage")
    # Step 0 multiplies z0 as the eager step does: in its own layout, or a fresh copy where mm makes one.
    z0 = dense(z0, "state.z", dtype)
    planned = gemm_plan((B, N), z0.stride(), (N, N), w_rec_t.stride())
    if planned is None or planned[2] or not _within(planned[0], z0, w_rec_t):
        planned = (plan_rec, True, False)
    plan_z0 = planned[0]
    if planned[1]:
        z0 = _standard(z0)
    state = [block(s.detach(), what, dtype, M).clone() for what, s in zip(WHAT[kind][0], state, strict=True)]
    keep, ptrs, flags = parameters(P, (B, N), dtype)
    out = BUFFERS.empty((T, B, N), dtype, x.device)
    vd = BUFFERS.empty((T, B, N), dtype, x.device) if save else None
    extra = [BUFFERS.empty((T, B, N), dtype, x.device) for _ in range(spec.extra if save_extra else 0)]
    ij, a_saved = (extra + [None, None])[:2]
    current, rec_current = torch.empty((B, N), dtype=dtype), torch.empty((B, N), dtype=dtype)  # 64-byte aligned
    a = state[2] if kind == "adex" else None
    rate = sparse_max_rate(B, N, FORWARD_MAX_RATE)
    # W_rec^T's rows (w_rows[m] = W_rec[:, m]): the sparse product adds those of the active neurons.
    w_rows = None if rate is None else w_rec.t().contiguous()
    stats = (ctypes.c_int64 * 3)()
    ptr = pointer
    getattr(load_library(), f"recurrent_forward_{KERNEL_DTYPES[dtype]}")(
        ctypes.c_int(KINDS[kind]), *(integrator_argument(kind, options) or [ctypes.c_int(0)]),
        ctypes.c_int64(T), ctypes.c_int64(M), ptr(x), ctypes.c_int64(x.stride(0)), ptr(xbuf),
        ctypes.c_int64(B * F_), ctypes.c_int64(B), ctypes.c_int64(k1[0]), ctypes.c_int64(k1[1]), ptr(w_in_t),
        ptr(w_rec_t), _plan_array(plan_in), _plan_array(plan_rec),
        ptr(z0), _plan_array(plan_z0), ptr(zbuf), ptr(current), ptr(rec_current),
        ptr(state[0]), ptr(state[1]), ptr(a), ptrs, flags, ptr(out), ptr(vd), ptr(ij), ptr(a_saved),
        ptr(w_rows), ctypes.c_double(-1.0 if rate is None else rate), stats, ctypes.c_int(torch.get_num_threads()))
    del keep
    for key, value in zip(("forward_sparse_steps", "forward_spikes", "forward_steps"), stats, strict=True):
        STATS[key] += value
    return out, tuple(state), ([] if vd is None else [vd]) + extra


def backward(kind, gout, gz, gstate, saved, v0, w_rec, P, options: KernelOptions, param_grads, z0=None,
             w_rec_grad=False):
    """Reverse time in one C++ call: ``(g_c [T, B, N], g_z0, gradients of the initial (v, i[, a]),
    per-neuron parameter gradients or None, W_rec's gradient or None)``, the first four as
    :func:`snn.neurons.fused.python.recurrent.backward` returns them. With ``w_rec_grad`` and sparse
    products (:func:`sparse_max_rate`) the loop also sums W_rec's gradient over the spikes, each step
    while its ``g_c`` is in cache (``z_{t-1}``: ``z0``, None for zero, then the saved voltages'
    spikes); else the last item is None and the autograd node multiplies densely."""
    spec, method, dtype, vd = _check_backward(kind, gstate, saved, v0, P, options, param_grads)
    T, B, N = vd.shape
    M = B * N
    _check_shape("the initial voltage", v0, (B, N))
    w_rec = dense(w_rec, "recurrent_weights", dtype)
    _check_shape("recurrent_weights", w_rec, (N, N))
    g_ts, g_ns = M, 1
    if gout is not None:
        gout = dense(gout, "the output gradient", dtype)
        _check_shape("the output gradient", gout, (T, B, N))
        gout, g_ts, g_ns = rows(gout, T, M, "the output gradient")
    gc = BUFFERS.empty((T, B, N), dtype, v0.device)
    planned = _weight_operand(gc, (B, N), (N, 1), w_rec)  # torch.mm(g_c[t], W_rec)
    if planned is None or T == 0:
        return backward_per_step(kind, gout, gz, gstate, saved, v0, w_rec, P, options, param_grads, z0, w_rec_grad)
    plan, w_rec_m2 = planned
    if not _within(plan, gc, w_rec_m2, T, M):
        raise refuse("recurrent_weights", w_rec, f"[{N}, {N}] values GEMM can read within its storage")
    saved = [block(s, f"saved tensor {k}", dtype, T * M) for k, s in enumerate(saved)]
    gstate = [block(g, what, dtype, M).clone() for what, g in zip(WHAT[kind][1], gstate, strict=True)]
    v0 = block(v0.detach(), "the initial voltage", dtype, M)
    keep, ptrs, flags = parameters(P, (B, N), dtype)
    gp = v0.new_zeros((len(P), M)) if param_grads else None  # the kernels add each step's share
    grec = torch.zeros((B, N), dtype=dtype)  # g_z of the last step's spikes; then g_z of each earlier one
    if gz is not None:
        gz = dense(gz, "the final spikes' gradient", dtype)
        _check_shape("the final spikes' gradient", gz, (B, N))
        grec.copy_(gz)
    gstep = torch.empty((B, N), dtype=dtype)
    ij, a_saved = (saved[1:] + [None, None])[:2]
    ga = gstate[2] if kind == "adex" else None
    rate = _spike_sum_rate(B, N) if w_rec_grad else None
    gwt = None if rate is None else torch.zeros((N, N), dtype=dtype)  # dL/dW_rec^T, summed by the loop
    z0 = None if rate is None else _initial_spikes(z0, B, N, dtype)
    wg_stats = (ctypes.c_int64 * 2)()
    ptr = pointer
    getattr(load_library(), f"recurrent_backward_{KERNEL_DTYPES[dtype]}")(
        ctypes.c_int(KINDS[kind]), *(integrator_argument(kind, options) or [ctypes.c_int(0)]),
        ctypes.c_int(NATIVE_SURROGATES[method]), ctypes.c_double(options.alpha), ctypes.c_int64(T),
        ctypes.c_int64(M), ptr(gout), ctypes.c_int64(g_ts), ctypes.c_int64(g_ns), ptr(grec), ptr(gstep),
        ptr(gstate[0]), ptr(gstate[1]), ptr(ga), ptr(saved[0]), ptr(v0), ptr(ij), ptr(a_saved), ptrs, flags,
        ptr(w_rec_m2), _plan_array(plan), ptr(gc), ptr(gp), ctypes.c_int64(B), ptr(z0), ptr(gwt),
        ctypes.c_double(-1.0 if rate is None else rate), wg_stats, ctypes.c_int(torch.get_num_threads()))
    del keep
    G = None if gp is None else [g.view(B, N) for g in gp]
    return gc, grec, list(gstate), G, None if gwt is None else _summed_weight_gradient(gwt, wg_stats)
