"""The threads of a recurrent layer's call (snn.neurons.fused.threads.free_threads): all of torch's
while the cores were free for this process since the previous look, else the free ones, at least
one; pinned by SNN_STEP_THREADS. Read from a /proc/stat written by the test and clocks the test
advances; the recurrent node runs its loops and weight gradients on them."""

from __future__ import annotations

import os

import pytest
import torch

from snn.neurons.fused import cpp as fused_cpp
from snn.neurons.fused import recurrent, threads
from snn.neurons.fused.threads import FreeCores


class Machine:
    """A /proc/stat with idle ticks per CPU, a wall clock and this process's CPU time."""

    def __init__(self, path, cpus=2):
        self.path, self.cpus = path, cpus
        self.idle = [0] * cpus
        self.now = 1000.0
        self.cpu_time = 5.0
        self.write()

    def write(self):
        hz = os.sysconf("SC_CLK_TCK")
        lines = [f"cpu  1 2 3 {sum(self.idle)} 0 0 0 0 0 0"]
        lines += [f"cpu{k} 100 0 50 {idle * hz // 100} 0 0 0 0 0 0" for k, idle in enumerate(self.idle)]
        self.path.write_text("\n".join(lines + ["intr 12345", "procs_running 3"]) + "\n")

    def advance(self, seconds, idle_per_cpu=(0.0, 0.0), own=0.0):
        """``seconds`` pass; CPU k idles ``idle_per_cpu[k]`` of them, this process runs ``own`` CPU seconds."""
        self.now += seconds
        self.cpu_time += own
        self.idle = [i + round(f * seconds * 100) for i, f in zip(self.idle, idle_per_cpu, strict=True)]
        self.write()

    def free_cores(self):
        return FreeCores(str(self.path), wall=lambda: self.now, own=lambda: self.cpu_time)


@pytest.fixture
def machine(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    return Machine(tmp_path / "stat")


def test_first_look_has_no_window_and_answers_one(machine):
    assert machine.free_cores().threads(2) == 1


def test_a_quiet_machine_gets_all_threads(machine):
    cores = machine.free_cores()
    cores.threads(2)
    machine.advance(0.5, idle_per_cpu=(1.0, 0.0), own=0.5)  # one thread of ours, the other CPU idle
    assert cores.threads(2) == 2
    machine.advance(0.5, own=1.0)  # both CPUs ours (spinning threads count as ours)
    assert cores.threads(2) == 2
    assert cores.threads(1) == 1  # never more than asked for


def test_a_busy_machine_gets_one_thread(machine):
    cores = machine.free_cores()
    cores.threads(2)
    machine.advance(0.5, own=0.67 * 0.5 * 2)  # two threads of ours beside neighbours: 2/3 of a core each
    assert cores.threads(2) == 1
    machine.advance(0.5, idle_per_cpu=(0.3, 0.0), own=0.5)  # one of ours, a neighbour leaves 30 % idle
    assert cores.threads(2) == 1
    machine.advance(0.5, idle_per_cpu=(0.9, 0.0), own=0.5)  # the neighbour gone
    assert cores.threads(2) == 2


def test_short_windows_keep_the_last_answer(machine):
    cores = machine.free_cores()
    cores.threads(2)
    machine.advance(0.5, idle_per_cpu=(1.0, 0.0), own=0.5)
    assert cores.threads(2) == 2
    machine.advance(threads.MIN_WINDOW_S / 2, own=0.0)  # nothing of the CPUs free, but too short to tell
    assert cores.threads(2) == 2
    machine.advance(threads.MIN_WINDOW_S, own=0.0)  # the whole window since the last decision counts
    assert cores.threads(2) == 1


def test_only_the_cpus_of_the_affinity_mask_count(machine, monkeypatch):
    cores = machine.free_cores()
    cores.threads(2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1})
    machine.advance(0.5, idle_per_cpu=(1.0, 0.0), own=0.5)  # CPU 0 idles, but this process may not use it
    assert cores.threads(2) == 1


def test_without_proc_stat_all_threads(tmp_path):
    assert FreeCores(str(tmp_path / "missing")).threads(2) == 2
    (tmp_path / "stat").write_text("cpu0 not numbers\n")
    assert FreeCores(str(tmp_path / "stat")).threads(2) == 2


def test_environment_pins_the_threads(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(threads, "FREE_CORES", type("Busy", (), {"threads": lambda self, wanted: 1})())
    monkeypatch.setenv("SNN_STEP_THREADS", "2")
    assert threads.free_threads(cpu) == 2
    monkeypatch.setenv("SNN_STEP_THREADS", "8")
    assert threads.free_threads(cpu) == 2  # at most torch's threads
    monkeypatch.setenv("SNN_STEP_THREADS", "auto")
    assert threads.free_threads(cpu) == 1
    assert threads.free_threads(torch.device("meta")) == 2  # off the CPU: torch's own
    for bad in ("0", "two"):
        monkeypatch.setenv("SNN_STEP_THREADS", bad)
        with pytest.raises(ValueError, match="SNN_STEP_THREADS=.*number of threads >= 1, or 'auto'"):
            threads.free_threads(cpu)


@pytest.fixture
def spy_threads(monkeypatch):
    """Records torch's threads where the recurrent loops and the weight gradients run."""
    from snn.neurons.fused.cpp import recurrent as cpp_recurrent
    from snn.neurons.fused.python import recurrent as python_recurrent

    seen = {}

    def spy(module, name, key):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            seen[key] = torch.get_num_threads()
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    spy(cpp_recurrent, "forward", "cpp forward")
    spy(cpp_recurrent, "backward", "cpp backward")
    spy(python_recurrent, "forward", "python forward")
    spy(python_recurrent, "backward", "python backward")
    spy(recurrent, "weight_gradients", "weight gradients")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield seen
    torch.set_num_threads(before)


def run_layer(backend, B=4, N=48):
    from snn.neurons import LIFAdExRecurrent

    torch.manual_seed(0)
    layer = LIFAdExRecurrent(2, N, backend=backend).double()
    x = (torch.rand(6, B, 2, dtype=torch.float64) * 4).requires_grad_()
    out, _ = layer(x)
    out.sum().backward()


@pytest.mark.parametrize("backend", ["cpp", "python"])
@pytest.mark.parametrize("free", [1, 2])
def test_large_steps_run_on_the_free_threads(backend, free, spy_threads, monkeypatch):
    """A large step (forced here for a small layer) runs on the threads the machine has free for it,
    and so do the weight gradients; torch's own setting is back afterwards."""
    monkeypatch.setattr(fused_cpp, "PARALLEL_STEP_MACS", 1)
    monkeypatch.setattr(threads, "GRAIN_SIZE", 1)
    monkeypatch.setattr(recurrent, "free_threads", lambda device: free)
    run_layer(backend)
    assert spy_threads == {f"{backend} forward": free, f"{backend} backward": free, "weight gradients": free}
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("backend", ["cpp", "python"])
def test_small_steps_run_on_one_thread_the_weight_gradients_on_the_free_ones(backend, spy_threads, monkeypatch):
    monkeypatch.setattr(recurrent, "free_threads", lambda device: 2)
    run_layer(backend)
    assert spy_threads == {f"{backend} forward": 1, f"{backend} backward": 1, "weight gradients": 2}
    assert torch.get_num_threads() == 2
