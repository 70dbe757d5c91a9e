"""The ``triton`` backend: Triton kernels (:mod:`~snn.neurons.fused.triton.kernels`) that run all T steps of a block of
neurons per program; CUDA, and on the CPU only under ``TRITON_INTERPRET=1`` (for tests);
float16/bfloat16/float32/float64 inputs, the built-in surrogates. :mod:`~snn.neurons.fused.triton.feed_forward` launches
them for feed-forward layers, :mod:`~snn.neurons.fused.triton.recurrent` one step per launch for recurrent ones. Triton
3.4 or later (:data:`~snn.neurons.fused.triton.feed_forward.MINIMUM_TRITON`, checked by ``why_not``). The kernels
run on a
device only after they passed a first-use check there (:mod:`~snn.neurons.fused.triton.trust`), and launch on their
tensors' device (:func:`on_device`). Nothing here imports triton until a kernel is needed."""

from __future__ import annotations

import contextlib

import torch

from ..spec import NATIVE_SURROGATES, KernelOptions, is_native
from ..threads import serial_steps
from . import recurrent, trust
from .feed_forward import TritonLoops, why_not


def on_device(device: torch.device) -> contextlib.AbstractContextManager:
    """``device`` the current CUDA device for the launches: Triton launches on the current device,
    not on its arguments', so a layer on ``cuda:1`` in a process whose current device is ``cuda:0``
    would run there. Nothing on the CPU (the interpreter)."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


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
        if reason is None:  # a case they run: on a device where they proved themselves (.trust)
            trust.require(tensors[0].device, self)
        return reason

    def forward(self, kind, x, state, P, save, save_extra, options):
        with on_device(x.device):
            return self.loops.forward(kind, x, state, P, save, save_extra, options)

    def backward(self, kind, gout, gstate, saved, v0, P, options, param_grads):
        with on_device(v0.device):
            return self.loops.backward(kind, gout, gstate, saved, v0, P, options, param_grads)

    def recurrent_forward(self, kind, x, w_in, w_rec, z0, state, P, save, save_extra, options):
        with serial_steps(z0.numel(), z0.device), on_device(x.device):
            return recurrent.forward(self.loops, kind, x, w_in, w_rec, z0, state, P, save, save_extra, options)

    def recurrent_backward(self, kind, gout, gz, gstate, saved, v0, w_rec, P, options, param_grads, z0=None,
                           w_rec_grad=False):
        with serial_steps(v0.numel(), v0.device), on_device(v0.device):
            # W_rec's gradient: None, the node's dense product
            answer = recurrent.backward(self.loops, kind, gout, gz, gstate, saved, v0, w_rec, P, options, param_grads)
            return (*answer, None)
