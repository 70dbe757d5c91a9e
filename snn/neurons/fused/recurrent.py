"""The autograd node of recurrent AdEx and LIF layers and the choice of their backend.

One node per layer call: ``(x [T, B, F], W_in [N, F], W_rec [N, N], z0, *state, *kernel
parameters) -> (spikes [T, B, N], final z, *final state)``. The forward keeps the pre-reset voltage
of each step (plus ``i + c`` and ``a`` per step when per-neuron parameters need gradients); the
spikes, the voltage entering each step and the surrogate follow from it. Backends: ``cpp`` (the
whole time loop in one C++ call, products through BLAS's GEMM with torch's arguments,
:mod:`~snn.neurons.fused.cpp.recurrent`; CPU, float32/float64, the built-in surrogates), ``triton`` (the neuron
update of each step with the Triton kernels, ``W_in x`` for all steps in one GEMM and ``W_rec z``
by torch between the steps, :mod:`~snn.neurons.fused.triton.recurrent`; CUDA, on the CPU only under
``TRITON_INTERPRET=1``; float16/bfloat16 inputs with float32 state, as for feed-forward
layers), ``python`` (:mod:`~snn.neurons.fused.python.recurrent`: any device and dtype, every registered
surrogate), ``eager`` (the step function under autograd, the
reference, run by the layer), ``auto`` (``cpp`` on CPU and ``triton`` on CUDA where they run, else
``python``): :mod:`~snn.neurons.fused.registry`.
"""

from __future__ import annotations

import torch

from ..constants import check_recurrent_backend
from .feed_forward import as_kernel_parameters, one_value_if_uniform
from .registry import resolve
from .spec import NEURON_SPECS, Backend, KernelOptions, kernel_parameters
from .threads import free_threads, torch_threads


def spikes_before(vd, z0, v_th):
    """``z_{t-1}`` for every step ``t``: ``z0``, then the spikes recomputed from ``v_d``."""
    z = torch.empty_like(vd)
    z[0] = z0
    torch.gt(vd[:-1], v_th, out=z[1:])  # v_d - v_th > 0 exactly when v_d > v_th (IEEE subtraction)
    return z


def weight_gradients(gc, x, zprev, need_x, need_w_in, need_w_rec, w_in):
    """``(g_x, g_W_in, g_W_rec)`` from the current gradients ``g_c [T, B, N]``, each one GEMM over
    all steps (None where not needed); ``zprev`` is :func:`spikes_before` (None: not needed)."""
    flat = gc.flatten(0, 1)  # [T, B, N] -> [T B, N]
    gx = (flat @ w_in).view(x.shape) if need_x else None  # [T B, N] x [N, F] -> [T, B, F]
    gw_in = flat.t() @ x.reshape(flat.shape[0], -1) if need_w_in else None  # [N, F]
    gw_rec = flat.t() @ zprev.flatten(0, 1) if need_w_rec else None  # [N, N]
    return gx, gw_in, gw_rec


