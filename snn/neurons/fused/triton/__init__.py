"""The ``triton`` backend: Triton kernels (:mod:`.kernels`) that run all T steps of a block of
neurons per program; CUDA, and on the CPU only under ``TRITON_INTERPRET=1`` (for tests);
float16/bfloat16/float32/float64 inputs, the built-in surrogates. :mod:`.feed_forward` launches
them for feed-forward layers, :mod:`.recurrent` one step per launch for recurrent ones.
Nothing here imports triton until a kernel is needed."""

from __future__ import annotations

import torch

from ..spec import NATIVE_SURROGATES, KernelOptions, is_native
from ..threads import serial_steps
from . import recurrent
from .feed_forward import TritonLoops, why_not


class TritonBackend:
    """The :class:`~snn.neurons.fused.spec.Backend` of the Triton kernels; ``block``: neurons per
    program (None: the default of the device)."""

    name = "triton"
    recurrent = True

    def __init__(self, block: int | None = None):
        self.loops = TritonLoops(block)

    def why_not(self, kind, tensors, options: KernelOptions) -> str | None:
        sparse = next((t.layout for t in tensors if t.layout != torch.strided), None)
        if sparse is not None:
            return f"it takes dense (strided) inputs and weights, got a {sparse} one"
        reason = why_not(tensors[0])
        if reason is None and not is_native(options.method):
            reason = f"they implement the built-in surrogates {sorted(NATIVE_SURROGATES)}, not {options.method!r}"
        return reason

    def forward(self, kind, x, state, P, save, save_extra, options):
        return self.loops.forward(kind, x, state, P, save, save_extra, options)

    def backward(self, kind, gout, gstate, saved, v0, P, options, param_grads):
        return self.loops.backward(kind, gout, gstate, saved, v0, P, options, param_grads)

    def recurrent_forward(self, kind, x, w_in, w_rec, z0, state, P, save, save_extra, options):
        with serial_steps(z0.numel(), z0.device):
            return recurrent.forward(self.loops, kind, x, w_in, w_rec, z0, state, P, save, save_extra, options)

    def recurrent_backward(self, kind, gout, gz, gstate, saved, v0, w_rec, P, options, param_grads):
        with serial_steps(v0.numel(), v0.device):
            return recurrent.backward(self.loops, kind, gout, gz, gstate, saved, v0, w_rec, P, options, param_grads)
