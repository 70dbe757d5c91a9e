"""Fused time loops for the LIFAdEx, LIF and LI layers: one autograd node per layer call.

Forward runs all T steps without autograd and saves only the pre-reset voltage of each step
(4 bytes per neuron and step in float32; the spike, the surrogate and the next step's starting
voltage follow from it); backward runs the reverse-time loop with hand-derived gradients for the
input, the initial state and every parameter. Backends:

``cpp``      OpenMP C++ (:mod:`.cpp_loops`), CPU, float32/float64, built-in surrogates
``triton``   Triton kernels (:mod:`.triton_loops`), CUDA (on CPU only under ``TRITON_INTERPRET=1``,
             for tests), float16/bfloat16/float32/float64, built-in surrogates
``compile``  the step bodies of :mod:`.torch_loops` through ``torch.compile`` (inductor: C++ on CPU,
             Triton on CUDA)
``python``   the same bodies in eager PyTorch: any device, dtype and registered surrogate
``eager``    the step-by-step autograd loop over the step functions (the reference)
``auto``     ``cpp`` on CPU when it applies and builds, ``triton`` on CUDA when triton imports and
             the surrogate is built in, else ``python``

Recurrent AdEx and LIF layers (``W_rec z[t-1]`` computed inside the loop) have ``python``,
``eager`` and ``auto`` (= ``python``): :mod:`.recurrent`.

The ``cpp`` backend keeps its large buffers for reuse once nothing refers to them
(:mod:`.buffers`); :func:`release_buffers` hands the free ones back.
"""

from __future__ import annotations

BACKENDS = ("auto", "cpp", "triton", "compile", "python", "eager")


def check_backend(backend: str) -> str:
    """``backend`` if it names a backend, else a ValueError listing them."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}.")
    return backend


RECURRENT_BACKENDS = ("auto", "python", "eager")  # recurrent layers: see .recurrent


def check_recurrent_backend(backend: str) -> str:
    """``backend`` if recurrent layers have it, else a ValueError listing those they have."""
    if backend not in RECURRENT_BACKENDS:
        raise ValueError(
            f"Recurrent layers have the backends {', '.join(RECURRENT_BACKENDS)}, got {backend!r} "
            "('cpp', 'triton' and 'compile' run feed-forward layers only)."
        )
    return backend


def integrate(kind: str, backend: str, x, state, p, dt: float):
    """Runs layer ``kind`` ('adex', 'lif', 'li') over the time dimension of ``x`` with a fused
    ``backend``: ``(outputs [T, ...], final state of the type of ``state``)``."""
    from .function import run  # imported on first use: it imports the neuron modules

    return run(kind, backend, x, state, p, dt)


def release_buffers() -> None:
    """Returns the free buffers the ``cpp`` backend keeps for reuse to the allocator (see
    :mod:`.buffers`; like ``torch.cuda.empty_cache``). Buffers still in use are not affected."""
    from .cpp_loops import BUFFERS

    BUFFERS.clear()
