"""The Triton kernels of the ``triton`` backend (loaded by :mod:`~snn.neurons.fused.triton.feed_forward` on first use).

Two kernels serve every neuron type, ``forward`` and ``backward``, with the type as the
constexpr ``KIND`` (a key of :data:`~snn.neurons.fused.spec.NEURON_SPECS`). Each program takes ``BLOCK`` neurons and
runs all T steps over them, the tile-per-thread structure of ``cpu_kernels.cpp``: a neuron's state
stays in registers, and memory traffic is one read of the input and one write of the output and of
the saved pre-reset voltage per neuron and step (backward: one read of the saved voltage, one
write of the input gradient). The kernels do the loads and stores; one step of each type is
written once, in the step functions below, named after those of :mod:`snn.neurons.fused.python.feed_forward` and doing
their operations in the same order (the equations after :mod:`snn.neurons.equations`), so that
forward results round like the eager loop. ``CDT`` (the compute dtype) is float32 for
float16/bfloat16/float32 inputs and float64 for float64 ones. Recurrent layers run the same
kernels one step per launch (:mod:`~snn.neurons.fused.triton.recurrent`: a step's input current needs the
previous step's spikes).

Layout: inputs ``[T, M]`` at strides ``(ts, ns)`` with ``ns`` in {0, 1} (0: one value per step,
e.g. the gradient of ``outputs.sum()``; ``ts = 0``: broadcast over time); states tuples of ``[M]``
tensors in the order of the spec's state fields (``(v, i)`` or ``(v, i, a)``); saved, extra and
output tensors contiguous ``[T, M]``; the ``K`` parameters ``P[k * P_ks + n * P_ns]`` in the
order of the spec's, with ``P_ns = 0`` for one value per parameter or 1 for one per neuron;
parameter gradients ``G [K, M]`` (the backward adds its own to them).

Whether ``triton.jit`` compiles or interprets is decided when this file is loaded:
:func:`~snn.neurons.fused.triton.feed_forward.kernels` loads it once for each (:data:`INTERPRETED`). The kernels
call only Triton's builtins (``tl.full``, not ``tl.zeros``) and the functions here: the library's own
``@jit`` helpers were decorated when triton was imported, for the GPU unless the interpreter was
on then, and an interpreted kernel cannot call them. Compiled, every exponential (AdEx's and the
surrogates') is libdevice's ``exp`` (CUDA's ``expf``/``exp``, which torch's CUDA ``exp`` runs), every
float32 division ``tl.div_rn`` (rounded to nearest as torch's; Triton's ``/`` is an approximate
division within 2 ulps, which a ``delta_T`` that is not a power of two shows), and the launches
pass ``enable_fp_fusion=False``, so no multiply-add is contracted as ATen's separate kernels do
not; the interpreter has no libdevice and uses numpy's ``exp``. The forward thus rounds as the
eager loop on the same GPU (``tests/neurons/fused/triton_gpu_checks.py`` asserts it, and
:mod:`~snn.neurons.fused.triton.trust` checks it on each device before the first use).
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra import libdevice

INTERPRETED = bool(triton.knobs.runtime.interpret)

# Launch arguments that vary per call and must not be specialised (a stride of 1 would become a
# compile-time constant, and .to(tl.int64) on it would fail).
_RUNTIME = ["x_ts", "x_ns", "g_ts", "g_ns", "P_ks", "P_ns", "T", "T_STOP", "M"]


# ---------------------------------------------------------------- memory
@triton.jit
def _neurons(M, BLOCK: tl.constexpr):
    """This program's neurons: ``(offsets, mask of those below M, M as int64 for row offsets)``."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    return offs, offs < M, M.to(tl.int64)


@triton.jit
def _load(ptrs, m, CDT: tl.constexpr):
    """The values at ``ptrs`` in the compute dtype (0 in masked lanes)."""
    return tl.load(ptrs, mask=m, other=0.0).to(CDT)


@triton.jit
def _store(ptrs, value, m):
    """``value`` to ``ptrs``, in their dtype."""
    tl.store(ptrs, value.to(ptrs.dtype.element_ty), mask=m)


@triton.jit
def _load_each(ptrs, offs, m, CDT: tl.constexpr):
    """The values at ``offs`` of each of a tuple of tensors, as a tuple."""
    values = ()
    for k in tl.static_range(len(ptrs)):
        values = values + (_load(ptrs[k] + offs, m, CDT),)
    return values


