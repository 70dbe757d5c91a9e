"""What the neuron modules and the fused kernels share: the backend and integrator names and their
checks, the constants of the equations that every kernel needs, and the broadcasting rule of the
parameters.

This module imports nothing from ``snn``: the neuron modules (:mod:`~snn.neurons.adex`,
:mod:`~snn.neurons.lif`, :mod:`~snn.neurons.li`, :mod:`~snn.neurons.module`) and the kernels
(:mod:`~snn.neurons.fused`) both read it, so neither has to import the other for these, and the
imports inside ``snn.neurons`` run one way (``tests/test_import_graph.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

# Largest argument of AdEx's exponential term. Finite inputs must never produce inf/NaN: exp(x)
# overflows float32 above x = 88, and an infinite v_d would make (1 - z) * v_d NaN at the reset.
# The voltage that enters exp is the state *after* the previous reset, which is at most
# max(v_th, v_reset) in normal operation, so the clamp only binds for an unusual initial state
# (v > v_th + 20 delta_T); results equal norse's whenever it does not bind. fused/cpp/cpu_kernels.cpp
# repeats the number (kExpMax); the Triton kernels receive it as a launch constant.
EXP_ARGUMENT_MAX = 20.0

# The time-stepping schemes of AdEx (snn.neurons.adex.lif_adex_feed_forward_step): "euler" (forward
# Euler, norse's model: a is driven by the voltage entering the step) and "symplectic" (a by the
# voltage after the step's membrane update and reset). The kernels take the index as a flag.
INTEGRATORS = ("euler", "symplectic")
# The backends of the feed-forward layers (see snn.neurons.fused).
BACKENDS = ("auto", "cpp", "triton", "compile", "python", "eager")
# The backends of the recurrent layers (see snn.neurons.fused.recurrent).
RECURRENT_BACKENDS = ("auto", "cpp", "triton", "python", "eager")


def check_backend(backend: str) -> str:
    """``backend`` if it names a backend, else a ValueError listing them."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}.")
    return backend


def check_integrator(integrator: str) -> str:
    """``integrator`` if it names one of :data:`INTEGRATORS`, else a ValueError listing them."""
    if integrator not in INTEGRATORS:
        raise ValueError(f"Unknown integrator {integrator!r}; valid integrators: {', '.join(INTEGRATORS)}.")
    return integrator


def check_recurrent_backend(backend: str) -> str:
    """``backend`` if recurrent layers have it, else a ValueError listing those they have."""
    if backend not in RECURRENT_BACKENDS:
        raise ValueError(
            f"Recurrent layers have the backends {', '.join(RECURRENT_BACKENDS)}, got {backend!r} "
            "('compile' runs feed-forward layers only)."
        )
    return backend


def broadcasts_to(shape: Sequence[int], target: Sequence[int]) -> bool:
    """Whether a tensor of ``shape`` broadcasts to ``target`` unchanged (NumPy rules: aligned from
    the right, each size 1 or equal). Plain Python: ``torch.broadcast_shapes`` per parameter was
    half of a small layer call's overhead."""
    if len(shape) > len(target):
        return False
    pairs = zip(reversed(shape), reversed(target), strict=False)
    return all(size in (1, goal) for size, goal in pairs)
