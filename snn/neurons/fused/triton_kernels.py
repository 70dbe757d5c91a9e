"""The Triton kernels of the ``triton`` backend (imported by :mod:`.triton_loops` on first use).

Each program takes ``BLOCK`` neurons and runs all T steps over them, the tile-per-thread structure
of ``cpu_kernels.cpp``: a neuron's state stays in registers, and memory traffic is one read of
the input and one write of the output and of the saved pre-reset voltage per neuron and step
(backward: one read of the saved voltage, one write of the input gradient). The operations are
those of the step bodies of :mod:`.torch_loops`, in the same order, so that forward results round
like the eager loop; ``CDT`` (the compute dtype) is float32 for float16/bfloat16/float32 inputs
and float64 for float64 ones. Recurrent layers run the same kernels one step per launch
(:mod:`.triton_recurrent_loops`: a step's input current needs the previous step's spikes).

Layout: inputs ``[T, M]`` at strides ``(ts, ns)`` with ``ns`` in {0, 1} (0: one value per step,
e.g. the gradient of ``outputs.sum()``; ``ts = 0``: broadcast over time); states ``[M]``;
saved and output tensors contiguous ``[T, M]``; parameters ``P[k * P_ks + n * P_ns]`` with
``P_ns = 0`` for one value per parameter or 1 for one per neuron; parameter gradients ``G [K, M]``
(AdEx's and LIF's backward add theirs to it).

Whether ``triton.jit`` compiles or interprets is decided when this file is loaded:
:func:`.triton_loops.kernels` loads it once for each (:data:`INTERPRETED`). The kernels call only
Triton's builtins (``tl.full``, not ``tl.zeros``): the library's own ``@jit`` helpers were
decorated when triton was imported, for the GPU unless the interpreter was on then, and an
interpreted kernel cannot call them. Compiled, the AdEx
exponential is libdevice's ``exp`` (CUDA's ``expf``/``exp``, which torch's CUDA ``exp`` runs) and
the launches pass ``enable_fp_fusion=False``, so no multiply-add is contracted as ATen's separate
kernels do not; the interpreter has no libdevice and uses numpy's ``exp``.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra import libdevice

INTERPRETED = bool(triton.knobs.runtime.interpret)

# Launch arguments that vary per call and must not be specialised (a stride of 1 would become a
# compile-time constant, and .to(tl.int64) on it would fail).
_RUNTIME = ["x_ts", "x_ns", "g_ts", "g_ns", "P_ks", "P_ns", "T", "T_STOP", "M"]


@triton.jit
def _exp(q, PRECISE: tl.constexpr):
    if PRECISE:
        e = libdevice.exp(q)
    else:
        e = tl.exp(q)
    return e


@triton.jit
def _param(P, k, P_ks, P_ns, offs, m, CDT: tl.constexpr):
    """Parameter k for the neurons ``offs`` (1 in masked lanes: delta_T divides)."""
    return tl.load(P + k * P_ks + offs * P_ns, mask=m, other=1.0).to(CDT)


@triton.jit
def _spikes(x_spike, CDT: tl.constexpr):
    """``z = [x_spike > 0]`` as 0 or 1 in the compute dtype."""
    return tl.where(x_spike > 0, 1.0, 0.0).to(CDT)


@triton.jit
def _surrogate(xs, consts, CDT: tl.constexpr, METHOD: tl.constexpr):
    r"""The surrogate derivative :math:`\sigma'(x; \alpha)` of :mod:`snn.neurons.surrogate`, indexed
    as ``NATIVE_SURROGATES`` (:mod:`.triton_loops`); ``consts`` holds ``alpha``,
    ``pi alpha / 2`` and ``alpha / 2`` in the compute dtype (rounded from Python floats as torch
    rounds a scalar operand)."""
    alpha = tl.load(consts).to(CDT)
    if METHOD == 0:  # super: 1 / (alpha |x| + 1)^2
        d = alpha * tl.abs(xs) + 1.0
        out = 1.0 / (d * d)
    elif METHOD == 1:  # triangle: alpha max(0, 1 - alpha |x|)
        out = alpha * tl.maximum(1.0 - alpha * tl.abs(xs), 0.0)
    elif METHOD == 2:  # sigmoid: alpha s (1 - s), s = 1 / (1 + exp(-alpha x)); exp -> inf: s = 0
        s = 1.0 / (1.0 + tl.exp(-alpha * xs))
        out = alpha * s * (1.0 - s)
    elif METHOD == 3:  # atan: alpha / (2 (1 + (pi alpha x / 2)^2))
        u = tl.load(consts + 1).to(CDT) * xs
        out = alpha / (2.0 * (1.0 + u * u))
    elif METHOD == 4:  # tanh: alpha (1 - tanh^2(alpha x)) / 2, with 1 - |tanh y| = 2 e / (1 + e),
        # e = exp(-2 |y|) <= 1: no overflow, and no cancellation where tanh^2 is close to 1.
        e = tl.exp(-2.0 * tl.abs(alpha * xs))
        d = 2.0 * e / (1.0 + e)
        out = tl.load(consts + 2).to(CDT) * (d * (2.0 - d))
    else:  # heaviside: no gradient
        out = tl.full(xs.shape, 0.0, CDT)
    return out


# ---------------------------------------------------------------- AdEx
# P: c_mem, c_syn, c_ada, adaptation_current, adaptation_spike, delta_T, v_leak, v_th, v_reset
@triton.jit(do_not_specialize=_RUNTIME)
def adex_forward(
    x,
    x_ts,
    x_ns,
    v_in,
    i_in,
    a_in,
    v_out,
    i_out,
    a_out,
    z,
    vd,
    ij_s,
    a_s,
    P,
    P_ks,
    P_ns,
    T,
    M,
    BLOCK: tl.constexpr,
    CDT: tl.constexpr,
    SAVE_VD: tl.constexpr,
    SAVE_EXTRA: tl.constexpr,
    PRECISE: tl.constexpr,
    EXP_MAX: tl.constexpr,
    SYMPLECTIC: tl.constexpr,
):
    """:func:`~snn.neurons.fused.torch_loops.adex_forward_step` over all steps; SYMPLECTIC: the
    adaptation driven by the voltage after the step's reset, not the entering one (euler)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < M
    M64 = M.to(tl.int64)
    x_ts64 = x_ts.to(tl.int64)
    c_mem = _param(P, 0, P_ks, P_ns, offs, m, CDT)
    c_syn = _param(P, 1, P_ks, P_ns, offs, m, CDT)
    c_ada = _param(P, 2, P_ks, P_ns, offs, m, CDT)
    ac = _param(P, 3, P_ks, P_ns, offs, m, CDT)
    a_spike = _param(P, 4, P_ks, P_ns, offs, m, CDT)
    delta_T = _param(P, 5, P_ks, P_ns, offs, m, CDT)
    v_leak = _param(P, 6, P_ks, P_ns, offs, m, CDT)
    v_th = _param(P, 7, P_ks, P_ns, offs, m, CDT)
    v_reset = _param(P, 8, P_ks, P_ns, offs, m, CDT)
    v = tl.load(v_in + offs, mask=m, other=0.0).to(CDT)
    i = tl.load(i_in + offs, mask=m, other=0.0).to(CDT)
    a = tl.load(a_in + offs, mask=m, other=0.0).to(CDT)
    for t in range(T):
        row = t * M64 + offs
        i_jump = i + tl.load(x + t * x_ts64 + offs * x_ns, mask=m, other=0.0).to(CDT)
        if SAVE_EXTRA:
            tl.store(ij_s + row, i_jump, mask=m)
            tl.store(a_s + row, a, mask=m)
        q = (v - v_th) / delta_T
        q = tl.where(q > EXP_MAX, EXP_MAX, q)  # torch.clamp(max=...): NaN stays NaN
        v_decayed = v + c_mem * ((((v_leak - v) + delta_T * _exp(q, PRECISE)) + i_jump) - a)
        i = i_jump + c_syn * i_jump
        u = v  # the voltage driving the adaptation: the entering one (euler)
        zz = _spikes(v_decayed - v_th, CDT)
        tl.store(z + row, zz.to(z.dtype.element_ty), mask=m)
        if SAVE_VD:
            tl.store(vd + row, v_decayed, mask=m)
        v = (1.0 - zz) * v_decayed + zz * v_reset
        if SYMPLECTIC:
            u = v
        a = (a + c_ada * (ac * (u - v_leak) - a)) + zz * a_spike
    tl.store(v_out + offs, v.to(v_out.dtype.element_ty), mask=m)
    tl.store(i_out + offs, i.to(i_out.dtype.element_ty), mask=m)
    tl.store(a_out + offs, a.to(a_out.dtype.element_ty), mask=m)