@triton.jit
def _store_each(ptrs, offs, values, m):
    """A tuple of values to ``offs`` of each of a tuple of tensors."""
    for k in tl.static_range(len(ptrs)):
        _store(ptrs[k] + offs, values[k], m)


@triton.jit
def _load_table(table, K: tl.constexpr, k_stride, n_stride, offs, m, other, CDT: tl.constexpr):
    """Rows 0 .. K - 1 of a table (parameters, parameter gradients) at the neurons ``offs``, as a
    tuple; ``other`` in masked lanes."""
    rows = ()
    for k in tl.static_range(K):
        rows = rows + (tl.load(table + k * k_stride + offs * n_stride, mask=m, other=other).to(CDT),)
    return rows


@triton.jit
def _store_table(table, rows, M64, offs, m):
    """A tuple of rows to a contiguous ``[K, M]`` table at the neurons ``offs``."""
    for k in tl.static_range(len(rows)):
        _store(table + k * M64 + offs, rows[k], m)


# ---------------------------------------------------------------- equations (snn.neurons.equations)
@triton.jit
def _exp(q, PRECISE: tl.constexpr):
    """``exp(q)`` as torch's CUDA ``exp`` computes it: libdevice's ``exp`` where compiled (``tl.exp``
    is an approximation through ``ex2.approx`` that flushes denormals to zero), numpy's under the
    interpreter (within one ulp of torch's CPU exp)."""
    if PRECISE:
        e = libdevice.exp(q)
    else:
        e = tl.exp(q)
    return e


@triton.jit
def _div(a, b, CDT: tl.constexpr):
    """``a / b`` rounded to nearest, as torch's: ``tl.div_rn`` in float32 (Triton lowers float32
    ``/`` to an approximate division, within 2 ulps), ``/`` in float64 (always IEEE)."""
    if CDT == tl.float32:
        q = tl.div_rn(a, b)
    else:
        q = a / b
    return q


@triton.jit
def _spikes(x_spike, CDT: tl.constexpr):
    """``z = [x_spike > 0]`` as 0 or 1 in the compute dtype."""
    return tl.where(x_spike > 0, 1.0, 0.0).to(CDT)


@triton.jit
def _after_reset(z, v_decayed, v_reset):
    """:func:`~snn.neurons.equations.after_reset`: ``(1 - z) v_d + z v_reset``."""
    return (1.0 - z) * v_decayed + z * v_reset


@triton.jit
def _adex_membrane(x, v, i, a, c_mem, c_syn, delta_T, v_leak, v_th, CDT: tl.constexpr, PRECISE: tl.constexpr,
                   EXP_MAX: tl.constexpr):
    """:func:`~snn.neurons.equations.adex_membrane`: ``(i_j, v_d, i')``."""
    i_jump = i + x
    q = _div(v - v_th, delta_T, CDT)
    q = tl.where(q > EXP_MAX, EXP_MAX, q)  # torch.clamp(max=...): NaN stays NaN
    v_decayed = v + c_mem * ((((v_leak - v) + delta_T * _exp(q, PRECISE)) + i_jump) - a)
    i_decayed = i_jump + c_syn * i_jump
    return i_jump, v_decayed, i_decayed


@triton.jit
def _adex_adaptation(u, a, c_ada, adaptation_current, v_leak):
    """:func:`~snn.neurons.equations.adex_adaptation`, driven by the voltage ``u``."""
    return a + c_ada * (adaptation_current * (u - v_leak) - a)


@triton.jit
def _leaky_subthreshold(x, v, i, c_mem, c_syn, v_leak):
    """:func:`~snn.neurons.equations.leaky_subthreshold`: ``(i_j, v_d, i')``."""
    i_jump = i + x
    v_decayed = v + c_mem * ((v_leak - v) + i_jump)
    i_decayed = i_jump + c_syn * i_jump
    return i_jump, v_decayed, i_decayed


@triton.jit
def _input_gradient(g_drive, gi, c_syn):
    """:func:`~snn.neurons.fused.python.feed_forward.input_gradient`: that of ``i + x``."""
    return g_drive + (gi + gi * c_syn)


