"""The autograd node of the feed-forward fused loops (see the package docstring): one node per layer
call, whichever backend runs it (:mod:`~snn.neurons.fused.registry` picks the backend)."""

from __future__ import annotations

import torch

from ..constants import broadcasts_to, check_backend
from .registry import resolve
from .spec import NEURON_SPECS, Backend, KernelOptions, kernel_parameters


def one_value_if_uniform(v0: torch.Tensor) -> torch.Tensor:
    """``v0`` itself, or its one value when it is a broadcast of a single value (the rest state
    ``v_leak.expand(...)`` a layer starts from by default): the saved tensors then hold 4 bytes
    per neuron and step and nothing per neuron. Backward expands it back."""
    if v0.numel() > 1 and not any(v0.stride()):
        return v0.as_strided((1,) * v0.dim(), (1,) * v0.dim())
    return v0


class FusedTimeLoop(torch.autograd.Function):
    """``(x [T, ...], *state, *kernel parameters) -> (outputs [T, ...], *final state)``."""

    @staticmethod
    def forward(ctx, kind: str, loops: Backend, options: KernelOptions, x, *tensors):
        spec = NEURON_SPECS[kind]
        n_state = len(spec.state)
        state, P = tensors[:n_state], tensors[n_state:]
        needs = ctx.needs_input_grad[3:]
        param_grads = any(needs[1 + n_state:])
        with torch.no_grad():
            out, final, saved = loops.forward(kind, x, state, P, any(needs), param_grads, options)
        ctx.kind, ctx.loops, ctx.options = kind, loops, options
        ctx.param_grads, ctx.n_saved = param_grads, len(saved)
        # The initial voltage only when backward reads it (LI with fixed parameters does not).
        ctx.v0_shape = (state[0].shape, state[0].dtype, state[0].device)
        ctx.with_v0 = spec.spiking or param_grads
        ctx.save_for_backward(*saved, *P, *([one_value_if_uniform(state[0])] if ctx.with_v0 else []))
        ctx.saved_dtypes = [t.dtype for t in saved]  # float32 for a half input on triton, else x's
        return (out, *final)

    @staticmethod
    def backward(ctx, gout, *gstate):
        spec = NEURON_SPECS[ctx.kind]
        tensors = ctx.saved_tensors
        _, x_dtype, device = ctx.v0_shape
        dtypes = ctx.saved_dtypes + [x_dtype] * (len(tensors) - len(ctx.saved_dtypes))
        on_cpu = device.type == "cpu"
        for t, dtype in zip(tensors, dtypes, strict=True):  # back through any saved-tensor hooks:
            if t.dtype != dtype or not (on_cpu and t.is_cpu) and t.device != device:  # as saved, or an error
                raise ValueError(
                    f"The fused {ctx.kind} loop saved {dtype} tensors on {device} for backward and got a "
                    f"{t.dtype} tensor on {t.device} back: a saved_tensors_hooks unpack hook must return "
                    "each tensor in the dtype and on the device it was packed in.")
        saved, P = tensors[:ctx.n_saved], tensors[ctx.n_saved:ctx.n_saved + len(spec.params)]
        if ctx.with_v0:
            v0 = tensors[-1].expand(ctx.v0_shape[0])
        else:
            shape, dtype, device = ctx.v0_shape
            v0 = torch.empty(shape, dtype=dtype, device=device)
        gstate = [torch.zeros_like(v0) if g is None else g for g in gstate]
        with torch.no_grad():
            gx, gstate0, G = ctx.loops.backward(ctx.kind, gout, gstate, list(saved), v0, tuple(P), ctx.options,
                                                ctx.param_grads)
        n_state = len(spec.state)
        needs = ctx.needs_input_grad[3:]
        gparams = [None] * len(P)
        if G is not None:
            gparams = [g.sum_to_size(p.shape) if need else None
                       for g, p, need in zip(G, P, needs[1 + n_state:], strict=True)]
        gstate0 = [g if need else None for g, need in zip(gstate0, needs[1:1 + n_state], strict=True)]
        return (None, None, None, gx if needs[0] else None, *gstate0, *gparams)


