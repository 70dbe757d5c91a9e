"""Multi-node configs: trainer=slurm follows the SLURM allocation; the submitit launcher config composes."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from train import build

ROOT = Path(__file__).parents[1]


def make_cfg(tmp_path, *overrides: str, hydra: bool = False):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"paths.output_dir={tmp_path}", "dataset=synthetic", *overrides],
                       return_hydra_config=hydra)


def test_slurm_trainer_takes_devices_and_nodes_from_the_allocation(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path, "trainer=slurm")
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes) == ("ddp", 1, 1)  # outside SLURM
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    monkeypatch.setenv("SLURM_NNODES", "2")
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (4, 2)
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE")
    monkeypatch.delenv("SLURM_NNODES")
    _, _, trainer = build(make_cfg(tmp_path, "trainer=slurm", "trainer.accelerator=cpu"))
    assert type(trainer.strategy).__name__ == "DDPStrategy"


def test_submitit_launcher_config(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the optional extra `slurm` is not installed")
    cfg = make_cfg(tmp_path, "hydra/launcher=slurm", "trainer=slurm", "hydra.launcher.nodes=2",
                   "hydra.launcher.tasks_per_node=4", hydra=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 4, 4)
