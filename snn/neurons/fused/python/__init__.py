"""The ``python`` backend (the fused loops in eager PyTorch: any device, dtype and registered
surrogate) and ``compile`` (the same step bodies through ``torch.compile``; feed-forward only):
:mod:`~snn.neurons.fused.python.feed_forward` and :mod:`~snn.neurons.fused.python.recurrent`."""

from __future__ import annotations

from ..spec import KernelOptions
from ..threads import serial_steps
from . import recurrent
from .feed_forward import TorchLoops


class PythonBackend:
    """The :class:`~snn.neurons.fused.spec.Backend` of the torch loops; ``compile=True``: the
    ``compile`` backend."""

    def __init__(self, compile: bool = False):
        self.name = "compile" if compile else "python"
        self.recurrent = not compile
        self._compile = compile
        self._loops: TorchLoops | None = None

    @property
    def loops(self) -> TorchLoops:
        """The loops, made on first use (``torch.compile`` imports the compiler stack, seconds a
        process that never compiles should not pay)."""
        if self._loops is None:
            self._loops = TorchLoops(compile=self._compile)
        return self._loops

    def why_not(self, kind, tensors, options: KernelOptions) -> str | None:
        return None  # any device, dtype, layout and registered surrogate

    def forward(self, kind, x, state, P, save, save_extra, options):
        return self.loops.forward(kind, x, state, P, save, save_extra, options)

    def backward(self, kind, gout, gstate, saved, v0, P, options, param_grads):
        return self.loops.backward(kind, gout, gstate, saved, v0, P, options, param_grads)

    def recurrent_forward(self, kind, x, w_in, w_rec, z0, state, P, save, save_extra, options):
        with serial_steps(z0.numel(), z0.device):
            return recurrent.forward(kind, x, w_in, w_rec, z0, state, P, save, save_extra, options)

    def recurrent_backward(self, kind, gout, gz, gstate, saved, v0, w_rec, P, options, param_grads, z0=None,
                           w_rec_grad=False):
        with serial_steps(v0.numel(), v0.device):
            # W_rec's gradient: None, the node's dense product
            return (*recurrent.backward(kind, gout, gz, gstate, saved, v0, w_rec, P, options, param_grads), None)
