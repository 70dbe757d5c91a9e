"""A Triton kernel is trusted on a device only after it proved itself there.

The first time the ``triton`` backend is asked to run on a device (each GPU, and the CPU under
Triton's interpreter) it compiles and runs a tiny case of every layer kind there, forward and
backward, against the eager loop on the same device (:data:`CASES`): AdEx with a ``delta_T`` that
is not a power of two (0.37: its division and exponential round differently when approximated;
the default 0.5 divides exactly), LIF and LI feed-forward, recurrent AdEx and LIF. It asks for

- the same spikes (every element),
- final states within :data:`STATE_BOUND` of the largest value, input gradients within
  :data:`GRADIENT_BOUND` of the largest gradient (float32; the kernels round the forward
  operations as the eager loop does, the backward sums in another order).

The answer is kept per device for the process. A device whose check failed (a compile error, an
unsupported GPU, a result outside the bounds) makes ``TritonBackend.why_not`` raise
:class:`~snn.errors.BackendUnavailable` with the cause: ``auto`` warns once and runs ``python``, an
explicit ``backend="triton"`` raises that error. The cases (:mod:`~snn.neurons.fused.triton.cases`, registered by
``snn.neurons`` when it loads: they need the layers, which import this) run the backend that asked
through the autograd nodes the layers use, with the layers' own parameters and initial states,
against the layers' eager loops.
"""

from __future__ import annotations

import contextlib
import threading

import torch

from ..spec import BackendUnavailable

STATE_BOUND = 1e-5  # of the largest final state value
GRADIENT_BOUND = 1e-4  # of the largest input gradient
DELTA_T = 0.37  # AdEx's case: not a power of two

# name -> case(device, backend) -> None or what differed; filled by .cases, which needs the layers
# (snn.neurons.adex, ...) and so registers itself from snn.neurons instead of being imported here:
# the layers import the backends, not the other way round.
CASES: dict = {}


def register(name: str, case) -> None:
    """Adds a case to the check (``case(device, backend)``: None when it passes, else what
    differed, completing "<name>: ...")."""
    CASES[name] = case

_lock = threading.Lock()
_results: dict[str, str | None] = {}  # device -> None (passed) or why it failed


def device_name(device: torch.device) -> str:
    """``cuda:0 (NVIDIA H100 80GB HBM3, sm_90)``, or ``cpu (Triton's interpreter)``."""
    if device.type != "cuda":
        return f"{device.type} (Triton's interpreter)"
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return f"cuda:{index} ({torch.cuda.get_device_name(index)}, sm_{major}{minor})"


def _key(device: torch.device) -> str:
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def require(device: torch.device, backend) -> None:
    """Runs the check of ``backend`` (a ``TritonBackend``) on ``device`` the first time
    (then remembers the answer); raises :class:`BackendUnavailable` naming the cause when the
    kernels failed it there."""
    key = _key(device)
    reason = _results.get(key, "")
    if reason == "" and device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        raise BackendUnavailable(  # the check reads results back, which a capture forbids; not remembered
            f"the Triton kernels have not run their first-use check on {key} yet, and it cannot run while a "
            "CUDA graph is being captured: call the layer once before capturing")
    if reason == "":
        with _lock:
            if key not in _results:
                _results[key] = run_check(torch.device(key), backend)
            reason = _results[key]
    if reason is not None:
        raise BackendUnavailable(reason)


def forget() -> None:
    """Forgets every device's answer (tests; a process that replaced its Triton install)."""
    with _lock:
        _results.clear()


def results() -> dict[str, str | None]:
    """The answers so far, by device: None (trusted) or why not."""
    return dict(_results)


def run_check(device: torch.device, backend) -> str | None:
    """Every case of :data:`CASES` of ``backend`` on ``device``: None when all pass, else why the
    first failed."""
    where = device_name(device)
    if not CASES:
        return f"the Triton kernels' first-use check on {where} has no cases (snn.neurons registers them)"
    guard = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    # In the user's inference_mode or no_grad too: the check runs backward (its tensors are its own).
    with guard, torch.inference_mode(False), torch.enable_grad():
        for name, case in CASES.items():
            try:
                problem = case(device, backend)
            except Exception as error:  # a compile error, a launch failure, an unsupported GPU
                first_line = (str(error).strip().splitlines() or [""])[0][:300]
                problem = f"{type(error).__name__}: {first_line}"
            if problem is not None:
                return f"the Triton kernels failed their first-use check on {where}: {name}: {problem}"
    return None
