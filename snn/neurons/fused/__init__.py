"""Fused time loops for the LIFAdEx, LIF and LI layers: one autograd node per layer call.

Forward runs all T steps without autograd and saves only the pre-reset voltage of each step
(4 bytes per neuron and step in float32; the spike, the surrogate and the next step's starting
voltage follow from it); backward runs the reverse-time loop with hand-derived gradients for the
input, the initial state and every parameter.

Layout: the shared pieces, then one subpackage per backend, each with its feed-forward and
recurrent loops.

===================  ===============================================================================
file or folder       what it holds
===================  ===============================================================================
``spec.py``          one row per neuron type (:data:`~snn.neurons.fused.spec.NEURON_SPECS`), the kernel options
                     (:class:`~snn.neurons.fused.spec.KernelOptions`, checked once where they are built) and the
                     interface every backend implements (:class:`~snn.neurons.fused.spec.Backend`)
``registry.py``      the one registry of backends and the one resolver (``auto`` and the rule for
                     what an explicit backend cannot run)
``feed_forward.py``  the autograd node of feed-forward layers (:class:`~snn.neurons.fused.feed_forward.FusedTimeLoop`)
``recurrent.py``     the autograd node of recurrent layers, ``W_rec z[t-1]`` computed inside the
                     loop (:class:`~snn.neurons.fused.recurrent.FusedRecurrentLoop`)
``buffers.py``       reuse of the large CPU buffers; ``threads.py``: the threads of a step
``python/``          ``python``: the loops in eager PyTorch, any device, dtype and registered
                     surrogate; ``compile``: the same step bodies through ``torch.compile``
                     (inductor: C++ on CPU, Triton on CUDA; feed-forward only)
``cpp/``             ``cpp``: OpenMP C++ (``cpu_kernels.cpp``; ``build.py`` builds and loads it,
                     ``arguments.py`` checks every tensor it is handed), CPU, float32/float64,
                     built-in surrogates
``triton/``          ``triton``: Triton kernels (``kernels.py``), CUDA (on CPU only under
                     ``TRITON_INTERPRET=1``, for tests), float16/bfloat16/float32/float64, built-in
                     surrogates
===================  ===============================================================================

``eager`` is the layers' own step-by-step autograd loop over the step functions (the reference);
``auto`` picks ``cpp`` on CPU and ``triton`` on CUDA where they run the case, else ``python``.
An explicit backend that cannot run a case (a user-registered surrogate on ``cpp`` or
``triton``, a dtype it lacks) raises a ValueError saying why; ``auto`` falls back
(:mod:`~snn.neurons.fused.registry`). Recurrent AdEx and LIF layers have every backend but ``compile``; their
``cpp`` loops run the whole time loop in one C++ call, the products through the GEMM torch's own
products call, with torch's arguments (:mod:`~snn.neurons.fused.cpp.recurrent`); their ``triton`` loops compute
``W_in x`` for all steps in one GEMM and then, per step, add ``W_rec z`` in place and launch the
feed-forward kernel for that step (:mod:`~snn.neurons.fused.triton.recurrent`). The ``triton`` backend runs on a
device only after its first-use check passed there (:mod:`~snn.neurons.fused.triton.trust`).

AdEx's two integrators (``options.integrator``: ``euler``, ``symplectic``; see
:func:`~snn.neurons.adex.lif_adex_feed_forward_step`) run on every backend: the C++ entry points
take it as an int (its index in :data:`~snn.neurons.constants.INTEGRATORS`), the Triton kernels as
the constexpr ``SYMPLECTIC``.

The ``cpp`` backend keeps its large buffers for reuse once nothing refers to them
(:mod:`~snn.neurons.fused.buffers`); :func:`release_buffers` hands the free ones back.

Adding a neuron type
--------------------
1. **A step function** ``step(input, state, p, dt) -> (output, new_state)`` in its own module
   (like :mod:`snn.neurons.adex`), the equations in its docstring; its arithmetic goes into
   :mod:`snn.neurons.equations`, written in the kernel constants (``c_mem = dt tau_mem_inv``,
   ...), and the step function calls it. A cell and a layer subclass
   :class:`~snn.neurons.module.NeuronModule` with ``fused_kind`` set to the new kind.
2. **A spec row** in :data:`~snn.neurons.fused.spec.NEURON_SPECS`: the state fields, the kernel parameters in the
   order of the kernels' arguments, whether it spikes, and the tensors per step that parameter
   gradients need; derived constants go into :func:`~snn.neurons.fused.spec.kernel_parameters`.
3. **Its kernels**, one copy per language, with the same names for the same quantities in every
   language (``g_vd``, ``g_drive``, ``g_c_mem``, ...; see
   :func:`~snn.neurons.fused.python.feed_forward.adex_backward_step`):

   - Python (:mod:`~snn.neurons.fused.python.feed_forward`): a forward step body that calls the equations and a
     backward step, registered in ``TorchLoops.steps``. They are the ``compile`` backend and the
     ``python`` one; an in-place loop for ``python`` (as AdEx and LIF have) is an option for
     speed, not a requirement.
   - C++ (``cpp/cpu_kernels.cpp``, entry points called from :mod:`~snn.neurons.fused.cpp.feed_forward`) and Triton
     (``triton/kernels.py``: a forward and a backward step function, which the two kernels call
     for their ``KIND``): optional; their backend's ``why_not`` refuses a kind they do not run,
     and ``auto`` then falls back to ``python``.
4. **Tests**: add the kind to ``tests/neurons/fused/test_fused.py`` (and ``test_triton.py`` there):
   outputs and states bit-identical to the eager loop over the step function, gradients equal to
   autograd through it in float64.

Adding a backend
----------------
1. **A subpackage** ``fused/<name>/`` whose ``__init__.py`` defines a class implementing
   :class:`~snn.neurons.fused.spec.Backend`: ``name``, ``recurrent`` (whether it has recurrent loops), ``why_not``
   (the one answer to whether it runs a case: None, or the reason an explicit choice is refused
   with; raise :class:`~snn.neurons.fused.spec.BackendUnavailable` when it covers the case but cannot run on this
   machine, as a library that does not build), ``forward``/``backward`` and, if ``recurrent``,
   ``recurrent_forward``/``recurrent_backward``, with the signatures and return values of the
   Protocol. Keep the loops in ``feed_forward.py`` and ``recurrent.py`` beside it (build or loader
   code in a file of its own, like ``cpp/build.py``), importing nothing from the other backends;
   shared pieces (:mod:`~snn.neurons.fused.spec`, :mod:`~snn.neurons.fused.buffers`,
   :mod:`~snn.neurons.fused.threads`) are below all of them. What forward saves is
   :func:`~snn.neurons.fused.spec.saved_tensors`' list, so the autograd nodes stay unchanged.
2. **Register it** in :data:`~snn.neurons.fused.registry.REGISTRY`, add its name to
   :data:`~snn.neurons.constants.BACKENDS` (and ``RECURRENT_BACKENDS``), and to
   :data:`~snn.neurons.fused.registry.AUTO` if ``auto`` should pick it on some device.
3. **Tests**: the equality tests of the other backends run it too (outputs and states
   bit-identical to the eager loop where the operations allow, gradients against autograd
   through the step function in float64), and the user-surrogate rule (an explicit choice
   refuses a surrogate it lacks, ``auto`` falls back).
4. **Package data**: a non-Python source file it compiles goes into
   ``[tool.setuptools.package-data]`` of ``pyproject.toml``.
"""

from __future__ import annotations

from ..constants import BACKENDS, RECURRENT_BACKENDS, check_backend, check_recurrent_backend
from .cpp.arguments import BUFFERS
from .spec import KernelOptions

__all__ = ["BACKENDS", "RECURRENT_BACKENDS", "KernelOptions", "check_backend", "check_recurrent_backend",
           "release_buffers"]


def release_buffers() -> None:
    """Returns the free buffers the ``cpp`` backend keeps for reuse to the allocator (see
    :mod:`~snn.neurons.fused.buffers`; like ``torch.cuda.empty_cache``). Buffers still in use are not affected."""
    BUFFERS.clear()