class FusedRecurrentLoop(torch.autograd.Function):
    """``(x, W_in, W_rec, z0, *state, *P) -> (spikes [T, B, N], z_T, *final state)``.

    ``W_rec``'s gradient is the backend's where its ``recurrent_backward`` answers one (``cpp``: summed
    over the spikes that fired inside its loop, see :mod:`~snn.neurons.fused.cpp.recurrent`), else
    :func:`weight_gradients`' dense product."""

    @staticmethod
    def forward(ctx, kind: str, loops: Backend, options: KernelOptions, x, w_in, w_rec, z0, *tensors):
        n_state = len(NEURON_SPECS[kind].state)
        state, P = tensors[:n_state], tensors[n_state:]
        needs = ctx.needs_input_grad[3:]  # x, W_in, W_rec, z0, *state, *P
        param_grads = any(needs[4 + n_state :])
        # On a busy machine one thread for the whole call (the backends' loops take at most these).
        with torch.no_grad(), torch_threads(free_threads(x.device)):
            out, final, saved = loops.recurrent_forward(kind, x, w_in, w_rec, z0, state, P, any(needs), param_grads,
                                                        options)
        ctx.kind, ctx.loops, ctx.options = kind, loops, options
        ctx.param_grads = param_grads
        ctx.n_saved, ctx.v0_shape = len(saved), state[0].shape
        # z0 only when W_rec's gradient reads it ([B, N], small; asking whether it has spikes would
        # cost a host sync per call on a GPU).
        ctx.save_z0 = bool(needs[2])
        ctx.save_for_backward(
            x,
            w_in,
            w_rec,
            one_value_if_uniform(state[0]),
            *([z0] if ctx.save_z0 else []),
            *saved,
            *P,
        )
        return (out, out[-1].clone(), *final)

    @staticmethod
    def backward(ctx, gout, gz, *gstate):
        x, w_in, w_rec, v0, *rest = ctx.saved_tensors
        z0 = rest.pop(0) if ctx.save_z0 else None
        saved, P = rest[: ctx.n_saved], rest[ctx.n_saved :]
        v0 = v0.expand(ctx.v0_shape)
        gstate = [torch.zeros_like(v0) if g is None else g for g in gstate]
        needs = ctx.needs_input_grad[3:]
        with torch.no_grad(), torch_threads(free_threads(v0.device)):
            # A backend may answer W_rec's gradient itself (cpp: summed over the spikes that fired,
            # inside its loop); None: the dense product here.
            gc, gz0, gstate0, G, gw_backend = ctx.loops.recurrent_backward(
                ctx.kind, gout, gz, gstate, saved, v0, w_rec, tuple(P), ctx.options, ctx.param_grads,
                z0=z0, w_rec_grad=bool(needs[2]))
            dense_w_rec = bool(needs[2]) and gw_backend is None
            zprev = (  # in g_c's dtype: triton saves a half input's voltages in float32
                spikes_before(saved[0], 0.0 if z0 is None else z0, P[-2]).to(gc.dtype)
                if dense_w_rec
                else None
            )
            gx, gw_in, gw_rec = weight_gradients(
                gc, x, zprev, needs[0], needs[1], dense_w_rec, w_in
            )
            if gw_backend is not None:
                gw_rec = gw_backend
        n_state = len(gstate0)
        gparams = [None] * len(P)
        if G is not None:
            gparams = [
                g.sum_to_size(p.shape) if need else None
                for g, p, need in zip(G, P, needs[4 + n_state :], strict=True)
            ]
        gstate0 = [
            g if need else None for g, need in zip(gstate0, needs[4 : 4 + n_state], strict=True)
        ]
        return (None, None, None, gx, gw_in, gw_rec, gz0 if needs[3] else None, *gstate0, *gparams)


def check_weights(x: torch.Tensor, w_in: torch.Tensor, w_rec: torch.Tensor, n: int) -> None:
    """A ValueError unless ``W_in`` is ``[N, F]`` for ``x [T, B, F]`` and ``W_rec`` ``[N, N]``."""
    features = x.shape[-1]
    for name, w, shape in (
        ("input_weights", w_in, (n, features)),
        ("recurrent_weights", w_rec, (n, n)),
    ):
        if not isinstance(w, torch.Tensor) or tuple(w.shape) != shape:
            got = list(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise ValueError(
                f"{name} must have shape {list(shape)} for {n} neurons and {features} "
                f"input features, got {got}."
            )


def run_recurrent(kind: str, backend: str, x: torch.Tensor, state, w_in: torch.Tensor, w_rec: torch.Tensor,
                  p, dt: float, options: KernelOptions):
    """The layers' call: runs a recurrent ``kind`` ('adex', 'lif') population over the time dimension
    of ``x [T, B, F]`` from ``state`` (``LIFAdExState``/``LIFState``, each field ``[B, N]``) on
    ``backend`` (not ``eager``): ``(spikes [T, B, N], final state of the type of ``state``)``, as the
    step function's loop. The layer has checked its input, state, weights, backend and options."""
    loops = resolve(backend, kind, (x, w_in, w_rec), options)
    z0, *rest = state
    out, *final = FusedRecurrentLoop.apply(kind, loops, options, x, w_in, w_rec, z0, *rest,
                                           *kernel_parameters(kind, p, dt))
    return out, type(state)(*final)


def _integrate_recurrent(kind: str, backend: str, x: torch.Tensor, state, w_in: torch.Tensor, w_rec: torch.Tensor,
                         p, dt: float):
    """:func:`run_recurrent` with the checks of the backend, the shapes and the parameter values that a
    layer makes first, for tests that call the loops without a layer in front."""
    check_recurrent_backend(backend)
    if backend == "eager":
        raise ValueError("_integrate_recurrent runs the fused loops; the eager loop is the layer's.")
    if x.dim() != 3:
        raise ValueError(f"Recurrent layers take inputs [T, B, input_size], got {list(x.shape)}.")
    check_weights(x, w_in, w_rec, state.z.shape[-1])
    options = KernelOptions.of(p)
    loops = resolve(backend, kind, (x, w_in, w_rec), options)
    P = as_kernel_parameters(kind, kernel_parameters(kind, p, dt), x, state.z.shape)
    z0, *rest = state
    out, *final = FusedRecurrentLoop.apply(kind, loops, options, x, w_in, w_rec, z0, *rest, *P)
    return out, type(state)(*final)