@triton.jit
def _surrogate(xs, consts, CDT: tl.constexpr, METHOD: tl.constexpr, PRECISE: tl.constexpr):
    r"""The surrogate derivative :math:`\sigma'(x; \alpha)` of :mod:`snn.neurons.surrogate`, indexed
    as ``NATIVE_SURROGATES`` (:mod:`snn.neurons.fused.spec`); ``consts`` holds ``alpha``,
    ``pi alpha / 2`` and ``alpha / 2`` in the compute dtype (rounded from Python floats as torch
    rounds a scalar operand)."""
    alpha = tl.load(consts).to(CDT)
    if METHOD == 0:  # super: 1 / (alpha |x| + 1)^2
        d = alpha * tl.abs(xs) + 1.0
        out = _div(1.0, d * d, CDT)
    elif METHOD == 1:  # triangle: alpha max(0, 1 - alpha |x|)
        out = alpha * tl.maximum(1.0 - alpha * tl.abs(xs), 0.0)
    elif METHOD == 2:  # sigmoid: alpha s (1 - s), s = 1 / (1 + exp(-alpha x)); exp -> inf: s = 0
        s = _div(1.0, 1.0 + _exp(-alpha * xs, PRECISE), CDT)
        out = alpha * s * (1.0 - s)
    elif METHOD == 3:  # atan: alpha / (2 (1 + (pi alpha x / 2)^2))
        u = tl.load(consts + 1).to(CDT) * xs
        out = _div(alpha, 2.0 * (1.0 + u * u), CDT)
    elif METHOD == 4:  # tanh: alpha (1 - tanh^2(alpha x)) / 2, with 1 - |tanh y| = 2 e / (1 + e),
        # e = exp(-2 |y|) <= 1: no overflow, and no cancellation where tanh^2 is close to 1.
        e = _exp(-2.0 * tl.abs(alpha * xs), PRECISE)
        d = _div(2.0 * e, 1.0 + e, CDT)
        out = tl.load(consts + 2).to(CDT) * (d * (2.0 - d))
    else:  # heaviside: no gradient
        out = tl.full(xs.shape, 0.0, CDT)
    return out


@triton.jit
def _spike_gradient(gz, g_z, x_spike, consts, CDT: tl.constexpr, HAS_GOUT: tl.constexpr, METHOD: tl.constexpr,
                    PRECISE: tl.constexpr):
    """``g_xs``, that of the spike's argument, from ``g_z``, the spike's through the state, and with
    HAS_GOUT ``gz``, the output's."""
    if HAS_GOUT:
        g_z = gz + g_z
    return g_z * _surrogate(x_spike, consts, CDT, METHOD, PRECISE)


@triton.jit
def _entering_voltage(vd, v0, t, M64, offs, m, p, CDT: tl.constexpr, RESET: tl.constexpr):
    """The voltage entering step t: v0 at t = 0, else the one after step t - 1 from what forward
    saved of it (RESET: the pre-reset voltage of a spiking type, whose parameters ``p`` end with
    ``v_th, v_reset``, as the spec's do)."""
    first = (offs * 0 + t) == 0
    previous = _load(vd + (t - 1) * M64 + offs, m & (first == 0), CDT)
    if RESET:
        previous = _after_reset(_spikes(previous - p[-2], CDT), previous, p[-1])
    return tl.where(first, v0, previous)


# ---------------------------------------------------------------- one step of each type
# A forward step takes the step's input and the state tuple and returns (output, saved voltage,
# extras, new state); a backward step takes the gradients of the state after the step and returns
# (those of the state before it, gi's being the input's; the parameter gradients g, with PARAMS
# plus the step's, in the order of p).


