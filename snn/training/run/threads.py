"""Intra-op threads of a training process: the usable cores, shared by the processes that train side
by side on this host.

    threads = max(1, usable cores // (processes per host x jobs side by side))

*Usable cores* are the CPUs of the process's affinity mask (what ``taskset``, SLURM's
``--cpus-per-task`` or a container allow), at most torch's default thread count (its physical
cores: hyperthreads add no arithmetic units). *Processes per host* are the trainer's devices (DDP's
processes on this node; Lightning's own DDP launcher divides the same way). *Jobs side by side* are
the ``n_jobs`` of a multirun launcher that runs jobs in parallel on this host (joblib's, for
instance); 1 otherwise. Two processes with two threads each on two cores wait for each other's time
slices at every parallel region (``benchmarks/RESULTS.md``, "Recurrent layers beside busy
neighbours"), so the processes split the cores instead.

Under SLURM (a process that ``srun`` started as one of its tasks, as Lightning's
``SLURMEnvironment`` detects it) each task is allotted ``--cpus-per-task`` CPUs of its own
(``SLURM_CPUS_PER_TASK``; SLURM binds the task's affinity mask to them): the threads are those
CPUs, at most the usable cores, divided by nothing more. The processes per host are srun's tasks,
which already split the node; dividing by the trainer's devices too would divide by the GPUs
twice.

``threads=<n>`` in the config overrides the rule, and so does ``OMP_NUM_THREADS`` set before the
process started. train.py sets the count with ``torch.set_num_threads`` before it builds anything
and again, through :class:`ProcessThreads`, in every process once Lightning has launched them (its
DDP launcher sets a count of its own first). DDP's other processes run train.py again and come to
the same count.
"""

from __future__ import annotations

import os

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_info

# OMP_NUM_THREADS as the process was started with it (Lightning's DDP launcher exports one of its own
# later, which is not the user's setting).
USER_OMP_NUM_THREADS = os.environ.get("OMP_NUM_THREADS")
TORCH_DEFAULT_THREADS = torch.get_num_threads()  # before anything here changed it


def usable_cores() -> int:
    """The CPUs this process may run on, at most torch's default threads."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cpus, TORCH_DEFAULT_THREADS))


def side_by_side_jobs(hydra_cfg) -> int:
    """Jobs a multirun launcher runs at once on this host: its ``n_jobs`` (joblib's convention:
    -1 all cores, -2 all but one, ...), 1 for a single run or a launcher without one."""
    if hydra_cfg is None or hydra_cfg.mode != RunMode.MULTIRUN:
        return 1
    n_jobs = hydra_cfg.launcher.get("n_jobs")
    if not isinstance(n_jobs, int) or n_jobs == 0:
        return 1
    return n_jobs if n_jobs > 0 else max(1, usable_cores() + 1 + n_jobs)


def slurm_task_cpus() -> int | None:
    """``SLURM_CPUS_PER_TASK`` when srun started this process as one of its tasks, else None."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if not SLURMEnvironment.detect():
        return None
    try:
        cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", ""))
    except ValueError:
        return None
    return cpus if cpus > 0 else None


def process_threads(configured, processes: int, jobs: int, cores: int, user_omp: str | None,
                    task_cpus: int | None = None) -> tuple[int, str]:
    """``(threads, why)`` by the rule of the module docstring (``task_cpus``: :func:`slurm_task_cpus`)."""
    if configured is not None:
        if isinstance(configured, bool) or not isinstance(configured, int) or configured < 1:
            raise ValueError(f"threads={configured!r}: set it to a number of threads >= 1, or null for "
                             "the usable cores divided among the processes on this host.")
        return configured, "threads set in the config"
    if user_omp is not None:
        try:
            threads = int(user_omp)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ValueError(f"OMP_NUM_THREADS={user_omp!r}: set it to a number of threads >= 1, or unset it "
                             "for the usable cores divided among the processes on this host.")
        return threads, "OMP_NUM_THREADS"
    if task_cpus is not None:  # srun's tasks split the node already
        threads = min(cores, task_cpus)
        return threads, f"{task_cpus} CPUs per SLURM task (--cpus-per-task), {cores} usable"
    share = processes * jobs
    return max(1, cores // share), f"{cores} usable cores / {processes} process(es) x {jobs} job(s) on this host"


class ProcessThreads(L.Callback):
    """Sets ``threads`` intra-op threads in each process of a fit, validation or test, after the
    strategy launched them."""

    def __init__(self, threads: int):
        self.threads = threads

    def setup(self, trainer, pl_module, stage):
        torch.set_num_threads(self.threads)


def apply_threads(configured, trainer: L.Trainer, hydra_cfg=None) -> tuple[int, str]:
    """Sets this process's intra-op threads by the rule (``configured``: the config's ``threads``;
    ``hydra_cfg``: Hydra's node, by default the running job's) now and, through
    :class:`ProcessThreads`, in every process ``trainer`` launches; says so once: ``(threads, why)``."""
    if hydra_cfg is None and HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
    threads, why = process_threads(configured, trainer.num_devices, side_by_side_jobs(hydra_cfg), usable_cores(),
                                   USER_OMP_NUM_THREADS, slurm_task_cpus())
    torch.set_num_threads(threads)
    trainer.callbacks.append(ProcessThreads(threads))
    rank_zero_info(f"{threads} intra-op thread(s) per process ({why}).")
    return threads, why
