"""The feed-forward loops of the ``triton`` backend: one Triton kernel per direction that runs all T
steps of a block of neurons (:mod:`~snn.neurons.fused.triton.kernels`).

Runs on CUDA GPUs, compiled; on the CPU only when ``TRITON_INTERPRET=1`` is set, through Triton's
interpreter (numpy, slow), which is how the tests pin it to the eager loop without a GPU. The
two are separate loads of :mod:`~snn.neurons.fused.triton.kernels` (see :func:`kernels`).
Inputs may be float16, bfloat16, float32 or float64; state and accumulation are float32 for the
first three and float64 for float64. The layer's final state is returned in the input's dtype,
and what forward saves for backward (pre-reset voltages, and with learnable parameters ``i + x``,
``a`` or LI's voltages) stays in the compute dtype, so backward recomputes each spike exactly as
forward decided it. The built-in surrogates run natively (a user-registered one: see the
backend's ``why_not``).

Nothing here imports triton until a kernel is needed (the imports inside functions): triton is an
optional dependency, ``snn.neurons`` depends on torch alone, and importing triton takes seconds.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import sys
import threading

import torch

from ...constants import EXP_ARGUMENT_MAX
from ..spec import NATIVE_SURROGATES, NEURON_SPECS, KernelOptions, saved_tensors

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Neurons per program and warps per program on a GPU: one neuron per thread, so that many
# programs are resident per SM to hide each step's memory latency (not tuned on a GPU yet).
BLOCK = 128
NUM_WARPS = 4
# Neurons per program under the interpreter: one numpy op covers a whole block.
INTERPRETER_BLOCK = 1024

KERNELS_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels.py")

_lock = threading.Lock()
_kernels: dict[bool, object] = {}


def interpreter_requested() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for Triton's interpreter (as triton.knobs reads it)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


# The oldest Triton the kernels run on: triton.knobs (3.4) sets the interpreter per load of the
# kernels (kernels()); tuples of tensors as kernel arguments (3.3) carry the states.
MINIMUM_TRITON = (3, 4)


def version_tuple(version: str) -> tuple[int, ...]:
    """``"3.4.0+git1234"`` -> ``(3, 4, 0)``: the leading numbers of a version string (``0rc1``: 0)."""
    numbers = []
    for part in version.split("+")[0].split("."):
        digits = re.match(r"\d*", part).group()
        if not digits:
            break
        numbers.append(int(digits))
        if digits != part:  # a pre-release tag: the number, then stop
            break
    return tuple(numbers)


def triton_available() -> str | None:
    """None if a Triton the kernels run on imports, else why not (one sentence)."""
    try:
        import triton  # lazy: see the module docstring
    except Exception as error:  # ImportError, or a broken install failing in its own import
        return f"triton cannot be imported ({type(error).__name__}: {error}); pip install triton"
    version = getattr(triton, "__version__", "unknown")
    if version_tuple(version) < MINIMUM_TRITON or not hasattr(getattr(triton, "knobs", None), "runtime"):
        minimum = ".".join(map(str, MINIMUM_TRITON))
        return (f"triton {version} is older than {minimum}, which the kernels need (triton.knobs); "
                f"pip install 'triton>={minimum}'")
    return None


def kernels(interpreted: bool):
    """:mod:`~snn.neurons.fused.triton.kernels` compiled for the GPU or run by Triton's interpreter, loaded on first
    use. ``triton.jit`` makes that choice when it decorates a function, so each is its own module
    object, loaded from the same file with the interpreter knob set for the duration: a process
    can run CPU tensors interpreted and CUDA tensors compiled, and nothing else sees the knob."""
    with _lock:
        if interpreted not in _kernels:
            import triton  # lazy: see the module docstring

            name = f"{__package__}.kernels" + ("_interpreted" if interpreted else "")
            spec = importlib.util.spec_from_file_location(name, KERNELS_SOURCE)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # inspect.getsource (the JIT, the interpreter) looks here
            with triton.knobs.runtime.scope():
                triton.knobs.runtime.interpret = interpreted
                spec.loader.exec_module(module)
            _kernels[interpreted] = module
        return _kernels[interpreted]


def why_not(x: torch.Tensor) -> str | None:
    """Why the kernels cannot run on ``x``'s device and dtype, or None."""
    if x.dtype not in DTYPES:
        return f"they run float16, bfloat16, float32 and float64 inputs, got {x.dtype}"
    if x.device.type not in ("cuda", "cpu"):
        return f"they run on CUDA GPUs, got a tensor on {x.device}"
    reason = triton_available()
    if reason is not None:
        return reason
    if x.device.type == "cpu" and not interpreter_requested():
        return (
            "on the CPU they run only under Triton's interpreter, slowly, for tests: set the "
            "environment variable TRITON_INTERPRET=1"
        )
    return None


