"""The resolved run config as hyperparameters, so runs compare in TensorBoard's HPARAMS tab."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from ..module import acc_metric
from .writer import tensorboard


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"T": 8}}`` -> ``{"model/T": 8}``; lists and None become strings (what HPARAMS
    shows)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{name}/"))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


class ConfigHyperparameters(L.Callback):
    """Logs the run config as hyperparameters when fitting starts (rank 0).

    The config is the LightningModule's ``hparams.config`` (what train.py passes: the resolved Hydra
    config), else its hyperparameters. Every logger records it (``hparams.yaml``); TensorBoard also
    gets the HPARAMS summary naming ``metric``, whose value it reads from that scalar's latest
    point.
    """

    def __init__(self, metric: str = acc_metric("val")):
        super().__init__()
        self.metric = metric

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        config = pl_module.hparams.get("config") or dict(pl_module.hparams)
        flat = flatten_config(config)
        for logger in trainer.loggers:
            logger.log_hyperparams(flat)
        writer = tensorboard(trainer)
        if writer is not None:
            from torch.utils.tensorboard.summary import hparams

            # metric_dict's values are not written (TensorBoard reads the metric's own scalars).
            for summary in hparams(flat, {self.metric: math.nan}):
                writer.file_writer.add_summary(summary)
