"""The ``cpp`` backend: OpenMP C++ time loops (``cpu_kernels.cpp``), CPU, float32/float64, the built-in
surrogates. :mod:`~snn.neurons.fused.cpp.build` builds, checks and loads the library;
:mod:`~snn.neurons.fused.cpp.arguments` checks every tensor before its address goes to C++;
:mod:`~snn.neurons.fused.cpp.feed_forward` and :mod:`~snn.neurons.fused.cpp.recurrent` are the
loops."""

from __future__ import annotations

import contextlib

import torch

from ..spec import NATIVE_SURROGATES, KernelOptions, is_native
from ..threads import serial_steps
from . import recurrent
from .build import KERNEL_DTYPES, load_library
from .feed_forward import CppLoops

# The multiply-adds of a step's [B, N] x [N, N] product from which the recurrent loops run each step
# on all the threads they are given (BLAS and the kernel; the recurrent node gives them one on a busy
# machine, see ..threads.free_threads); below, on one while a step is within ATen's grain size.
# 2^24: up to B N^2 = 2^23 (T = 784, B = 128, N = 256) one thread was the faster on both machines
# measured, quiet and loaded (two parallel regions per step cost more than they gain; the spike-sparse
# products are serial below 2^17 neurons anyway); benchmarks/RESULTS.md, "The thread policy".
PARALLEL_STEP_MACS = 1 << 24


def step_threads(w_rec: torch.Tensor, state: torch.Tensor):
    """The threads of each recurrent step: all of them when its product is large
    (:data:`PARALLEL_STEP_MACS`), else :func:`~snn.neurons.fused.threads.serial_steps`."""
    if state.numel() * w_rec.shape[0] >= PARALLEL_STEP_MACS:
        return contextlib.nullcontext()
    return serial_steps(state.numel(), state.device)


class CppBackend:
    """The :class:`~snn.neurons.fused.spec.Backend` of the C++ kernels."""

    name = "cpp"
    recurrent = True

    def __init__(self):
        self._loops: CppLoops | None = None

    @property
    def loops(self) -> CppLoops:
        if self._loops is None:
            self._loops = CppLoops()  # loads the library (built on first use on this machine)
        return self._loops

    def why_not(self, kind, tensors, options: KernelOptions) -> str | None:
        """Dense CPU tensors in float32/float64 and a built-in surrogate. The AdEx exponential must
        be torch.exp's own, MKL's VML (the sigmoid and tanh surrogates use it too): those cases need
        a torch with MKL whose VML functions the built library found (they are weak symbols, so LIF
        and LI run without them). A library that cannot be built: :class:`BackendUnavailable`."""
        x = tensors[0]
        sparse = next((t.layout for t in tensors if t.layout != torch.strided), None)
        if sparse is not None:
            return f"it takes dense (strided) inputs and weights, got a {sparse} one"
        needs_vml = kind == "adex" or options.method in ("sigmoid", "tanh")
        if (x.device.type != "cpu" or x.dtype not in KERNEL_DTYPES or not is_native(options.method)
                or needs_vml and not torch.backends.mkl.is_available()
                or needs_vml and not load_library().vml_available()):
            return (f"it runs on CPU in float32/float64 with the built-in surrogates {sorted(NATIVE_SURROGATES)} "
                    f"(AdEx also needs torch with MKL); got a {x.dtype} input on {x.device} with "
                    f"method={options.method!r}")
        load_library()
        return None

    def forward(self, kind, x, state, P, save, save_extra, options):
        return self.loops.forward(kind, x, state, P, save, save_extra, options)

    def backward(self, kind, gout, gstate, saved, v0, P, options, param_grads):
        return self.loops.backward(kind, gout, gstate, saved, v0, P, options, param_grads)

    def recurrent_forward(self, kind, x, w_in, w_rec, z0, state, P, save, save_extra, options):
        loop = recurrent.forward if recurrent.native_available() else recurrent.forward_per_step
        with step_threads(w_rec, z0):
            return loop(kind, x, w_in, w_rec, z0, state, P, save, save_extra, options)

    def recurrent_backward(self, kind, gout, gz, gstate, saved, v0, w_rec, P, options, param_grads, z0=None,
                           w_rec_grad=False):
        loop = recurrent.backward if recurrent.native_available() else recurrent.backward_per_step
        with step_threads(w_rec, v0):
            return loop(kind, gout, gz, gstate, saved, v0, w_rec, P, options, param_grads, z0, w_rec_grad)
