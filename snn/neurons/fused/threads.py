"""How many threads the fused loops run on (shared by every CPU backend).

:func:`serial_steps`: one thread for a step within ATen's grain size. :func:`free_threads`: the
threads a recurrent layer's call may use at all, from the cores free for this process.

Each step of a recurrent loop is a few short parallel regions (the ``[B, N] x [N, N]`` product, the
neuron kernel), each ending at a barrier, thousands per call. libgomp's threads wait at a barrier
and between regions spinning, for milliseconds before they sleep (unless ``OMP_WAIT_POLICY=passive``
was set before torch loaded). On an idle machine that makes a region cost microseconds; on one where
other processes hold the cores a waiting thread burns the time slice that the thread it waits for
needs, and each region costs a scheduler time slice: a recurrent call ran 8-18 times slower on two
threads than ``python`` on one (``benchmarks/RESULTS.md``, "Recurrent layers beside busy
neighbours"). One thread has no barriers.

So the recurrent node asks :func:`free_threads` once per forward and once per backward: it is
``torch.get_num_threads()`` while as many cores this process may run on were free for it since the
previous look, else the cores that were (at least 1). Free for this process means idle or used by
this process itself (its own threads, spinning ones included), read from ``/proc/stat`` (idle time
of the CPUs in the affinity mask) and the process's CPU time. Looks less than ``MIN_WINDOW_S``
apart reuse the previous answer (``/proc/stat`` counts in 10 ms ticks); the first look has no window
yet and answers 1. Without ``/proc/stat`` (not Linux) the answer is ``torch.get_num_threads()``.
``SNN_STEP_THREADS=<n>`` pins the answer (to at most torch's threads).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

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


ENV = "SNN_STEP_THREADS"
# The shortest window a decision is made from: /proc/stat counts idle time in ticks (USER_HZ, 100 per
# second), so a window of 0.1 s on 2 CPUs reads 20 ticks; shorter windows reuse the last answer.
MIN_WINDOW_S = 0.1
# Added to the free cores before they are rounded down to threads (background daemons, the tick
# granularity): a process that had 1.8 of 2 cores still runs on 2 threads, one that had 1.7 on 1.
MARGIN = 0.25


def _pinned() -> int | None:
    value = os.environ.get(ENV, "").strip()
    if not value or value == "auto":
        return None
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"{ENV}={value!r}: set it to a number of threads >= 1, or 'auto' (or unset it) "
                         "to let the recurrent loops choose from the free cores.")
    return threads


class FreeCores:
    """The cores free for this process between two looks (idle, or running this process)."""

    def __init__(self, stat_path: str = "/proc/stat", wall=time.monotonic, own=time.process_time):
        """``wall`` and ``own``: the clocks of elapsed time and of this process's CPU time, in seconds."""
        self.stat_path, self.wall, self.own = stat_path, wall, own
        self.ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.last: tuple[float, float, float] | None = None  # (wall s, idle s of our CPUs, our CPU s)
        self.answer = 1
        self.lock = threading.Lock()

    def _idle_seconds(self) -> float | None:
        """Idle + iowait time of the CPUs this process may run on, in seconds since boot."""
        try:
            with open(self.stat_path) as f:
                lines = f.read().splitlines()
        except OSError:
            return None
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        idle = 0
        try:
            for line in lines:  # "cpu<k> user nice system idle iowait irq softirq steal ..."
                name, _, rest = line.partition(" ")
                if not name.startswith("cpu") or name == "cpu" or cpus is not None and int(name[3:]) not in cpus:
                    continue
                fields = rest.split()
                idle += int(fields[3]) + int(fields[4])
        except (ValueError, IndexError):  # not the format of Linux's /proc/stat
            return None
        return idle / self.ticks

    def threads(self, wanted: int) -> int:
        """``wanted`` when as many cores were free since the last look, else as many as were (at
        least 1)."""
        if wanted <= 1:
            return wanted
        with self.lock:
            if self.last is not None and self.wall() - self.last[0] < MIN_WINDOW_S:
                return min(self.answer, wanted)
        idle = self._idle_seconds()  # read outside the lock: ~50 us
        if idle is None:
            return wanted
        now, own = self.wall(), self.own()
        with self.lock:
            if self.last is None:
                self.last = (now, idle, own)
                return 1
            window = now - self.last[0]
            if window >= MIN_WINDOW_S:
                free = (idle - self.last[1] + own - self.last[2]) / window
                self.answer = max(1, int(free + MARGIN))
                self.last = (now, idle, own)
            return min(self.answer, wanted)


FREE_CORES = FreeCores()


def free_threads(device: torch.device) -> int:
    """The threads a recurrent call may use: off the CPU torch's; on it ``SNN_STEP_THREADS`` when
    set, else torch's while the cores were free for them, else those that were, at least 1 (see the
    module docstring)."""
    wanted = torch.get_num_threads()
    if device.type != "cpu":
        return wanted
    pinned = _pinned()
    if pinned is not None:
        return min(pinned, wanted)
    return FREE_CORES.threads(wanted)


@contextlib.contextmanager
def torch_threads(threads: int):
    """The body on ``threads`` intra-op threads, torch's own setting restored after it."""
    before = torch.get_num_threads()
    if threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