@triton.jit
def _entering_voltage(vd, v0, t, M64, offs, m, v_th, v_reset, CDT: tl.constexpr):
    """The voltage entering step t: v0 at t = 0, else step t - 1's pre-reset voltage after its
    reset."""
    first = (offs * 0 + t) == 0
    previous = tl.load(vd + (t - 1) * M64 + offs, mask=m & (first == 0), other=0.0).to(CDT)
    zp = _spikes(previous - v_th, CDT)
    return tl.where(first, v0, (1.0 - zp) * previous + zp * v_reset)


@triton.jit(do_not_specialize=_RUNTIME)
def adex_backward(
    gz,
    g_ts,
    g_ns,
    gv_in,
    gi_in,
    ga_in,
    gv_out,
    gi_out,
    ga_out,
    vd,
    v0_ptr,
    ij_s,
    a_s,
    P,
    P_ks,
    P_ns,
    consts,
    gx,
    G,
    T,
    T_STOP,
    M,
    BLOCK: tl.constexpr,
    CDT: tl.constexpr,
    HAS_GOUT: tl.constexpr,
    PARAMS: tl.constexpr,
    METHOD: tl.constexpr,
    PRECISE: tl.constexpr,
    EXP_MAX: tl.constexpr,
    SYMPLECTIC: tl.constexpr,
):
    """:func:`~snn.neurons.fused.torch_loops.adex_backward_step` over steps ``T - 1`` down to
    ``T_STOP`` (0 for a whole layer; a recurrent layer runs one step at a time, its ``g_z`` of a step
    needing the later steps' input gradients). ``gv_in``/``gi_in``/``ga_in`` hold the gradients of
    the state after step ``T - 1``, the outputs those of the state entering step ``T_STOP`` (they
    may be the same tensors); with PARAMS the gradients of these steps are added to ``G``."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < M
    M64 = M.to(tl.int64)
    g_ts64 = g_ts.to(tl.int64)
    c_mem = _param(P, 0, P_ks, P_ns, offs, m, CDT)
    c_syn = _param(P, 1, P_ks, P_ns, offs, m, CDT)
    c_ada = _param(P, 2, P_ks, P_ns, offs, m, CDT)
    ac = _param(P, 3, P_ks, P_ns, offs, m, CDT)
    a_spike = _param(P, 4, P_ks, P_ns, offs, m, CDT)
    delta_T = _param(P, 5, P_ks, P_ns, offs, m, CDT)
    v_leak = _param(P, 6, P_ks, P_ns, offs, m, CDT)
    v_th = _param(P, 7, P_ks, P_ns, offs, m, CDT)
    v_reset = _param(P, 8, P_ks, P_ns, offs, m, CDT)
    v0 = tl.load(v0_ptr + offs, mask=m, other=0.0).to(CDT)
    gv = tl.load(gv_in + offs, mask=m, other=0.0).to(CDT)
    gi = tl.load(gi_in + offs, mask=m, other=0.0).to(CDT)
    ga = tl.load(ga_in + offs, mask=m, other=0.0).to(CDT)
    # The per-neuron parameter gradients, named as in torch_loops.adex_backward_step.
    g_c_mem = tl.full([BLOCK], 0.0, CDT)
    g_c_syn, g_c_ada, g_ac, g_a_spike = g_c_mem, g_c_mem, g_c_mem, g_c_mem
    g_delta_T, g_v_leak, g_v_th, g_v_reset = g_c_mem, g_c_mem, g_c_mem, g_c_mem
    if PARAMS:  # added to G: the gradients of the later steps, zeros for a whole layer
        g_c_mem = tl.load(G + 0 * M64 + offs, mask=m, other=0.0).to(CDT)
        g_c_syn = tl.load(G + 1 * M64 + offs, mask=m, other=0.0).to(CDT)
        g_c_ada = tl.load(G + 2 * M64 + offs, mask=m, other=0.0).to(CDT)
        g_ac = tl.load(G + 3 * M64 + offs, mask=m, other=0.0).to(CDT)
        g_a_spike = tl.load(G + 4 * M64 + offs, mask=m, other=0.0).to(CDT)
        g_delta_T = tl.load(G + 5 * M64 + offs, mask=m, other=0.0).to(CDT)
        g_v_leak = tl.load(G + 6 * M64 + offs, mask=m, other=0.0).to(CDT)
        g_v_th = tl.load(G + 7 * M64 + offs, mask=m, other=0.0).to(CDT)
        g_v_reset = tl.load(G + 8 * M64 + offs, mask=m, other=0.0).to(CDT)
    for s in range(T - T_STOP):
        t = T - 1 - s
        row = t * M64 + offs
        vdt = tl.load(vd + row, mask=m, other=0.0).to(CDT)
        v = _entering_voltage(vd, v0, t, M64, offs, m, v_th, v_reset, CDT)
        x_spike = vdt - v_th
        zz = _spikes(x_spike, CDT)
        exp_arg = (v - v_th) / delta_T
        ex = _exp(tl.where(exp_arg > EXP_MAX, EXP_MAX, exp_arg), PRECISE)
        g_ada_drive = ga * c_ada
        g_v_new = gv
        if SYMPLECTIC:  # the adaptation's drive reads the voltage after the reset
            g_v_new = gv + g_ada_drive * ac
        g_z = -g_v_new * vdt + g_v_new * v_reset + ga * a_spike
        if HAS_GOUT:
            g_z = tl.load(gz + t * g_ts64 + offs * g_ns, mask=m, other=0.0).to(CDT) + g_z
        g_xs = g_z * _surrogate(x_spike, consts, CDT, METHOD)
        g_vd = g_v_new * (1.0 - zz) + g_xs
        g_drive = g_vd * c_mem
        # torch.clamp passes no gradient where the argument is at the bound itself: strict <.
        g_exp_arg = tl.where(exp_arg < EXP_MAX, g_drive * delta_T * ex, 0.0)
        g_v_exp = g_exp_arg / delta_T
        g_ij = g_drive + (gi + gi * c_syn)
        tl.store(gx + row, g_ij.to(gx.dtype.element_ty), mask=m)
        if PARAMS:
            ij = tl.load(ij_s + row, mask=m, other=0.0).to(CDT)
            a = tl.load(a_s + row, mask=m, other=0.0).to(CDT)
            u = v  # the voltage driving the adaptation
            if SYMPLECTIC:
                u = (1.0 - zz) * vdt + zz * v_reset
            g_c_mem += g_vd * ((((v_leak - v) + delta_T * ex) + ij) - a)
            g_c_syn += gi * ij
            g_c_ada += ga * (ac * (u - v_leak) - a)
            g_ac += g_ada_drive * (u - v_leak)
            g_a_spike += ga * zz
            g_delta_T += g_drive * ex - g_exp_arg * exp_arg / delta_T
            g_v_leak += g_drive - g_ada_drive * ac
            g_v_th += -g_xs - g_v_exp
            g_v_reset += g_v_new * zz
        gv = g_vd - g_drive + g_v_exp
        if not SYMPLECTIC:
            gv = gv + g_ada_drive * ac
        gi = g_ij
        ga = ga - g_drive - g_ada_drive
    tl.store(gv_out + offs, gv.to(gv_out.dtype.element_ty), mask=m)
    tl.store(gi_out + offs, gi.to(gi_out.dtype.element_ty), mask=m)
    tl.store(ga_out + offs, ga.to(ga_out.dtype.element_ty), mask=m)
    if PARAMS:
        tl.store(G + 0 * M64 + offs, g_c_mem, mask=m)
        tl.store(G + 1 * M64 + offs, g_c_syn, mask=m)
        tl.store(G + 2 * M64 + offs, g_c_ada, mask=m)
        tl.store(G + 3 * M64 + offs, g_ac, mask=m)
        tl.store(G + 4 * M64 + offs, g_a_spike, mask=m)
        tl.store(G + 5 * M64 + offs, g_delta_T, mask=m)
        tl.store(G + 6 * M64 + offs, g_v_leak, mask=m)
        tl.store(G + 7 * M64 + offs, g_v_th, mask=m)
        tl.store(G + 8 * M64 + offs, g_v_reset, mask=m)


# ---------------------------------------------------------------- LIF and LI
# P: c_mem, c_syn, v_leak (LI), then v_th, v_reset (LIF)
@triton.jit(do_not_specialize=_RUNTIME)
def leaky_forward(
    x,
    x_ts,
    x_ns,
    v_in,
    i_in,
    v_out,
    i_out,
    out,
    vd,
    ij_s,
    P,
    P_ks,
    P_ns,
    T,
    M,
    BLOCK: tl.constexpr,
    CDT: tl.constexpr,
    SPIKING: tl.constexpr,
    SAVE_VD: tl.constexpr,
    SAVE_EXTRA: tl.constexpr,
):
    """LIF (SPIKING: outputs z, saves v_d, resets) and LI (outputs v after each step, saved in
    ``vd`` when SAVE_VD: the voltage entering the next step, in the compute dtype)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < M
    M64 = M.to(tl.int64)
    x_ts64 = x_ts.to(tl.int64)
    c_mem = _param(P, 0, P_ks, P_ns, offs, m, CDT)
    c_syn = _param(P, 1, P_ks, P_ns, offs, m, CDT)
    v_leak = _param(P, 2, P_ks, P_ns, offs, m, CDT)
    if SPIKING:
        v_th = _param(P, 3, P_ks, P_ns, offs, m, CDT)
        v_reset = _param(P, 4, P_ks, P_ns, offs, m, CDT)
    v = tl.load(v_in + offs, mask=m, other=0.0).to(CDT)
    i = tl.load(i_in + offs, mask=m, other=0.0).to(CDT)
    for t in range(T):
        row = t * M64 + offs
        i_jump = i + tl.load(x + t * x_ts64 + offs * x_ns, mask=m, other=0.0).to(CDT)
        if SAVE_EXTRA:
            tl.store(ij_s + row, i_jump, mask=m)
        v_decayed = v + c_mem * ((v_leak - v) + i_jump)
        i = i_jump + c_syn * i_jump
        if SPIKING:
            zz = _spikes(v_decayed - v_th, CDT)
            tl.store(out + row, zz.to(out.dtype.element_ty), mask=m)
            if SAVE_VD:
                tl.store(vd + row, v_decayed, mask=m)
            v = (1.0 - zz) * v_decayed + zz * v_reset
        else:
            v = v_decayed
            tl.store(out + row, v.to(out.dtype.element_ty), mask=m)
            if SAVE_VD:
                tl.store(vd + row, v, mask=m)
    tl.store(v_out + offs, v.to(v_out.dtype.element_ty), mask=m)
    tl.store(i_out + offs, i.to(i_out.dtype.element_ty), mask=m)


