"""What the C++ kernels may be handed: the last check before C++ reads or writes raw memory.

Every pointer argument is a CPU tensor of the kernels' dtype, dense, with its values at the
addresses the kernel computes (contiguous, or rows within the tensor's storage) and exactly as many
values as the kernel touches. Plain attribute comparisons: nothing here reads the data or waits for
a device. Layers never fail these (they check their arguments first, with friendlier messages);
they stand between C++ and any other caller. Shared by the feed-forward and the recurrent loops.
"""

from __future__ import annotations

import ctypes

import torch

from ...constants import INTEGRATORS, broadcasts_to
from ..buffers import BufferPool
from ..spec import NEURON_SPECS, KernelOptions
from .build import KERNEL_DTYPES, load_library

# Buffers from this size on are advised onto transparent huge pages before their first write.
HUGE_PAGE_BYTES = 4 << 20


def address(t: torch.Tensor) -> int:
    """``t``'s data pointer, refused when it is null but values would be read there (a tensor
    without memory, like autograd's efficient zero tensors)."""
    value = t.data_ptr()
    if value == 0 and t.numel() > 0:
        raise ValueError(f"snn's C++ kernels cannot take a {t.dtype} tensor of shape {list(t.shape)} "
                         "without memory (an efficient zero tensor?); pass a materialised one (.clone()).")
    return value


def pointer(t: torch.Tensor | None):
    return None if t is None else ctypes.c_void_p(address(t))


def refuse(what: str, t: torch.Tensor, need: str) -> ValueError:
    return ValueError(f"snn's C++ kernels cannot take {what}: it is a {t.dtype} tensor of shape "
                      f"{list(t.shape)} on {t.device} (layout {t.layout}); they need {need}.")


def dense(t: torch.Tensor, what: str, dtype: torch.dtype) -> torch.Tensor:
    """``t`` if the kernels can read its memory as ``dtype`` values (a CPU tensor of that dtype
    with the strided layout), with a pending negation applied; else a ValueError."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"snn's C++ kernels cannot take {what}: a {type(t).__name__}, not a tensor.")
    if t.dtype != dtype or not t.is_cpu or t.layout != torch.strided:
        raise refuse(what, t, f"a dense {dtype} tensor on the CPU")
    return t.resolve_neg() if t.is_neg() else t  # a lazy negation (z.conj().imag) lives in a bit, not in memory


def block(t: torch.Tensor, what: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
    """``t`` as ``numel`` contiguous ``dtype`` values on the CPU (a contiguous copy if it is a
    strided view); a ValueError for another dtype, device, layout or size."""
    t = dense(t, what, dtype)
    if t.numel() != numel:
        raise refuse(what, t, f"{numel} values")
    return t if t.is_contiguous() else t.contiguous()


def _check_rows(rows: torch.Tensor, ts: int, ns: int, steps: int, M: int, what: str) -> None:
    """The kernels read ``rows[t * ts + n * ns]`` for t < steps, n < M: all inside its storage."""
    if steps == 0 or M == 0:
        return
    last = (steps - 1) * ts + (M - 1) * ns
    available = rows.untyped_storage().nbytes() // rows.element_size() - rows.storage_offset()
    if ts < 0 or ns not in (0, 1) or last >= available:
        raise refuse(what, rows, f"[{steps}, {M}] values at strides ({ts}, {ns}) within its "
                                  f"{available} stored values")


def rows(t: torch.Tensor, steps: int, M: int, what: str = "the input") -> tuple[torch.Tensor, int, int]:
    """``t [T, ...]`` as ``(tensor, time stride, neuron stride)`` of a ``[T, M]`` view: no copy when
    the neurons of a step are contiguous (an input broadcast over time included) or one value (the
    gradient of ``outputs.sum()``); a contiguous copy otherwise. Checked like every argument."""
    if t.dim() < 1 or t.shape[0] != steps or t.numel() != steps * M:
        raise refuse(what, t, f"{steps} steps of {M} values")
    try:
        view = t.view(steps, M)
    except RuntimeError:
        view = None
    if view is not None and (M == 1 or view.stride(1) in (0, 1)):
        view, ts, ns = view, view.stride(0), 1 if M == 1 else view.stride(1)
    else:
        view, ts, ns = t.contiguous(), M, 1
    _check_rows(view, ts, ns, steps, M, what)
    return view, ts, ns


def _advise_huge_pages(buffer: torch.Tensor) -> None:
    """Large fresh buffers on huge pages: one page fault per 2 MiB instead of per 4 KiB."""
    nbytes = buffer.numel() * buffer.element_size()
    if nbytes >= HUGE_PAGE_BYTES:
        load_library().advise_huge_pages(buffer.data_ptr(), nbytes)


# The kernels' large output, saved and gradient buffers, shared by all layers of the process.
BUFFERS = BufferPool(on_new=_advise_huge_pages)


# What each argument is called in a refusal, made once: formatting strings per call costs more
# than the checks themselves.
WHAT = {kind: (tuple(f"state.{name}" for name in spec.state),
               tuple(f"the gradient of state.{name}" for name in spec.state))
        for kind, spec in NEURON_SPECS.items()}
SAVED_WHAT = tuple(f"saved tensor {k}" for k in range(8))


def integrator_argument(kind: str, options: KernelOptions) -> list:
    """The integrator argument of the AdEx entry points (its index in ``INTEGRATORS``; none for LIF
    and LI)."""
    if kind != "adex":
        return []
    return [ctypes.c_int(INTEGRATORS.index(options.integrator))]


def kernel_dtype(x: torch.Tensor, what: str) -> torch.dtype:
    """``x``'s dtype if the kernels are built for it, else a ValueError naming ``what``."""
    if not isinstance(x, torch.Tensor) or x.dtype not in KERNEL_DTYPES:
        got = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"
        raise ValueError(f"snn's C++ kernels run in float32 or float64; {what} is {got}.")
    return x.dtype

def parameters(P, neuron_shape, dtype):
    """The kernel parameters as ``(keep, pointer array, per-neuron flag array)``; ``keep`` holds the
    tensors alive during the call."""
    keep = []
    for k, p in enumerate(P):  # (called under no_grad: no detach needed)
        if not (isinstance(p, torch.Tensor) and p.dtype == dtype and p.is_cpu and p.layout == torch.strided
                and not p.is_neg()):  # else the slow path: resolved, or refused by name
            p = dense(p, f"kernel parameter {k}", dtype)
        if p.numel() == 1:
            p = p.reshape(1)  # one value (flag 0): contiguous whatever its strides were
        elif broadcasts_to(p.shape, neuron_shape):
            p = p.expand(neuron_shape).contiguous()  # one value per neuron (flag 1), in their order
        else:
            raise refuse(f"kernel parameter {k}", p, f"one value or a shape broadcasting to {list(neuron_shape)}")
        keep.append(p)
    ptrs = (ctypes.c_void_p * len(keep))(*[address(t) for t in keep])
    flags = (ctypes.c_int64 * len(keep))(*[int(t.numel() != 1) for t in keep])
    return keep, ptrs, flags
