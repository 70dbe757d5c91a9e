"""The fused time loops in plain PyTorch: the ``python`` backend, and ``compile`` (its step bodies
through ``torch.compile``: single-threaded C++ per step on CPU, Triton on CUDA, from one source).

Forward runs every step without autograd and keeps only the pre-reset voltage ``v_d`` of each step
(plus ``i + x`` and ``a`` when parameters need gradients); backward runs the time loop in reverse
with the hand-derived gradients of the step functions. The forward step bodies call the equations
the step functions call (:mod:`snn.neurons.equations`), with the same constants, so outputs and
states are bit-identical to the eager loop; ``tests/neurons/fused/test_fused.py`` pins that.

Parameter tuples ``P`` hold ``c_mem = dt tau_mem_inv`` and ``c_syn = -dt tau_syn_inv`` (and
``c_ada = dt tau_ada_inv``) computed once per call, exactly as the step functions compute them.
AdEx's loops take ``symplectic``: False for the ``euler`` integrator, True for ``symplectic`` (the
adaptation driven by the voltage after the step's reset, see
:func:`~snn.neurons.adex.lif_adex_feed_forward_step`).

Two forms, and why. The step bodies (``*_forward_step``, ``*_backward_step``) are functional, the
form ``torch.compile`` fuses best and the one that adds parameter gradients. Without a compiler
(the ``python`` backend) the time goes into launching small ops, so AdEx and LIF run the loops at
the end of this file instead: forward with the same operations and roundings in place into
preallocated buffers (about 24 ops per AdEx step instead of 30, no allocations), and backward,
when no parameter needs a gradient, regrouped (:func:`backward_loop`) so that everything that does
not depend on the incoming gradients (the entering voltage, the surrogate, the exponential) is
computed for blocks of steps at once, leaving a recursion of a few multiply-adds per step. The
in-place forward loop is thus a second Python statement of the forward equations, kept because the
functional bodies run the ``python`` backend measurably slower (benchmarks/RESULTS.md, "Why the
kernels look the way they do"); the equality tests pin both to the step functions. Recurrent
populations run the same loops (:mod:`~snn.neurons.fused.python.recurrent`). Steps of up to 32768 values run on one
intra-op thread (:func:`serial_steps`): on a shared machine an OpenMP region per step costs more
than the step.
"""

from __future__ import annotations

import contextlib
import functools

import torch

from ...constants import EXP_ARGUMENT_MAX
from ...equations import adex_adaptation, adex_membrane, after_reset, leaky_subthreshold
from ...surrogate import surrogate_derivative
from ..spec import NEURON_SPECS, KernelOptions, saved_tensors
from ..threads import serial_steps

# Values per op in the backward loops' blocks of steps (512 KiB in float32): enough steps per op
# to amortise Python's cost per op, few enough that a block's tensors stay in L2 (the sizes
# tried: benchmarks/RESULTS.md, "Why the kernels look the way they do").
BLOCK_VALUES = 131072


def reset_voltage(vd, vth, vr):
    """The voltage after step t from its pre-reset value (the spike is ``vd - vth > 0``)."""
    return after_reset((vd - vth > 0).to(vd.dtype), vd, vr)


def input_gradient(g_drive, gi, c_syn):
    """The gradient of ``i + x`` (the input's, and the synaptic current's before the step) from
    that of the membrane drive (``g_drive = c_mem g_vd``) and that of the decayed current
    (``gi``)."""
    return g_drive + (gi + gi * c_syn)


# ---------------------------------------------------------------- AdEx
def adex_forward_step(x, v, i, a, P, z_out, vd_out, ij_out, a_out, symplectic=False):
    """One step of the AdEx equations (:mod:`snn.neurons.equations`, as the step function runs
    them) writing the spikes and what backward needs to the ``*_out`` tensors; returns the new
    ``(v, i, a)``."""
    c_mem, c_syn, c_ada, ac, a_spike, delta_T, v_leak, v_th, v_reset = P
    i_jump, v_decayed, i_decayed = adex_membrane(x, v, i, a, c_mem, c_syn, delta_T, v_leak, v_th)
    if ij_out is not None:
        ij_out.copy_(i_jump)
        a_out.copy_(a)
    z = (v_decayed - v_th > 0).to(x.dtype)
    z_out.copy_(z)
    if vd_out is not None:
        vd_out.copy_(v_decayed)
    v_new = after_reset(z, v_decayed, v_reset)
    a_decayed = adex_adaptation(v_new if symplectic else v, a, c_ada, ac, v_leak)
    return v_new, i_decayed, a_decayed + z * a_spike


