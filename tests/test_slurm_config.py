"""Multi-node configs: trainer=slurm follows the SLURM allocation; the submitit launcher config composes;
a preempted job is requeued by Lightning and resumes in its own run directory."""

import os
import signal
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from snn.errors import ConfigError
from snn.training import load_checkpoint
from snn.training.run import build
from snn.training.run.directory import check_fresh_output_dir
from tests.helpers import ROOT, make_cfg

# What srun sets for a one-task job (Lightning's SLURMEnvironment reads these).
SLURM_TASK = {"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1", "SLURM_PROCID": "0",
              "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "snn",
              "SLURM_NODELIST": "localhost"}


def test_slurm_trainer_takes_devices_and_nodes_from_the_allocation(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path, "dataset=synthetic", "trainer=slurm")
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes) == ("ddp", 1, 1)  # outside SLURM
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    monkeypatch.setenv("SLURM_NNODES", "2")
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (4, 2)
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE")
    monkeypatch.delenv("SLURM_NNODES")
    _, _, trainer = build(make_cfg(tmp_path, "dataset=synthetic", "trainer=slurm", "trainer.accelerator=cpu"))
    assert type(trainer.strategy).__name__ == "DDPStrategy"


def test_submitit_launcher_config(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the optional extra `slurm` is not installed")
    cfg = make_cfg(tmp_path, "dataset=synthetic", "hydra/launcher=slurm", "trainer=slurm", "hydra.launcher.nodes=2",
                   "hydra.launcher.tasks_per_node=4", hydra=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 4, 4)
    assert launcher["additional_parameters"]["signal"] == "USR1@90"  # Lightning's requeue signal, 90 s ahead


def test_under_slurm_lightning_requeues_on_sigusr1(tmp_path, monkeypatch):
    for key, value in SLURM_TASK.items():
        monkeypatch.setenv(key, value)
    _, _, trainer = build(make_cfg(tmp_path, "dataset=synthetic", "trainer=slurm", "trainer.accelerator=cpu"))
    environment = trainer.strategy.cluster_environment
    assert type(environment).__name__ == "SLURMEnvironment" and environment.auto_requeue
    assert environment.requeue_signal == signal.SIGUSR1


def test_only_a_requeued_slurm_job_continues_in_a_used_run_directory(tmp_path, monkeypatch):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"")
    with pytest.raises(ConfigError, match="already holds another run's outputs"):
        check_fresh_output_dir(tmp_path)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    check_fresh_output_dir(tmp_path)
    (tmp_path / "hpc_ckpt_1.ckpt").unlink()  # requeued, but by something else than Lightning: nothing to resume
    with pytest.raises(ConfigError, match="already holds another run's outputs"):
        check_fresh_output_dir(tmp_path)


@pytest.mark.slow
def test_a_preempted_slurm_job_is_requeued_and_resumes_in_its_run_directory(tmp_path):
    """SIGUSR1 (sbatch --signal=USR1@90): Lightning saves hpc_ckpt_1.ckpt and calls scontrol requeue (a
    stub here); SLURM's SIGTERM then ends the job (exit 143). The requeued job runs the same command
    in the same directory and resumes from hpc_ckpt_1.ckpt."""
    stub = tmp_path / "bin" / "scontrol"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    stub.chmod(0o755)
    env = {**os.environ, **SLURM_TASK, "PATH": f"{stub.parent}{os.pathsep}{os.environ['PATH']}"}
    run = tmp_path / "run"
    command = [sys.executable, str(ROOT / "train.py"), "dataset=synthetic", "model.T=6", "model.hidden=16",
               "model.conv=null", "trainer.accelerator=cpu", "logger=none", "test=false", "callbacks.progress_bar=null",
               f"hydra.run.dir={run}", f"paths.data_dir={tmp_path}"]
    process = subprocess.Popen([*command, "trainer.max_epochs=500"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 900
    for path, signum in ((run / "checkpoints" / "last.ckpt", signal.SIGUSR1),
                         (run / "hpc_ckpt_1.ckpt", signal.SIGTERM)):
        while not path.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        time.sleep(0.5)
        os.kill(process.pid, signum)
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 143, output[-3000:]
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"
    # The rest of the epoch it was saved in, and one more.
    epochs = load_checkpoint(run / "hpc_ckpt_1.ckpt")["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] + 2

    result = subprocess.run([*command, f"trainer.max_epochs={epochs}"], cwd=tmp_path, capture_output=True, text=True,
                            env={**env, "SLURM_RESTART_COUNT": "1"}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Restored all states from the checkpoint at {run / 'hpc_ckpt_1.ckpt'}" in result.stdout + result.stderr
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == epochs * 6
