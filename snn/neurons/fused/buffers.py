"""Reuse of the large ``[T, ...]`` buffers the fused CPU loops write (outputs, saved voltages,
input gradients).

A fresh buffer of tens of megabytes costs more than the loop that fills it: glibc hands large
blocks back to the kernel on free, so every call page-faults its buffers in again and the kernel
zeroes each page first (on the AdEx reference case about a third of the kernels' own time). Like
PyTorch's CUDA caching allocator, :class:`BufferPool` keeps the storages it handed out and hands
one out again once nothing else refers to it: not the caller (an output they still hold), not an
autograd graph (a saved tensor), not a view. Whether anything refers to a storage is its reference
count, so a buffer is never reused while it can still be read.

At most ``max_free_bytes`` of free buffers are kept (the rest go back to the allocator);
:func:`release_buffers` empties the pool, like ``torch.cuda.empty_cache``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

# Free buffers kept for reuse, in bytes: enough for the three buffers of a 100-step, 32 x 1024
# layer several times over; a training step of a much larger layer falls back to fresh buffers.
DEFAULT_MAX_FREE_BYTES = 256 << 20
# Below this size a fresh allocation comes from malloc's free lists and costs nothing to fault in.
MIN_POOLED_BYTES = 1 << 20
# Storages tracked at most: a caller that keeps thousands of outputs alive (say, every batch of an
# evaluation) must not make each allocation scan thousands of entries; beyond this, buffers are
# handed out untracked (freshly allocated, freed as usual).
MAX_TRACKED = 64

_use_count: Callable[[int], int] | None = getattr(torch._C, "_storage_Use_Count", None)


def _contiguous_strides(shape: torch.Size) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


class BufferPool:
    """Storages of the fused loops' CPU buffers, reused once only the pool refers to them."""

    def __init__(self, max_free_bytes: int = DEFAULT_MAX_FREE_BYTES,
                 on_new: Callable[[torch.Tensor], None] | None = None):
        self.max_free_bytes = max_free_bytes
        self.on_new = on_new  # called on every freshly allocated buffer (e.g. huge-page advice)
        self._storages: list[torch.UntypedStorage] = []
        self._lock = threading.Lock()

    @staticmethod
    def _is_free(storage: torch.UntypedStorage) -> bool:
        # The pool's own reference is the only one: no tensor, view or saved tensor uses it.
        return _use_count(storage._cdata) == 1

    def empty(self, shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised contiguous tensor, in a reused storage when one of the right size is free."""
        shape = torch.Size(shape)
        nbytes = shape.numel() * dtype.itemsize
        if _use_count is None or torch.device(device).type != "cpu" or nbytes < MIN_POOLED_BYTES:
            return self._fresh(shape, dtype, device)
        with self._lock:  # the tensor is made under the lock: until then the storage looks free
            storage = next((s for s in self._storages if s.nbytes() == nbytes and self._is_free(s)), None)
            if storage is not None:
                return torch.empty(0, dtype=dtype, device=device).set_(storage, 0, shape, _contiguous_strides(shape))
            tensor = self._fresh(shape, dtype, device)
            self._trim()
            if len(self._storages) < MAX_TRACKED:
                self._storages.append(tensor.untyped_storage())
            return tensor

    def _fresh(self, shape, dtype, device) -> torch.Tensor:
        tensor = torch.empty(shape, dtype=dtype, device=device)
        if self.on_new is not None:
            self.on_new(tensor)
        return tensor

    def _trim(self) -> None:
        """Drops free storages beyond ``max_free_bytes``, the oldest first."""
        free = 0
        kept = []
        for storage in reversed(self._storages):
            if self._is_free(storage):
                if free + storage.nbytes() > self.max_free_bytes:
                    continue
                free += storage.nbytes()
            kept.append(storage)
        self._storages = kept[::-1]

    def free_bytes(self) -> int:
        with self._lock:
            return sum(s.nbytes() for s in self._storages if self._is_free(s))

    def clear(self) -> None:
        """Forgets every storage (those still in use stay valid: their users hold them)."""
        with self._lock:
            self._storages = []
