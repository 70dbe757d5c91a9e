"""The ``cpp`` backend: OpenMP C++ time loops (``cpu_kernels.cpp``), built once per machine.

The library is compiled with ``torch.utils.cpp_extension.load`` into the torch extensions
directory (``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), which caches it across
processes; the source includes no torch headers, so a cold build takes a few seconds. Entry points
are plain C functions called through ``ctypes`` on the tensors' memory.

The instruction set is the one torch's own CPU kernels were dispatched to on this machine
(``torch.backends.cpu.get_cpu_capability()``: AVX512 or AVX2 on x86-64), named in the build's
directory, so a cache shared by machines of different capabilities never loads a build that uses
instructions a CPU lacks (``-march=native`` could: two AVX512 CPUs differ in their extensions).
``-ffp-contract=off`` keeps every multiply and add rounded separately, as in eager PyTorch; the
AdEx exponential is MKL's ``vmsExp``/``vmdExp``, which is what ``torch.exp`` runs on CPU builds of
torch with MKL (checked by :func:`supports`), so the results are bit-identical to the step loop.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

import torch

from ..surrogate import SURROGATES
from .buffers import BufferPool
from .spec import NEURONS, saved_tensors

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_kernels.cpp")
# The surrogates the kernels implement natively, by their index in cpu_kernels.cpp.
NATIVE_SURROGATES = {"super": 0, "triangle": 1, "sigmoid": 2, "atan": 3, "tanh": 4, "heaviside": 5}
CFLAGS = ["-O3", "-ffp-contract=off", "-fopenmp", "-fno-math-errno"]
# --no-as-needed: every MKL symbol the kernels use is weak (see cpu_kernels.cpp), and a linker
# that drops libraries only weakly referenced would leave them all unresolved.
LDFLAGS = ["-fopenmp", "-Wl,--no-as-needed"] if platform.system() == "Linux" else ["-fopenmp"]
# torch's requirements for each capability (aten/src/ATen/native/DispatchStub.cpp): what it runs is
# what we may use. Other capabilities and architectures build for the compiler's baseline.
ISA_FLAGS = {
    "AVX512": ["-mavx2", "-mfma", "-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq"],
    "AVX2": ["-mavx2", "-mfma"],
}
# Buffers from this size on are advised onto transparent huge pages before their first write.
HUGE_PAGE_BYTES = 4 << 20

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_error: str | None = None


def load_library() -> ctypes.CDLL:
    """Builds (first time on this machine) and loads the kernels; raises RuntimeError if impossible."""
    global _library, _error
    with _lock:
        if _library is not None:
            return _library
        if _error is not None:
            raise RuntimeError(_error)
        try:
            from torch.utils import cpp_extension

            capability = torch.backends.cpu.get_cpu_capability()
            isa = ISA_FLAGS.get(capability, []) if platform.machine().lower() in ("x86_64", "amd64") else []
            # The capability in the name: a cache shared by different CPUs never mixes builds.
            name = f"snn_fused_cpu_{capability.lower() if isa else 'baseline'}"
            path = cpp_extension.load(name=name, sources=[SOURCE], extra_cflags=CFLAGS + isa,
                                      extra_ldflags=LDFLAGS, is_python_module=False, verbose=False)
            _library = ctypes.CDLL(path)
            _library.advise_huge_pages.argtypes = [ctypes.c_void_p, ctypes.c_int64]
            _library.advise_huge_pages.restype = None
            _library.vml_available.restype = ctypes.c_int
        except Exception as error:  # a missing compiler or ninja, a failed build or load
            _error = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"
            raise RuntimeError(_error) from error
        return _library


def supports(kind: str, dtype: torch.dtype, method: str | None) -> bool:
    """Whether the kernels cover this case. The AdEx exponential must be torch.exp's own, MKL's
    VML (the sigmoid and tanh surrogates use it too): those cases need a torch with MKL whose VML
    functions the built library found (they are weak symbols, so LIF and LI run without them)."""
    if dtype not in (torch.float32, torch.float64):
        return False
    if method is not None and (method not in NATIVE_SURROGATES or SURROGATES.get(method) is not _BUILTIN[method]):
        return False  # a user-registered (or overwritten) surrogate
    if kind != "adex" and method not in ("sigmoid", "tanh"):
        return True
    if not torch.backends.mkl.is_available():
        return False
    try:
        return bool(load_library().vml_available())
    except RuntimeError:
        return True  # no library at all: resolve_backend reports that (or falls back) itself


_BUILTIN = dict(SURROGATES)  # the registry as shipped, to detect overwritten built-in names


def _ptr(t: torch.Tensor | None):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _rows(t: torch.Tensor, steps: int, M: int) -> tuple[torch.Tensor, int, int]:
    """``t [T, ...]`` as ``(tensor, time stride, neuron stride)`` of a ``[T, M]`` view: no copy when
    the neurons of a step are contiguous (an input broadcast over time included) or one value (the
    gradient of ``outputs.sum()``); a contiguous copy otherwise."""
    try:
        rows = t.view(steps, M)
    except RuntimeError:
        rows = None
    if rows is not None and (M == 1 or rows.stride(1) in (0, 1)):
        return rows, rows.stride(0), 1 if M == 1 else rows.stride(1)
    return t.contiguous(), M, 1


def _advise_huge_pages(buffer: torch.Tensor) -> None:
    """Large fresh buffers on huge pages: one page fault per 2 MiB instead of per 4 KiB."""
    nbytes = buffer.numel() * buffer.element_size()
    if nbytes >= HUGE_PAGE_BYTES:
        load_library().advise_huge_pages(buffer.data_ptr(), nbytes)


# The kernels' large output, saved and gradient buffers, shared by all layers of the process.
BUFFERS = BufferPool(on_new=_advise_huge_pages)


class CppLoops:
    """The C++ kernels behind the interface of :class:`~snn.neurons.fused.torch_loops.TorchLoops`."""

    def __init__(self):
        self.lib = load_library()

    @staticmethod
    def _empty(shape, like: torch.Tensor) -> torch.Tensor:
        """A buffer for the kernels to fill (reused from earlier calls when free, see buffers.py)."""
        return BUFFERS.empty(shape, like.dtype, like.device)

    def _function(self, name: str, dtype: torch.dtype):
        return getattr(self.lib, f"{name}_{'f32' if dtype == torch.float32 else 'f64'}")

    @staticmethod
    def _params(P, neuron_shape):
        """Pointer and per-neuron flag arrays; ``keep`` holds the tensors alive during the call."""
        keep = []
        for p in P:
            p = p.detach()
            keep.append(p.reshape(1).contiguous() if p.numel() == 1 else p.expand(neuron_shape).contiguous())
        ptrs = (ctypes.c_void_p * len(keep))(*[t.data_ptr() for t in keep])
        flags = (ctypes.c_int64 * len(keep))(*[int(t.numel() != 1) for t in keep])
        return keep, ptrs, flags

    def forward(self, kind, x, state, P, save, save_extra):
        spec = NEURONS[kind]
        steps, neuron_shape = x.shape[0], x.shape[1:]
        M = neuron_shape.numel()
        xr, x_ts, x_ns = _rows(x, steps, M)
        state = [s.detach().contiguous().clone() for s in state]  # updated in place to the final state
        keep, ptrs, flags = self._params(P, neuron_shape)
        out = self._empty(x.shape, x)
        vd = self._empty(x.shape, x) if save and spec.spiking else None
        extra = [self._empty(x.shape, x) for _ in range(spec.extra if save_extra else 0)]
        args = [ctypes.c_int64(steps), ctypes.c_int64(M), _ptr(xr), ctypes.c_int64(x_ts), ctypes.c_int64(x_ns),
                *map(_ptr, state), ptrs, flags, _ptr(out)]
        if spec.spiking:
            args.append(_ptr(vd))
        args += [_ptr(e) for e in extra] or [None] * spec.extra
        self._function(f"{kind}_forward", x.dtype)(*args, ctypes.c_int(torch.get_num_threads()))
        del keep
        return out, tuple(state), saved_tensors(kind, out, vd, extra, save_extra)

    def backward(self, kind, gout, gstate, saved, v0, P, method, alpha, param_grads):
        spec = NEURONS[kind]
        neuron_shape = v0.shape
        M = neuron_shape.numel()
        steps = gout.shape[0] if gout is not None else saved[0].shape[0]
        g_ts, g_ns = M, 1
        if gout is not None:
            gout, g_ts, g_ns = _rows(gout, steps, M)
        gstate = [g.contiguous().clone() for g in gstate]  # in: final-state grads; out: initial-state
        keep, ptrs, flags = self._params(P, neuron_shape)
        gx = self._empty((steps,) + tuple(neuron_shape), v0)
        gp = v0.new_empty((len(P), M)) if param_grads else None
        v0 = v0.detach().contiguous()
        args = [ctypes.c_int64(steps), ctypes.c_int64(M), _ptr(gout), ctypes.c_int64(g_ts), ctypes.c_int64(g_ns),
                *map(_ptr, gstate)]
        if kind == "li":
            outs, ij = (saved[1], saved[0]) if param_grads else (None, None)
            args += [_ptr(outs), _ptr(v0), _ptr(ij), ptrs, flags]
        else:
            extra = saved[1:] if param_grads else [None] * spec.extra
            args += [_ptr(saved[0]), _ptr(v0), *map(_ptr, extra), ptrs, flags,
                     ctypes.c_int(NATIVE_SURROGATES[method]), ctypes.c_double(alpha)]
        self._function(f"{kind}_backward", v0.dtype)(*args, _ptr(gx), _ptr(gp), ctypes.c_int(torch.get_num_threads()))
        del keep
        G = None if gp is None else [g.view(neuron_shape) for g in gp]
        return gx, tuple(gstate), G
