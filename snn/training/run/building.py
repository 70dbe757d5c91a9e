"""Building a run: the LightningModule, DataModule and Trainer a config describes (nothing is read or run)."""

from __future__ import annotations

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf

from ..checkpointing.checkpoint_io import SafeCheckpointIO
from ..checkpointing.instantiation import build_from_config, instantiate_config
from ..module import SpikingClassifierModule
from .preflight import sync_batchnorm_works


def container(node) -> dict | None:
    """``node`` as plain, resolved containers (None stays None)."""
    return None if node is None else OmegaConf.to_container(node, resolve=True)


def build(cfg: DictConfig) -> tuple[SpikingClassifierModule, L.LightningDataModule, L.Trainer]:
    """The LightningModule, DataModule and Trainer described by ``cfg`` (nothing is read or run).

    The model comes first: its checks (T, neuron kind and parameters, surrogate, decoder...) fail
    before anything else is set up.
    """
    module = SpikingClassifierModule(
        net=container(cfg.model),
        optimizer=container(cfg.optimizer),
        scheduler=container(cfg.scheduler),
        scheduler_interval=cfg.scheduler_interval,
        **cfg.regularizer,
        config=container(cfg),
        neuron_params=container(cfg.get("neuron_params")),
    )
    datamodule = build_from_config(cfg.dataset, "dataset")
    return module, datamodule, build_trainer(cfg)


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Trainer of ``cfg``, with its loggers and callbacks (a ``_target_`` that cannot be imported is
    a ValueError naming the module that failed)."""
    loggers = [instantiate_config(c, f"logger.{name}") for name, c in (cfg.get("logger") or {}).items() if c]
    callbacks = [instantiate_config(c, f"callbacks.{name}") for name, c in (cfg.get("callbacks") or {}).items() if c]
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    overrides = {}
    if cfg.trainer.get("sync_batchnorm") and not sync_batchnorm_works(cfg.trainer.get("accelerator", "auto")):
        overrides["sync_batchnorm"] = False
        rank_zero_info("trainer.sync_batchnorm is off: SyncBatchNorm runs on GPUs only, so here each process "
                       "normalises with its own batch statistics.")
    # Checkpoints are written atomically and read as data only (weights_only), whatever the config says.
    plugins = [*(instantiate(cfg.trainer.get("plugins")) or []), SafeCheckpointIO()]
    return instantiate_config(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False, plugins=plugins,
                              **overrides)