@triton.jit(do_not_specialize=_RUNTIME)
def lif_backward(
    gz,
    g_ts,
    g_ns,
    gv_in,
    gi_in,
    gv_out,
    gi_out,
    vd,
    v0_ptr,
    ij_s,
    P,
    P_ks,
    P_ns,
    consts,
    gx,
    G,
    T,
    T_STOP,
    M,
    BLOCK: tl.constexpr,
    CDT: tl.constexpr,
    HAS_GOUT: tl.constexpr,
    PARAMS: tl.constexpr,
    METHOD: tl.constexpr,
):
    """:func:`~snn.neurons.fused.torch_loops.lif_backward_step` over steps ``T - 1`` down to
    ``T_STOP``, as :func:`adex_backward`."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < M
    M64 = M.to(tl.int64)
    g_ts64 = g_ts.to(tl.int64)
    c_mem = _param(P, 0, P_ks, P_ns, offs, m, CDT)
    c_syn = _param(P, 1, P_ks, P_ns, offs, m, CDT)
    v_leak = _param(P, 2, P_ks, P_ns, offs, m, CDT)
    v_th = _param(P, 3, P_ks, P_ns, offs, m, CDT)
    v_reset = _param(P, 4, P_ks, P_ns, offs, m, CDT)
    v0 = tl.load(v0_ptr + offs, mask=m, other=0.0).to(CDT)
    gv = tl.load(gv_in + offs, mask=m, other=0.0).to(CDT)
    gi = tl.load(gi_in + offs, mask=m, other=0.0).to(CDT)
    g_c_mem = tl.full([BLOCK], 0.0, CDT)  # named as in torch_loops.lif_backward_step
    g_c_syn, g_v_leak, g_v_th, g_v_reset = g_c_mem, g_c_mem, g_c_mem, g_c_mem
    if PARAMS:  # added to G, as in adex_backward
        g_c_mem = tl.load(G + 0 * M64 + offs, mask=m, other=0.0).to(CDT)
        g_c_syn = tl.load(G + 1 * M64 + offs, mask=m, other=0.0).to(CDT)
        g_v_leak = tl.load(G + 2 * M64 + offs, mask=m, other=0.0).to(CDT)
        g_v_th = tl.load(G + 3 * M64 + offs, mask=m, other=0.0).to(CDT)
        g_v_reset = tl.load(G + 4 * M64 + offs, mask=m, other=0.0).to(CDT)
    for s in range(T - T_STOP):
        t = T - 1 - s
        row = t * M64 + offs
        vdt = tl.load(vd + row, mask=m, other=0.0).to(CDT)
        x_spike = vdt - v_th
        zz = _spikes(x_spike, CDT)
        g_z = -gv * vdt + gv * v_reset
        if HAS_GOUT:
            g_z = tl.load(gz + t * g_ts64 + offs * g_ns, mask=m, other=0.0).to(CDT) + g_z
        g_xs = g_z * _surrogate(x_spike, consts, CDT, METHOD)
        g_vd = gv * (1.0 - zz) + g_xs
        g_drive = g_vd * c_mem
        g_ij = g_drive + (gi + gi * c_syn)
        tl.store(gx + row, g_ij.to(gx.dtype.element_ty), mask=m)
        if PARAMS:
            v = _entering_voltage(vd, v0, t, M64, offs, m, v_th, v_reset, CDT)
            ij = tl.load(ij_s + row, mask=m, other=0.0).to(CDT)
            g_c_mem += g_vd * ((v_leak - v) + ij)
            g_c_syn += gi * ij
            g_v_leak += g_drive
            g_v_th += -g_xs
            g_v_reset += gv * zz
        gv = g_vd - g_drive
        gi = g_ij
    tl.store(gv_out + offs, gv.to(gv_out.dtype.element_ty), mask=m)
    tl.store(gi_out + offs, gi.to(gi_out.dtype.element_ty), mask=m)
    if PARAMS:
        tl.store(G + 0 * M64 + offs, g_c_mem, mask=m)
        tl.store(G + 1 * M64 + offs, g_c_syn, mask=m)
        tl.store(G + 2 * M64 + offs, g_v_leak, mask=m)
        tl.store(G + 3 * M64 + offs, g_v_th, mask=m)
        tl.store(G + 4 * M64 + offs, g_v_reset, mask=m)


@triton.jit(do_not_specialize=_RUNTIME)
def li_backward(
    gz,
    g_ts,
    g_ns,
    gv_in,
    gi_in,
    gv_out,
    gi_out,
    vs,
    v0_ptr,
    ij_s,
    P,
    P_ks,
    P_ns,
    gx,
    G,
    T,
    M,
    BLOCK: tl.constexpr,
    CDT: tl.constexpr,
    HAS_GOUT: tl.constexpr,
    PARAMS: tl.constexpr,
):
    """:func:`~snn.neurons.fused.torch_loops.li_backward_step` over all steps, in reverse;
    ``vs`` (with PARAMS) holds the voltage after each step."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < M
    M64 = M.to(tl.int64)
    g_ts64 = g_ts.to(tl.int64)
    c_mem = _param(P, 0, P_ks, P_ns, offs, m, CDT)
    c_syn = _param(P, 1, P_ks, P_ns, offs, m, CDT)
    v_leak = _param(P, 2, P_ks, P_ns, offs, m, CDT)
    gv = tl.load(gv_in + offs, mask=m, other=0.0).to(CDT)
    gi = tl.load(gi_in + offs, mask=m, other=0.0).to(CDT)
    g_c_mem = tl.full([BLOCK], 0.0, CDT)  # named as in torch_loops.li_backward_step
    g_c_syn, g_v_leak = g_c_mem, g_c_mem
    if PARAMS:
        v0 = tl.load(v0_ptr + offs, mask=m, other=0.0).to(CDT)
    for s in range(T):
        t = T - 1 - s
        row = t * M64 + offs
        if HAS_GOUT:
            gv = gv + tl.load(gz + t * g_ts64 + offs * g_ns, mask=m, other=0.0).to(CDT)
        g_drive = gv * c_mem
        g_ij = g_drive + (gi + gi * c_syn)
        tl.store(gx + row, g_ij.to(gx.dtype.element_ty), mask=m)
        if PARAMS:
            first = (offs * 0 + t) == 0
            previous = tl.load(vs + (t - 1) * M64 + offs, mask=m & (first == 0), other=0.0)
            v = tl.where(first, v0, previous.to(CDT))
            ij = tl.load(ij_s + row, mask=m, other=0.0).to(CDT)
            g_c_mem += gv * ((v_leak - v) + ij)
            g_c_syn += gi * ij
            g_v_leak += g_drive
        gv = gv - g_drive
        gi = g_ij
    tl.store(gv_out + offs, gv.to(gv_out.dtype.element_ty), mask=m)
    tl.store(gi_out + offs, gi.to(gi_out.dtype.element_ty), mask=m)
    if PARAMS:
        tl.store(G + 0 * M64 + offs, g_c_mem, mask=m)
        tl.store(G + 1 * M64 + offs, g_c_syn, mask=m)
        tl.store(G + 2 * M64 + offs, g_v_leak, mask=m)