def adex_backward_step(gz, gv, gi, ga, vd, v, P, derivative, alpha, gx_out, ij, a, G, symplectic=False):
    """Gradients through one step; ``gv, gi, ga`` are those of the state after it. Returns those
    of the state before it and writes the input gradient to ``gx_out``. With ``G`` (a list of
    per-neuron accumulators, in the order of the kernel parameters) it adds the step's parameter
    gradients.

    The names are those of ``cpu_kernels.cpp`` and ``triton_kernels.py``: ``g_drive`` is the
    gradient of the membrane drive ``(v_leak - v) + delta_T e + i_j - a`` (``c_mem g_vd``),
    ``g_exp_arg`` that of the exponent ``(v - v_th) / delta_T``, ``g_v_exp`` that of ``v`` through
    the exponent, ``g_ada_drive`` that of the adaptation drive ``a_current (u - v_leak) - a``, and
    ``g_v_new`` that of the voltage after the step: ``gv``, plus (``symplectic``: ``u = v'``) the
    adaptation's ``a_current g_ada_drive``; with ``euler`` (``u = v``) that term goes to ``v``."""
    c_mem, c_syn, c_ada, ac, a_spike, delta_T, v_leak, v_th, v_reset = P
    x_spike = vd - v_th
    z = (x_spike > 0).to(vd.dtype)
    exp_arg = (v - v_th) / delta_T
    ex = torch.exp(torch.clamp(exp_arg, max=EXP_ARGUMENT_MAX))
    g_ada_drive = ga * c_ada
    g_v_new = gv + g_ada_drive * ac if symplectic else gv
    g_z = -g_v_new * vd + g_v_new * v_reset + ga * a_spike
    if gz is not None:
        g_z = gz + g_z
    g_xs = g_z * derivative(x_spike, alpha)
    g_vd = g_v_new * (1 - z) + g_xs
    g_drive = g_vd * c_mem
    # torch.clamp passes no gradient where the argument is at the bound itself: strict <.
    g_exp_arg = torch.where(exp_arg < EXP_ARGUMENT_MAX, g_drive * delta_T * ex, 0.0)
    g_v_exp = g_exp_arg / delta_T
    g_ij = input_gradient(g_drive, gi, c_syn)
    gx_out.copy_(g_ij)
    if G is not None:
        u = after_reset(z, vd, v_reset) if symplectic else v  # the voltage driving the adaptation
        g_c_mem, g_c_syn, g_c_ada, g_ac, g_a_spike, g_delta_T, g_v_leak, g_v_th, g_v_reset = G
        g_c_mem.add_(g_vd * ((v_leak - v) + delta_T * ex + ij - a))
        g_c_syn.add_(gi * ij)
        g_c_ada.add_(ga * (ac * (u - v_leak) - a))
        g_ac.add_(g_ada_drive * (u - v_leak))
        g_a_spike.add_(ga * z)
        g_delta_T.add_(g_drive * ex - g_exp_arg * exp_arg / delta_T)
        g_v_leak.add_(g_drive - g_ada_drive * ac)
        g_v_th.add_(-g_xs - g_v_exp)
        g_v_reset.add_(g_v_new * z)
    g_v = g_vd - g_drive + g_v_exp
    if not symplectic:
        g_v = g_v + g_ada_drive * ac
    return g_v, g_ij, ga - g_drive - g_ada_drive


# ---------------------------------------------------------------- LIF
def lif_forward_step(x, v, i, P, z_out, vd_out, ij_out):
    """:func:`adex_forward_step` for LIF (:func:`~snn.neurons.equations.leaky_subthreshold`)."""
    c_mem, c_syn, v_leak, v_th, v_reset = P
    i_jump, v_decayed, i_decayed = leaky_subthreshold(x, v, i, c_mem, c_syn, v_leak)
    if ij_out is not None:
        ij_out.copy_(i_jump)
    z = (v_decayed - v_th > 0).to(x.dtype)
    z_out.copy_(z)
    if vd_out is not None:
        vd_out.copy_(v_decayed)
    return after_reset(z, v_decayed, v_reset), i_decayed


