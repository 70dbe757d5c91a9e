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

from ..constants import BACKENDS, RECURRENT_BACKENDS, check_backend, check_recurrent_backend
from .cpp_loops import BUFFERS
from .function import integrate

__all__ = ["BACKENDS", "RECURRENT_BACKENDS", "check_backend", "check_recurrent_backend",
           "integrate", "release_buffers"]


def release_buffers() -> None:
    """Returns the free buffers the ``cpp`` backend keeps for reuse to the allocator (see
    :mod:`.buffers`; like ``torch.cuda.empty_cache``). Buffers still in use are not affected."""
    BUFFERS.clear()
