"""The autograd node of recurrent AdEx and LIF layers and the choice of their backend.

One node per layer call: ``(x [T, B, F], W_in [N, F], W_rec [N, N], z0, *state, *kernel
parameters) -> (spikes [T, B, N], final z, *final state)``. The forward keeps the pre-reset voltage
of each step (plus ``i + c`` and ``a`` per step when per-neuron parameters need gradients); the
spikes, the voltage entering each step and the surrogate follow from it. Backends: ``cpp`` (the
neuron update of each step in C++, :mod:`.cpp_recurrent_loops`; CPU, float32/float64, the built-in
surrogates), ``triton`` (the same with the Triton kernels, :mod:`.triton_recurrent_loops`; CUDA, on
the CPU only under ``TRITON_INTERPRET=1``; float16/bfloat16 inputs with float32 state, as for
feed-forward layers), ``python`` (:mod:`.recurrent_loops`: any device and dtype, every registered
surrogate), ``eager`` (the step function under autograd, the reference), ``auto`` (``cpp`` on CPU
and ``triton`` on CUDA where they run, else ``python``).
"""

from __future__ import annotations

import contextlib

import torch

from ..constants import check_integrator, check_recurrent_backend
from . import cpp_recurrent_loops, recurrent_loops, triton_recurrent_loops
from .function import _one_value_if_uniform, as_kernel_parameters, resolve_backend
from .spec import NEURON_SPECS, kernel_parameters
from .torch_loops import serial_steps

# The multiply-adds of a step's [B, N] x [N, N] product from which the cpp loops run each step on
# all threads (BLAS and the kernel); below, on one (see step_threads).
PARALLEL_STEP_MACS = 1 << 21


def step_threads(backend: str, w_rec: torch.Tensor, state: torch.Tensor):
    """The threads of each step: all of them for the ``cpp`` loops when a step's recurrent product is
    large (``PARALLEL_STEP_MACS``), else one while a step's values are within ATen's grain size
    (:func:`~.torch_loops.serial_steps`)."""
    if backend == "cpp" and state.numel() * w_rec.shape[0] >= PARALLEL_STEP_MACS:
        return contextlib.nullcontext()
    return serial_steps(state.numel(), state.device)


class FusedRecurrentLoop(torch.autograd.Function):
    """``(x, W_in, W_rec, z0, *state, *P) -> (spikes [T, B, N], z_T, *final state)``."""

    @staticmethod
    def forward(ctx, kind, backend, method, alpha, integrator, x, w_in, w_rec, z0, *tensors):
        n_state = len(NEURON_SPECS[kind].state)
        state, P = tensors[:n_state], tensors[n_state:]
        needs = ctx.needs_input_grad[5:]  # x, W_in, W_rec, z0, *state, *P
        param_grads = any(needs[4 + n_state :])
        with torch.no_grad(), step_threads(backend, w_rec, z0):
            out, final, saved = LOOPS[backend].forward(
                kind, x, w_in, w_rec, z0, state, P, save=any(needs), save_extra=param_grads,
                integrator=integrator,
            )
        ctx.kind, ctx.backend, ctx.method, ctx.alpha, ctx.integrator = kind, backend, method, alpha, integrator
        ctx.param_grads = param_grads
        ctx.n_saved, ctx.v0_shape = len(saved), state[0].shape
        # z0 only when W_rec's gradient reads it and it has spikes (it is 0 from rest).
        ctx.z0_spikes = bool(needs[2]) and bool(z0.any())
        ctx.save_for_backward(
            x,
            w_in,
            w_rec,
            _one_value_if_uniform(state[0]),
            *([z0] if ctx.z0_spikes else []),
            *saved,
            *P,
        )
        return (out, out[-1].clone(), *final)

    @staticmethod
    def backward(ctx, gout, gz, *gstate):
        x, w_in, w_rec, v0, *rest = ctx.saved_tensors
        z0 = rest.pop(0) if ctx.z0_spikes else None
        saved, P = rest[: ctx.n_saved], rest[ctx.n_saved :]
        v0 = v0.expand(ctx.v0_shape)
        gstate = [torch.zeros_like(v0) if g is None else g for g in gstate]
        needs = ctx.needs_input_grad[5:]
        with torch.no_grad(), step_threads(ctx.backend, w_rec, v0):
            gc, gz0, gstate0, G = LOOPS[ctx.backend].backward(
                ctx.kind,
                gout,
                gz,
                gstate,
                saved,
                v0,
                w_rec,
                tuple(P),
                ctx.method,
                ctx.alpha,
                ctx.param_grads,
                integrator=ctx.integrator,
            )
        with torch.no_grad():
            vd = saved[0]
            zprev = (  # in g_c's dtype: triton saves a half input's voltages in float32
                recurrent_loops.spikes_before(vd, 0.0 if z0 is None else z0, P[-2]).to(gc.dtype)
                if needs[2]
                else None
            )
            gx, gw_in, gw_rec = recurrent_loops.weight_gradients(
                gc, x, zprev, needs[0], needs[1], needs[2], w_in
            )
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
        return (None, None, None, None, None, gx, gw_in, gw_rec, gz0 if needs[3] else None, *gstate0, *gparams)


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