def lif_backward_step(gz, gv, gi, vd, v, P, derivative, alpha, gx_out, ij, G):
    c_mem, c_syn, v_leak, v_th, v_reset = P
    x_spike = vd - v_th
    z = (x_spike > 0).to(vd.dtype)
    g_z = -gv * vd + gv * v_reset
    if gz is not None:
        g_z = gz + g_z
    g_xs = g_z * derivative(x_spike, alpha)
    g_vd = gv * (1 - z) + g_xs
    g_drive = g_vd * c_mem
    g_ij = input_gradient(g_drive, gi, c_syn)
    gx_out.copy_(g_ij)
    if G is not None:
        g_c_mem, g_c_syn, g_v_leak, g_v_th, g_v_reset = G
        g_c_mem.add_(g_vd * ((v_leak - v) + ij))
        g_c_syn.add_(gi * ij)
        g_v_leak.add_(g_drive)
        g_v_th.add_(-g_xs)
        g_v_reset.add_(gv * z)
    return g_vd - g_drive, g_ij


# ---------------------------------------------------------------- LI
def li_forward_step(x, v, i, P, out, ij_out):
    """:func:`adex_forward_step` for LI: the output is the voltage."""
    i_jump, v_new, i_decayed = leaky_subthreshold(x, v, i, *P)
    if ij_out is not None:
        ij_out.copy_(i_jump)
    out.copy_(v_new)
    return v_new, i_decayed


def li_backward_step(gout, gv, gi, v, P, gx_out, ij, G):
    c_mem, c_syn, v_leak = P
    if gout is not None:
        gv = gv + gout
    g_drive = gv * c_mem
    g_ij = input_gradient(g_drive, gi, c_syn)
    gx_out.copy_(g_ij)
    if G is not None:
        g_c_mem, g_c_syn, g_v_leak = G
        g_c_mem.add_(gv * ((v_leak - v) + ij))
        g_c_syn.add_(gi * ij)
        g_v_leak.add_(g_drive)
    return gv - g_drive, g_ij


# ---------------------------------------------------------------- python: in-place loops
# Spikes are float masks written by torch.gt(..., out=float tensor) and resets are arithmetic:
# on CPU, comparisons into bool tensors, bool-to-float copies and torch.where each cost several
# times a multiply of the same size (benchmarks/RESULTS.md).


def _reset(v, v_decayed, z, v_reset, scratch):
    """``v <- (1 - z) v_d + z v_reset`` in place, as the step functions compute it: with z in
    {0, 1} both products are exact, so v is v_d or v_reset to the bit."""
    torch.mul(v_decayed, torch.sub(1, z, out=scratch), out=v).addcmul_(z, v_reset)
    return v


def _spikes(x_spike, out):
    """``z = [x_spike > 0]`` as a float mask in ``out``."""
    return torch.gt(x_spike, 0, out=out)


def adex_forward_loop(x, state, P, out, vd, ij_out, a_out, symplectic=False):
    """All steps of :func:`adex_forward_step` with its roundings, in place; returns the final state.
    ``vd`` (pre-reset voltages), ``ij_out``, ``a_out`` may be None (not saved)."""
    c_mem, c_syn, c_ada, ac, a_spike, delta_T, v_leak, v_th, v_reset = P
    v, i, a = (s.clone(memory_format=torch.contiguous_format) for s in state)
    e, u, w, vd_scratch = (torch.empty_like(v) for _ in range(4))
    for t in range(x.shape[0]):
        i.add_(x[t])  # i_jump
        if ij_out is not None:
            ij_out[t].copy_(i)
            a_out[t].copy_(a)
        torch.sub(v, v_th, out=e).div_(delta_T).clamp_(max=EXP_ARGUMENT_MAX).exp_().mul_(delta_T)
        torch.sub(v_leak, v, out=u).add_(e).add_(i).sub_(a).mul_(c_mem)  # dt/tau_mem (...)
        v_decayed = vd[t] if vd is not None else vd_scratch
        torch.add(v, u, out=v_decayed)
        if not symplectic:  # a_d from the voltage entering the step
            torch.sub(v, v_leak, out=w).mul_(ac).sub_(a).mul_(c_ada)
            a.add_(w)
        i.add_(torch.mul(i, c_syn, out=u))  # i_jump + c_syn i_jump
        z = torch.gt(torch.sub(v_decayed, v_th, out=e), 0, out=out[t])
        _reset(v, v_decayed, z, v_reset, e)
        if symplectic:  # a_d from the voltage after the reset
            torch.sub(v, v_leak, out=w).mul_(ac).sub_(a).mul_(c_ada)
            a.add_(w)
        a.addcmul_(z, a_spike)  # a_d + z a_spike: the product by z in {0, 1} is exact
    return v, i, a


