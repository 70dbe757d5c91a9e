"""The one registry of the fused backends and the one resolver that picks a backend for a call.

Every backend is a :class:`~.spec.Backend` registered in :data:`REGISTRY` under the name the
layers take (``backend="cpp"``); ``eager`` is not a backend of the fused loops but the layers'
step-by-step loop, and ``auto`` is :func:`resolve`'s choice. The rule is the same for every
backend and every layer, feed-forward or recurrent:

- an explicit backend runs the case or raises a ValueError saying why (its
  :meth:`~.spec.Backend.why_not`): a user-registered surrogate on ``cpp`` or ``triton``, a dtype
  or device it does not run. It never falls back silently to another one.
- ``auto`` takes the first backend of :data:`AUTO` for the input's device that runs the case, else
  ``python``, which runs every case. A backend that covers the case but cannot run on this machine
  (the C++ library does not build) is skipped with one warning per process.
"""

from __future__ import annotations

import warnings

from snn.errors import BackendUnavailable

from .cpp import CppBackend
from .python import PythonBackend
from .spec import Backend, KernelOptions
from .triton import TritonBackend

REGISTRY: dict[str, Backend] = {
    "cpp": CppBackend(),
    "triton": TritonBackend(),
    "compile": PythonBackend(compile=True),
    "python": PythonBackend(),
}
# What ``auto`` tries first on each device type (Triton's interpreter on the CPU is for tests).
AUTO = {"cpu": ("cpp",), "cuda": ("triton",)}
FALLBACK = "python"

_warned: set[str] = set()


def resolve(backend: str, kind: str, tensors: tuple, options: KernelOptions) -> Backend:
    """The backend that runs ``backend`` (a name of :data:`REGISTRY` or ``auto``; checked by the
    caller) for neuron type ``kind`` on ``tensors`` (the input, then a recurrent layer's weights)
    with ``options``, by the rule of the module docstring."""
    if backend != "auto":
        loops = REGISTRY[backend]
        reason = loops.why_not(kind, tensors, options)
        if reason is not None:
            raise ValueError(f"backend={backend!r} cannot run this {kind} layer: {reason}. "
                             "Use backend='auto' or 'python'.")
        return loops
    for name in AUTO.get(tensors[0].device.type, ()):
        loops = REGISTRY[name]
        try:
            if loops.why_not(kind, tensors, options) is None:
                return loops
        except BackendUnavailable as error:
            if name not in _warned:
                _warned.add(name)
                warnings.warn(f"snn: {error}; using the {FALLBACK!r} backend.", stacklevel=5)
    return REGISTRY[FALLBACK]
