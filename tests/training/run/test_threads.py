"""Threads per training process (snn.training.run.threads): usable cores // (processes per host x jobs
side by side), overridden by the config's ``threads`` or OMP_NUM_THREADS; train() applies it."""

from __future__ import annotations

import os
import types

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from snn.training.run import build, threads
from snn.training.run import run as train
from tests.helpers import make_cfg, with_callback


@pytest.fixture
def four_cores(monkeypatch):
    """Four usable cores, no OMP_NUM_THREADS from the user; torch's threads restored after the test."""
    before = torch.get_num_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "TORCH_DEFAULT_THREADS", 4)
    monkeypatch.setattr(threads, "USER_OMP_NUM_THREADS", None)
    yield
    torch.set_num_threads(before)


def test_the_rule():
    assert threads.process_threads(None, 1, 1, 4, None) == (4, "4 usable cores / 1 process(es) x 1 job(s) on this host")
    assert threads.process_threads(None, 2, 1, 4, None)[0] == 2  # CPU DDP, 2 processes
    assert threads.process_threads(None, 2, 2, 4, None)[0] == 1  # and 2 jobs side by side
    assert threads.process_threads(None, 4, 2, 4, None)[0] == 1  # never 0
    assert threads.process_threads(None, 2, 1, 4, "3") == (3, "OMP_NUM_THREADS")
    assert threads.process_threads(6, 2, 1, 4, "3") == (6, "threads set in the config")
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match=r"threads=.*number of threads >= 1, or null"):
            threads.process_threads(bad, 1, 1, 4, None)
    with pytest.raises(ValueError, match=r"OMP_NUM_THREADS='x': set it to a number of threads >= 1"):
        threads.process_threads(None, 1, 1, 4, "x")


def test_usable_cores_are_the_affinity_mask_at_most_torchs_default(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(threads, "TORCH_DEFAULT_THREADS", 4)  # 4 physical cores with hyperthreads
    assert threads.usable_cores() == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 5})  # taskset -c 2,5
    assert threads.usable_cores() == 2


def test_multirun_jobs_side_by_side_come_from_the_launcher(monkeypatch):
    from hydra.types import RunMode

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "TORCH_DEFAULT_THREADS", 4)

    def hydra(mode, **launcher):
        return OmegaConf.create({"mode": mode, "launcher": launcher})

    assert threads.side_by_side_jobs(None) == 1
    assert threads.side_by_side_jobs(hydra(RunMode.RUN, n_jobs=4)) == 1
    assert threads.side_by_side_jobs(hydra(RunMode.MULTIRUN)) == 1  # the basic launcher: one after another
    assert threads.side_by_side_jobs(hydra(RunMode.MULTIRUN, n_jobs=3)) == 3
    assert threads.side_by_side_jobs(hydra(RunMode.MULTIRUN, n_jobs=-1)) == 4  # joblib: all cores
    assert threads.side_by_side_jobs(hydra(RunMode.MULTIRUN, n_jobs=-2)) == 3


def test_cpu_ddp_processes_split_the_cores(tmp_path, four_cores):
    _, _, trainer = build(make_cfg(tmp_path, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                                   "dataset=synthetic"))
    assert threads.apply_threads(None, trainer)[0] == 2 and torch.get_num_threads() == 2
    torch.set_num_threads(3)  # Lightning's DDP launcher sets a count of its own before the processes set up
    (callback,) = [c for c in trainer.callbacks if isinstance(c, threads.ProcessThreads)]
    callback.setup(trainer, None, "fit")
    assert torch.get_num_threads() == 2


# What srun sets in each of 4 tasks with --cpus-per-task=8 (Lightning's SLURMEnvironment reads these).
SLURM_TASKS = {"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "1", "SLURM_PROCID": "1",
               "SLURM_LOCALID": "1", "SLURM_NODEID": "0", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "snn",
               "SLURM_NODELIST": "localhost", "SLURM_CPUS_PER_TASK": "8"}


def test_under_slurm_the_threads_are_the_tasks_cpus_divided_once(monkeypatch):
    """4 GPU tasks of 8 CPUs each: every task's affinity mask holds its own 8 CPUs, so each process
    takes 8 threads, not 8 // 4 (the GPUs counted again as processes sharing them)."""
    before = torch.get_num_threads()
    for key, value in SLURM_TASKS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8, 16)))  # this task's CPUs
    monkeypatch.setattr(threads, "TORCH_DEFAULT_THREADS", 64)
    monkeypatch.setattr(threads, "USER_OMP_NUM_THREADS", None)
    trainer = types.SimpleNamespace(num_devices=4, callbacks=[])
    try:
        assert threads.slurm_task_cpus() == 8
        assert threads.apply_threads(None, trainer) == (8, "8 CPUs per SLURM task (--cpus-per-task), 8 usable")
        assert torch.get_num_threads() == 8
    finally:
        torch.set_num_threads(before)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)))  # fewer usable than allotted
    assert threads.process_threads(None, 4, 1, threads.usable_cores(), None, threads.slurm_task_cpus())[0] == 4
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # salloc + a shell: not srun's task
    assert threads.slurm_task_cpus() is None


class ThreadsAtFit(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.threads = torch.get_num_threads()


@pytest.mark.parametrize(("override", "expected"), [(None, 4), (1, 1)])
def test_train_sets_the_threads_of_the_rule(tmp_path, monkeypatch, four_cores, override, expected):
    seen = ThreadsAtFit()
    with_callback(monkeypatch, seen)
    args = ["dataset=synthetic", "debug=fdr", "model.T=4", "model.hidden=[8]"]
    train(make_cfg(tmp_path, *args, *([] if override is None else [f"threads={override}"])))
    assert seen.threads == expected


def test_a_bad_threads_setting_is_a_config_error(tmp_path, four_cores):
    with pytest.raises(ValueError, match="threads=0: set it to a number of threads >= 1") as error:
        train(make_cfg(tmp_path, "dataset=synthetic", "debug=fdr", "threads=0"))
    assert type(error.value).__name__ == "ConfigError"
