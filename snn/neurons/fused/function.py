"""The autograd node of the fused loops and the choice of backend (see the package docstring)."""

from __future__ import annotations

import warnings

import torch

from ..constants import broadcasts_to, check_backend, check_integrator
from ..surrogate import SURROGATES
from . import cpp_loops, triton_loops
from .spec import NEURON_SPECS, kernel_parameters
from .torch_loops import TorchLoops

_loops: dict[str, object] = {}


def loops(backend: str):
    """The kernel object of a concrete backend (built on first use)."""
    if backend not in _loops:
        if backend == "cpp":
            _loops[backend] = cpp_loops.CppLoops()
        elif backend == "triton":
            _loops[backend] = triton_loops.TritonLoops()  # imports triton when it first launches
        else:
            _loops[backend] = TorchLoops(compile=backend == "compile")
    return _loops[backend]


_warned = False


def resolve_backend(backend: str, kind: str, x: torch.Tensor, method: str | None) -> str:
    """The concrete backend that runs ``backend`` for this input: ``auto`` picks ``cpp`` on CPU
    when the kernels cover the case and build (one warning if they cannot be built), else
    ``python``; an explicit choice the case does not support raises a ValueError. ``backend`` is
    one of :data:`~snn.neurons.constants.BACKENDS` (checked by the layer or :func:`integrate`)."""
    global _warned
    if method is not None and method not in SURROGATES:
        raise ValueError(f"Unknown surrogate method {method!r}.")
    if backend == "triton" or backend == "auto" and x.device.type == "cuda":
        return triton_loops.choose(backend, kind, x, method)  # imports no triton
    cpp_ok = x.device.type == "cpu" and cpp_loops.supports(kind, x.dtype, method)
    if backend == "auto":
        if not cpp_ok:
            return "python"
        try:
            cpp_loops.load_library()
        except RuntimeError as error:
            if not _warned:
                _warned = True
                warnings.warn(f"snn: {error}; using the 'python' backend.", stacklevel=4)
            return "python"
        return "cpp"
    if backend == "cpp" and not cpp_ok:
        raise ValueError(
            f"backend='cpp' runs on CPU in float32/float64 with the built-in surrogates "
            f"{sorted(cpp_loops.NATIVE_SURROGATES)} (AdEx also needs torch with MKL); got a "
            f"{x.dtype} input on {x.device} with method={method!r}. Use backend='python' or 'auto'."
        )
    return backend


def _one_value_if_uniform(v0: torch.Tensor) -> torch.Tensor:
    """``v0`` itself, or its one value when it is a broadcast of a single value (the rest state
    ``v_leak.expand(...)`` a layer starts from by default): the saved tensors then hold 4 bytes
    per neuron and step and nothing per neuron. Backward expands it back."""
    if v0.numel() > 1 and not any(v0.stride()):
        return v0.as_strided((1,) * v0.dim(), (1,) * v0.dim())
    return v0


class FusedTimeLoop(torch.autograd.Function):
    """``(x [T, ...], *state, *kernel parameters) -> (outputs [T, ...], *final state)``."""

    @staticmethod
    def forward(ctx, kind, backend, method, alpha, integrator, x, *tensors):
        spec = NEURON_SPECS[kind]
        n_state = len(spec.state)
        state, P = tensors[:n_state], tensors[n_state:]
        needs = ctx.needs_input_grad[5:]
        param_grads = any(needs[1 + n_state:])
        impl = loops(backend)
        with torch.no_grad():
            out, final, saved = impl.forward(kind, x, state, P, save=any(needs), save_extra=param_grads,
                                             integrator=integrator)
        ctx.kind, ctx.backend, ctx.method, ctx.alpha, ctx.integrator = kind, backend, method, alpha, integrator
        ctx.param_grads, ctx.n_saved = param_grads, len(saved)
        # The initial voltage only when backward reads it (LI with fixed parameters does not).
        ctx.v0_shape = (state[0].shape, state[0].dtype, state[0].device)
        ctx.with_v0 = spec.spiking or param_grads
        ctx.save_for_backward(*saved, *P, *([_one_value_if_uniform(state[0])] if ctx.with_v0 else []))
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
            gx, gstate0, G = loops(ctx.backend).backward(
                ctx.kind, gout, gstate, list(saved), v0, tuple(P), ctx.method, ctx.alpha, ctx.param_grads,
                integrator=ctx.integrator)
        n_state = len(spec.state)
        needs = ctx.needs_input_grad[5:]
        gparams = [None] * len(P)
        if G is not None:
            gparams = [g.sum_to_size(p.shape) if need else None
                       for g, p, need in zip(G, P, needs[1 + n_state:], strict=True)]
        gstate0 = [g if need else None for g, need in zip(gstate0, needs[1:1 + n_state], strict=True)]
        return (None, None, None, None, None, gx if needs[0] else None, *gstate0, *gparams)


def check_arguments(kind: str, x, state) -> torch.Size:
    """Checks what every backend needs, so that all of them accept or refuse the same arguments
    (the layers check first, with their own names; these are for direct callers of
    :func:`snn.neurons.fused.integrate`): ``x`` a dense floating-point ``[T, ...]`` tensor, ``state``
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


def integrate(kind: str, backend: str, x, state, p, dt: float):
    """Runs layer ``kind`` ('adex', 'lif', 'li') over the time dimension of ``x`` with a fused
    ``backend``: ``(outputs [T, ...], final state of the type of ``state``)``. AdEx's parameters
    choose its integrator (``p.integrator``)."""
    return run(kind, check_backend(backend), x, state, p, dt)


def run(kind: str, backend: str, x: torch.Tensor, state, p, dt: float):
    """:func:`integrate` for a ``backend`` checked already (a layer checks its own when it is
    set)."""
    neuron_shape = check_arguments(kind, x, state)
    method, alpha = getattr(p, "method", None), getattr(p, "alpha", 0.0)
    integrator = check_integrator(getattr(p, "integrator", "euler"))
    backend = resolve_backend(backend, kind, x, method)
    P = as_kernel_parameters(kind, kernel_parameters(kind, p, dt), x, neuron_shape)
    out, *final = FusedTimeLoop.apply(kind, backend, method, float(alpha), integrator, x, *state, *P)
    return out, type(state)(*final)
