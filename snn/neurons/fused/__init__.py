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

Recurrent AdEx and LIF layers (``W_rec z[t-1]`` computed inside the loop) have ``cpp``,
``triton``, ``python``, ``eager`` and ``auto`` (``cpp`` on CPU and ``triton`` on CUDA where they
run, else ``python``): :mod:`.recurrent`. Their ``cpp`` and ``triton`` loops run the feed-forward
kernels one step per call, the currents computed between the steps with torch's own products.

AdEx's two integrators (``p.integrator``: ``euler``, ``symplectic``; see
:func:`~snn.neurons.adex.lif_adex_feed_forward_step`) run on every backend: the loops take
``integrator`` by name, the C++ entry points as an int (its index in
:data:`~snn.neurons.constants.INTEGRATORS`), the Triton kernels as the constexpr ``SYMPLECTIC``.

The ``cpp`` backend keeps its large buffers for reuse once nothing refers to them
(:mod:`.buffers`); :func:`release_buffers` hands the free ones back.

Adding a neuron type
--------------------
1. **A step function** ``step(input, state, p, dt) -> (output, new_state)`` in its own module
   (like :mod:`snn.neurons.adex`), the equations in its docstring; its arithmetic goes into
   :mod:`snn.neurons.equations`, written in the kernel constants (``c_mem = dt tau_mem_inv``,
   ...), and the step function calls it. A cell and a layer subclass
   :class:`~snn.neurons.module.NeuronModule` with ``fused_kind`` set to the new kind.
2. **A spec row** in :data:`.spec.NEURON_SPECS`: the state fields, the kernel parameters in the
   order of the kernels' arguments, whether it spikes, and the tensors per step that parameter
   gradients need; derived constants go into :func:`.spec.kernel_parameters`.
3. **Its kernels**, one copy per language, with the same names for the same quantities in every
   language (``g_vd``, ``g_drive``, ``g_c_mem``, ...; see
   :func:`.torch_loops.adex_backward_step`):

   - Python (:mod:`.torch_loops`): a forward step body that calls the equations and a backward
     step, registered in ``TorchLoops.steps``. They are the ``compile`` backend and the
     ``python`` one; an in-place loop for ``python`` (as AdEx and LIF have) is an option for
     speed, not a requirement.
   - C++ (``cpu_kernels.cpp``, entry points called from :mod:`.cpp_loops`; ``supports`` says which
     kinds it runs) and Triton (``triton_kernels.py``: a forward and a backward step function, which
     the two kernels call for their ``KIND``; :mod:`.triton_loops`): optional, ``auto`` falls back
     to ``python`` for a kind they do not run.
4. **Tests**: add the kind to ``tests/neurons/fused/test_fused.py`` (and ``test_triton.py`` there):
   outputs and states bit-identical to the eager loop over the step function, gradients equal to
   autograd through it in float64.
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