def _rows(t: torch.Tensor, steps: int, M: int) -> tuple[torch.Tensor, int, int]:
    """``t [T, ...]`` as ``(tensor, time stride, neuron stride)`` of a ``[T, M]`` view, the neuron
    stride 0 or 1: no copy for contiguous steps, an input broadcast over time or one value per
    step (the gradient of ``outputs.sum()``); a contiguous copy otherwise."""
    try:
        rows = t.view(steps, M)
    except RuntimeError:
        rows = t.contiguous().view(steps, M)
    if M > 1 and rows.stride(1) not in (0, 1):
        rows = rows.contiguous()
    return rows, rows.stride(0), rows.stride(1) if M > 1 else 1


def parameters(P, neuron_shape, cdt, device) -> tuple[torch.Tensor, int, int]:
    """The kernel parameters (tensors or numbers) as one ``[K, 1]`` (all single values) or
    ``[K, M]`` tensor of the compute dtype: ``(tensor, parameter stride, neuron stride)``."""
    M = neuron_shape.numel()
    P = [
        torch.as_tensor(p.detach() if isinstance(p, torch.Tensor) else p, device=device) for p in P
    ]
    if all(p.numel() == 1 for p in P):
        stacked = torch.stack([p.reshape(()) for p in P]).to(cdt).reshape(len(P), 1)
        return stacked, 1, 0
    stacked = torch.stack([p.expand(neuron_shape).reshape(M) for p in P]).to(cdt)
    return stacked, M, 1


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def surrogate_constants(alpha: float, cdt: torch.dtype, device) -> torch.Tensor:
    """What the kernels' surrogates read: ``alpha``, ``pi alpha / 2`` and ``alpha / 2``."""
    return torch.tensor([alpha, 0.5 * math.pi * alpha, 0.5 * alpha], dtype=cdt, device=device)


