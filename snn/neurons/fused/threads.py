"""How many threads a step of the fused loops runs on (shared by every CPU backend)."""

from __future__ import annotations

import contextlib

import torch

GRAIN_SIZE = 32768  # at::internal::GRAIN_SIZE: ATen's elementwise ops run serially up to this size


@contextlib.contextmanager
def serial_steps(step_numel: int, device: torch.device):
    """Runs the body with one intra-op thread when a step's tensors are within ATen's grain size.

    ATen already runs elementwise ops of that size serially, except MKL's exp (torch.exp on CPU),
    which opens an OpenMP region from 2048 values on. One region per step costs little on an idle
    machine, but on a shared one each can wait a scheduler time slice for a descheduled second
    thread: milliseconds against microseconds for the op (benchmarks/RESULTS.md). Values do not
    depend on the thread count.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or step_numel > GRAIN_SIZE or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