def check_arguments(kind: str, x, state) -> torch.Size:
    """Checks what every backend needs, so that all of them accept or refuse the same arguments
    (the layers check these with their own names; these checks are for direct callers of
    :func:`_integrate`): ``x`` a dense floating-point ``[T, ...]`` tensor, ``state``
    a NamedTuple of the neuron's fields, each shaped like one step of ``x``, of its dtype and on its
    device. Returns the neuron shape."""
    spec = NEURON_SPECS.get(kind)
    if spec is None:
        raise ValueError(f"Unknown neuron kind {kind!r}; valid kinds: {', '.join(NEURON_SPECS)}.")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.layout != torch.strided or x.dim() < 1:
        got = f"a {x.dtype} tensor of shape {list(x.shape)} ({x.layout})" if isinstance(x, torch.Tensor) else (
            f"a {type(x).__name__}")
        raise ValueError(f"The fused {kind} loop expects a dense floating-point input [T, ...], got {got}.")
    fields = getattr(state, "_fields", None)
    if fields is None or tuple(fields) != spec.state:
        raise ValueError(f"The fused {kind} loop expects a state NamedTuple with the fields {spec.state}, "
                         f"got {type(state).__name__}.")
    neuron_shape = x.shape[1:]
    for name, value in zip(fields, state, strict=True):
        if not isinstance(value, torch.Tensor) or value.layout != torch.strided or value.shape != neuron_shape:
            got = f"{list(value.shape)} ({value.layout})" if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"state.{name} must be a dense tensor of shape {list(neuron_shape)} (the "
                             f"input without its time dimension), got {got}.")
        if value.dtype != x.dtype or not (value.is_cpu and x.is_cpu) and value.device != x.device:
            raise ValueError(f"state.{name} is {value.dtype} on {value.device} but the input is {x.dtype} on "
                             f"{x.device}; convert the state with .to(x).")
    return neuron_shape


def as_kernel_parameters(kind: str, P: tuple, x: torch.Tensor, neuron_shape: torch.Size) -> tuple:
    """The kernel parameters as tensors of the input's dtype (numbers become tensors), each one
    value or broadcasting to the neuron shape, on the input's device (else a ValueError)."""
    converted = []
    dtype, on_cpu = x.dtype, x.is_cpu
    for name, value in zip(NEURON_SPECS[kind].params, P, strict=True):
        if (isinstance(value, torch.Tensor) and value.dtype == dtype and value.layout == torch.strided
                and (on_cpu and value.is_cpu or value.device == x.device)
                and (value.dim() == 0 or broadcasts_to(value.shape, neuron_shape))):
            converted.append(value)  # what layers pass: nothing to do
            continue
        if not isinstance(value, torch.Tensor):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f"Neuron parameter {name!r} must be a number or a tensor, got {type(value).__name__}.")
            value = torch.tensor(float(value), dtype=x.dtype, device=x.device)
        if value.device != x.device or value.layout != torch.strided or value.is_complex():
            raise ValueError(f"Neuron parameter {name!r} is a {value.dtype} tensor on {value.device} "
                             f"({value.layout}); the input is {x.dtype} on {x.device}: move it with .to(x.device).")
        if not broadcasts_to(value.shape, neuron_shape):
            raise ValueError(f"Neuron parameter {name!r} of shape {list(value.shape)} does not broadcast to the "
                             f"neuron shape {list(neuron_shape)}.")
        converted.append(value if value.dtype == x.dtype else value.to(x.dtype))
    return tuple(converted)


def run(kind: str, backend: str, x: torch.Tensor, state, p, dt: float, options: KernelOptions):
    """The layers' call: runs neuron type ``kind`` ('adex', 'lif', 'li') over the time dimension of
    ``x`` on ``backend`` (one of :data:`~snn.neurons.constants.BACKENDS` but ``eager``): ``(outputs
    [T, ...], final state of the type of ``state``)``. The layer has checked its input, state,
    parameters (``p``, of ``x``'s dtype and device), backend and ``options`` (built from ``p``)."""
    loops = resolve(backend, kind, (x,), options)
    out, *final = FusedTimeLoop.apply(kind, loops, options, x, *state, *kernel_parameters(kind, p, dt))
    return out, type(state)(*final)


def _integrate(kind: str, backend: str, x, state, p, dt: float):
    """:func:`run` with the checks a layer makes first, for tests that call the loops without a
    layer in front: any ``state`` NamedTuple and parameter values (numbers, tensors of another
    dtype) are checked and converted, or refused with a ValueError that names them."""
    check_backend(backend)
    if backend == "eager":
        raise ValueError("_integrate runs the fused loops; the eager loop is the layer's.")
    neuron_shape = check_arguments(kind, x, state)
    options = KernelOptions.of(p)
    loops = resolve(backend, kind, (x,), options)
    P = as_kernel_parameters(kind, kernel_parameters(kind, p, dt), x, neuron_shape)
    out, *final = FusedTimeLoop.apply(kind, loops, options, x, *state, *P)
    return out, type(state)(*final)