# p: c_mem, c_syn, c_ada, adaptation_current, adaptation_spike, delta_T, v_leak, v_th, v_reset
@triton.jit
def _adex_forward_step(x, state, p, CDT: tl.constexpr, PRECISE: tl.constexpr, EXP_MAX: tl.constexpr,
                       SYMPLECTIC: tl.constexpr):
    """:func:`~snn.neurons.fused.python.feed_forward.adex_forward_step`: ``(z, v_d, (i + x, a), (v', i', a'))``;
    SYMPLECTIC: the adaptation driven by the voltage after the step's reset, not the entering one
    (euler)."""
    v, i, a = state
    c_mem, c_syn, c_ada, ac, a_spike, delta_T, v_leak, v_th, v_reset = p
    i_jump, v_decayed, i_decayed = _adex_membrane(x, v, i, a, c_mem, c_syn, delta_T, v_leak, v_th, CDT, PRECISE,
                                                  EXP_MAX)
    z = _spikes(v_decayed - v_th, CDT)
    v_new = _after_reset(z, v_decayed, v_reset)
    u = v  # the voltage driving the adaptation: the entering one (euler)
    if SYMPLECTIC:
        u = v_new
    return z, v_decayed, (i_jump, a), (v_new, i_decayed, _adex_adaptation(u, a, c_ada, ac, v_leak) + z * a_spike)


@triton.jit
def _adex_backward_step(gz, gstate, vd, v, saved, p, g, consts, CDT: tl.constexpr, HAS_GOUT: tl.constexpr,
                        PARAMS: tl.constexpr, METHOD: tl.constexpr, PRECISE: tl.constexpr, EXP_MAX: tl.constexpr,
                        SYMPLECTIC: tl.constexpr):
    """:func:`~snn.neurons.fused.python.feed_forward.adex_backward_step`: ``gstate = (gv, gi, ga)``, ``vd``
    the step's pre-reset voltage, ``v`` the entering one, ``saved = (i + x, a)`` (PARAMS)."""
    gv, gi, ga = gstate
    c_mem, c_syn, c_ada, ac, a_spike, delta_T, v_leak, v_th, v_reset = p
    x_spike = vd - v_th
    z = _spikes(x_spike, CDT)
    exp_arg = _div(v - v_th, delta_T, CDT)
    ex = _exp(tl.where(exp_arg > EXP_MAX, EXP_MAX, exp_arg), PRECISE)
    g_ada_drive = ga * c_ada
    g_v_new = gv
    if SYMPLECTIC:  # the adaptation's drive reads the voltage after the reset
        g_v_new = gv + g_ada_drive * ac
    g_z = -g_v_new * vd + g_v_new * v_reset + ga * a_spike
    g_xs = _spike_gradient(gz, g_z, x_spike, consts, CDT, HAS_GOUT, METHOD, PRECISE)
    g_vd = g_v_new * (1.0 - z) + g_xs
    g_drive = g_vd * c_mem
    # torch.clamp passes no gradient where the argument is at the bound itself: strict <.
    g_exp_arg = tl.where(exp_arg < EXP_MAX, g_drive * delta_T * ex, 0.0)
    g_v_exp = _div(g_exp_arg, delta_T, CDT)
    g_ij = _input_gradient(g_drive, gi, c_syn)
    if PARAMS:
        ij, a = saved
        u = v  # the voltage driving the adaptation
        if SYMPLECTIC:
            u = _after_reset(z, vd, v_reset)
        g_c_mem, g_c_syn, g_c_ada, g_ac, g_a_spike, g_delta_T, g_v_leak, g_v_th, g_v_reset = g
        g_c_mem += g_vd * ((((v_leak - v) + delta_T * ex) + ij) - a)
        g_c_syn += gi * ij
        g_c_ada += ga * (ac * (u - v_leak) - a)
        g_ac += g_ada_drive * (u - v_leak)
        g_a_spike += ga * z
        g_delta_T += g_drive * ex - _div(g_exp_arg * exp_arg, delta_T, CDT)
        g_v_leak += g_drive - g_ada_drive * ac
        g_v_th += -g_xs - g_v_exp
        g_v_reset += g_v_new * z
        g = (g_c_mem, g_c_syn, g_c_ada, g_ac, g_a_spike, g_delta_T, g_v_leak, g_v_th, g_v_reset)
    g_v = g_vd - g_drive + g_v_exp
    if not SYMPLECTIC:
        g_v = g_v + g_ada_drive * ac
    return (g_v, g_ij, ga - g_drive - g_ada_drive), g


# p: c_mem, c_syn, v_leak (LI), then v_th, v_reset (LIF)
@triton.jit
def _lif_forward_step(x, state, p, CDT: tl.constexpr):
    """:func:`~snn.neurons.fused.python.feed_forward.lif_forward_step`: ``(z, v_d, (i + x,), (v', i'))``."""
    v, i = state
    c_mem, c_syn, v_leak, v_th, v_reset = p
    i_jump, v_decayed, i_decayed = _leaky_subthreshold(x, v, i, c_mem, c_syn, v_leak)
    z = _spikes(v_decayed - v_th, CDT)
    return z, v_decayed, (i_jump,), (_after_reset(z, v_decayed, v_reset), i_decayed)