def lif_forward_loop(x, state, P, out, vd, ij_out):
    """All steps of :func:`lif_forward_step`, in place (see :func:`adex_forward_loop`)."""
    c_mem, c_syn, v_leak, v_th, v_reset = P
    v, i = (s.clone(memory_format=torch.contiguous_format) for s in state)
    u, vd_scratch = torch.empty_like(v), torch.empty_like(v)
    for t in range(x.shape[0]):
        i.add_(x[t])
        if ij_out is not None:
            ij_out[t].copy_(i)
        torch.sub(v_leak, v, out=u).add_(i).mul_(c_mem)
        v_decayed = vd[t] if vd is not None else vd_scratch
        torch.add(v, u, out=v_decayed)
        i.add_(torch.mul(i, c_syn, out=u))
        z = torch.gt(torch.sub(v_decayed, v_th, out=u), 0, out=out[t])
        _reset(v, v_decayed, z, v_reset, u)
    return v, i


def _block(T: int, neurons: int) -> int:
    """Steps per block of the backward loops: about BLOCK_VALUES values per op, so that the ops
    computed for a whole block amortise Python's per-op cost while its tensors stay in L2. Steps
    within ATen's grain size run on one thread anyway (:func:`serial_steps`), so a block of them
    opens no OpenMP region."""
    return max(1, min(T, BLOCK_VALUES // max(1, neurons)))


def _entering_voltage(vd, t0, t1, v0, v_th, v_reset):
    """The voltage entering steps t0 .. t1 - 1: v0, then each step's after its reset."""
    if t0 == 0:
        v = torch.empty_like(vd[t0:t1])
        v[0] = v0
        previous, v_rest = vd[0:t1 - 1], v[1:]
    else:
        previous = vd[t0 - 1:t1 - 1]
        v = v_rest = torch.empty_like(previous)
    if previous.shape[0]:
        scratch = torch.sub(previous, v_th)
        _reset(v_rest, previous, _spikes(scratch, scratch), v_reset, torch.empty_like(previous))
    return v


def spike_coefficients(vd, v_th, v_reset, derivative, alpha):
    """``(A, sigma')`` for pre-reset voltages ``vd``: ``A = (1 - z) + (v_reset - v_d) sigma'``, the
    part of the gradient of ``v_d`` that comes from the voltage after the step (the spike's own
    part is ``sigma' g_z``)."""
    x_spike = vd - v_th
    sg = derivative(x_spike, alpha)
    not_spiking = torch.le(x_spike, 0, out=torch.empty_like(x_spike))  # 1 - z
    return torch.sub(v_reset, vd).mul_(sg).add_(not_spiking), sg


def adex_coefficients(vd, t0, t1, v0, P, derivative, alpha, symplectic=False):
    """``(A, B, D, sigma')`` of steps ``t0`` to ``t1 - 1`` for :func:`backward_loop`: everything in the
    backward that does not depend on the incoming gradients."""
    c_mem, c_syn, c_ada, ac, a_spike, delta_T, v_leak, v_th, v_reset = P
    v = _entering_voltage(vd, t0, t1, v0, v_th, v_reset)
    exp_arg = v.sub_(v_th).div_(delta_T)
    # torch.clamp passes no gradient where the argument is at the bound itself: strict <.
    below = torch.lt(exp_arg, EXP_ARGUMENT_MAX, out=torch.empty_like(exp_arg))
    D = exp_arg.clamp_(max=EXP_ARGUMENT_MAX).exp_().mul_(below).mul_(c_mem).add_(1 - c_mem)
    A, sg = spike_coefficients(vd[t0:t1], v_th, v_reset, derivative, alpha)
    B = sg * a_spike
    if symplectic:  # ga also reaches v_d through the voltage after the reset: c_ada a_current A
        B.addcmul_(A, c_ada * ac)
    return A, B, D, sg


def backward_loop(kind, gout, gstate, vd, v0, P, derivative, alpha, w_rec=None, gz=None, symplectic=False):
    """The backward of :func:`adex_forward_loop` or :func:`lif_forward_loop` (``kind`` 'adex' or
    'lif') without parameter gradients: ``(gx, gradients of the initial (v, i[, a]))``.

    With ``A = (1 - z) + (v_reset - v_d) sigma'``, ``B = a_spike sigma'`` and
    ``D = 1 - c_mem + c_mem [exp_arg < 20] e^{exp_arg}`` (the derivative of v_d in v), computed for
    blocks of steps at once, each step is ``g_vd = A gv + B ga + sigma' g_z``,
    ``gv <- D g_vd + c_ada a_current ga``, ``ga <- (1 - c_ada) ga - c_mem g_vd``,
    ``gi <- c_mem g_vd + (1 + c_syn) gi = gx[t]``: :func:`adex_backward_step` regrouped, equal to
    it up to rounding. LIF: no ``a``, ``D = 1 - c_mem``. ``symplectic`` (AdEx): the adaptation is
    driven by the voltage after the step, so ``c_ada a_current ga`` joins ``gv`` before the step's
    reset instead of after it: ``B = a_spike sigma' + c_ada a_current A`` and ``gv <- D g_vd``.

    ``g_z`` is the gradient of the outputs ``gout[t]`` (None: none reached them). Recurrent
    populations (:mod:`~snn.neurons.fused.python.recurrent`) pass ``w_rec``: there ``x`` is the current ``c``, ``gx``
    its gradient ``g_c``, and the spikes of a step feed the next step's current, so
    ``g_z <- gout[t] + g_c[t + 1] W_rec``, starting from ``gz``, the final spikes' gradient.
    """
    adex = kind == "adex"
    c_mem, c_syn, v_th, v_reset = P[0], P[1], P[-2], P[-1]
    gstate = [g.clone(memory_format=torch.contiguous_format) for g in gstate]
    gv, gi = gstate[0], gstate[1]
    if adex:
        ga, c_ada, ac = gstate[2], P[2], P[3]
        k_av, k_a = c_ada * ac, 1 - c_ada
    k_i, k_v = 1 + c_syn, 1 - c_mem
    T = vd.shape[0]
    gx = torch.empty_like(vd)
    g_rec = None if w_rec is None else gz.clone(memory_format=torch.contiguous_format)
    block = _block(T, v0.numel())
    for t1 in range(T, 0, -block):
        t0 = max(0, t1 - block)
        if adex:
            A, B, D, sg = adex_coefficients(vd, t0, t1, v0, P, derivative, alpha, symplectic)
        else:
            A, sg = spike_coefficients(vd[t0:t1], v_th, v_reset, derivative, alpha)
        # sigma' g_z for the whole block where g_z does not depend on the steps after it.
        C = None if gout is None or g_rec is not None else sg * gout[t0:t1]  # sg: maybe a view
        g_vds = torch.empty_like(A)
        for t in range(t1 - t0 - 1, -1, -1):
            g_vd = torch.mul(gv, A[t], out=g_vds[t])
            if g_rec is not None:
                if gout is not None:
                    g_rec.add_(gout[t0 + t])  # g_z of this step
                g_vd.addcmul_(g_rec, sg[t])
            if adex:
                g_vd.addcmul_(ga, B[t])
            if C is not None:
                g_vd.add_(C[t])
            if adex:
                torch.mul(g_vd, D[t], out=gv)
                if not symplectic:
                    gv.addcmul_(ga, k_av)
                ga.mul_(k_a).addcmul_(g_vd, c_mem, value=-1)
            else:
                torch.mul(g_vd, k_v, out=gv)
            if g_rec is not None:  # the next g_z needs this step's g_c = gi now
                gi = torch.mul(gi, k_i, out=gx[t0 + t]).addcmul_(g_vd, c_mem)
                torch.mm(gi, w_rec, out=g_rec)  # g_z of the step before, from its spikes' current
        if g_rec is None:  # feed-forward: g_drive = c_mem g_vd for the whole block, then gi's scan
            g_drive = g_vds.mul_(c_mem)
            for t in range(t1 - t0 - 1, -1, -1):
                gi = torch.mul(gi, k_i, out=gx[t0 + t]).add_(g_drive[t])
    gstate[1] = gi
    return gx, tuple(gstate)


class TorchLoops:
    """Runs the step bodies above in a Python loop over time; ``compile=True`` compiles each body,
    ``compile=False`` (the ``python`` backend) runs the in-place loops for AdEx and LIF."""

    def __init__(self, compile: bool = False):
        self.compiled = compile
        wrap = self._compile if compile else (lambda f: f)
        self.steps = {
            "adex": (wrap(adex_forward_step), wrap(adex_backward_step)),
            "lif": (wrap(lif_forward_step), wrap(lif_backward_step)),
            "li": (wrap(li_forward_step), wrap(li_backward_step)),
        }
        self.reset = wrap(reset_voltage)

    @staticmethod
    def _compile(fn):
        # One step is a few hundred kB at most: inductor's C++ for CPU runs it on one thread. An
        # OpenMP region per step (its default) waits for a descheduled second thread on a shared
        # machine, many times slower under load (benchmarks/RESULTS.md).
        return functools.wraps(fn)(torch.compile(fn, dynamic=False, options={"cpp.threads": 1}))

    def _serial(self, like: torch.Tensor):
        """The python backend's loops run with :func:`serial_steps` (compiled bodies are single-
        threaded already)."""
        # T = 0 too
        return contextlib.nullcontext() if self.compiled else serial_steps(like.shape[1:].numel(), like.device)

    def forward(self, kind, x, state, P, save, save_extra, options: KernelOptions):
        """Returns ``(outputs [T, ...], final state, saved [T, ...] tensors)``."""
        with self._serial(x):
            return self._forward(kind, x, state, P, save, save_extra, options.symplectic)

    def backward(self, kind, gout, gstate, saved, v0, P, options: KernelOptions, param_grads):
        """Returns ``(input gradient [T, ...], initial-state gradients, per-neuron parameter
        gradients or None)``; ``gout`` may be None (no gradient reached the outputs)."""
        with self._serial(v0.unsqueeze(0)):
            return self._backward(kind, gout, gstate, saved, v0, P, options.method, options.alpha, param_grads,
                                  options.symplectic)

    def _forward(self, kind, x, state, P, save, save_extra, symplectic):
        spec = NEURON_SPECS[kind]
        step = self.steps[kind][0]
        flags = {"symplectic": symplectic} if kind == "adex" else {}
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        vd = torch.empty_like(out) if save and spec.spiking else None
        extra = [torch.empty_like(out) for _ in range(spec.extra if save_extra else 0)]
        no_extra = [None] * spec.extra
        if not self.compiled and kind in ("adex", "lif"):
            loop = adex_forward_loop if kind == "adex" else lif_forward_loop
            state = loop(x, state, P, out, vd, *(extra or no_extra), **flags)
        else:
            for t in range(x.shape[0]):
                outs = [out[t]] + ([None if vd is None else vd[t]] if spec.spiking else [])
                state = step(x[t], *state, P, *outs, *([e[t] for e in extra] or no_extra), **flags)
        return out, state, saved_tensors(kind, out, vd, extra, save_extra)

    def _backward(self, kind, gout, gstate, saved, v0, P, method, alpha, param_grads, symplectic):
        spec = NEURON_SPECS[kind]
        step = self.steps[kind][1]
        T = gout.shape[0] if gout is not None else saved[0].shape[0]
        gx = v0.new_empty((T,) + tuple(v0.shape))
        G = [torch.zeros_like(v0) for _ in P] if param_grads else None
        gstate = tuple(gstate)
        if kind == "li":
            ij, outs = saved if param_grads else (None, None)
            for t in range(T - 1, -1, -1):
                v = (outs[t - 1] if t > 0 else v0) if param_grads else None
                gstate = step(None if gout is None else gout[t], *gstate, v, P, gx[t],
                              None if ij is None else ij[t], G)
            return gx, gstate, G
        derivative = surrogate_derivative(method)
        vd, extra = saved[0], saved[1:]
        if not self.compiled and not param_grads:
            gx, gstate = backward_loop(kind, gout, gstate, vd, v0, P, derivative, alpha, symplectic=symplectic)
            return gx, gstate, None
        no_extra = [None] * spec.extra
        flags = {"symplectic": symplectic} if kind == "adex" else {}
        for t in range(T - 1, -1, -1):
            v = self.reset(vd[t - 1], P[-2], P[-1]) if t > 0 else v0
            gstate = step(None if gout is None else gout[t], *gstate, vd[t], v, P, derivative, alpha,
                          gx[t], *([e[t] for e in extra] or no_extra), G, **flags)
        return gx, gstate, G
