"""The autograd node of the fused loops and the choice of backend (see the package docstring)."""


from __future__ import annotations

import warnings

import torch

from ..surrogate import SURROGATES
from . import check_backend, cpp_loops
from .spec import NEURONS, kernel_parameters
from .torch_loops import TorchLoops

_loops: dict[str, object] = {}


def loops(backend: str):
    """The kernel object of a concrete backend (built on first use)."""
    if backend not in _loops:
        if backend == "cpp":
            _loops[backend] = cpp_loops.CppLoops()
        elif backend == "triton":
            from .triton_loops import TritonLoops  # imports triton: only when asked for

            _loops[backend] = TritonLoops()
        else:
            _loops[backend] = TorchLoops(compile=backend == "compile")
    return _loops[backend]


_warned = False


def resolve_backend(backend: str, kind: str, x: torch.Tensor, method: str | None) -> str:
    """The concrete backend that runs ``backend`` for this input: ``auto`` picks ``cpp`` on CPU
    when the kernels cover the case and build (one warning if they cannot be built), else
    ``python``; an explicit choice the case does not support raises a ValueError."""
    global _warned
    check_backend(backend)
    if method is not None and method not in SURROGATES:
        raise ValueError(f"Unknown surrogate method {method!r}.")
    if backend == "triton" or backend == "auto" and x.device.type == "cuda":
        from .triton_loops import choose  # imports no triton itself

        return choose(backend, kind, x, method)
    cpp_ok = x.device.type == "cpu" and cpp_loops.supports(kind, x.dtype, method)
    if backend == "auto":
        if not cpp_ok:
            return "python"
        try:
            cpp_loops.load_library()
        except RuntimeError as error:
            if not _warned:
                _warned = True
                warnings.warn(f"snn: the C++ neuron kernels could not be built ({error}); using the "
                              "'python' backend (pip install 'snn[fast]' and a C++ compiler fix this).",
                              stacklevel=4)
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
    def forward(ctx, kind, backend, method, alpha, x, *tensors):
        spec = NEURONS[kind]
        n_state = len(spec.state)
        state, P = tensors[:n_state], tensors[n_state:]
        needs = ctx.needs_input_grad[4:]
        param_grads = any(needs[1 + n_state:])
        impl = loops(backend)
        with torch.no_grad():
            out, final, saved = impl.forward(kind, x, state, P, save=any(needs), save_extra=param_grads)
        ctx.kind, ctx.backend, ctx.method, ctx.alpha = kind, backend, method, alpha
        ctx.param_grads, ctx.n_saved = param_grads, len(saved)
        # The initial voltage only when backward reads it (LI with fixed parameters does not).
        ctx.v0_shape = (state[0].shape, state[0].dtype, state[0].device)
        ctx.with_v0 = spec.spiking or param_grads
        ctx.save_for_backward(*saved, *P, *([_one_value_if_uniform(state[0])] if ctx.with_v0 else []))
        return (out, *final)

    @staticmethod
    def backward(ctx, gout, *gstate):
        spec = NEURONS[ctx.kind]
        tensors = ctx.saved_tensors
        saved, P = tensors[:ctx.n_saved], tensors[ctx.n_saved:ctx.n_saved + len(spec.params)]
        if ctx.with_v0:
            v0 = tensors[-1].expand(ctx.v0_shape[0])
        else:
            shape, dtype, device = ctx.v0_shape
            v0 = torch.empty(shape, dtype=dtype, device=device)
        gstate = [torch.zeros_like(v0) if g is None else g for g in gstate]
        with torch.no_grad():
            gx, gstate0, G = loops(ctx.backend).backward(
                ctx.kind, gout, gstate, list(saved), v0, tuple(P), ctx.method, ctx.alpha, ctx.param_grads)
        n_state = len(spec.state)
        needs = ctx.needs_input_grad[4:]
        gparams = [None] * len(P)
        if G is not None:
            gparams = [g.sum_to_size(p.shape) if need else None
                       for g, p, need in zip(G, P, needs[1 + n_state:], strict=True)]
        gstate0 = [g if need else None for g, need in zip(gstate0, needs[1:1 + n_state], strict=True)]
        return (None, None, None, None, gx if needs[0] else None, *gstate0, *gparams)


def run(kind: str, backend: str, x: torch.Tensor, state, p, dt: float):
    """:func:`snn.neurons.fused.integrate`."""
    method, alpha = getattr(p, "method", None), getattr(p, "alpha", 0.0)
    backend = resolve_backend(backend, kind, x, method)
    P = kernel_parameters(kind, p, dt)
    out, *final = FusedTimeLoop.apply(kind, backend, method, float(alpha), x, *state, *P)
    return out, type(state)(*final)