LOOPS = {"cpp": cpp_recurrent_loops, "triton": triton_recurrent_loops, "python": recurrent_loops}


def resolve_recurrent_backend(backend: str, kind: str, x: torch.Tensor, w_in: torch.Tensor, w_rec: torch.Tensor,
                              method: str) -> str:
    """The loops that run ``backend`` (not ``eager``) for this input: ``auto`` picks ``cpp`` on CPU
    where the kernels cover the case (dense tensors, float32/float64, a built-in surrogate) and
    build, ``triton`` on CUDA where triton imports (dense tensors, a built-in surrogate), else
    ``python``, as for feed-forward layers; an explicit ``cpp`` or ``triton`` the case does not
    support raises a ValueError saying why (``triton`` with a user-registered surrogate: ``python``
    and one warning, as for feed-forward layers)."""
    if backend == "python" or backend == "auto" and x.device.type not in ("cpu", "cuda"):
        return "python"
    if any(t.layout != torch.strided for t in (x, w_in, w_rec)):
        if backend == "auto":
            return "python"
        raise ValueError(f"backend={backend!r} takes dense (strided) inputs and weights, got a "
                         f"{next(t.layout for t in (x, w_in, w_rec) if t.layout != torch.strided)} one; "
                         "use backend='python' or 'auto'.")
    return resolve_backend(backend, kind, x, method)


def integrate_recurrent(
    kind: str,
    backend: str,
    x: torch.Tensor,
    state,
    w_in: torch.Tensor,
    w_rec: torch.Tensor,
    p,
    dt: float,
):
    """Runs a recurrent ``kind`` ('adex', 'lif') population over the time dimension of
    ``x [T, B, F]`` from ``state`` (``LIFAdExState``/``LIFState``, each field ``[B, N]``):
    ``(spikes [T, B, N], final state of the type of ``state``)``, as the step function's loop."""
    check_recurrent_backend(backend)
    if backend == "eager":
        raise ValueError("integrate_recurrent runs the fused loops; the eager loop is the layer's.")
    return run_recurrent(kind, backend, x, state, w_in, w_rec, p, dt)


def run_recurrent(kind: str, backend: str, x: torch.Tensor, state, w_in: torch.Tensor, w_rec: torch.Tensor,
                  p, dt: float):
    """:func:`integrate_recurrent` for a ``backend`` checked already (the layers check theirs when it
    is set)."""
    if x.dim() != 3:
        raise ValueError(f"Recurrent layers take inputs [T, B, input_size], got {list(x.shape)}.")
    check_weights(x, w_in, w_rec, state.z.shape[-1])
    backend = resolve_recurrent_backend(backend, kind, x, w_in, w_rec, p.method)
    integrator = check_integrator(getattr(p, "integrator", "euler"))
    P = kernel_parameters(kind, p, dt)
    if backend == "cpp":  # plain numbers as tensors of the input's dtype, as the kernels take them
        P = as_kernel_parameters(kind, P, x, state.z.shape)
    z0, *rest = state
    out, *final = FusedRecurrentLoop.apply(kind, backend, p.method, float(p.alpha), integrator, x, w_in, w_rec, z0,
                                           *rest, *P)
    return out, type(state)(*final)