class TritonLoops:
    """The Triton kernels behind the feed-forward half of :class:`~snn.neurons.fused.spec.Backend`."""

    def __init__(self, block: int | None = None):
        self.block = block  # neurons per program; None: BLOCK on a GPU, INTERPRETER_BLOCK on the CPU

    def launch(self, direction: str, kind: str, like: torch.Tensor, M: int, *args, symplectic=False, **constants):
        """Runs kernel ``direction`` ('forward' or 'backward') of neuron type ``kind`` over the M
        neurons, compiled on CUDA, interpreted on the CPU; ``symplectic``: AdEx's integrator. The spec of
        ``kind`` gives the kernel's ``KIND`` and ``K``, the number of parameters."""
        self.bind(direction, kind, like, M, symplectic=symplectic, **constants)(*args)

    def bind(self, direction: str, kind: str, like: torch.Tensor, M: int, symplectic=False, **constants):
        """:meth:`launch` with everything but the tensor arguments fixed once: a function of those
        arguments, for loops that launch the same kernel every step (the recurrent ones), so that a
        step costs the launch and not the lookups around it."""
        import triton.language as tl  # lazy: see the module docstring

        interpreted = like.device.type == "cpu"
        k = kernels(interpreted)
        block = self.block or (INTERPRETER_BLOCK if interpreted else BLOCK)
        constants.update(
            KIND=kind,
            K=len(NEURON_SPECS[kind].params),
            CDT=tl.float64 if constants["CDT"] == torch.float64 else tl.float32,
            PRECISE=not k.INTERPRETED,  # libdevice's exp where compiled (see triton_kernels)
            EXP_MAX=EXP_ARGUMENT_MAX,
            SYMPLECTIC=kind == "adex" and symplectic,
        )
        kernel = getattr(k, direction)[((M + block - 1) // block,)]
        constants.update(BLOCK=block, num_warps=NUM_WARPS, enable_fp_fusion=False)
        return lambda *args: kernel(*args, **constants)

    def forward(self, kind, x, state, P, save, save_extra, options: KernelOptions):
        """Returns ``(outputs [T, ...], final state, saved [T, ...] tensors)``."""
        spec = NEURON_SPECS[kind]
        steps, neuron_shape = x.shape[0], x.shape[1:]
        M = neuron_shape.numel()
        cdt = compute_dtype(x.dtype)
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        final = tuple(torch.empty(neuron_shape, dtype=x.dtype, device=x.device) for _ in spec.state)
        # LI with learnable parameters saves its voltages (the next step's entering one) too.
        save_vd = save and spec.spiking or kind == "li" and save_extra
        vd = torch.empty(x.shape, dtype=cdt, device=x.device) if save_vd else None
        extra = [
            torch.empty(x.shape, dtype=cdt, device=x.device)
            for _ in range(spec.extra if save_extra else 0)
        ]
        if M == 0 or steps == 0:
            final = tuple(s.detach().clone() for s in state)  # nothing to run
        else:
            xr, x_ts, x_ns = _rows(x, steps, M)
            state = tuple(s.detach().contiguous() for s in state)
            params, P_ks, P_ns = parameters(P, neuron_shape, cdt, x.device)
            # out: a valid pointer for the arguments that a disabled branch never touches
            self.launch("forward", kind, x, M, xr, x_ts, x_ns, state, final, out, out if vd is None else vd,
                        tuple(extra) or (out,) * spec.extra, params, P_ks, P_ns, steps, M,
                        symplectic=options.symplectic, CDT=cdt, SAVE_VD=vd is not None, SAVE_EXTRA=bool(extra))
        if kind == "li":  # its outputs to save are the voltages in the compute dtype
            return out, final, saved_tensors(kind, vd, None, extra, save_extra)
        return out, final, saved_tensors(kind, out, vd, extra, save_extra)

    def backward(self, kind, gout, gstate, saved, v0, P, options: KernelOptions, param_grads):
        """Returns ``(input gradient [T, ...], initial-state gradients, per-neuron parameter
        gradients [M] in the compute dtype, or None)``; ``gout`` may be None."""
        spec = NEURON_SPECS[kind]
        neuron_shape = v0.shape
        M = neuron_shape.numel()
        steps = gout.shape[0] if gout is not None else saved[0].shape[0]
        cdt = compute_dtype(v0.dtype)
        gx = torch.empty((steps,) + tuple(neuron_shape), dtype=v0.dtype, device=v0.device)
        g0 = tuple(torch.empty(neuron_shape, dtype=v0.dtype, device=v0.device) for _ in spec.state)
        G = torch.zeros((len(P), M), dtype=cdt, device=v0.device) if param_grads else None
        if M == 0 or steps == 0:
            g0 = tuple(g.detach().clone() for g in gstate)
        else:
            if gout is not None:
                gr, g_ts, g_ns = _rows(gout, steps, M)
            else:
                gr, g_ts, g_ns = gx, 0, 0  # never read (HAS_GOUT=False)
            gstate = tuple(g.detach().contiguous() for g in gstate)
            params, P_ks, P_ns = parameters(P, neuron_shape, cdt, v0.device)
            if spec.spiking:
                vd, extra, consts = saved[0], saved[1:], surrogate_constants(options.alpha, cdt, v0.device)
            else:  # LI: the extras, then its voltages, with param_grads only; no surrogate (gx: never read)
                vd, extra, consts = (saved[-1], saved[:-1], gx) if param_grads else (gx, [], gx)
            self.launch("backward", kind, v0, M, gr, g_ts, g_ns, gstate, g0, vd, v0.detach().contiguous(),
                        tuple(extra) if param_grads else (vd,) * spec.extra, params, P_ks, P_ns, consts, gx,
                        gx if G is None else G, steps, 0, M,  # T_STOP = 0: all steps
                        symplectic=options.symplectic, CDT=cdt, HAS_GOUT=gout is not None, PARAMS=param_grads,
                        METHOD=NATIVE_SURROGATES[options.method] if spec.spiking else 0)
        return gx, g0, None if G is None else [g.view(neuron_shape) for g in G]
