"""The feed-forward time loops of the ``cpp`` backend: the OpenMP C++ kernels of ``cpu_kernels.cpp``
(built and loaded by :mod:`~snn.neurons.fused.cpp.build`), called through ``ctypes`` on the tensors' memory.

Every tensor is checked (or made contiguous) before its address goes to C++ (:mod:`~snn.neurons.fused.cpp.arguments`):
dtype, device, layout, size and strides, whoever the caller.
"""

from __future__ import annotations

import ctypes

import torch

from ..spec import NATIVE_SURROGATES, NEURON_SPECS, KernelOptions, saved_tensors
from .arguments import (
    BUFFERS,
    SAVED_WHAT,
    WHAT,
    block,
    dense,
    integrator_argument,
    kernel_dtype,
    parameters,
    pointer,
    refuse,
    rows,
)
from .build import KERNEL_DTYPES, load_library


class CppLoops:
    """The C++ kernels behind the feed-forward half of :class:`~snn.neurons.fused.spec.Backend`.

    Every tensor is checked (or made contiguous) before its address goes to C++: see
    :func:`.arguments.dense`, :func:`.arguments.block` and :func:`.arguments.rows`.
    """

    def __init__(self):
        self.lib = load_library()

    @staticmethod
    def _empty(shape, like: torch.Tensor) -> torch.Tensor:
        """A buffer for the kernels to fill (reused from earlier calls when free, see buffers.py)."""
        return BUFFERS.empty(shape, like.dtype, like.device)

    def _function(self, name: str, dtype: torch.dtype):
        return getattr(self.lib, f"{name}_{KERNEL_DTYPES[dtype]}")

    @staticmethod
    def _counts(kind, state, P, what: str = "state"):
        spec = NEURON_SPECS[kind]
        if len(state) != len(spec.state) or len(P) != len(spec.params):
            raise ValueError(f"snn's C++ kernels for {kind!r} take {len(spec.state)} {what} tensors and "
                             f"{len(spec.params)} parameters, got {len(state)} and {len(P)}.")
        return spec

    def forward(self, kind, x, state, P, save, save_extra, options: KernelOptions):
        spec = self._counts(kind, state, P)
        dtype = kernel_dtype(x, "the input")
        x = dense(x, "the input", dtype)
        if x.dim() < 1:
            raise refuse("the input", x, "a time dimension first")
        steps, neuron_shape = x.shape[0], x.shape[1:]
        M = neuron_shape.numel()
        xr, x_ts, x_ns = rows(x, steps, M)
        # Updated in place to the final state: fresh contiguous copies.
        state = [block(s.detach(), what, dtype, M).clone() for what, s in zip(WHAT[kind][0], state, strict=True)]
        keep, ptrs, flags = parameters(P, neuron_shape, dtype)
        # Written by the kernels: fresh (or pooled) contiguous CPU tensors of the input's checked dtype.
        out = self._empty(x.shape, x)
        vd = self._empty(x.shape, x) if save and spec.spiking else None
        extra = [self._empty(x.shape, x) for _ in range(spec.extra if save_extra else 0)]
        args = [ctypes.c_int64(steps), ctypes.c_int64(M), pointer(xr), ctypes.c_int64(x_ts), ctypes.c_int64(x_ns),
                *map(pointer, state), ptrs, flags, *integrator_argument(kind, options), pointer(out)]
        if spec.spiking:
            args.append(pointer(vd))
        args += [pointer(e) for e in extra] or [None] * spec.extra
        self._function(f"{kind}_forward", dtype)(*args, ctypes.c_int(torch.get_num_threads()))
        del keep
        return out, tuple(state), saved_tensors(kind, out, vd, extra, save_extra)

    def backward(self, kind, gout, gstate, saved, v0, P, options: KernelOptions, param_grads):
        spec = self._counts(kind, gstate, P, "state gradient")
        method = options.method
        if spec.spiking and method not in NATIVE_SURROGATES:
            raise ValueError(f"snn's C++ kernels have no surrogate {method!r}.")
        dtype = kernel_dtype(v0, "the initial voltage")
        neuron_shape = v0.shape
        M = neuron_shape.numel()
        if gout is not None:
            gout = dense(gout, "the output gradient", dtype)
        steps_from = gout if gout is not None else saved[0] if saved else None
        if steps_from is None or steps_from.dim() < 1:
            raise ValueError("snn's C++ kernels: backward needs the output gradient or a saved tensor [T, ...].")
        steps = steps_from.shape[0]
        g_ts, g_ns = M, 1
        if gout is not None:
            gout, g_ts, g_ns = rows(gout, steps, M, "the output gradient")
        # in: final-state gradients; out: initial-state gradients (fresh contiguous copies)
        gstate = [block(g, what, dtype, M).clone() for what, g in zip(WHAT[kind][1], gstate, strict=True)]
        # Saved tensors come back through autograd (and any saved-tensor hooks): checked again.
        expected = (spec.extra + (kind == "li") if param_grads else 0) + spec.spiking
        if len(saved) != expected:
            raise ValueError(f"snn's C++ kernels: {len(saved)} saved tensors for {kind!r}, expected {expected}.")
        saved = [block(s, what, dtype, steps * M) for what, s in zip(SAVED_WHAT, saved, strict=False)]
        keep, ptrs, flags = parameters(P, neuron_shape, dtype)
        v0 = block(v0.detach(), "the initial voltage", dtype, M)
        # Written by the kernels: fresh (or pooled) contiguous CPU tensors of the checked dtype and size.
        gx = self._empty((steps,) + tuple(neuron_shape), v0)
        gp = v0.new_zeros((len(P), M)) if param_grads else None  # the kernels add to it
        window = [] if kind == "li" else [ctypes.c_int64(0)]  # AdEx and LIF: down to step t_stop = 0
        args = [ctypes.c_int64(steps), *window, ctypes.c_int64(M), pointer(gout), ctypes.c_int64(g_ts),
                ctypes.c_int64(g_ns), *map(pointer, gstate)]
        if kind == "li":
            outs, ij = (saved[1], saved[0]) if param_grads else (None, None)
            args += [pointer(outs), pointer(v0), pointer(ij), ptrs, flags]
        else:
            extra = saved[1:] if param_grads else [None] * spec.extra
            args += [pointer(saved[0]), pointer(v0), *map(pointer, extra), ptrs, flags,
                     *integrator_argument(kind, options), ctypes.c_int(NATIVE_SURROGATES[method]),
                     ctypes.c_double(options.alpha)]
        self._function(f"{kind}_backward", dtype)(*args, pointer(gx), pointer(gp),
                                                  ctypes.c_int(torch.get_num_threads()))
        del keep
        G = None if gp is None else [g.view(neuron_shape) for g in gp]
        return gx, tuple(gstate), G
