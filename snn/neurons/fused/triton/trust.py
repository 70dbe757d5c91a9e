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
unsupported GPU, a result outside the bounds) makes :meth:`TritonBackend.why_not` raise
:class:`~..spec.BackendUnavailable` with the cause: ``auto`` warns once and runs ``python``, an
explicit ``backend="triton"`` raises that error. The check runs the backend that asked through
the autograd nodes the layers use (:mod:`..feed_forward`, :mod:`..recurrent`), with the layers'
own parameters and initial states, against the layers' eager loops.
"""

from __future__ import annotations

import contextlib
import threading

import torch

from ..spec import BackendUnavailable

STATE_BOUND = 1e-5  # of the largest final state value
GRADIENT_BOUND = 1e-4  # of the largest input gradient
DELTA_T = 0.37  # AdEx's case: not a power of two

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
    """Runs the check of ``backend`` (a :class:`~. TritonBackend`) on ``device`` the first time
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


def _fused(layer, backend, x: torch.Tensor):
    """``layer(x)`` from rest with its time loop on ``backend`` (no registry, no resolver)."""
    from ..feed_forward import FusedTimeLoop
    from ..recurrent import FusedRecurrentLoop
    from ..spec import kernel_parameters

    kind, options = layer.fused_kind, layer.kernel_options
    if hasattr(layer, "recurrent_weights"):
        shape = (x.shape[1], layer.hidden_size)
        z0, *rest = layer.rest_state(x.new_zeros(shape))
        P = kernel_parameters(kind, layer.neuron_parameters(x), layer.dt)
        out, *final = FusedRecurrentLoop.apply(kind, backend, options, x, layer.input_weights,
                                               layer.effective_recurrent_weights(), z0, *rest, *P)
    else:
        state = layer.rest_state(x.new_zeros(x.shape[1:]))
        P = kernel_parameters(kind, layer.neuron_parameters(x), layer.dt)
        out, *final = FusedTimeLoop.apply(kind, backend, options, x, *state, *P)
    return out, final


def _compare(layer, backend, x: torch.Tensor) -> str | None:
    """Spikes (LI: voltages), final states and input gradients of ``layer``'s eager loop and of
    ``backend`` on ``x``."""
    results = []
    for run in (lambda xl: layer(xl), lambda xl: _fused(layer, backend, xl)):
        xl = x.clone().requires_grad_()
        out, final = run(xl)
        final = list(final)
        weights = torch.linspace(-1.0, 1.0, out.numel(), device=x.device).view(out.shape)
        loss = (out * weights).sum() + sum((s * (k + 1)).sum() for k, s in enumerate(final))
        loss.backward()
        results.append((out.detach(), [s.detach() for s in final], xl.grad))
    (ref, ref_final, ref_grad), (out, final, grad) = results
    if layer.fused_kind != "li" and not torch.equal(out, ref):
        differ = int((out != ref).sum())
        return f"{differ} of {out.numel()} spikes differ from the eager loop's"
    for name, s, r in zip(layer.state_class._fields, final, ref_final, strict=True):  # recurrent: z first
        bound = STATE_BOUND * float(r.abs().max().clamp_min(1.0))
        error = float((s - r).abs().max())
        if not error <= bound:  # NaN fails too
            return f"the final state {name} differs from the eager loop's by {error:.3g} (bound {bound:.3g})"
    if layer.fused_kind == "li":
        bound = STATE_BOUND * float(ref.abs().max().clamp_min(1.0))
        error = float((out - ref).abs().max())
        if not error <= bound:
            return f"the voltages differ from the eager loop's by {error:.3g} (bound {bound:.3g})"
    bound = GRADIENT_BOUND * float(ref_grad.abs().max())
    error = float((grad - ref_grad).abs().max())
    if not error <= bound:
        return (f"the input gradient differs from autograd through the eager loop by {error:.3g} "
                f"(bound {bound:.3g})")
    return None


def _inputs(device: torch.device, *shape: int, scale: float) -> torch.Tensor:
    """Seeded inputs in multiples of 1/64: with :func:`_layer`'s weights every product and sum of
    a recurrent current is exact in float32, so the currents equal the eager loop's whatever order
    the GEMMs sum in (the triton loops' differ: :mod:`.recurrent`), and the check compares the
    kernels alone."""
    g = torch.Generator().manual_seed(7)
    return (torch.round(torch.rand(shape, generator=g) * scale * 64) / 64).to(device)


def _layer(make, device):
    """``make()`` (an eager layer) with seeded weights in multiples of 1/64 on ``device``; the
    user's random stream is not advanced."""
    torch_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(11)
        layer = make()
    finally:
        torch.random.set_rng_state(torch_state)
    with torch.no_grad():
        for w in layer.parameters():
            w.copy_(torch.round(w * 64) / 64)
    return layer.to(device)


def _adex(device, backend):
    from ...adex import LIFAdEx, LIFAdExParameters

    p = LIFAdExParameters(delta_T=DELTA_T, adaptation_spike=0.3, method="super", alpha=30.0)
    return _compare(_layer(lambda: LIFAdEx(p, backend="eager"), device), backend,
                    _inputs(device, 7, 2, 33, scale=3.0))


def _lif(device, backend):
    from ...lif import LIF, LIFParameters

    p = LIFParameters(method="atan", alpha=20.0)
    return _compare(_layer(lambda: LIF(p, backend="eager"), device), backend,
                    _inputs(device, 7, 2, 33, scale=3.0))


def _li(device, backend):
    from ...li import LI

    return _compare(_layer(lambda: LI(backend="eager"), device), backend, _inputs(device, 7, 2, 33, scale=3.0))


def _adex_recurrent(device, backend):
    from ...adex import LIFAdExParameters, LIFAdExRecurrent

    p = LIFAdExParameters(delta_T=DELTA_T, method="super", alpha=30.0)
    return _compare(_layer(lambda: LIFAdExRecurrent(3, 19, p, backend="eager"), device), backend,
                    _inputs(device, 5, 2, 3, scale=12.0))


def _lif_recurrent(device, backend):
    from ...lif import LIFParameters, LIFRecurrent

    p = LIFParameters(method="super", alpha=30.0)
    return _compare(_layer(lambda: LIFRecurrent(3, 19, p, backend="eager"), device), backend,
                    _inputs(device, 5, 2, 3, scale=12.0))


CASES = {
    "adex": _adex,
    "lif": _lif,
    "li": _li,
    "recurrent adex": _adex_recurrent,
    "recurrent lif": _lif_recurrent,
}