@triton.jit
def _lif_backward_step(gz, gstate, vd, v, saved, p, g, consts, CDT: tl.constexpr, HAS_GOUT: tl.constexpr,
                       PARAMS: tl.constexpr, METHOD: tl.constexpr, PRECISE: tl.constexpr):
    """:func:`~snn.neurons.fused.python.feed_forward.lif_backward_step`: ``gstate = (gv, gi)``, ``vd`` the
    step's pre-reset voltage, ``v`` the entering one and ``saved = (i + x,)`` (PARAMS)."""
    gv, gi = gstate
    c_mem, c_syn, v_leak, v_th, v_reset = p
    x_spike = vd - v_th
    z = _spikes(x_spike, CDT)
    g_xs = _spike_gradient(gz, -gv * vd + gv * v_reset, x_spike, consts, CDT, HAS_GOUT, METHOD, PRECISE)
    g_vd = gv * (1.0 - z) + g_xs
    g_drive = g_vd * c_mem
    g_ij = _input_gradient(g_drive, gi, c_syn)
    if PARAMS:
        ij = saved[0]
        g_c_mem, g_c_syn, g_v_leak, g_v_th, g_v_reset = g
        g_c_mem += g_vd * ((v_leak - v) + ij)
        g_c_syn += gi * ij
        g_v_leak += g_drive
        g_v_th += -g_xs
        g_v_reset += gv * z
        g = (g_c_mem, g_c_syn, g_v_leak, g_v_th, g_v_reset)
    return (g_vd - g_drive, g_ij), g


@triton.jit
def _li_forward_step(x, state, p):
    """:func:`~snn.neurons.fused.python.feed_forward.li_forward_step`: the output and the saved voltage are
    the new one, ``(v', v', (i + x,), (v', i'))``."""
    v, i = state
    c_mem, c_syn, v_leak = p
    i_jump, v_new, i_decayed = _leaky_subthreshold(x, v, i, c_mem, c_syn, v_leak)
    return v_new, v_new, (i_jump,), (v_new, i_decayed)


@triton.jit
def _li_backward_step(gz, gstate, v, saved, p, g, HAS_GOUT: tl.constexpr, PARAMS: tl.constexpr):
    """:func:`~snn.neurons.fused.python.feed_forward.li_backward_step`: ``gstate = (gv, gi)``, ``gz`` that
    of the output, the voltage after the step; ``v`` the entering one, ``saved = (i + x,)`` (PARAMS)."""
    gv, gi = gstate
    c_mem, c_syn, v_leak = p
    if HAS_GOUT:
        gv = gv + gz
    g_drive = gv * c_mem
    g_ij = _input_gradient(g_drive, gi, c_syn)
    if PARAMS:
        ij = saved[0]
        g_c_mem, g_c_syn, g_v_leak = g
        g_c_mem += gv * ((v_leak - v) + ij)
        g_c_syn += gi * ij
        g_v_leak += g_drive
        g = (g_c_mem, g_c_syn, g_v_leak)
    return (gv - g_drive, g_ij), g


# ---------------------------------------------------------------- the kernels
@triton.jit(do_not_specialize=_RUNTIME)
def forward(x, x_ts, x_ns, state_in, state_out, out, vd, extra, P, P_ks, P_ns, T, M,
            KIND: tl.constexpr, K: tl.constexpr, BLOCK: tl.constexpr, CDT: tl.constexpr, SAVE_VD: tl.constexpr,
            SAVE_EXTRA: tl.constexpr, PRECISE: tl.constexpr, EXP_MAX: tl.constexpr, SYMPLECTIC: tl.constexpr):
    """T steps of ``KIND`` from the state ``state_in`` to ``state_out`` (they may be the same
    tensors): each step's output (spikes; LI: the voltage) to ``out``, with SAVE_VD its voltage
    (spiking: before the reset; LI: the output, in the compute dtype) to ``vd``, with SAVE_EXTRA
    its ``i + x`` (and AdEx's ``a``) to ``extra``."""
    offs, m, M64 = _neurons(M, BLOCK)
    x_ts64 = x_ts.to(tl.int64)
    p = _load_table(P, K, P_ks, P_ns, offs, m, 1.0, CDT)  # 1 in masked lanes: delta_T divides
    state = _load_each(state_in, offs, m, CDT)
    for t in range(T):
        row = t * M64 + offs
        x_t = _load(x + t * x_ts64 + offs * x_ns, m, CDT)
        if KIND == "adex":
            output, v_saved, extras, state = _adex_forward_step(x_t, state, p, CDT, PRECISE, EXP_MAX, SYMPLECTIC)
        elif KIND == "lif":
            output, v_saved, extras, state = _lif_forward_step(x_t, state, p, CDT)
        else:
            output, v_saved, extras, state = _li_forward_step(x_t, state, p)
        if SAVE_EXTRA:
            _store_each(extra, row, extras, m)
        _store(out + row, output, m)
        if SAVE_VD:
            _store(vd + row, v_saved, m)
    _store_each(state_out, offs, state, m)


@triton.jit(do_not_specialize=_RUNTIME)
def backward(gout, g_ts, g_ns, gstate_in, gstate_out, vd, v0_ptr, extra, P, P_ks, P_ns, consts, gx, G, T, T_STOP, M,
             KIND: tl.constexpr, K: tl.constexpr, BLOCK: tl.constexpr, CDT: tl.constexpr, HAS_GOUT: tl.constexpr,
             PARAMS: tl.constexpr, METHOD: tl.constexpr, PRECISE: tl.constexpr, EXP_MAX: tl.constexpr,
             SYMPLECTIC: tl.constexpr):
    """The steps of :func:`forward` ``T - 1`` down to ``T_STOP`` in reverse (``T_STOP`` 0 for a
    whole layer; a recurrent layer runs one step at a time, its ``g_z`` of a step needing the later
    steps' input gradients). ``gstate_in`` holds the gradients of the state after step ``T - 1``,
    ``gstate_out`` receives those of the state entering step ``T_STOP`` (they may be the same
    tensors), ``gx`` those of the inputs; ``vd`` and ``extra`` are what forward saved (LI's ``vd``
    is read with PARAMS only), ``consts`` the surrogate's constants (spiking types). With PARAMS the
    parameter gradients of these steps are added to ``G``."""
    offs, m, M64 = _neurons(M, BLOCK)
    g_ts64 = g_ts.to(tl.int64)
    p = _load_table(P, K, P_ks, P_ns, offs, m, 1.0, CDT)
    v0 = _load(v0_ptr + offs, m, CDT)
    gstate = _load_each(gstate_in, offs, m, CDT)
    g = ()  # the parameter gradients, with PARAMS: those of the later steps, zeros for a whole layer
    if PARAMS:
        g = _load_table(G, K, M64, 1, offs, m, 0.0, CDT)
    for s in range(T - T_STOP):
        t = T - 1 - s
        row = t * M64 + offs
        gz = 0.0  # the gradient of the step's output, with HAS_GOUT
        if HAS_GOUT:
            gz = _load(gout + t * g_ts64 + offs * g_ns, m, CDT)
        v = v0  # the voltage entering the step, where the step reads it
        if KIND == "adex" or PARAMS:
            v = _entering_voltage(vd, v0, t, M64, offs, m, p, CDT, KIND != "li")
        saved = ()
        if PARAMS:
            saved = _load_each(extra, row, m, CDT)
        if KIND == "adex":
            gstate, g = _adex_backward_step(gz, gstate, _load(vd + row, m, CDT), v, saved, p, g, consts, CDT,
                                            HAS_GOUT, PARAMS, METHOD, PRECISE, EXP_MAX, SYMPLECTIC)
        elif KIND == "lif":
            gstate, g = _lif_backward_step(gz, gstate, _load(vd + row, m, CDT), v, saved, p, g, consts, CDT,
                                           HAS_GOUT, PARAMS, METHOD, PRECISE)
        else:
            gstate, g = _li_backward_step(gz, gstate, v, saved, p, g, HAS_GOUT, PARAMS)
        _store(gx + row, gstate[1], m)
    _store_each(gstate_out, offs, gstate, m)
    if PARAMS:
        _store_table(G, g, M64, offs, m)
